"""The training loop, `train_and_evaluate`: data in, jitted steps, logs, grids, checkpoints, FID.

Everything with side effects lives here; the step itself is the pure `train.make_train_step`,
the networks and optimizers the `GAN` value.
Rerunning with the same workdir resumes from the newest readable checkpoint. SIGTERM (one
host) or JAX's preemption sync point (several hosts) finishes the step, saves and returns.
Every input is checked before anything is written, so a bad one leaves the workdir as it was.
"""

import contextlib
import dataclasses
import itertools
import json
import os
import signal
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from vitgan_jax import checkpoint, curves as curves_lib, errors, health, images, input_pipeline
from vitgan_jax import run_record, sharding, train
from vitgan_jax import workdir as workdir_lib
from vitgan_jax.evaluation import train_eval
from vitgan_jax.evaluation.features import say as _say  # one line on stdout, process 0
from vitgan_jax.gan import GAN

NonFiniteError = errors.NonFiniteError


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


def _build(config, gan: GAN, mesh):
  """The jitted step; config mistakes become one-line ConfigErrors."""
  try:
    step_fn = train.make_train_step(config, gan, mesh)
  except (ValueError, KeyError) as e:
    raise errors.ConfigError(f'config: {e}') from e
  return train.jit_train_step(step_fn, mesh, state_shardings=gan.state_shardings(mesh))


def _open_data(config, data: input_pipeline.Data, start_step: int):
  """The batch iterator from `start_step`, with its first batch read to surface data errors."""
  try:
    batches = data.batches(batch_size=config.training.batch_size, seed=config.training.seed,
                           start_step=start_step)
    first = next(batches)
  except Exception as e:  # pylint: disable=broad-except
    from_tf = type(e).__module__.startswith(('tensorflow', 'tensorflow_datasets'))
    if isinstance(e, (OSError, ValueError)) or from_tf:
      raise errors.DataError(f'dataset: {" ".join(str(e).split())}') from e
    raise
  return itertools.chain([first], batches)


def _make_evaluator(config, gan: GAN, mesh, data, reference):
  """evaluator(state) -> {'fid': ..., ...} when eval.every_steps/every_seconds > 0, else None."""
  if config.eval.every_steps <= 0 and config.eval.every_seconds <= 0:
    return None
  return train_eval.make_evaluator(config, gan, mesh, data=data, reference=reference)


def fixed_latents(config, gan: GAN) -> jax.Array:
  """The z of every sample grid of a run: logging.sample_grid**2 latents from seed + 1."""
  return gan.latents(jax.random.PRNGKey(config.training.seed + 1), config.logging.sample_grid ** 2)


def _write_grid(writer, workdir, config, sample, state, z, step) -> None:
  """An n x n grid of EMA samples from the fixed z: PNG in workdir/samples and TensorBoard."""
  grid = images.image_grid(np.asarray(jax.device_get(sample(state, z))),
                           config.logging.sample_grid)
  if sharding.is_main_process():
    images.save_png(os.path.join(workdir, 'samples', f'step_{step:08d}.png'), grid)
  writer.write_images(step, {'samples_ema': grid[None]})


def _poison(local_batch):
  """training.debug_poison_step: NaN real images, so the NaN guard and its exit can be tested."""
  return {**local_batch, 'image': local_batch['image'] * np.float32(np.nan)}


def _announce_resume(workdir, ckpt, start_step, unreadable, differences) -> None:
  for bad, why in unreadable:
    _say(f'warning: checkpoint step {bad} in {ckpt.directory} is unreadable ({why}); '
         f'falling back to step {start_step}.')
  harmless = [d for d in differences if run_record.is_harmless(d[0])]
  other = [d for d in differences if not run_record.is_harmless(d[0])]
  changes = f' Config changes: {run_record.describe_differences(harmless)}.' if harmless else ''
  _say(f'Resuming from {workdir} at step {start_step}.{changes}')
  if other:
    _say(f'warning: config changes that alter training since step {start_step} (allowed; '
         f'the run will differ from an uninterrupted one): '
         f'{run_record.describe_differences(other)}')


def train_and_evaluate(config, workdir: str, gan: GAN = None, *, data=None, reference=None,
                       writer=None, announce: bool = False):
  """Trains per `config` from scratch or from the latest checkpoint in `workdir`; the final state.

  `gan` defaults to GAN.from_config(config); `data` (an input_pipeline.Data) to the images
  config.data names; `reference` (evaluation Stats of the training images, for FID) to the
  cached statistics of `data`. `writer` (a clu MetricWriter) replaces the TensorBoard +
  logging writer; `announce` says on stdout what the run trains on and sums it up at the end
  (vitgan-train does; else only logged). The workdir is locked (workdir.WorkdirLock) for the
  whole run. Writes TensorBoard events + stdout lines (losses, D outputs, regularizers, grad
  norms, lrs, images/s), sample grids from a fixed z, checkpoints, and FID when enabled.
  """
  watch = PreemptionWatch()  # first: a SIGTERM during the slow setup and compile is kept
  lock = None
  try:
    _check_before_writing(config, workdir)
    gan = gan if gan is not None else GAN.from_config(config)
    data = data if data is not None else input_pipeline.Data(config)
    if sharding.is_main_process():
      lock = workdir_lib.WorkdirLock(workdir, config.checkpoint.get('lock_stale_hours', 24.0))
      lock.acquire(say=_say)
    return _run(config, workdir, gan, data, reference, watch, writer=writer, announce=announce)
  finally:
    watch.close()
    if lock is not None:
      lock.release()


def _check_before_writing(config, workdir: str) -> None:
  """Config values and workdir problems that would otherwise fail after files were written."""
  sharding.check_batch_size(config.training.batch_size, sharding.create_mesh())
  workdir_lib.check_usable(workdir)


def _run(config, workdir: str, gan: GAN, data, reference, watch, *, writer, announce):
  """Setup, restore and training of `train_and_evaluate`, with the workdir held."""
  mesh = sharding.create_mesh()
  batch_size = config.training.batch_size
  train_step = _build(config, gan, mesh)
  template = gan.abstract_state(mesh)
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
    batches = _open_data(config, data, start_step)
    evaluator = _make_evaluator(config, gan, mesh, data, reference)
    differences = (run_record.config_differences(run_record.read(workdir), config)
                   if resumed else [])
    if resumed:
      _announce_resume(workdir, ckpt, start_step, unreadable, differences)
    if unreadable:
      steps = [s for s, _ in unreadable]
      moved_to = ckpt.move_aside(steps)
      _say(f'Moved unreadable checkpoint(s) {steps} to {moved_to}.' if moved_to
           else f'Deleted unreadable checkpoint(s) {steps} (they could not be moved aside).')
    run_record.write(workdir, config, start_step if resumed else None, differences)
    state = state if resumed else gan.init_on(mesh, config.training.seed)
    _tell(f'Training on {data.describe()}; global batch {batch_size}, '
          f'steps {start_step:,} -> {config.training.num_steps:,}.', announce)
    run = _Run(config=config, workdir=workdir, gan=gan, mesh=mesh, step_fn=train_step,
               evaluator=evaluator, ckpt=ckpt, watch=watch, writer=writer, announce=announce)
    state = _train(run, state, start_step, batches, fresh=not resumed)
  finally:
    ckpt.wait()  # a pending save of a good state completes even when the run stops on an error
    ckpt.close()
  return state


@dataclasses.dataclass
class _Run:
  """What the steps of one run share, set up by `_run`."""
  config: Any
  workdir: str
  gan: GAN
  mesh: Any
  step_fn: Callable
  evaluator: Optional[Callable]
  ckpt: checkpoint.Checkpointer
  watch: PreemptionWatch
  writer: Any
  announce: bool


def _hparams(config) -> dict:
  """The config as TensorBoard hparams: dotted keys, scalars as they are, the rest as JSON."""
  return {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
          for k, v in run_record.flatten(config.to_dict()).items()}


def _train(run: _Run, state, start_step, data, fresh):
  """The steps from start_step to training.num_steps, or until preempted."""
  config, workdir, evaluator, ckpt, watch = (run.config, run.workdir, run.evaluator, run.ckpt,
                                             run.watch)
  train_step, mesh, announce = run.step_fn, run.mesh, run.announce
  main_process = sharding.is_main_process()
  writer = run.writer or default_writer(workdir)
  if main_process and fresh:
    writer.write_hparams(_hparams(config))
  batch_size, num_steps = config.training.batch_size, config.training.num_steps
  log_every, ckpt_every = config.logging.every_steps, config.checkpoint.every_steps
  sample_every, eval_every = config.logging.sample_every_steps, config.eval.every_steps
  poison_step = config.training.get('debug_poison_step', -1)
  sample = run.gan.sampler()
  z_fixed = fixed_latents(config, run.gan)
  health_fn, alarm = _make_health(config, run.gan)
  report = ReportProgress(writer, log_every)
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
      if max_seconds > 0 and step < num_steps and clock.seconds() >= max_seconds:
        # Out of time only now (the log line's device sync ran the clock on): end at this step
        # rather than evaluate here on the clock and again at the next, final one.
        _say(f'Reached training.max_train_seconds={max_seconds:g} at step {step}.')
        num_steps = step
      if sample_every and (step % sample_every == 0 or step == num_steps):
        _write_grid(writer, workdir, config, sample, state, z_fixed, step)
      if step % ckpt_every == 0 or step == num_steps:
        _check_finite(state, ckpt)
        ckpt.save(step, state)
      due = (eval_every > 0 and step % eval_every == 0) or step == num_steps or (
          eval_every_s > 0 and clock.seconds() >= next_eval_s)
      if evaluator is not None and due:
        if step == num_steps:  # an evaluation can outlast a short run: say why it goes on
          _say(f'Trained {step:,} of {num_steps:,} steps; the run ends with an evaluation '
               f'(eval.num_samples={config.eval.num_samples:,}) ...')
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


def default_writer(workdir: str):
  """clu's TensorBoard + logging writer (events from the main process only).

  clu (hence TensorFlow) is imported here, not with the module: a caller that brings its own
  writer (a notebook, bench/learning_curve.py) trains without either installed.
  """
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  return metric_writers.create_default_writer(workdir,
                                              just_logging=not sharding.is_main_process())


class ReportProgress:
  """Writes 'steps_per_sec' and 'uptime' every `every_steps` steps (as clu's ReportProgress)."""

  def __init__(self, writer, every_steps: int):
    self._writer, self._every = writer, every_steps
    self._start = time.time()
    self._last = None  # (time, step) of the last report, or of the first step seen

  def __call__(self, step: int) -> None:
    now = time.time()
    if self._last is None:
      self._last = (now, step)
      return
    if step % self._every == 0:
      seconds, steps = now - self._last[0], step - self._last[1]
      self._writer.write_scalars(step, {'steps_per_sec': steps / max(seconds, 1e-9),
                                        'uptime': now - self._start})
      self._last = (now, step)


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


def _make_health(config, gan: GAN):
  """(health_fn, StallAlarm), or (None, None) with logging.health off."""
  if not config.logging.health:
    return None, None
  fn = health.make_health_fn(gan.generator, gan.discriminator, gan.latent_dim,
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
  if 'augment_p' in scalars:
    parts += [f'ada p {get("augment_p"):.3f} (r {get("ada_r"):+.2f})']
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
