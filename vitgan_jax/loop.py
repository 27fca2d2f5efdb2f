"""The training loop: data in, jitted steps, logs, sample grids, checkpoints, FID, preemption.

Everything with side effects lives here; the step itself is the pure `train.make_train_step`.
Rerunning with the same workdir resumes from the newest readable checkpoint. SIGTERM (one
host) or JAX's preemption sync point (several hosts) finishes the step, saves and returns.
Every input is checked before anything is written, so a bad one leaves the workdir as it was.
"""

import contextlib
import itertools
import json
import os
import signal
import time

import jax
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from vitgan_jax import checkpoint, curves as curves_lib, errors, health, input_pipeline, sample
from vitgan_jax import sharding, train
from vitgan_jax import workdir as workdir_lib

NonFiniteError = errors.NonFiniteError


def _say(message: str) -> None:
  """One line on stdout (main process) and in the log."""
  logging.info(message)
  if sharding.is_main_process():
    print(message, flush=True)


def _tell(message: str, announce: bool) -> None:
  """_say when announcing, else the log only."""
  if announce:
    _say(message)
  else:
    logging.info(message)


class PreemptionWatch:
  """Says when to save and stop: after SIGTERM on one host, at JAX's sync point on several.

  Hosts must all stop at the same step, so with several processes JAX's coordination service
  (which catches the SIGTERM itself) picks it; `reached(step)` is then called at every step.
  """

  def __init__(self):
    self._previous_handler = None
    self._multihost = jax.process_count() > 1
    # A SIGTERM seen before this existed (main's SignalRecorder, installed at start-up) counts;
    # with several hosts only JAX's sync point may stop one, or the others would wait forever.
    self.reason = None if self._multihost else getattr(signal.getsignal(signal.SIGTERM),
                                                       'reason', None)
    if not self._multihost:
      try:
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)
      except ValueError:  # not the main thread (e.g. a notebook worker)
        logging.warning('Not in the main thread: SIGTERM will not save a checkpoint.')

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    self.reason = signal.Signals(signum).name

  def reached(self, step: int) -> bool:
    if not self._multihost:
      return self.reason is not None
    try:
      if multihost_utils.reached_preemption_sync_point(step):
        self.reason = 'a preemption notice'
        return True
    except RuntimeError as e:  # jax_enable_preemption_service is off
      logging.warning('No preemption handling on this multi-host run: %s', e)
      self._multihost = False
    return False

  def close(self) -> None:
    if self._previous_handler is not None:
      signal.signal(signal.SIGTERM, self._previous_handler)


def _build(config, mesh):
  """Models, optimizers and the jitted step; config mistakes become one-line ConfigErrors."""
  try:
    generator, discriminator = train.create_models(config)
    g_tx, d_tx = train.create_optimizers(config)
    step_fn = train.make_train_step(config, generator, discriminator, g_tx, d_tx, mesh)
  except (ValueError, KeyError) as e:
    raise errors.ConfigError(f'config: {e}') from e
  return generator, discriminator, g_tx, d_tx, train.jit_train_step(step_fn, mesh)


def _open_data(config, batch_size: int, start_step: int, arrays):
  """The batch iterator from `start_step`, with its first batch read to surface data errors."""
  try:
    data = input_pipeline.create_dataset(config, batch_size=batch_size,
                                         seed=config.training.seed, start_step=start_step,
                                         arrays=arrays)
    first = next(data)
  except Exception as e:  # pylint: disable=broad-except
    from_tf = type(e).__module__.startswith(('tensorflow', 'tensorflow_datasets'))
    if isinstance(e, (OSError, ValueError)) or from_tf:
      raise errors.DataError(f'dataset: {" ".join(str(e).split())}') from e
    raise
  return itertools.chain([first], data)


def _make_evaluator(config, generator, mesh, arrays):
  """evaluator(state) -> {'fid': ..., ...} when eval.every_steps > 0, else None."""
  if config.eval.every_steps <= 0 and config.eval.every_seconds <= 0:
    return None
  try:
    from vitgan_jax.evaluation import train_eval  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.ConfigError(
        f'eval.every_steps={config.eval.every_steps} needs vitgan_jax.evaluation.train_eval '
        f'({e}); set --config.eval.every_steps=0 to train without FID') from e
  return train_eval.make_evaluator(config, generator, mesh, arrays=arrays)


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


def _poison(local_batch):
  """training.debug_poison_step: NaN real images, so the NaN guard and its exit can be tested."""
  return {**local_batch, 'image': local_batch['image'] * np.float32(np.nan)}


def _announce_resume(workdir, ckpt, start_step, unreadable, differences) -> None:
  for bad, why in unreadable:
    _say(f'warning: checkpoint step {bad} in {ckpt.directory} is unreadable ({why}); '
         f'falling back to step {start_step}.')
  harmless = [d for d in differences if checkpoint.is_harmless(d[0])]
  other = [d for d in differences if not checkpoint.is_harmless(d[0])]
  changes = f' Config changes: {checkpoint.describe_differences(harmless)}.' if harmless else ''
  _say(f'Resuming from {workdir} at step {start_step}.{changes}')
  if other:
    _say(f'warning: config changes that alter training since step {start_step} (allowed; '
         f'the run will differ from an uninterrupted one): '
         f'{checkpoint.describe_differences(other)}')


def run(config, workdir: str, *, arrays=None, writer=None, announce=False):
  """Body of train.train_and_evaluate; returns the final TrainState.

  `arrays` (uint8 NHWC) feeds data.source 'arrays'; `writer` (a clu MetricWriter) replaces
  the default TensorBoard + logging writer; `announce` says on stdout what the run trains on
  and sums it up at the end (train_and_evaluate, hence vitgan-train, does; else only logged).
  The workdir is locked (workdir.WorkdirLock) for the whole run.
  """
  watch = PreemptionWatch()  # first: a SIGTERM during the slow setup and compile is kept
  lock = None
  try:
    _check_before_writing(config, workdir)
    if sharding.is_main_process():
      lock = workdir_lib.WorkdirLock(workdir, config.checkpoint.get('lock_stale_hours', 24.0))
      lock.acquire(say=_say)
    return _run(config, workdir, watch, arrays=arrays, writer=writer, announce=announce)
  finally:
    watch.close()
    if lock is not None:
      lock.release()


def _check_before_writing(config, workdir: str) -> None:
  """Config values and workdir problems that would otherwise fail after files were written."""
  if config.training.batch_size < 1:
    raise errors.ConfigError(f'training.batch_size={config.training.batch_size} must be at '
                             'least 1 (and a multiple of the device count)')
  workdir_lib.check_usable(workdir)


def _run(config, workdir: str, watch, *, arrays, writer, announce):
  """Setup, restore and training of `run`, with the workdir held."""
  mesh = sharding.create_mesh()
  batch_size = config.training.batch_size
  sharding.check_batch_size(batch_size, mesh)
  generator, discriminator, g_tx, d_tx, train_step = _build(config, mesh)
  template = checkpoint.template_state(config, generator, discriminator, g_tx, d_tx, mesh)
  if sharding.is_main_process():
    partial = checkpoint.remove_partial_saves(workdir)
    if partial:
      _say(f'Removed {len(partial)} unfinished checkpoint save(s) left by an interrupted run: '
           f'{", ".join(partial)}.')
  ckpt = checkpoint.Checkpointer(workdir, keep=config.checkpoint.keep)
  try:
    # Read and check everything first; nothing is written before the run is known to go ahead.
    state, start_step, unreadable = ckpt.restore_latest(template, config)
    resumed = start_step is not None
    start_step = int(start_step or 0)
    data = _open_data(config, batch_size, start_step, arrays)
    evaluator = _make_evaluator(config, generator, mesh, arrays)
    differences = (checkpoint.config_differences(checkpoint.read_run_config(workdir), config)
                   if resumed else [])
    if resumed:
      _announce_resume(workdir, ckpt, start_step, unreadable, differences)
    if unreadable:
      steps = [s for s, _ in unreadable]
      moved_to = ckpt.move_aside(steps)
      _say(f'Moved unreadable checkpoint(s) {steps} to {moved_to}.' if moved_to
           else f'Deleted unreadable checkpoint(s) {steps} (they could not be moved aside).')
    checkpoint.write_run_config(workdir, config, start_step if resumed else None, differences)
    state = state if resumed else jax.jit(
        lambda r: train.create_train_state(config, r, generator, discriminator, g_tx, d_tx),
        out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(config.training.seed))
    _tell(f'Training on {input_pipeline.describe(config, arrays)}; global batch {batch_size}, '
          f'steps {start_step:,} -> {config.training.num_steps:,}.', announce)
    state = _train(config, workdir, state, start_step, data, train_step, generator, evaluator,
                   ckpt, watch, writer, mesh, fresh=not resumed, discriminator=discriminator,
                   announce=announce)
  finally:
    ckpt.wait()  # a pending save of a good state completes even when the run stops on an error
    ckpt.close()
  return state


def _train(config, workdir, state, start_step, data, train_step, generator, evaluator, ckpt,
           watch, writer, mesh, fresh, discriminator, announce=False):
  """The steps from start_step to training.num_steps, or until preempted."""
  main_process = sharding.is_main_process()
  writer = writer or metric_writers.create_default_writer(workdir, just_logging=not main_process)
  if main_process and fresh:
    writer.write_hparams(_flatten(config.to_dict()))
  batch_size, num_steps = config.training.batch_size, config.training.num_steps
  log_every, ckpt_every = config.logging.every_steps, config.checkpoint.every_steps
  sample_every, eval_every = config.logging.sample_every_steps, config.eval.every_steps
  poison_step = config.training.get('debug_poison_step', -1)
  sample_fn = train.sample_fn(generator)
  z_fixed = _fixed_latents(config)
  health_fn, alarm = _make_health(config, generator, discriminator)
  report = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                           every_steps=log_every)
  clock = TrainClock()
  max_seconds = config.training.max_train_seconds
  eval_every_s = config.eval.every_seconds
  next_eval_s = eval_every_s
  t_last, step_last = 0.0, start_step
  step = start_step
  wall_start, last, last_eval = time.time(), {}, {}
  curves = curves_lib.Curves(workdir, start_step, enabled=main_process)
  if step >= num_steps:
    _say(f'Nothing to do: step {step} >= training.num_steps={num_steps}.')
  if watch.reason is not None and step < num_steps:  # e.g. SIGTERM while restoring
    _say(f'Stopped by {watch.reason} before step {step}: nothing new to save; rerun the same '
         f'command to {"start" if fresh else "resume"}.')
    return state
  if evaluator is not None and eval_every_s > 0 and fresh:
    with clock.pause():  # the curve's starting point
      last_eval = _evaluate(evaluator, state, step, ckpt, writer, clock, curves, batch_size)
  while step < num_steps:
    local = next(data)
    if step == poison_step:
      local = _poison(local)
    batch = sharding.global_batch(local, mesh)
    if step == start_step:  # compiling is not training: keep it off the clock
      with clock.pause():
        state, metrics = jax.block_until_ready(train_step(state, batch))
      t_last = clock.seconds()
    else:
      state, metrics = train_step(state, batch)
    step += 1
    report(step)
    out_of_time = max_seconds > 0 and clock.seconds() >= max_seconds
    if out_of_time:
      _say(f'Reached training.max_train_seconds={max_seconds:g} at step {step}.')
      num_steps = step  # the last step: log, save and evaluate as at the end
    if watch.reached(step):
      _check_finite(state, ckpt)
      ckpt.save(step, state)
      ckpt.wait()
      _say(f'Stopped by {watch.reason} after step {step}: saved a checkpoint to '
           f'{ckpt.directory}; rerun the same command to resume.')
      break
    if step % log_every == 0 or step == num_steps:
      _check_finite(state, ckpt)
      scalars = {k: float(v) for k, v in jax.device_get(metrics).items()}
      now = clock.seconds()
      scalars['images_per_sec'] = (step - step_last) * batch_size / max(now - t_last, 1e-9)
      scalars['train_seconds'] = now
      with clock.pause():  # the diagnostics' time is not training time
        if health_fn is not None:
          scalars.update(_check_health(health_fn, alarm, state, batch, step, writer))
      t_last, step_last = now, step
      writer.write_scalars(step, scalars)
      _say(progress_line(step, num_steps, scalars))
      last = scalars
      curves.add(step, step * batch_size, scalars)
    with clock.pause():
      if sample_every and (step % sample_every == 0 or step == num_steps):
        _write_grid(writer, workdir, config, sample_fn, state, z_fixed, step)
      if step % ckpt_every == 0 or step == num_steps:
        _check_finite(state, ckpt)
        ckpt.save(step, state)
      due = (eval_every > 0 and step % eval_every == 0) or step == num_steps or (
          eval_every_s > 0 and clock.seconds() >= next_eval_s)
      if evaluator is not None and due:
        last_eval = _evaluate(evaluator, state, step, ckpt, writer, clock, curves, batch_size)
        while eval_every_s > 0 and next_eval_s <= clock.seconds():
          next_eval_s += eval_every_s
  if curves.points and not last_eval:  # without FID, the D curves are drawn once, at the end
    curves.save()
  _tell(_summary(config, workdir, ckpt, step, start_step, time.time() - wall_start,
                 clock.seconds(), last, last_eval, curves), announce)
  writer.flush()
  return state


def _summary(config, workdir, ckpt, step, start_step, wall_s, train_s, last, last_eval,
             curves) -> str:
  """The run in one paragraph: how far, how long, the last numbers, where everything is."""
  batch_size, num_steps = config.training.batch_size, config.training.num_steps
  how = 'Finished' if step >= num_steps else 'Stopped'
  losses = ', '.join(f'{k} {last[k]:.4g}' for k in ('d_loss', 'g_loss', 'd_real', 'd_fake')
                     if k in last)
  fid = f'; FID {last_eval["fid"]:.4g}' if 'fid' in last_eval else ''
  where = (f'Checkpoints: {ckpt.directory}. Samples: {os.path.join(workdir, "samples")}. '
           f'TensorBoard: tensorboard --logdir {workdir}.')
  if curves.points:
    where += f' Curves: {os.path.join(workdir, curves_lib.PNG)}.'
  return (f'{how} at step {step:,} of {num_steps:,}: {step * batch_size:,} images seen '
          f'({(step - start_step) * batch_size:,} in this run), {wall_s:.0f} s wall time '
          f'({train_s:.0f} s training). Last: {losses or "no losses logged"}{fid}. {where}')


class TrainClock:
  """Seconds spent training: wall time less compiling, evaluations, sample grids and saves."""

  def __init__(self):
    self._start = time.time()
    self._paused = 0.0

  def seconds(self) -> float:
    return time.time() - self._start - self._paused

  @contextlib.contextmanager
  def pause(self):
    began = time.time()
    try:
      yield
    finally:
      self._paused += time.time() - began


def _make_health(config, generator, discriminator):
  """(health_fn, StallAlarm), or (None, None) with logging.health off."""
  if not config.logging.health:
    return None, None
  fn = health.make_health_fn(generator, discriminator, config.model.generator.latent_dim,
                             config.logging.health_examples)
  alarm = health.StallAlarm(config.logging.stall_max_gap, config.logging.stall_max_sensitivity,
                            config.logging.stall_patience)
  return fn, alarm


def _check_health(health_fn, alarm, state, batch, step, writer):
  """The diagnostics as scalars 'health/...'; a warning line (and event) if D went blind."""
  rng = jax.random.fold_in(jax.random.PRNGKey(0), step)
  began = time.perf_counter()
  values = {k: float(v) for k, v in jax.device_get(health_fn(state, batch['image'], rng)).items()}
  seconds = time.perf_counter() - began
  warning = alarm.update(step, values)
  if warning:
    _say(warning)
    writer.write_texts(step, {'stall_alarm': warning})
  scalars = {f'health/{k}': v for k, v in values.items()}
  scalars.update({f'health/{k}': v for k, v in health.summary(values).items()})
  scalars['health/stalled'] = float(bool(warning) or alarm.fired)
  scalars['health/seconds'] = seconds  # the diagnostics' own cost (the first call compiles)
  return scalars


def progress_line(step: int, num_steps: int, scalars) -> str:
  """One stdout line per logging interval: losses, D's outputs and health, speed."""
  get = lambda key: scalars.get(key, float('nan'))  # noqa: E731
  parts = [f'step {step}/{num_steps}', f'd_loss {get("d_loss"):.3f}',
           f'g_loss {get("g_loss"):.3f}', f'D(real) {get("d_real"):+.3f}',
           f'D(fake) {get("d_fake"):+.3f}']
  if 'health/d_gap' in scalars:
    parts += [f'gap {get("health/d_gap"):+.3f}', f'|dD/dx| {get("health/d_sensitivity"):.3f}']
  if 'bcr_real' in scalars:
    parts += [f'bcr {get("bcr_real"):.2e}/{get("bcr_fake"):.2e}']
  parts += [f'|grad D| {get("d_grad_norm"):.2e}', f'|grad G| {get("g_grad_norm"):.2e}',
            f'{get("images_per_sec"):.0f} img/s']
  return ' | '.join(parts)


def _evaluate(evaluator, state, step, ckpt, writer, clock, curves=None, batch_size=0) -> dict:
  """Runs the evaluator, logs its scalars, keeps the state in checkpoints_best on a new best FID.

  Returns the scalars; redraws workdir/curves.png when given `curves`.
  """
  _check_finite(state, ckpt)
  trained = clock.seconds()  # before the evaluation, whose time is off the clock
  result = evaluator(state)
  scalars = {k: float(v) for k, v in result.items() if np.ndim(v) == 0}
  writer.write_scalars(step, {**scalars, 'train_seconds': trained})
  _say(f'step {step}: ' + ', '.join(f'{k} {v:.4g}' for k, v in scalars.items()))
  if 'fid' in result and ckpt.save_best(step, state, result['fid']):
    _say(f'New best FID {float(result["fid"]):.3f} at step {step}: kept in checkpoints_best.')
  if curves is not None:
    curves.add(step, step * batch_size, scalars)
    curves.save()
  return scalars


def _check_finite(state, ckpt) -> None:
  bad_step = int(jax.device_get(state.bad_step))
  if bad_step >= 0:
    what = ', '.join(train.describe_nonfinite(jax.device_get(state.bad_what)))
    last = ckpt.latest_step()
    kept = (f'the last checkpoint (step {last}) is untouched' if last is not None
            else 'no checkpoint was written')
    raise NonFiniteError(f'non-finite {what} at step {bad_step}; stopped without saving, '
                         f'{kept}')


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
  return out
