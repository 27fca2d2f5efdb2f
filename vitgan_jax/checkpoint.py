"""Orbax checkpoints of the whole TrainState: async saves, keep-last-K, the best FID kept apart.

Layout of a workdir (local or gs://):
  checkpoints/<step>/         the last `checkpoint.keep` states (Orbax, async, atomic)
  checkpoints_best/<step>/    the state with the lowest FID so far
  checkpoints_unreadable/     corrupt checkpoints moved aside after a fallback
(config.json beside them is the run record: run_record.py.)

A checkpoint is the whole TrainState (params, EMA, optimizer and spectral-norm states, rng,
step) as its flax state dict. It holds no input-pipeline state because none is needed: the
numpy sources ('arrays', 'npz') are a pure function of (seed, step) and the tf.data sources
replay their seeded stream and skip step * batch examples, so the step alone puts a resumed
run on the same data stream. Restore targets carry shardings, so sharded arrays and
multi-host runs restore in place; every process calls the same methods.
"""

import contextlib
import gc
import logging as pylogging
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from vitgan_jax import errors, run_record, sharding

_MAX_LISTED = 8  # differences named in one-line messages


def path_in(workdir: str, name: str) -> str:
  """workdir/name, absolute for local paths (Orbax wants them so)."""
  if workdir.startswith('gs://'):
    return workdir.rstrip('/') + '/' + name
  return os.path.abspath(os.path.join(workdir, name))


def _one_line(error: BaseException, limit: int = 200) -> str:
  text = ' '.join(str(error).split()).split(' See full TensorStore details')[0]
  text = text if len(text) <= limit else text[:limit] + '...'
  return f'{type(error).__name__}: {text}'


_QUIET_LOGGERS = ('orbax', 'tensorstore', 'asyncio', 'absl')


class _OrbaxInfoFilter(pylogging.Filter):
  """Drops the INFO/DEBUG records Orbax logs through absl (its warnings and errors pass)."""

  def filter(self, record):
    return (record.levelno >= pylogging.WARNING
            or f'{os.sep}orbax{os.sep}' not in record.pathname)


def quiet_orbax_logs() -> None:
  """Orbax's INFO chatter off for this process (idempotent), wherever the log goes.

  Orbax logs every manager, handler, save and restore step at INFO through absl: ~100 lines for
  two saves of a small tree, most of a notebook cell's output at absl verbosity INFO. A filter
  on the 'absl' logger drops them for every handler (absl's, the root logger's, a notebook's);
  `vitgan-train` also filters its absl handler (main.py). Called by every Orbax user here.
  """
  logger = pylogging.getLogger('absl')
  if not any(isinstance(f, _OrbaxInfoFilter) for f in logger.filters):
    logger.addFilter(_OrbaxInfoFilter())


@contextlib.contextmanager
def _quiet_restore():
  """Silences Orbax/TensorStore chatter while reading checkpoints: a bad one is one line.

  A failed read leaves coroutines whose tracebacks ('Event loop is closed', TensorStore
  specs) reach the log and sys.unraisablehook when collected; they are collected here.
  """
  loggers = [pylogging.getLogger(name) for name in _QUIET_LOGGERS]
  levels = [logger.level for logger in loggers]
  hook = sys.unraisablehook
  for logger in loggers:
    logger.setLevel(pylogging.CRITICAL if logger.name == 'asyncio' else pylogging.WARNING)
  sys.unraisablehook = lambda unraisable: None
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = hook
    for logger, level in zip(loggers, levels):
      logger.setLevel(level)


# Top-level state fields added after checkpoints of this format were first written. A checkpoint
# without one restores everything else and keeps the field's initial value (from the template):
# augment_p (2026-12-03) is ADA's p, which starts at 0 like a fresh run's.
LATER_FIELDS = ('augment_p',)


def _flat_shapes(tree) -> Dict[str, Tuple[Tuple[int, ...], str]]:
  """{'g_params/Block_0/...': (shape, dtype)} for a state dict or Orbax metadata tree."""
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {jax.tree_util.keystr(path, simple=True, separator='/'):
          (tuple(leaf.shape), str(np.dtype(leaf.dtype))) for path, leaf in leaves}


def shape_differences(saved, expected) -> List[str]:
  """Human-readable differences between two trees' array paths, shapes and dtypes."""
  saved, expected = _flat_shapes(saved), _flat_shapes(expected)
  out = [f'{k} missing from checkpoint' for k in sorted(set(expected) - set(saved))]
  out += [f'{k} only in checkpoint' for k in sorted(set(saved) - set(expected))]
  out += [f'{k} {saved[k][0]}{saved[k][1]} in checkpoint vs {expected[k][0]}{expected[k][1]}'
          for k in sorted(set(saved) & set(expected)) if saved[k] != expected[k]]
  return out


def _listed(items: Sequence[str]) -> str:
  more = len(items) - _MAX_LISTED
  return '; '.join(items[:_MAX_LISTED]) + (f'; and {more} more' if more > 0 else '')


class Checkpointer:
  """Latest-K checkpoints plus a best-by-FID one, for one workdir. Writes nothing until a save."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    quiet_orbax_logs()
    self.workdir = workdir
    # Naming the handler lets a fresh manager read metadata of checkpoints it did not write.
    self.latest = ocp.CheckpointManager(
        path_in(workdir, 'checkpoints'), item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=False, enable_async_checkpointing=async_save))
    self.best = ocp.CheckpointManager(
        path_in(workdir, 'checkpoints_best'), item_handlers=ocp.StandardCheckpointHandler(),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=False, best_fn=lambda m: m['fid'], best_mode='min',
            enable_async_checkpointing=async_save))
    self._best_fid = None
    self._pending = None  # the step of the newest save started

  @property
  def directory(self) -> str:
    return str(self.latest.directory)

  def latest_step(self) -> Optional[int]:
    return self.latest.latest_step()

  def all_steps(self) -> List[int]:
    return sorted(self.latest.all_steps())

  def save(self, step: int, state) -> None:
    """Starts an async save; arrays are copied to host before this returns (donation-safe)."""
    self._pending = step  # an async write error surfaces later, in `wait`
    with self._disk_errors(step):
      self.latest.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                       force=True)

  @contextlib.contextmanager
  def _disk_errors(self, step: Optional[int]):
    """A failed write (disk full, read-only) as a one-line WorkdirError naming what survived.

    Orbax writes into a temporary folder and renames it when complete, so an earlier
    checkpoint is never touched; the temporary is removed on the next resume.
    """
    try:
      yield
    except OSError as e:
      if isinstance(e, errors.Error):
        raise
      kept = [s for s in self.all_steps() if step is None or s != step]
      survived = (f'the previous checkpoint (step {kept[-1]}) is intact' if kept
                  else 'no earlier checkpoint exists')
      what = f'checkpoint step {step}' if step is not None else 'a checkpoint'
      raise errors.WorkdirError(
          f'cannot save {what} in {self.workdir} ({e.strerror or e}); {survived}. Free space '
          '(or fix permissions) and rerun the same command to resume') from e

  def best_fid(self) -> Optional[float]:
    """The FID of the state in checkpoints_best (None if empty); read once, then tracked."""
    if self._best_fid is None:
      step = self.best.best_step()
      metrics = self.best.metrics(step) if step is not None else None
      self._best_fid = float(metrics['fid']) if metrics else None
    return self._best_fid

  def save_best(self, step: int, state, fid: float) -> bool:
    """Keeps this state in checkpoints_best if its FID beats the best so far; True if it did."""
    fid = float(fid)
    best = self.best_fid()
    if not np.isfinite(fid) or (best is not None and fid >= best):
      return False
    self._pending = step
    with self._disk_errors(step):
      self.best.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                     metrics={'fid': fid}, force=True)
    self._best_fid = fid  # the async save's metrics file may not be on disk yet
    return True

  def _read(self, manager, step: int, template, config=None):
    """Restores `step` into `template`'s structure and shardings, checking shapes first.

    Raises IncompatibleCheckpointError for a different model (naming the config keys that
    differ from config.json when `config` is given), and anything else (Orbax, TensorStore,
    JSON errors) for an unreadable checkpoint.
    """
    target = flax.serialization.to_state_dict(template)
    metadata = manager.item_metadata(step)
    tree = getattr(metadata, 'tree', metadata)
    if tree is None:
      raise ValueError(f'no metadata for step {step}')
    later = [k for k in LATER_FIELDS if k in target and k not in tree]
    kept = {k: target[k] for k in later}
    target = {k: v for k, v in target.items() if k not in later}
    mismatch = shape_differences(tree, target)
    if mismatch:
      differences = (run_record.config_differences(run_record.read(self.workdir), config)
                     if config is not None else [])
      raise errors.IncompatibleCheckpointError(
          run_record.incompatible_message(self.workdir, step, differences, _listed(mismatch)))
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    for k in later:
      print(f'note: checkpoint step {step} predates the state field {k!r}; it starts from its '
            f'initial value ({np.asarray(kept[k]).tolist()})', flush=True)
    return flax.serialization.from_state_dict(template, {**restored, **kept})

  def restore(self, template, step: Optional[int] = None, best: bool = False, config=None):
    """The state at `step` (default: latest, or best) shaped and sharded like `template`.

    Strict: an unreadable checkpoint raises CheckpointError (see `restore_latest` to fall back).
    """
    manager = self.best if best else self.latest
    step = (manager.best_step() if best else manager.latest_step()) if step is None else step
    if step is None:
      raise errors.CheckpointError(f'no checkpoint in {manager.directory}; train first or '
                                   'check --workdir')
    try:
      with _quiet_restore():
        return self._read(manager, step, template, config)
    except errors.Error:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise errors.CheckpointError(
          f'checkpoint step {step} in {manager.directory} is unreadable ({_one_line(e)})') from e

  def restore_latest(self, template,
                     config=None) -> Tuple[Any, Optional[int], List[Tuple[int, str]]]:
    """(state, step, unreadable) from the newest readable checkpoint, newest first.

    `unreadable` lists (step, reason) of newer checkpoints skipped as corrupt or truncated.
    (template, None, []) when there is no checkpoint. Raises IncompatibleCheckpointError
    (a different model: never a reason to fall back) and CheckpointError when every
    checkpoint is unreadable.
    """
    unreadable = []
    for step in reversed(self.all_steps()):
      try:
        with _quiet_restore():
          return self._read(self.latest, step, template, config), step, unreadable
      except errors.Error:
        raise
      except Exception as e:  # pylint: disable=broad-except
        unreadable.append((step, _one_line(e)))
    if unreadable:
      raise errors.CheckpointError(
          f'no readable checkpoint in {self.directory}: '
          + '; '.join(f'step {s}: {why}' for s, why in unreadable)
          + f'. Move them aside (or use a new --workdir) to start over.')
    return template, None, []

  def move_aside(self, steps: Sequence[int]) -> Optional[str]:
    """Moves unreadable checkpoints to checkpoints_unreadable/ so new saves can take their steps.

    Returns that folder, or None when a step could not be moved (e.g. a store that cannot
    rename folders) and was deleted instead: unreadable, it is worth nothing to a restore.
    """
    target = epath.Path(path_in(self.workdir, 'checkpoints_unreadable'))
    if steps and sharding.is_main_process():
      try:
        target.mkdir(parents=True, exist_ok=True)
        for step in steps:
          destination, n = target / str(step), 1
          while destination.exists():
            destination, n = target / f'{step}.{n}', n + 1
          (epath.Path(self.latest.directory) / str(step)).rename(destination)
      except Exception as e:  # pylint: disable=broad-except
        logging.warning('Could not move unreadable checkpoints aside (%s); deleting them.', e)
    if steps and jax.process_count() > 1:
      ocp.multihost.sync_global_processes('vitgan_jax_move_aside')
    self.latest.reload()
    left = [step for step in steps if step in self.latest.all_steps()]
    for step in left:  # every process, as Orbax's delete is collective
      self.latest.delete(step)
    return None if left else str(target)

  def wait(self) -> None:
    """Blocks until pending async saves are on disk (re-raising their errors)."""
    with self._disk_errors(self._pending):
      self.latest.wait_until_finished()
      self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def remove_partial_saves(workdir: str) -> List[str]:
  """Deletes Orbax temporaries (`*.orbax-checkpoint-tmp*`) of saves that never completed.

  A save killed mid-write (crash, full disk, a second run) leaves one; Orbax never reads
  it, and only the main process calls this, under the workdir lock.
  """
  removed = []
  for name in ('checkpoints', 'checkpoints_best'):
    root = epath.Path(path_in(workdir, name))
    if not root.is_dir():
      continue
    for pattern in ('*.orbax-checkpoint-tmp*', '*/*.orbax-checkpoint-tmp*'):
      for path in sorted(root.glob(pattern)):
        if path.is_dir():
          path.rmtree()
        else:
          path.unlink()
        removed.append(str(path))
  return removed
