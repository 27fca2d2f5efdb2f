"""The training loop: data in, jitted steps, logs, sample grids, checkpoints, FID.

Everything with side effects lives here; the step itself is the pure `train.make_train_step`.
"""

import json
import os
import time

import jax
from absl import logging
from clu import metric_writers, periodic_actions

from vitgan_jax import checkpoint, input_pipeline, sample, sharding, train


class NonFiniteError(RuntimeError):
  """A loss or gradient went NaN/Inf; the last good checkpoint is left as it was."""


def _fixed_latents(config) -> jax.Array:
  n = config.logging.sample_grid ** 2
  return jax.random.normal(jax.random.PRNGKey(config.training.seed + 1),
                           (n, config.model.generator.latent_dim))


def _write_grid(writer, workdir, config, sample_fn, state, z, step) -> None:
  """An n x n grid of EMA samples from the fixed z: PNG in workdir/samples and TensorBoard."""
  images = sample.to_uint8(jax.device_get(sample_fn(state, z)))
  grid = sample.image_grid(images, config.logging.sample_grid)
  if sharding.is_main_process():
    sample.save_png(os.path.join(workdir, 'samples', f'step_{step:08d}.png'), grid)
  writer.write_images(step, {'samples_ema': grid[None]})


def run(config, workdir: str):
  """Body of train.train_and_evaluate."""
  mesh = sharding.create_mesh()
  batch_size = config.training.batch_size
  sharding.check_batch_size(batch_size, mesh)
  main_process = sharding.is_main_process()
  if main_process:
    os.makedirs(workdir, exist_ok=True) if not workdir.startswith('gs://') else None
  writer = metric_writers.create_default_writer(workdir, just_logging=not main_process)

  generator, discriminator = train.create_models(config)
  g_tx, d_tx = train.create_optimizers(config)
  rng = jax.random.PRNGKey(config.training.seed)
  state = jax.jit(lambda r: train.create_train_state(config, r, generator, discriminator,
                                                     g_tx, d_tx),
                  out_shardings=sharding.replicated(mesh))(rng)
  ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep)
  start_step = ckpt.latest_step()
  if start_step is not None:
    state = ckpt.restore(state, step=start_step)
    logging.info('Resuming from %s at step %d.', workdir, start_step)
    print(f'Resuming from {workdir} at step {start_step}.', flush=True)
  start_step = int(start_step or 0)
  if main_process and start_step == 0:
    writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items()})

  train_step = train.jit_train_step(
      train.make_train_step(config, generator, discriminator, g_tx, d_tx, mesh), mesh)
  sample_fn = train.sample_fn(generator)
  z_fixed = _fixed_latents(config)
  data = input_pipeline.create_dataset(config, batch_size=batch_size,
                                       seed=config.training.seed, start_step=start_step)
  num_steps = config.training.num_steps
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                           every_steps=config.logging.every_steps)
  log_every = config.logging.every_steps
  t_last, step_last = time.time(), start_step

  step = start_step
  while step < num_steps:
    batch = sharding.global_batch(next(data), mesh)
    state, metrics = train_step(state, batch)
    step += 1
    report(step)
    if step % log_every == 0 or step == num_steps:
      _check_finite(state)
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      now = time.time()
      scalars['images_per_sec'] = (step - step_last) * batch_size / (now - t_last)
      t_last, step_last = now, step
      writer.write_scalars(step, scalars)
    if config.logging.sample_every_steps and (step % config.logging.sample_every_steps == 0
                                              or step == num_steps):
      _write_grid(writer, workdir, config, sample_fn, state, z_fixed, step)
    if step % config.checkpoint.every_steps == 0 or step == num_steps:
      _check_finite(state)
      ckpt.save(step, state)
  ckpt.wait()
  ckpt.close()
  writer.flush()
  return state


def _check_finite(state) -> None:
  bad_step = int(jax.device_get(state.bad_step))
  if bad_step >= 0:
    what = ', '.join(train.describe_nonfinite(jax.device_get(state.bad_what)))
    raise NonFiniteError(f'non-finite {what} at step {bad_step}; stopping without saving '
                         f'(the last checkpoint is untouched)')


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
  return out
