"""The workdir lock and checks (vitgan_jax/workdir.py): one training run per workdir."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types

import pytest

from tests.helpers import REPO_ROOT, cli_overrides
from tests.test_reliability import subprocess_env
from vitgan_jax import errors, workdir

HOLDER_RE = (r'host \S+, pid \d+, since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC')


def write_lock(path, **record):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(record))


def test_lock_is_exclusive_and_released(tmp_path):
  run_dir = tmp_path / 'run'
  first = workdir.WorkdirLock(str(run_dir))
  first.acquire()
  record = json.loads((run_dir / workdir.LOCK_FILE).read_text())
  assert record['host'] == socket.gethostname() and record['pid'] == os.getpid()
  second = workdir.WorkdirLock(str(run_dir))
  with pytest.raises(errors.WorkdirError) as info:
    second.acquire()
  lock = run_dir / workdir.LOCK_FILE
  assert re.fullmatch(
      rf'--workdir {run_dir} is in use by another training run \({HOLDER_RE}; lock file '
      rf'{lock}\)\. Wait for it to end, or use another --workdir; if that run is gone, delete '
      rf'{lock} and rerun', str(info.value)), str(info.value)
  second.release()  # not held: removes nothing
  assert lock.exists()
  first.release()
  assert not run_dir.exists()  # created by the lock, empty again: removed


def test_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  lock = tmp_path / workdir.LOCK_FILE
  write_lock(lock, host=socket.gethostname(), pid=dead.pid, since='2026-01-01 00:00:00 UTC',
             since_unix=time.time())
  held = workdir.WorkdirLock(str(tmp_path))
  held.acquire()
  assert capsys.readouterr().out == (
      f'warning: took over the lock of {tmp_path} left by host {socket.gethostname()}, pid '
      f'{dead.pid}, since 2026-01-01 00:00:00 UTC: its process {dead.pid} is no longer '
      'running.\n')
  assert json.loads(lock.read_text())['pid'] == os.getpid()
  held.release()
  assert not lock.exists() and tmp_path.exists()


def test_lock_of_another_host_is_taken_over_only_when_old(tmp_path, capsys):
  lock = tmp_path / workdir.LOCK_FILE
  write_lock(lock, host='other-host', pid=1, since='then', since_unix=time.time() - 3 * 3600)
  with pytest.raises(errors.WorkdirError, match='in use by another training run'):
    workdir.WorkdirLock(str(tmp_path), stale_hours=4).acquire()
  held = workdir.WorkdirLock(str(tmp_path), stale_hours=2)
  held.acquire()
  assert re.fullmatch(r'warning: took over the lock of .* left by host other-host, pid 1, since '
                      r'then: it is 3\.0 hours old \(> checkpoint\.lock_stale_hours=2\)\.\n',
                      capsys.readouterr().out)
  held.release()


class OpError(Exception):
  """tf.errors.OpError's place in the hierarchy: an Exception, not an OSError."""

  def __init__(self, message):
    super().__init__(message)
    self.message = message


class NotFoundError(OpError):
  pass


class PermissionDeniedError(OpError):
  pass


def fake_gcs(monkeypatch, root, forbidden=False):
  """A `tensorflow` module whose tf.io.gfile serves gs://bucket/... from the folder `root`.

  What the lock calls of tf.io.gfile (exists, makedirs, GFile, remove), raising what TensorFlow
  raises: NotFoundError for a missing object, PermissionDeniedError for a write to a bucket
  without write access (`forbidden`); neither is an OSError. No network, no TensorFlow.
  """
  calls = []

  def local(path):
    assert path.startswith('gs://bucket/'), path
    return os.path.join(root, path[len('gs://bucket/'):])

  def logged(name, fn):
    def call(path, *args):
      calls.append((name, path))
      if forbidden and name in ('makedirs', 'remove', 'GFile-w'):
        raise PermissionDeniedError(f'403 Forbidden: {path}')
      try:
        return fn(local(path), *args)
      except FileNotFoundError as e:
        raise NotFoundError(f'{path} not found') from e
    return call

  def gfile_open(path, mode='r'):
    return logged('GFile-w' if 'w' in mode else 'GFile', open)(path, mode)

  gfile = types.SimpleNamespace(
      exists=logged('exists', os.path.exists),
      makedirs=logged('makedirs', lambda p: os.makedirs(p, exist_ok=True)),
      GFile=gfile_open, remove=logged('remove', os.remove))
  tf_errors = types.SimpleNamespace(OpError=OpError, NotFoundError=NotFoundError)
  monkeypatch.setitem(sys.modules, 'tensorflow', types.SimpleNamespace(
      io=types.SimpleNamespace(gfile=gfile), errors=tf_errors))
  return calls


def test_gcs_lock_is_checked_written_and_released(tmp_path, monkeypatch):
  """On gs:// the lock goes through tf.io.gfile: refused while held, stale ones taken over."""
  calls = fake_gcs(monkeypatch, str(tmp_path))
  run_dir = 'gs://bucket/runs/c10'
  local_lock = tmp_path / 'runs' / 'c10' / workdir.LOCK_FILE
  workdir.check_usable(run_dir)  # no local probe for gs://
  assert workdir.lock_path(run_dir) == f'{run_dir}/{workdir.LOCK_FILE}'
  first = workdir.WorkdirLock(run_dir)
  first.acquire()
  record = json.loads(local_lock.read_text())
  assert record['host'] == socket.gethostname() and record['pid'] == os.getpid()
  assert ('GFile-w', f'{run_dir}/{workdir.LOCK_FILE}') in calls
  with pytest.raises(errors.WorkdirError) as info:
    workdir.WorkdirLock(run_dir).acquire()
  assert re.fullmatch(rf'--workdir {run_dir} is in use by another training run \({HOLDER_RE}; '
                      rf'lock file {run_dir}/{workdir.LOCK_FILE}\)\. .*delete '
                      rf'{run_dir}/{workdir.LOCK_FILE} and rerun', str(info.value)), info.value
  first.release()
  assert not local_lock.exists() and not os.path.exists(run_dir)  # nothing local made

  # A preempted VM's lock (another host) blocks until checkpoint.lock_stale_hours, then not.
  write_lock(local_lock, host='preempted-vm', pid=7, since='then',
             since_unix=time.time() - 30 * 3600)
  held = workdir.WorkdirLock(run_dir, stale_hours=24)
  held.acquire()
  assert json.loads(local_lock.read_text())['host'] == socket.gethostname()
  held.release()
  assert not local_lock.exists()

  # Deleted by hand while held (README: "delete W/train.lock"): the release still ends quietly.
  held = workdir.WorkdirLock(run_dir)
  held.acquire()
  local_lock.unlink()
  held.release()
  assert ('remove', f'{run_dir}/{workdir.LOCK_FILE}') in calls


def test_gcs_lock_without_write_access_is_one_line(tmp_path, monkeypatch):
  fake_gcs(monkeypatch, str(tmp_path), forbidden=True)
  with pytest.raises(errors.WorkdirError, match=r'^--workdir gs://bucket/run: cannot write the '
                     r'lock file gs://bucket/run/train\.lock \(403 Forbidden: gs://bucket/run\)$'):
    workdir.WorkdirLock('gs://bucket/run').acquire()


def wait_for(predicate, process, log, timeout=300):
  deadline = time.time() + timeout
  while not predicate():
    assert process.poll() is None, log.read_text()[-3000:]
    assert time.time() < deadline, log.read_text()[-3000:]
    time.sleep(0.2)


def test_second_run_on_a_workdir_is_refused_and_sigterm_releases(tmp_path):
  """Two real processes; then SIGTERM to a resumed run before its first step ends: exit 0."""
  run_dir, lock = tmp_path / 'run', tmp_path / 'run' / workdir.LOCK_FILE
  command = [sys.executable, '-m', 'vitgan_jax.main', '--config',
             os.path.join(REPO_ROOT, 'configs', 'smoke.py'), f'--workdir={run_dir}',
             *cli_overrides(**{'training.num_steps': 100_000, 'checkpoint.every_steps': 2,
                               'logging.every_steps': 1000}), '--config.data.source=random']
  first_log = tmp_path / 'first.log'
  with open(first_log, 'w') as out:
    first = subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(), stdout=out,
                             stderr=subprocess.STDOUT)
  try:
    wait_for(lambda: (run_dir / 'checkpoints' / '2').exists(), first, first_log)
    began = time.time()
    second = subprocess.run(command, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True,
                            text=True, timeout=120)
    assert second.returncode == 1 and time.time() - began < 60
    assert 'Traceback' not in second.stderr
    assert re.fullmatch(
        rf'error: --workdir {run_dir} is in use by another training run \(host '
        rf'{re.escape(socket.gethostname())}, pid {first.pid}, since .+ UTC; lock file {lock}\)'
        rf'\. Wait for it to end, or use another --workdir; if that run is gone, delete {lock} '
        'and rerun', second.stderr.splitlines()[-1]), second.stderr[-2000:]
    assert not list(run_dir.rglob('*.orbax-checkpoint-tmp*')) or first.poll() is None
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 0, first_log.read_text()[-3000:]
  finally:
    if first.poll() is None:
      first.kill()
  assert 'Stopped by SIGTERM after step' in first_log.read_text()
  assert not lock.exists()

  # A resumed run stopped while building, restoring or compiling (before the loop's own
  # handler existed, this was a silent exit 143): exit 0, one line, lock released.
  resumed_log = tmp_path / 'resumed.log'
  with open(resumed_log, 'w') as out:
    resumed = subprocess.Popen(command, cwd=REPO_ROOT, env=subprocess_env(), stdout=out,
                               stderr=subprocess.STDOUT)
  try:
    wait_for(lambda: 'JAX process 0 / 1' in resumed_log.read_text(), resumed, resumed_log)
    resumed.send_signal(signal.SIGTERM)
    assert resumed.wait(timeout=120) == 0, resumed_log.read_text()[-3000:]
  finally:
    if resumed.poll() is None:
      resumed.kill()
  text = resumed_log.read_text()
  stopped = re.search(r'^Stopped by SIGTERM before step (\d+): nothing new to save; rerun the '
                      r'same command to resume\.$', text, re.M)
  assert stopped, text[-3000:]
  assert f'Resuming from {run_dir} at step {stopped.group(1)}.' in text
  assert 'Traceback' not in text and not lock.exists()
