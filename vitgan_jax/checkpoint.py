"""Orbax checkpoints of the whole TrainState: async saves, keep-last-K, and the best FID apart.

Checkpoints live in `<workdir>/checkpoints/<step>`; the best-FID one in
`<workdir>/checkpoints_best/<step>`. State is saved as its flax state dict, so any restore
template (sharded or not) of the same structure works.
"""

import os

import flax
import jax
import orbax.checkpoint as ocp

from vitgan_jax import train


def _dir(workdir: str, name: str) -> str:
  return workdir.rstrip('/') + '/' + name if workdir.startswith('gs://') else os.path.abspath(
      os.path.join(workdir, name))


class Checkpointer:
  """Latest-K checkpoints plus a best-by-FID one, for one workdir."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    self.latest = ocp.CheckpointManager(
        _dir(workdir, 'checkpoints'),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))
    self.best = ocp.CheckpointManager(
        _dir(workdir, 'checkpoints_best'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m['fid'], best_mode='min',
            enable_async_checkpointing=async_save))

  def latest_step(self):
    return self.latest.latest_step()

  def save(self, step: int, state) -> None:
    self.latest.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)))

  def save_best(self, step: int, state, fid: float) -> None:
    """Keeps this state if its FID beats the best so far."""
    self.best.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
                   metrics={'fid': float(fid)})

  def restore(self, template, step=None, best: bool = False):
    """The state at `step` (default: latest) shaped and sharded like `template`."""
    manager = self.best if best else self.latest
    step = manager.latest_step() if step is None else step
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          flax.serialization.to_state_dict(template))
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    return flax.serialization.from_state_dict(template, restored)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


def restore_for_inference(config, workdir: str, step=None, best: bool = False):
  """(state, generator) from a workdir's checkpoint, for sampling and evaluation."""
  generator, discriminator = train.create_models(config)
  g_tx, d_tx = train.create_optimizers(config)
  template = jax.eval_shape(lambda: train.create_train_state(
      config, jax.random.PRNGKey(0), generator, discriminator, g_tx, d_tx))
  ckpt = Checkpointer(workdir, async_save=False)
  if (ckpt.best if best else ckpt.latest).latest_step() is None:
    raise FileNotFoundError(f'no checkpoint in {workdir}/checkpoints'
                            f'{"_best" if best else ""}; train first or check --workdir')
  state = ckpt.restore(template, step=step, best=best)
  ckpt.close()
  return state, generator
