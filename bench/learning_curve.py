"""Does it learn? FID and D's health against images seen, for a fixed training-time budget.

Trains the same generator against several discriminators (rows) with the library's own trainer
(`trainer`, i.e. `vitgan-train`), each for `--minutes` of training time (compiles, evaluations
and diagnostics are off the clock), on the real 32x32 images of `--data`. FID of `--fid_samples`
EMA samples against the statistics of all of `--data` is computed at step 0, every
`--eval_every_minutes` and at the end, with the FID Inception (weights as `--mode eval` finds
them). Every logging interval's losses and training-health diagnostics go into the JSON too,
and a PNG plots FID and D(real) - D(fake) against images seen.

  python -m bench.learning_curve --data ../shared/data/cifar100_classes0-9_1834.npz
  python -m bench.learning_curve --quick      # smoke sizes, seconds per row: a plumbing check

Rows (D only; G is the config's, ViTGAN's):
  vitgan     ViTGAN's D: overlapping patches, L2 attention, ISN, bCR (the config as it is)
  vanilla    configs/paper/ablation_d_vanilla.py's D: dot attention, plain SN, no overlap, R1
  stylegan2  StyleGAN2's residual D (R1), channels scaled to the ViT D's compute (below)
"""

import argparse
import os
import sys
import tempfile

import jax
import numpy as np

from bench import common
from configs.paper import common as paper
from vitgan_jax import input_pipeline, trainer
from vitgan_jax.evaluation import features, metrics, train_eval

ROWS = ('vitgan', 'vanilla', 'stylegan2')
# StyleGAN2's D at its CIFAR width (512 channels) costs ~40x the mini ViT D per image; at 64
# channels per resolution it is ~1.4x the ViT D's FLOPs (measured by XLA, in the JSON).
STYLEGAN2_CHANNELS = 64


def row_config(base, row: str):
  """The config of one row: `base` with its discriminator swapped as `row` says."""
  config = base.copy_and_resolve_references()
  if row == 'vanilla':
    paper.use_vanilla_vit_discriminator(config)
  elif row == 'stylegan2':
    paper.use_stylegan2_discriminator(config)
    d = config.model.discriminator
    d.channel_base = STYLEGAN2_CHANNELS * config.model.image_size
    d.channel_max = STYLEGAN2_CHANNELS
    d.mbstd_group_size = min(d.mbstd_group_size, 4)
  elif row != 'vitgan':
    raise ValueError(f'unknown row {row!r}; rows: {", ".join(ROWS)}')
  return config  # the rest of the recipe (bCR, DiffAugment, Adam) as configs/paper/common.py


def parse_value(text: str):
  """'3' -> 3, '0.5' -> 0.5, 'True' -> True, anything else stays a string."""
  if text in ('True', 'False'):
    return text == 'True'
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


class RecordingWriter:
  """A clu-style metric writer that keeps every scalar (for the JSON) and echoes eval lines."""

  def __init__(self):
    self.scalars = {}

  def write_scalars(self, step, scalars):
    self.scalars.setdefault(int(step), {}).update({k: float(v) for k, v in scalars.items()})

  def write_images(self, step, images):
    pass

  def write_texts(self, step, texts):
    self.scalars.setdefault(int(step), {}).update({f'text/{k}': 1.0 for k in texts})

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass


def _fit_line(x, y):
  """Slope of the least-squares line through (x, y)."""
  return float(np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)[0])


def summarize(curve, diagnostics, batch_size):
  """Headline figures of one row: start/end/best FID, the last quarter's trend, the D gap."""
  fids = [p['fid'] for p in curve]
  seconds = [p['train_seconds'] for p in curve]
  end = seconds[-1]
  last_quarter = [p for p in curve if p['train_seconds'] >= 0.75 * end]
  before = [p for p in curve if p['train_seconds'] < 0.75 * end]
  if before:
    last_quarter = [before[-1]] + last_quarter  # the trend from the last point before it
  slope = (_fit_line([p['train_seconds'] / 60 for p in last_quarter],
                     [p['fid'] for p in last_quarter]) if len(last_quarter) >= 2 else None)
  # Falling: the fitted trend goes down and the run ends below where the last quarter began.
  still_falling = (slope is not None and slope < 0
                   and last_quarter[-1]['fid'] < last_quarter[0]['fid'])
  after_warmup = [d for d in diagnostics if d['step'] >= 500]
  gaps = [d['d_gap'] for d in after_warmup]
  return {
      'fid_start': fids[0], 'fid_end': fids[-1], 'fid_best': min(fids),
      'fid_end_over_start': fids[-1] / fids[0],
      'fid_slope_last_quarter_per_min': slope,
      'still_falling_last_quarter': still_falling,
      'steps': curve[-1]['step'], 'images_seen': curve[-1]['step'] * batch_size,
      'train_seconds': end,
      'd_gap_min_after_500_steps': min(gaps) if gaps else None,
      'd_gap_positive_fraction_after_500_steps': (float(np.mean(np.array(gaps) > 0))
                                                  if gaps else None),
      'd_sensitivity_min_after_500_steps': (min(d['d_sensitivity'] for d in after_warmup)
                                            if after_warmup else None),
      'stall_alarm_fired': any(d.get('stalled') for d in diagnostics),
      # Issue 12's targets for the ViTGAN row: FID at most half its start, still falling,
      # D's gap positive after the first few hundred steps.
      'targets_met': bool(fids[-1] <= 0.5 * fids[0] and still_falling and gaps
                          and min(gaps) > 0),
  }


def run_row(base, row, args, workdir):
  config = row_config(base, row)
  config.training.max_train_seconds = args.minutes * 60
  config.training.num_steps = 10 ** 9
  config.eval.every_steps = 0
  config.eval.every_seconds = args.eval_every_minutes * 60
  config.eval.num_samples = args.fid_samples
  config.eval.batch_size = args.fid_batch_size
  config.eval.reference_num_samples = args.reference_images  # 0: all of --data
  config.eval.inception_weights = args.inception_weights
  config.logging.every_steps = args.log_every
  config.logging.sample_every_steps = 0
  config.checkpoint.every_steps = 10 ** 9
  writer = RecordingWriter()
  print(f'--- row {row}: {args.minutes:g} min of training ---', flush=True)
  trainer.train_and_evaluate(config, os.path.join(workdir, row), writer=writer)
  batch = config.training.batch_size
  curve, diagnostics = [], []
  for step, s in sorted(writer.scalars.items()):
    if 'fid' in s:
      curve.append({'step': step, 'images_seen': step * batch, 'train_seconds': s['train_seconds'],
                    'fid': s['fid'], 'kid': s.get('kid'),
                    'layout_similarity': s.get('layout_similarity')})
    if 'health/d_gap' in s:
      diagnostics.append({
          'step': step, 'images_seen': step * batch, 'train_seconds': s['train_seconds'],
          'images_per_sec': s['images_per_sec'], 'd_real': s['d_real'], 'd_fake': s['d_fake'],
          'bcr_real': s.get('bcr_real'), 'bcr_fake': s.get('bcr_fake'), 'r1': s.get('r1'),
          'd_grad_norm': s['d_grad_norm'], 'g_grad_norm': s['g_grad_norm'],
          **{k[len('health/'):]: v for k, v in s.items() if k.startswith('health/')}})
  return {'row': row, 'config': config.to_dict(), 'curve': curve, 'diagnostics': diagnostics,
          'summary': summarize(curve, diagnostics, batch)}


def real_floor(base, args, seeds=(0, 1, 2)) -> dict:
  """FID of --fid_samples training images themselves against the reference statistics.

  What a G that reproduced the training set would score at this sample count: the small-sample
  bias every row's curve sits on (FID of 500 images is far above 0 even for real ones).
  """
  config = base.copy_and_resolve_references()
  config.eval.inception_weights = args.inception_weights
  config.eval.reference_num_samples = args.reference_images
  extractor = features.make_feature_extractor(batch_size=args.fid_batch_size,
                                              weights_path=args.inception_weights or None)
  data = input_pipeline.Data(config)
  reference = train_eval.load_reference_stats(config, extractor, data)
  images = data.images(args.reference_images or None)  # the images the reference is of
  if args.fid_samples > len(images):  # no subset that large: the floor is not defined
    return {'skipped': f'--fid_samples {args.fid_samples} is more than the {len(images)} '
                       'real images'}
  fids = subset_fids(images, reference, extractor, args.fid_samples, seeds)
  return {'fid_of_real_subsets': fids, 'mean': float(np.mean(fids)), 'samples': args.fid_samples,
          'meaning': f'{args.fid_samples} of the training images (seeds {list(seeds)}) against '
                     'the statistics of all of them: the floor a perfect G would reach here'}


def subset_fids(images, reference, extractor, num, seeds) -> list:
  """FID against `reference` of `num` of `images` drawn without replacement, once per seed."""
  fids = []
  for seed in seeds:
    pick = np.sort(np.random.default_rng(seed).choice(len(images), num, replace=False))
    stats = features.compute_stats(images[pick], extractor)
    fids.append(float(metrics.fid_from_stats(stats, reference)))
  return fids


def plot(rows, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax_fid, ax_gap) = plt.subplots(1, 2, figsize=(11, 4))
  for r in rows:
    ax_fid.plot([p['images_seen'] / 1000 for p in r['curve']], [p['fid'] for p in r['curve']],
                marker='o', label=r['row'])
    ax_gap.plot([d['images_seen'] / 1000 for d in r['diagnostics']],
                [d['d_gap'] for d in r['diagnostics']], label=r['row'])
  ax_fid.set(xlabel='thousands of real images seen', ylabel='FID', title='FID (EMA G)')
  ax_gap.axhline(0.0, color='grey', lw=0.5)
  ax_gap.set(xlabel='thousands of real images seen', ylabel='D(real) - D(fake)',
             title='D gap on clean images')
  for ax in (ax_fid, ax_gap):
    ax.legend()
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', default='configs/vitgan_mini.py')
  parser.add_argument('--data', default=os.path.join(common.ROOT, '..', 'shared', 'data',
                                                     'cifar100_classes0-9_1834.npz'))
  parser.add_argument('--rows', default=','.join(ROWS))
  parser.add_argument('--minutes', type=float, default=20.0)
  parser.add_argument('--eval_every_minutes', type=float, default=5.0)
  parser.add_argument('--fid_samples', type=int, default=500)
  parser.add_argument('--fid_batch_size', type=int, default=100)
  parser.add_argument('--reference_images', type=int, default=0, help='0: all of --data')
  parser.add_argument('--log_every', type=int, default=100)
  parser.add_argument('--inception_weights', default='')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override for every row, e.g. --set loss.bcr_real=1.0')
  parser.add_argument('--real_floor', type=int, default=1,
                      help='0: skip the FID of real subsets (3 x --fid_samples Inception passes)')
  parser.add_argument('--quick', action='store_true', help='smoke sizes, seconds per row')
  parser.add_argument('--workdir', default='')
  parser.add_argument('--out', default='')
  args = parser.parse_args(argv)
  if args.quick:
    args.config = 'configs/smoke.py'
    args.minutes, args.eval_every_minutes, args.log_every = 0.25, 0.1, 50
    args.fid_samples, args.fid_batch_size, args.reference_images = 64, 32, 128
  if not os.path.exists(args.data):
    sys.exit(f'error: no images at --data {args.data}')
  overrides = {'data.source': 'npz', 'data.path': os.path.abspath(args.data)}
  for item in args.set:
    key, value = item.split('=', 1)
    overrides[key] = parse_value(value)
  base = common.load_config(args.config, overrides)
  result = common.header('learning_curve', args.quick)
  result['settings'] = {
      'config': args.config, 'overrides': overrides, 'minutes': args.minutes,
      'eval_every_minutes': args.eval_every_minutes, 'fid_samples': args.fid_samples,
      'fid_reference': f'all {os.path.basename(args.data)} images',
      'meaning': ('FID of a few hundred EMA samples against the small training set itself: '
                  'a learning curve, not a paper number'),
  }
  workdir = args.workdir or tempfile.mkdtemp(prefix='learning_curve_')
  out = args.out or common.default_out('learning_curve', args.quick)
  if args.real_floor:
    floor = result['real_floor'] = real_floor(base, args)
    print(f'real-data floor: {floor["skipped"]}' if 'skipped' in floor else
          f'real-data floor: FID of {args.fid_samples} training images against all of them '
          f'{floor["mean"]:.1f}', flush=True)
  result['rows'] = []
  for row in args.rows.split(','):
    result['rows'].append(run_row(base, row, args, workdir))
    common.write_json(result, out)  # after each row, so a stopped sweep keeps what it made
    s = result['rows'][-1]['summary']
    print(f'row {row}: FID {s["fid_start"]:.1f} -> {s["fid_end"]:.1f} in {s["steps"]} steps '
          f'({s["images_seen"]} images, {s["train_seconds"] / 60:.1f} min); last-quarter slope '
          f'{s["fid_slope_last_quarter_per_min"]} FID/min; min D gap after 500 steps '
          f'{s["d_gap_min_after_500_steps"]}', flush=True)
  png = os.path.splitext(out)[0] + '.png'
  plot(result['rows'], png, f'{args.config}, {args.minutes:g} min per row on '
       f'{result["device"]["device_kind"]} ({jax.device_count()} device(s))')
  print(f'wrote {out} and {png}')
  return result


if __name__ == '__main__':
  main()
