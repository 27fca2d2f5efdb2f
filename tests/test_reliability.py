"""Faults and bad input in the training loop (vitgan_jax/trainer.py, main.py): each one survived or
reported in one line, with nothing overwritten.

Resume is checked bit for bit against an uninterrupted run (1 and 8 CPU devices), SIGTERM
against a real `python -m vitgan_jax.main` process. Every run trains the same tiny model, so
its step compiles once: JAX's persistent compilation cache (shared with the subprocesses)
holds it across runs and processes.
"""

import contextlib
import errno
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import types

import flax
import jax
import numpy as np
import pytest

from tests.helpers import REPO_ROOT, TESTS_DIR, RecordingWriter, cli_overrides
from tests.helpers import tiny_run_config as tiny_config
from vitgan_jax import checkpoint, errors, input_pipeline, main, trainer
from vitgan_jax.gan import GAN

# Orbax leaves the coroutines of a failed read to the garbage collector: harmless, noisy.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')

COMPILE_CACHE = os.environ.get(
    'VITGAN_TEST_COMPILE_CACHE',
    os.path.join(tempfile.gettempdir(), 'vitgan_jax_test_compile_cache'))
SUBPROCESS_TIMEOUT_S = 600
# Config parts that never reach the jitted step (see share_jitted_steps).
LOOP_ONLY_CONFIG = ('logging', 'eval', 'checkpoint', 'data')
# Cheap CPU code generation: compiling for 8 devices dominates that subprocess.
FAST_COMPILE_XLA_FLAGS = ('--xla_backend_optimization_level=0 '
                          '--xla_llvm_disable_expensive_passes=true')
FIDS = {2: 5.0, 4: 3.0, 6: 4.0}  # what the fake evaluator reports at each step
EVAL_METRICS = ('fid', 'inception_score')


def images(num_images=40, size=16, channels=3):
  """40 random images: 5 batches of 8, so 6 steps cross an epoch boundary."""
  return np.random.default_rng(0).integers(0, 256, (num_images, size, size, channels), np.uint8)


def enable_compile_cache():
  """Persistent compilation cache in COMPILE_CACHE; returns a function that undoes it."""
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  names = ('jax_compilation_cache_dir', 'jax_persistent_cache_min_compile_time_secs',
           'jax_persistent_cache_min_entry_size_bytes')
  previous = {name: getattr(jax.config, name) for name in names}
  for name, value in zip(names, (COMPILE_CACHE, 0, 0)):
    jax.config.update(name, value)
  compilation_cache.reset_cache()

  def undo():
    for name, value in previous.items():
      jax.config.update(name, value)
    compilation_cache.reset_cache()
  return undo


def share_jitted_steps(patch):
  """Runs of one model in one process reuse one jitted step, as a long-lived process would.

  Tracing the step costs more than these few steps; the loop itself runs unchanged.
  """
  build, built = trainer._build, {}  # pylint: disable=protected-access

  def shared_build(config, gan, mesh):
    parts = {k: v for k, v in config.to_dict().items() if k not in LOOP_ONLY_CONFIG}
    parts['training'] = {k: v for k, v in parts['training'].items()
                         if k not in ('num_steps', 'debug_poison_step')}
    key = (json.dumps(parts, sort_keys=True, default=str), tuple(d.id for d in mesh.devices.flat))
    if key not in built:
      built[key] = build(config, gan, mesh)
    return built[key]

  patch.setattr(trainer, '_build', shared_build)


def subprocess_env(**extra):
  return dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=COMPILE_CACHE,
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0', **extra)


def run(config, workdir, arrays=None, writer=None):
  """train_and_evaluate with stdout captured: (state as numpy state dict, writer, stdout)."""
  writer = writer or RecordingWriter()
  out = io.StringIO()
  data = input_pipeline.Data(config, images() if arrays is None else arrays)
  with contextlib.redirect_stdout(out):
    state = trainer.train_and_evaluate(config, str(workdir), data=data, writer=writer)
  return jax.device_get(flax.serialization.to_state_dict(state)), writer, out.getvalue()


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def snapshot(root):
  """{relative path: sha256} of every file under root."""
  root = pathlib.Path(root)
  return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file()}


def restore_latest(config, workdir):
  template = GAN.from_config(config).abstract_state()
  ckpt = checkpoint.Checkpointer(str(workdir))
  state, step, unreadable = ckpt.restore_latest(template, config)
  ckpt.close()
  return jax.device_get(flax.serialization.to_state_dict(state)), step, unreadable


def fake_train_eval(calls):
  """Stand-in for vitgan_jax.evaluation.train_eval: FIDS by step, recording each call."""
  module = types.ModuleType('vitgan_jax.evaluation.train_eval')

  def make_evaluator(config, gan, mesh, **unused):  # pylint: disable=unused-argument
    def evaluator(state):
      step = int(state.step)
      calls.append((step, jax.device_get(flax.serialization.to_state_dict(state))))
      return {'fid': FIDS[step], 'inception_score': 1.0}
    return evaluator

  module.make_evaluator = make_evaluator
  return module


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Shared runs: 6 steps straight (with FID every 2 steps); 3 steps, a copy, resumed to 6."""
  undo_cache = enable_compile_cache()
  root = tmp_path_factory.mktemp('runs')
  r = types.SimpleNamespace(root=root, eval_calls=[])
  with pytest.MonkeyPatch.context() as patch:
    share_jitted_steps(patch)
    with pytest.MonkeyPatch.context() as eval_patch:
      module = fake_train_eval(r.eval_calls)
      eval_patch.setattr(trainer, 'train_eval', module)
      r.straight, r.straight_writer, _ = run(tiny_config(**{'eval.every_steps': 2}),
                                             root / 'straight')
    r.first, r.first_writer, _ = run(tiny_config(**{'training.num_steps': 3}),
                                     root / 'interrupted')
    shutil.copytree(root / 'interrupted', root / 'at_step_3')
    r.resumed, r.resumed_writer, r.resumed_out = run(tiny_config(), root / 'interrupted')
    yield r
  undo_cache()


def copy_of(runs, name, tmp_path):
  shutil.copytree(runs.root / name, tmp_path / name)
  return tmp_path / name


def test_interrupted_and_resumed_equals_uninterrupted(runs):
  assert_trees_equal(runs.resumed, runs.straight)
  assert runs.resumed['step'] == 6 and runs.first['step'] == 3
  losses = {**runs.first_writer.losses(), **runs.resumed_writer.losses()}
  assert sorted(losses) == [1, 2, 3, 4, 5, 6]
  assert losses == runs.straight_writer.losses()  # every loss, every step, bit for bit
  assert np.isfinite(losses[6]['d_loss']) and 'g_loss' in losses[6]
  workdir = runs.root / 'interrupted'
  progress = [line for line in runs.resumed_out.splitlines() if line.startswith('step ')]
  assert [line.split(' | ')[0] for line in progress] == ['step 4/6', 'step 5/6', 'step 6/6']
  assert [line for line in runs.resumed_out.splitlines() if line not in progress] == [
      f'Resuming from {workdir} at step 3. Config changes: training.num_steps 3 -> 6.']
  record = json.loads((workdir / 'config.json').read_text())
  assert record['config']['training']['num_steps'] == 6
  assert [(r['step'], r['changed']) for r in record['resumes']] == [
      (3, {'training.num_steps': [3, 6]})]


def test_fid_hook_logs_scalars_and_keeps_best(runs):
  assert [step for step, _ in runs.eval_calls] == [2, 4, 6]  # every 2 steps and at the end
  assert {s: runs.straight_writer.scalars[s]['fid'] for s in FIDS} == FIDS
  workdir = runs.root / 'straight'
  assert os.listdir(workdir / 'checkpoints_best') == ['4']  # FID 3.0 beat 5.0; 4.0 did not
  config = tiny_config()
  template = GAN.from_config(config).abstract_state()
  ckpt = checkpoint.Checkpointer(str(workdir))
  assert ckpt.best_fid() == 3.0 and ckpt.all_steps() == [3, 6]
  best = ckpt.restore(template, best=True)
  ckpt.close()
  assert_trees_equal(jax.device_get(flax.serialization.to_state_dict(best)),
                     dict(runs.eval_calls)[4])  # the very state the evaluator scored


def test_truncated_checkpoint_falls_back_to_previous_step(runs, tmp_path, caplog, capfd):
  workdir = copy_of(runs, 'interrupted', tmp_path)
  # Every OCDBT data file cut mid-file: which one holds a given array varies between machines.
  for victim in (workdir / 'checkpoints' / '6' / 'default' / 'ocdbt.process_0' / 'd').iterdir():
    with open(victim, 'r+b') as f:
      f.truncate(victim.stat().st_size // 2)
  state, _, out = run(tiny_config(), workdir)
  lines = out.splitlines()
  assert re.fullmatch(rf'warning: checkpoint step 6 in {workdir}/checkpoints is unreadable '
                      r'\(.+\); falling back to step 3\.', lines[0]), lines[0]
  assert lines[1] == f'Resuming from {workdir} at step 3.'
  assert lines[2] == f'Moved unreadable checkpoint(s) [6] to {workdir}/checkpoints_unreadable.'
  assert_trees_equal(state, runs.straight)  # steps 4-6 redone from step 3: the same state
  assert (workdir / 'checkpoints_unreadable' / '6').is_dir()
  assert restore_latest(tiny_config(), workdir)[1:] == (6, [])
  # Only the warning line: no TensorStore spec dumps, no tracebacks of the failed reads.
  assert not [r for r in caplog.records if 'TensorStore' in r.getMessage()]
  err = capfd.readouterr().err
  assert 'Traceback' not in err and 'Event loop is closed' not in err, err[-3000:]


def test_nan_stops_with_message_and_leaves_last_checkpoint(runs, tmp_path):
  workdir = copy_of(runs, 'at_step_3', tmp_path)
  before = snapshot(workdir / 'checkpoints')
  with pytest.raises(errors.NonFiniteError) as info:
    run(tiny_config(**{'training.debug_poison_step': 3}), workdir)
  assert re.fullmatch(r'non-finite d_loss, .*d_grads.* at step 3; stopped without saving, the '
                      r'last checkpoint \(step 3\) is untouched', str(info.value)), info.value
  assert snapshot(workdir / 'checkpoints') == before
  state, step, unreadable = restore_latest(tiny_config(), workdir)
  assert (step, unreadable) == (3, [])
  assert_trees_equal(state, runs.first)


def test_checkpoint_of_another_model_is_refused(runs, tmp_path):
  workdir = copy_of(runs, 'at_step_3', tmp_path)
  before = snapshot(workdir)
  config = tiny_config(**{'model.generator.width': 32, 'model.discriminator.width': 32,
                          'logging.every_steps': 2})
  with pytest.raises(errors.IncompatibleCheckpointError) as info:
    run(config, workdir)
  message = str(info.value)
  assert message.startswith(f'--workdir {workdir} holds a checkpoint (step 3) of a different '
                            'model; config keys that differ from its config.json: '
                            'model.discriminator.width 16 -> 32, model.generator.width 16 -> 32;'
                            ' arrays that differ: ')
  assert 'logging.every_steps' not in message and '\n' not in message
  assert snapshot(workdir) == before


def test_missing_dataset_is_reported_before_anything_is_written(runs, tmp_path):
  missing = tmp_path / 'no_such.npz'
  config = tiny_config(**{'data.source': 'npz', 'data.path': str(missing)})
  fresh = tmp_path / 'fresh'
  with pytest.raises(errors.DataError, match=re.escape(f"dataset: No such .npz file: "
                                                       f"'{missing}' (config.data.path).")):
    run(config, fresh)
  assert not fresh.exists()
  workdir = copy_of(runs, 'at_step_3', tmp_path)
  before = snapshot(workdir)
  with pytest.raises(errors.DataError, match='No such .npz file'):
    run(config, workdir)
  assert snapshot(workdir) == before


@pytest.mark.parametrize('shape', [(40, 8, 8, 3), (40, 16, 16, 1), (40, 16, 16, 4)])
def test_images_of_wrong_size_or_channels_are_refused(runs, tmp_path, shape):
  workdir = copy_of(runs, 'at_step_3', tmp_path)
  before = snapshot(workdir)
  wrong = np.zeros(shape, np.uint8)
  with pytest.raises(errors.DataError, match=re.escape(
      f'dataset: Expected images of shape (N, 16, 16, 3) from model.image_size/channels, '
      f'found {shape}.')):
    run(tiny_config(), workdir, arrays=wrong)
  assert snapshot(workdir) == before


def test_main_reports_known_errors_in_one_line(capsys):
  def fails(error):
    def fn():
      raise error
    return fn

  for error in [errors.DataError('dataset: gone\n(twice)'), errors.NonFiniteError('nan'),
                errors.ConfigError('bad'), errors.IncompatibleCheckpointError('other model')]:
    with pytest.raises(SystemExit) as info:
      main.report_errors(fails(error))
    assert info.value.code == 1
    assert capsys.readouterr().err == f'error: {" ".join(str(error).split())}\n'
  with pytest.raises(RuntimeError, match='a bug'):  # anything else keeps its traceback
    main.report_errors(fails(RuntimeError('a bug')))


def test_unknown_config_key_on_the_command_line(tmp_path):
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-m', 'vitgan_jax.main',
       '--config', os.path.join(REPO_ROOT, 'configs', 'smoke.py'),
       f'--workdir={workdir}', '--config.training.num_step=5'],
      cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.splitlines()[-1] == (
      'error: unknown config key training.num_step in --config.training.num_step; training '
      'has: batch_size, debug_poison_step, dtype, ema_kimg, ema_rampup, max_train_seconds, '
      'n_critic, nan_guard, num_steps, seed, shard_optimizer')
  assert 'Traceback' not in result.stderr and not workdir.exists()


def test_sigterm_saves_a_resumable_checkpoint_and_exits_zero(runs, tmp_path):  # pylint: disable=unused-argument
  npz = tmp_path / 'images.npz'
  np.savez(npz, x=images())
  workdir, log_path = tmp_path / 'run', tmp_path / 'run.log'
  command = [sys.executable, '-m', 'vitgan_jax.main',
             '--config', os.path.join(REPO_ROOT, 'configs', 'smoke.py'), f'--workdir={workdir}',
             *cli_overrides(**{'training.num_steps': 100_000, 'checkpoint.every_steps': 2,
                               'logging.every_steps': 1000}),
             '--config.data.source=npz', f'--config.data.path={npz}']
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(), stdout=log,
                               stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + SUBPROCESS_TIMEOUT_S
      while not (workdir / 'checkpoints' / '2').exists():  # training is under way
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.time() < deadline, 'no checkpoint in time'
        time.sleep(0.2)
      process.send_signal(signal.SIGTERM)
      returncode = process.wait(timeout=120)
    finally:
      if process.poll() is None:
        process.kill()
  output = log_path.read_text()
  assert returncode == 0, output[-3000:]
  stopped = re.search(r'Stopped by SIGTERM after step (\d+): saved a checkpoint to (\S+); '
                      r'rerun the same command to resume\.', output)
  assert stopped, output[-3000:]
  step = int(stopped.group(1))
  assert stopped.group(2) == str(workdir / 'checkpoints') and step >= 2
  config = tiny_config(**{'training.num_steps': 100_000})
  state, restored_step, unreadable = restore_latest(config, workdir)
  assert (restored_step, unreadable) == (step, [])
  assert state['step'] == step and state['bad_step'] == -1
  assert json.loads((workdir / 'config.json').read_text())['config']['data']['path'] == str(npz)


def eight_device_runs(root):
  """Body of the 8-device test (a subprocess): straight vs. interrupted+resumed, bad batch."""
  assert jax.device_count() == 8
  enable_compile_cache()
  share_jitted_steps(pytest.MonkeyPatch())
  root = pathlib.Path(root)
  straight, straight_writer, _ = run(tiny_config(), root / 'straight')
  first, first_writer, _ = run(tiny_config(**{'training.num_steps': 3}), root / 'interrupted')
  config = tiny_config()
  template = GAN.from_config(config).abstract_state()
  ckpt = checkpoint.Checkpointer(str(root / 'interrupted'))
  restored = ckpt.restore(template)
  ckpt.close()
  resumed, resumed_writer, _ = run(config, root / 'interrupted')
  try:
    run(tiny_config(**{'training.batch_size': 12}), root / 'bad_batch')
    batch_error = None
  except errors.ConfigError as e:
    batch_error = str(e)
  try:
    assert_trees_equal(resumed, straight)
    states_equal = True
  except AssertionError:
    states_equal = False
  losses = {**first_writer.losses(), **resumed_writer.losses()}
  return {'states_equal': states_equal, 'first_step': int(first['step']),
          'losses_equal': losses == straight_writer.losses(), 'num_losses': len(losses),
          'restored_on_devices': len(jax.tree.leaves(restored.g_params)[0].sharding.device_set),
          'batch_error': batch_error, 'bad_batch_workdir': (root / 'bad_batch').exists()}


def test_resume_on_eight_devices_equals_uninterrupted(tmp_path):
  code = (f'import sys, json; sys.path[:0] = [{str(REPO_ROOT)!r}, {str(TESTS_DIR)!r}]\n'
          'import test_reliability as t\n'
          f'print("RESULT " + json.dumps(t.eight_device_runs({str(tmp_path)!r})))\n')
  result = subprocess.run(
      [sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True, text=True,
      timeout=SUBPROCESS_TIMEOUT_S,
      env=subprocess_env(XLA_FLAGS='--xla_force_host_platform_device_count=8 '
                         + FAST_COMPILE_XLA_FLAGS))
  lines = [l for l in result.stdout.splitlines() if l.startswith('RESULT ')]
  assert result.returncode == 0 and lines, result.stderr[-3000:]
  outcome = json.loads(lines[-1][len('RESULT '):])
  assert outcome == {
      'states_equal': True, 'first_step': 3, 'losses_equal': True, 'num_losses': 6,
      'restored_on_devices': 8,
      'batch_error': 'training.batch_size=12 does not divide over 8 devices (1 processes); use '
                     'a multiple of 8, e.g. --config.training.batch_size=8',
      'bad_batch_workdir': False}


# ----- one-line errors with nothing left behind (README 'Resuming and preemption') -----


def test_zero_batch_size_is_refused_before_anything_is_written(tmp_path):
  fresh = tmp_path / 'fresh'
  with pytest.raises(errors.ConfigError, match=r'^training\.batch_size=0 must be at least 1'):
    run(tiny_config(**{'training.batch_size': 0}), fresh)
  assert not fresh.exists()


def test_workdir_that_is_a_file_or_read_only_is_refused(tmp_path, monkeypatch):
  a_file = tmp_path / 'a_file'
  a_file.write_text('not a folder')
  with pytest.raises(errors.WorkdirError, match=rf'^--workdir {a_file} is a file, not a folder'):
    run(tiny_config(), a_file)
  assert a_file.read_text() == 'not a folder'

  real_open = os.open

  def read_only_open(path, flags, *args):  # what a read-only mount answers (root ignores chmod)
    if flags & os.O_CREAT:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
    return real_open(path, flags, *args)

  monkeypatch.setattr(os, 'open', read_only_open)
  with pytest.raises(errors.WorkdirError, match=rf'^--workdir {tmp_path}/run is not writable '
                     rf'\({tmp_path}: Read-only file system\); pass a writable folder$'):
    run(tiny_config(), tmp_path / 'run')
  assert sorted(os.listdir(tmp_path)) == ['a_file']


@pytest.mark.parametrize('arrays,message', [
    ({'x': np.zeros((0, 16, 16, 3), np.uint8)}, 'The dataset has no images'),
    ({'y': np.zeros(3)}, 'has no array "x"'),
])
def test_empty_npz_is_refused_before_anything_is_written(tmp_path, arrays, message):
  npz = tmp_path / 'data.npz'
  np.savez(npz, **arrays)
  fresh = tmp_path / 'fresh'
  with pytest.raises(errors.DataError, match=re.escape(message)):
    run(tiny_config(**{'data.source': 'npz', 'data.path': str(npz)}), fresh)
  assert not fresh.exists()


def test_zero_samples_is_refused_before_restoring(tmp_path):
  from vitgan_jax import inference  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.ConfigError, match=r'^--num_samples 0: need at least 1 sample$'):
    inference.sample_mode(tiny_config(), str(tmp_path / 'nothing'), num_samples=0)
  assert not (tmp_path / 'nothing').exists()


def test_full_disk_during_a_save_keeps_the_previous_checkpoint(runs, tmp_path, monkeypatch,
                                                                capsys):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  workdir = copy_of(runs, 'at_step_3', tmp_path)
  before = snapshot(workdir / 'checkpoints' / '3')

  save = ocp.StandardCheckpointHandler.async_save

  class DiskFull:
    """The write's future: the arrays are partly written when the disk fills up."""

    def __init__(self, futures):
      self.futures = futures or []

    def result(self, timeout=None):
      for written in self.futures:
        written.result(timeout)
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  async def disk_full(self, *args, **kwargs):
    return [DiskFull(await save(self, *args, **kwargs))]

  with monkeypatch.context() as patch:
    patch.setattr(ocp.StandardCheckpointHandler, 'async_save', disk_full)
    with pytest.raises(SystemExit) as info:
      main.report_errors(lambda: run(tiny_config(), workdir))
  assert info.value.code == 1
  err = capsys.readouterr().err
  assert err == (f'error: cannot save checkpoint step 6 in {workdir} (No space left on device); '
                 'the previous checkpoint (step 3) is intact. Free space (or fix permissions) '
                 'and rerun the same command to resume\n'), err
  assert snapshot(workdir / 'checkpoints' / '3') == before
  assert not (workdir / 'train.lock').exists()
  partial = sorted(str(p) for p in (workdir / 'checkpoints').glob('*.orbax-checkpoint-tmp*'))
  # The next run removes the unfinished save, says so, and resumes from step 3.
  state, _, out = run(tiny_config(), workdir)
  lines = out.splitlines()
  if partial:
    assert lines[0] == (f'Removed {len(partial)} unfinished checkpoint save(s) left by an '
                        f'interrupted run: {", ".join(partial)}.')
    lines = lines[1:]
  assert lines[0].startswith(f'Resuming from {workdir} at step 3.')
  assert_trees_equal(state, runs.straight)
  assert not list((workdir / 'checkpoints').glob('*.orbax-checkpoint-tmp*'))


def test_stale_orbax_temporaries_are_removed_on_resume(runs, tmp_path):
  workdir = copy_of(runs, 'at_step_3', tmp_path)
  stale = workdir / 'checkpoints' / '6.orbax-checkpoint-tmp-1764680000000000'
  shutil.copytree(workdir / 'checkpoints' / '3', stale)
  _, _, out = run(tiny_config(), workdir)
  assert out.splitlines()[0] == ('Removed 1 unfinished checkpoint save(s) left by an interrupted '
                                 f'run: {stale}.')
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['3', '6']


def test_disk_errors_outside_checkpoints_are_one_line(capsys):
  def write_events():
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), '/w/events.out.tfevents.1')

  with pytest.raises(SystemExit) as info:
    main.report_errors(write_events)
  assert info.value.code == 1
  assert capsys.readouterr().err == ('error: No space left on device: /w/events.out.tfevents.1; '
                                     'free space or fix permissions and rerun the same command\n')
  with pytest.raises(FileNotFoundError):  # not a disk problem: a bug, with its traceback
    main.report_errors(lambda: open('/no/such/file'))
