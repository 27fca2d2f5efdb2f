"""Images from a trained workdir in three lines, without a config module:

  import vitgan_jax
  gan = vitgan_jax.load('/tmp/c10')            # the config from /tmp/c10/config.json
  images = gan.generate(64, seed=0)            # uint8 (64, H, W, C)

Only the generator's weights (EMA by default) are read from the checkpoint, not D or the
optimizer states. `--mode sample` runs the same code.
"""

import dataclasses
from typing import Any, Optional

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from ml_collections import config_dict

from vitgan_jax import checkpoint, errors, sample, train

DEFAULT_BATCH_SIZE = 256


def config_from_workdir(workdir: str) -> config_dict.ConfigDict:
  """The config a workdir was trained with, rebuilt from its config.json record."""
  record = checkpoint.read_run_config(workdir)
  if not record or 'config' not in record:
    raise errors.CheckpointError(
        f'{workdir} has no readable {checkpoint.CONFIG_FILE} (written when training starts); '
        'check the path, or pass config= (the configs/*.py get_config() it was trained with)')
  return config_dict.ConfigDict(record['config'])


def _restore_generator(config, workdir: str, step: Optional[int], best: bool, use_ema: bool):
  """(generator module, params, g_state, step) restored from the checkpoint: G only."""
  generator, discriminator = train.create_models(config)
  g_tx, d_tx = train.create_optimizers(config)
  template = checkpoint.template_state(config, generator, discriminator, g_tx, d_tx)
  wanted = ('ema_params' if use_ema else 'g_params', 'g_state', 'step')
  target = {k: v for k, v in flax.serialization.to_state_dict(template).items() if k in wanted}
  directory = checkpoint._dir(  # pylint: disable=protected-access
      workdir, 'checkpoints_best' if best else 'checkpoints')
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
  return generator, restored[wanted[0]], restored['g_state'], int(restored['step'])


@dataclasses.dataclass
class TrainedGAN:
  """A trained generator: config, module, weights, and the step they come from."""
  config: Any
  generator: Any
  params: Any
  g_state: Any
  step: int
  workdir: Optional[str] = None

  @property
  def latent_dim(self) -> int:
    return self.config.model.generator.latent_dim

  def __post_init__(self):
    self._apply = jax.jit(lambda params, g_state, z: self.generator.apply(
        {'params': params, **g_state}, z))

  def generate(self, num: int, seed: int = 0,
               batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """`num` uint8 NHWC images; z ~ N(0, I) from PRNGKey(seed), one split per batch."""
    rng = jax.random.PRNGKey(seed)
    out = []
    for start in range(0, num, batch_size):
      rng, key = jax.random.split(rng)
      z = jax.random.normal(key, (min(batch_size, num - start), self.latent_dim))
      out.append(sample.to_uint8(jax.device_get(self._apply(self.params, self.g_state, z))))
    if not out:
      return np.zeros((0, self.config.model.image_size, self.config.model.image_size,
                       self.config.model.channels), np.uint8)
    return np.concatenate(out)


def load(workdir: str, *, config=None, step: Optional[int] = None, best: bool = False,
         use_ema: bool = True) -> TrainedGAN:
  """The generator of a workdir's latest (or `step`, or best-FID) checkpoint.

  `config` defaults to the workdir's own record (config.json); EMA weights unless
  use_ema=False.
  """
  config = config if config is not None else config_from_workdir(workdir)
  generator, params, g_state, found = _restore_generator(config, workdir, step, best, use_ema)
  return TrainedGAN(config=config, generator=generator, params=params, g_state=g_state,
                    step=found, workdir=workdir)
