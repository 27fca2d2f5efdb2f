"""The training workdir before any work: usable (a writable folder) and held by one run only.

`--mode train` holds `<workdir>/train.lock` for the whole run, so a second run on the same
workdir is refused in one line instead of racing the first one's Orbax saves. The lock file
is created atomically (O_CREAT | O_EXCL on a local disk) and records host, pid and start
time. A lock of a dead process on this host, or one from another host older than
`checkpoint.lock_stale_hours`, is taken over with a warning. On gs:// a workdir has no atomic
create-if-absent through tf.io.gfile, so there the lock is advisory: written after checking
that none exists (enough against the common mistake of a second launch, not against two
launches in the same second). Only the main process of a multi-host run takes it.
"""

import contextlib
import datetime
import errno
import json
import os
import socket
import time
from typing import Optional

from vitgan_jax import errors

LOCK_FILE = 'train.lock'


def _is_gcs(path: str) -> bool:
  return path.startswith('gs://')


def _gcs(op: str, path: str, *args):
  """tf.io.gfile.<op>(path, *args) ('read' and 'write' of a whole file too), its errors as
  OSErrors: TensorFlow's NotFoundError and other OpErrors are not OSErrors, so without this a
  vanished or forbidden gs:// lock file would escape the lock's error handling as a traceback."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    if op == 'read':
      with tf.io.gfile.GFile(path) as f:
        return f.read()
    if op == 'write':
      with tf.io.gfile.GFile(path, 'w') as f:
        return f.write(*args)
    return getattr(tf.io.gfile, op)(path, *args)
  except tf.errors.NotFoundError as e:
    raise FileNotFoundError(errno.ENOENT, getattr(e, 'message', str(e)), path) from e
  except tf.errors.OpError as e:
    raise OSError(errno.EIO, getattr(e, 'message', str(e)), path) from e


def lock_path(workdir: str) -> str:
  return workdir.rstrip('/') + '/' + LOCK_FILE if _is_gcs(workdir) else os.path.join(
      workdir, LOCK_FILE)


def _nearest_existing(path: str) -> str:
  """`path` or its nearest existing ancestor: where a fresh workdir would be created."""
  path = os.path.abspath(path)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def check_usable(workdir: str) -> None:
  """Raises WorkdirError unless `workdir` is (or can be created as) a writable folder.

  Checked before anything else, so a bad --workdir costs no compile and leaves nothing behind:
  a probe file is created and removed in the workdir, or in the folder that would hold it.
  """
  if _is_gcs(workdir):
    return  # permissions show on the first write; gs:// has no cheap probe
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.WorkdirError(f'--workdir {workdir} is a file, not a folder; pass a folder '
                              '(it is created if missing)')
  where = _nearest_existing(workdir)
  if not os.path.isdir(where):
    raise errors.WorkdirError(f'--workdir {workdir} cannot be created: {where} is a file')
  probe = os.path.join(where, f'.vitgan_write_probe.{os.getpid()}')
  try:
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise errors.WorkdirError(f'--workdir {workdir} is not writable ({where}: '
                              f'{e.strerror or e}); pass a writable folder') from e


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


def _describe(holder: dict) -> str:
  return (f'host {holder.get("host")}, pid {holder.get("pid")}, since '
          f'{holder.get("since")}')


class WorkdirLock:
  """Exclusive hold of a workdir by one training run; `release()` (idempotent) frees it."""

  def __init__(self, workdir: str, stale_hours: float = 24.0):
    self.workdir = workdir
    self.path = lock_path(workdir)
    self.stale_hours = stale_hours
    self.created_workdir = False
    self._held = False

  def _record(self) -> dict:
    now = time.time()
    since = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return {'host': socket.gethostname(), 'pid': os.getpid(),
            'since': since.strftime('%Y-%m-%d %H:%M:%S UTC'), 'since_unix': now}

  def _read(self) -> Optional[dict]:
    try:
      if _is_gcs(self.path):
        return json.loads(_gcs('read', self.path))
      with open(self.path) as f:
        return json.loads(f.read())
    except FileNotFoundError:
      return None
    except (OSError, ValueError):
      return {}  # unreadable or half written: treated as held by an unknown run

  def _create(self) -> bool:
    """Writes the lock file if none exists; False if one does."""
    text = json.dumps(self._record())
    if _is_gcs(self.path):
      if _gcs('exists', self.path):
        return False
      _gcs('makedirs', self.workdir)
      _gcs('write', self.path, text)
      return True
    if not os.path.isdir(self.workdir):
      os.makedirs(self.workdir)
      self.created_workdir = True
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      f.write(text)
    return True

  def _stale_reason(self, holder: dict) -> Optional[str]:
    """Why a lock may be taken over (its process is dead, or it is too old), else None."""
    if holder.get('host') == socket.gethostname() and isinstance(holder.get('pid'), int):
      if not _pid_alive(holder['pid']):
        return f'its process {holder["pid"]} is no longer running'
      return None
    since = holder.get('since_unix')
    if isinstance(since, (int, float)) and self.stale_hours > 0:
      hours = (time.time() - since) / 3600
      if hours > self.stale_hours:
        return (f'it is {hours:.1f} hours old (> checkpoint.lock_stale_hours='
                f'{self.stale_hours:g})')
    return None

  def _remove(self) -> None:
    with contextlib.suppress(FileNotFoundError):
      if _is_gcs(self.path):
        _gcs('remove', self.path)
      else:
        os.remove(self.path)

  def acquire(self, say=print) -> None:
    """Takes the lock, taking over a stale one (saying so); WorkdirError if another run holds it."""
    try:
      if self._create():
        self._held = True
        return
      holder = self._read()
      if holder is None and self._create():  # released between our two looks
        self._held = True
        return
      holder = holder or {}
      reason = self._stale_reason(holder)
      if reason is None:
        raise errors.WorkdirError(
            f'--workdir {self.workdir} is in use by another training run ({_describe(holder)}'
            f'; lock file {self.path}). Wait for it to end, or use another --workdir; if that '
            f'run is gone, delete {self.path} and rerun')
      self._remove()
      if not self._create():
        raise errors.WorkdirError(f'--workdir {self.workdir}: another run took the lock '
                                  f'{self.path} at the same moment; rerun later')
      self._held = True
      say(f'warning: took over the lock of {self.workdir} left by {_describe(holder)}: '
          f'{reason}.')
    except OSError as e:
      if isinstance(e, errors.Error):
        raise
      raise errors.WorkdirError(f'--workdir {self.workdir}: cannot write the lock file '
                                f'{self.path} ({e.strerror or e})') from e

  def release(self) -> None:
    """Removes the lock file (and a workdir this run created that holds nothing else)."""
    if not self._held:
      return
    self._held = False
    with contextlib.suppress(OSError):
      self._remove()
      if self.created_workdir and not os.listdir(self.workdir):
        os.rmdir(self.workdir)


def is_disk_error(error: BaseException) -> bool:
  """An OSError that means the disk is full, read-only or refuses us, not a bug."""
  return isinstance(error, OSError) and error.errno in (
      errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
