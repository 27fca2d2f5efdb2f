"""workdir/curves.png: FID and D(real) / D(fake) against images seen, redrawn at each FID.

The points live in workdir/curves.json beside it, so a resumed run continues the curve (points
past the resume step, from a run that went further before it stopped, are dropped).
"""

import io
import json

from etils import epath

PNG, JSON = 'curves.png', 'curves.json'
KEYS = ('fid', 'd_real', 'd_fake')


class Curves:
  """Points {'step', 'images', 'fid' | 'd_real' | 'd_fake'} of one workdir."""

  def __init__(self, workdir: str, start_step: int = 0, enabled: bool = True):
    self.dir = epath.Path(workdir)
    self.enabled = enabled
    self.points = []
    path = self.dir / JSON
    if enabled and start_step and path.exists():
      try:
        self.points = [p for p in json.loads(path.read_text()) if p['step'] <= start_step]
      except (ValueError, KeyError, TypeError):
        self.points = []

  def add(self, step: int, images: int, scalars: dict) -> None:
    values = {k: float(scalars[k]) for k in KEYS if k in scalars}
    if self.enabled and values:
      self.points.append({'step': int(step), 'images': int(images), **values})

  def save(self) -> str | None:
    """Writes curves.json and curves.png; returns the PNG's path (None when disabled)."""
    if not self.enabled:
      return None
    self.dir.mkdir(parents=True, exist_ok=True)
    (self.dir / JSON).write_text(json.dumps(self.points))
    (self.dir / PNG).write_bytes(plot_png(self.points))
    return str(self.dir / PNG)


def plot_png(points) -> bytes:
  """Two panels against images seen: FID (log scale), and the mean D logits."""
  import matplotlib  # pylint: disable=g-import-not-at-top  # only when a plot is drawn
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  def series(key):
    rows = [(p['images'] / 1000, p[key]) for p in points if key in p]
    return [r[0] for r in rows], [r[1] for r in rows]

  fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
  x, y = series('fid')
  top.plot(x, y, 'o-', color='tab:blue')
  top.set_ylabel('FID')
  if y and min(y) > 0 and max(y) > 3 * min(y):  # log only where it spreads a long fall
    top.set_yscale('log')
  top.grid(True, alpha=0.3)
  for key, label, color in (('d_real', 'D(real)', 'tab:green'), ('d_fake', 'D(fake)', 'tab:red')):
    x, y = series(key)
    bottom.plot(x, y, '-', label=label, color=color)
  bottom.set_ylabel('mean D logit')
  bottom.set_xlabel('thousands of real images seen')
  bottom.grid(True, alpha=0.3)
  bottom.legend(loc='best')
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=90)
  plt.close(fig)
  return buf.getvalue()
