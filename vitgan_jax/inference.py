"""A trained workdir put to use: `load` (Python), `--mode sample` and `--mode eval`.

  import vitgan_jax
  gan = vitgan_jax.load('/tmp/c10')            # the config from /tmp/c10/config.json
  images = gan.generate(64, seed=0)            # uint8 (64, H, W, C)

`load` reads only the generator's weights (EMA by default) from the checkpoint, not D or the
optimizer states; `sample_mode` (vitgan-train --mode sample) is the same code plus the files.
`eval_mode` (--mode eval) restores the whole state and runs the training's evaluator on it.
"""

import dataclasses
import datetime
import json
import os
from typing import Any, Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from ml_collections import config_dict

from vitgan_jax import checkpoint, errors, images as images_lib, run_record, sharding
from vitgan_jax.evaluation import train_eval
from vitgan_jax.gan import GAN

DEFAULT_BATCH_SIZE = 256


def config_from_workdir(workdir: str) -> config_dict.ConfigDict:
  """The config a workdir was trained with, rebuilt from its config.json record."""
  record = run_record.read(workdir)
  if not record or 'config' not in record:
    raise errors.CheckpointError(
        f'{workdir} has no readable {run_record.CONFIG_FILE} (written when training starts); '
        'check the path, or pass config= (the configs/*.py get_config() it was trained with)')
  return config_dict.ConfigDict(record['config'])


@flax.struct.dataclass
class GeneratorWeights:
  """What `GAN.generate` reads of a state: G's weights (EMA or live) and its other collections."""
  ema_params: Any
  g_params: Any
  g_state: Any


def _restore_generator(gan: GAN, workdir: str, step: Optional[int], best: bool, use_ema: bool):
  """(GeneratorWeights, step) restored from the checkpoint: G only."""
  template = gan.abstract_state()
  wanted = ('ema_params' if use_ema else 'g_params', 'g_state', 'step')
  target = {k: v for k, v in flax.serialization.to_state_dict(template).items() if k in wanted}
  directory = checkpoint.path_in(workdir, 'checkpoints_best' if best else 'checkpoints')
  checkpoint.quiet_orbax_logs()
  manager = ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler(),
                                  options=ocp.CheckpointManagerOptions(create=False))
  try:
    found = (manager.best_step() if best else manager.latest_step()) if step is None else step
    if found is None or found not in manager.all_steps():
      raise errors.CheckpointError(f'no checkpoint{"" if step is None else f" step {step}"} in '
                                   f'{directory}; train first or check the workdir')
    try:
      restored = manager.restore(found, args=ocp.args.PyTreeRestore(
          target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
          partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except
      raise errors.CheckpointError(f'checkpoint step {found} in {directory} is unreadable or of '
                                   f'another model ({" ".join(str(e).split())[:300]})') from e
  finally:
    manager.close()
  params = restored[wanted[0]]
  weights = GeneratorWeights(ema_params=params, g_params=params, g_state=restored['g_state'])
  return weights, int(restored['step'])


@dataclasses.dataclass
class TrainedGAN:
  """A trained generator: config, GAN, weights, and the step they come from."""
  config: Any
  gan: GAN
  weights: GeneratorWeights
  step: int
  workdir: Optional[str] = None

  def __post_init__(self):
    self._sample = self.gan.sampler()

  @property
  def generator(self):
    return self.gan.generator

  @property
  def latent_dim(self) -> int:
    return self.gan.latent_dim

  def generate(self, num: int, seed: int = 0,
               batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """`num` uint8 NHWC images; z ~ N(0, I) from PRNGKey(seed), one split per batch."""
    rng = jax.random.PRNGKey(seed)
    out = []
    for start in range(0, num, batch_size):
      rng, key = jax.random.split(rng)
      out.append(np.asarray(jax.device_get(
          self._sample(self.weights, key, min(batch_size, num - start)))))
    if not out:
      return np.zeros((0, *self.gan.image_shape), np.uint8)
    return np.concatenate(out)


def load(workdir: str, *, config=None, gan: Optional[GAN] = None, step: Optional[int] = None,
         best: bool = False, use_ema: bool = True) -> TrainedGAN:
  """The generator of a workdir's latest (or `step`, or best-FID) checkpoint.

  `config` defaults to the workdir's own record (config.json), `gan` to GAN.from_config of it;
  EMA weights unless use_ema=False.
  """
  config = config if config is not None else config_from_workdir(workdir)
  gan = gan if gan is not None else GAN.from_config(config)
  weights, found = _restore_generator(gan, workdir, step, best, use_ema)
  return TrainedGAN(config=config, gan=gan, weights=weights, step=found, workdir=workdir)


def restore_state(gan: GAN, workdir: str, step: Optional[int] = None, best: bool = False):
  """The whole TrainState of a workdir's checkpoint (for evaluation).

  The latest checkpoint by default, falling back past unreadable ones (with a warning).
  """
  template = gan.abstract_state()
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  try:
    if step is not None or best:
      return ckpt.restore(template, step=step, best=best)
    state, found, unreadable = ckpt.restore_latest(template)
    if found is None:
      raise errors.CheckpointError(f'no checkpoint in {ckpt.directory}; train first or check '
                                   '--workdir')
    for bad, why in unreadable:
      logging.warning('Checkpoint step %d is unreadable (%s); using step %d.', bad, why, found)
    return state
  finally:
    ckpt.close()


# ----- --mode sample -----


def sample_mode(config, workdir: str, gan: Optional[GAN] = None, *, num_samples: int,
                seed: Optional[int] = None, out: Optional[str] = None,
                step: Optional[int] = None, best: bool = False) -> str:
  """A PNG grid at `out` (default workdir/samples/sample_grid.png), the uint8 .npz beside it.

  Returns the line it printed.
  """
  if num_samples < 1:  # before the restore, so the mistake costs nothing
    raise errors.ConfigError(f'--num_samples {num_samples}: need at least 1 sample')
  seed = config.training.seed if seed is None else seed
  trained = load(workdir, config=config, gan=gan, step=step, best=best)
  images = trained.generate(num_samples, seed=seed)
  path = out or os.path.join(workdir, 'samples', 'sample_grid.png')
  stem = path[:-len('.png')] if path.lower().endswith('.png') else path
  png, npz = stem + '.png', (os.path.join(os.path.dirname(path), 'samples.npz')
                              if out is None else stem + '.npz')
  rows = max(int(len(images) ** 0.5), 1)
  images_lib.save_png(png, images_lib.image_grid(images, rows))
  with epath.Path(npz).open('wb') as f:
    np.savez_compressed(f, x=images)
  line = (f'Wrote {len(images)} samples (step {trained.step}, seed {seed}) to {png} and {npz}')
  print(line, flush=True)
  return line


# ----- --mode eval -----


def _check_reference_source(config) -> None:
  if config.data.source == 'arrays' and not config.eval.reference_stats:
    raise errors.ConfigError(
        "--mode eval needs the training data's statistics: data.source is 'arrays', which "
        'only a Python caller can feed; set --config.eval.reference_stats to a stats .npz, '
        'or data.source to tfds / npz / folder')


def describe(results: dict) -> str:
  """'FID 12.345, IS 7.89 ± 0.12, KID 0.0123 ± 0.0004' (the metrics present)."""
  parts = [f'FID {results["fid"]:.3f}']
  if 'is' in results:
    parts.append(f'IS {results["is"]:.2f} ± {results["is_std"]:.2f}')
  if 'kid' in results:
    parts.append(f'KID {results["kid"]:.4f} ± {results["kid_std"]:.4f}')
  return ', '.join(parts)


def write_tensorboard(logdir: str, step: int, results: dict) -> None:
  """The metrics as TensorBoard scalars at `step` in `logdir` (workdir/eval: its own run)."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top  # TensorBoard: eval only
  writer = metric_writers.create_default_writer(logdir, just_logging=not sharding.is_main_process())
  writer.write_scalars(step, {k: float(v) for k, v in results.items()})
  writer.flush()
  writer.close()


def eval_mode(config, workdir: str, gan: Optional[GAN] = None, *, step=None, best: bool = False,
              data=None, reference=None, extractor=None) -> dict:
  """FID / IS / KID of the EMA generator of the latest (or `step`, or best-FID) checkpoint.

  Writes workdir/eval/step_<step>.json (metrics, sample count, checkpoint, date) and prints one
  line; returns the JSON record. `data` / `reference` / `extractor` serve callers that hold
  their own images, statistics or feature network (tests, notebooks); see
  train_eval.make_evaluator.
  """
  if data is None and reference is None:
    _check_reference_source(config)
  gan = gan if gan is not None else GAN.from_config(config)
  mesh = sharding.create_mesh()
  state = restore_state(gan, workdir, step=step, best=best)
  evaluator = train_eval.make_evaluator(config, gan, mesh, data=data, reference=reference,
                                        extractor=extractor)
  results = evaluator(state)
  found = int(jax.device_get(state.step))
  record = {
      'step': found,
      'checkpoint': 'best' if best else 'latest' if step is None else 'step',
      'num_samples': config.eval.num_samples,
      'seed': config.eval.seed,
      'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      **{k: float(v) for k, v in results.items()},
  }
  path = epath.Path(workdir) / 'eval' / f'step_{found:08d}{"_best" if best else ""}.json'
  if sharding.is_main_process():
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + '\n')
  write_tensorboard(str(path.parent), found, results)
  print(f'{describe(results)} at step {found} ({config.eval.num_samples} samples, '
        f'{results["eval_seconds"]:.0f} s); wrote {path}', flush=True)
  return record
