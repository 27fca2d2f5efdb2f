"""launch/*.sh: the commands they print (--dry-run) and run, checked argument by argument.

gcloud is never called: tpu_vm.sh is tested through --dry-run, whose lines are exactly the
argv it would run (shlex.split gives them back), and the remote command strings are parsed the
way the worker's shell will parse them. tpu_train_worker.sh and gpu.sh run for real against a
stand-in `python` that records its arguments and environment.
"""

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

from tests.helpers import REPO_ROOT

TPU_VM = os.path.join(REPO_ROOT, 'launch', 'tpu_vm.sh')
WORKER = os.path.join(REPO_ROOT, 'launch', 'tpu_train_worker.sh')
GPU = os.path.join(REPO_ROOT, 'launch', 'gpu.sh')
WORKDIR = 'gs://my-bucket/vitgan/run1'
COMMON = ['--project=my-proj', '--zone=europe-west4-a', f'--workdir={WORKDIR}']


def _bash(script, *args, env=None, check=True, cwd=None):
  result = subprocess.run(['bash', script, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=60, check=False)
  if check:
    assert result.returncode == 0, result.stderr
  return result


def _commands(stdout):
  """The argv of every '+ ' line (each command is printed on one line)."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith('+ ')]


def _flag(argv, name):
  values = [a.split('=', 1)[1] for a in argv if a.startswith(f'--{name}=')]
  assert len(values) == 1, (name, argv)
  return values[0]


def _ssh(commands, worker='all'):
  """(remote command, argv) of the `tpu-vm ssh --worker=...` calls."""
  return [(_flag(c, 'command'), c) for c in commands
          if c[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh']
          and _flag(c, 'worker') == worker]


def _bash_syntax_ok(remote):
  return subprocess.run(['bash', '-n', '-c', remote], capture_output=True, check=False)


def test_scripts_parse():
  for script in (TPU_VM, WORKER, GPU):
    assert subprocess.run(['bash', '-n', script], check=False).returncode == 0, script


@pytest.mark.parametrize('accelerator, version', [
    ('v3-8', 'tpu-ubuntu2204-base'),      # default: single host, 8 cores
    ('v2-32', 'tpu-ubuntu2204-base'),     # pod slice, 4 hosts
    ('v4-32', 'tpu-ubuntu2204-base'),     # pod slice, 4 hosts
    ('v5litepod-16', 'v2-alpha-tpuv5-lite'),
])
def test_up_creates_installs_everywhere_then_trains_everywhere(accelerator, version):
  args = ['up', '--dry-run', *COMMON]
  if accelerator != 'v3-8':
    args.append(f'--accelerator-type={accelerator}')
  commands = _commands(_bash(TPU_VM, *args).stdout)
  name = f'vitgan-{accelerator}'

  create = commands[0]
  assert create[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', name]
  assert _flag(create, 'accelerator-type') == accelerator
  assert _flag(create, 'version') == version
  assert _flag(create, 'zone') == 'europe-west4-a' and _flag(create, 'project') == 'my-proj'

  scp = [c for c in commands if c[:5] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp']]
  assert len(scp) == 1 and _flag(scp[0], 'worker') == 'all'
  assert scp[0][6] == f'{name}:vitgan_jax_code.tgz'

  remote = _ssh(commands)
  assert len(remote) == 3, 'unpack, install, train: each on every worker'
  for command, argv in remote:
    assert argv[5] == name and _flag(argv, 'zone') == 'europe-west4-a'
    assert _bash_syntax_ok(command).returncode == 0, command
  unpack, install, train = (command for command, _ in remote)
  assert 'tar -xzf ~/vitgan_jax_code.tgz -C ~/vitgan_jax' in unpack
  assert 'python3.11 -m venv ~/vitgan_venv' in install
  assert "pip install -q -U 'jax[tpu]' -e ~/vitgan_jax" in install
  assert shlex.split(train) == ['bash', '~/vitgan_jax/launch/tpu_train_worker.sh', 'start',
                                '--config=configs/vitgan_cifar10.py', f'--workdir={WORKDIR}']
  assert commands.index(create) < commands.index(scp[0]) < commands.index(remote[0][1])


def test_options_come_from_environment_variables_too():
  env = {'TPU_PROJECT': 'p2', 'TPU_ZONE': 'us-central2-b', 'TPU_ACCELERATOR_TYPE': 'v4-8',
         'TPU_NAME': 'mine', 'VITGAN_CONFIG': 'configs/smoke.py', 'VITGAN_WORKDIR': 'gs://b/x'}
  commands = _commands(_bash(TPU_VM, '--dry-run', env=env).stdout)
  assert commands[0][5] == 'mine' and _flag(commands[0], 'accelerator-type') == 'v4-8'
  assert _flag(commands[0], 'project') == 'p2'
  train = shlex.split(_ssh(commands)[-1][0])
  assert train[3:] == ['--config=configs/smoke.py', '--workdir=gs://b/x']


def test_training_flags_survive_both_shells():
  odd = "--config.data.path=/data/my images/it's.npz"
  commands = _commands(_bash(TPU_VM, 'train', '--dry-run', *COMMON, '--',
                             '--config.training.num_steps=100', odd).stdout)
  (train, _), = _ssh(commands)
  assert shlex.split(train)[-2:] == ['--config.training.num_steps=100', odd]


def test_repo_is_cloned_on_every_worker_instead_of_copied():
  commands = _commands(_bash(TPU_VM, 'setup', '--dry-run', *COMMON,
                             '--repo=https://github.com/me/vitgan_jax.git', '--ref=v1').stdout)
  assert not any('scp' in c for c in commands)
  clone = _ssh(commands)[0][0]
  assert 'git clone --depth 1 --branch v1 https://github.com/me/vitgan_jax.git ~/vitgan_jax' in clone


def test_spot_and_extra_create_flags():
  commands = _commands(_bash(TPU_VM, 'create', '--dry-run', *COMMON, '--spot',
                             '--create-flag=--service-account=sa@p.iam').stdout)
  assert commands == [['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'vitgan-v3-8',
                       '--zone=europe-west4-a', '--project=my-proj', '--accelerator-type=v3-8',
                       '--version=tpu-ubuntu2204-base', '--spot',
                       '--service-account=sa@p.iam']]


@pytest.mark.parametrize('workdir', ['', '/home/me/run', 'runs/x'])
def test_train_refuses_a_workdir_the_workers_do_not_share(workdir):
  result = _bash(TPU_VM, 'train', '--dry-run', f'--workdir={workdir}', check=False)
  assert result.returncode == 2 and 'gs://' in result.stderr and not result.stdout


def test_companion_commands():
  def run(*args):
    return _commands(_bash(TPU_VM, *args, '--dry-run', '--zone=z1', '--name=n1').stdout)
  (logs, _), = _ssh(run('logs'), worker='0')
  assert logs == 'tail -n 200 -F ~/vitgan_train.log'
  (logs, _), = _ssh(run('logs', '--worker=3'), worker='3')
  (stop, _), = _ssh(run('stop'))
  assert stop == 'bash ~/vitgan_jax/launch/tpu_train_worker.sh stop'
  status = run('status')
  assert status[0][:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', 'n1']
  assert _ssh(status)[0][0] == 'bash ~/vitgan_jax/launch/tpu_train_worker.sh status'
  assert run('delete') == [['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'n1', '--zone=z1',
                            '--quiet']]


def test_unknown_command_or_option_fails_clearly():
  assert _bash(TPU_VM, 'launch', check=False).returncode == 2
  result = _bash(TPU_VM, 'up', '--zones=x', '--dry-run', check=False)
  assert result.returncode == 2 and '--zones' in result.stderr


def _fake_gcloud(tmp_path, tpu_state):
  """A `gcloud` on PATH that records its argv; `describe` finds a TPU in `tpu_state`, or none."""
  bin_dir, record = tmp_path / 'bin', tmp_path / 'gcloud_calls.jsonl'
  bin_dir.mkdir()
  gcloud = bin_dir / 'gcloud'
  gcloud.write_text(
      f'#!{sys.executable}\n'
      'import json, sys\n'
      f'open({str(record)!r}, "a").write(json.dumps(sys.argv[1:]) + "\\n")\n'
      'if sys.argv[1:5] == ["compute", "tpus", "tpu-vm", "describe"]:\n'
      f'  print({tpu_state!r} or "")\n'
      f'  sys.exit(int({tpu_state!r} is None))\n')
  gcloud.chmod(0o755)
  env = {'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'TMPDIR': str(tmp_path)}
  return env, record


@pytest.mark.parametrize('tpu_state', [None, 'READY'])
def test_up_runs_exactly_what_dry_run_prints(tmp_path, tpu_state):
  env, record = _fake_gcloud(tmp_path, tpu_state)
  args = ['up', *COMMON, '--accelerator-type=v2-32']
  out = _bash(TPU_VM, *args, env=env).stdout
  calls = [json.loads(line) for line in record.read_text().splitlines()]
  assert calls[0][:4] == ['compute', 'tpus', 'tpu-vm', 'describe']
  printed = [c[1:] for c in _commands(_bash(TPU_VM, *args, '--dry-run', env=env).stdout)
             if c[0] == 'gcloud']
  if tpu_state:
    assert 'Reusing TPU VM vitgan-v2-32 (READY)' in out
    printed = [c for c in printed if c[3] != 'create']
  assert calls[1:] == printed
  with tarfile.open(tmp_path / 'vitgan_jax_code.tgz') as archive:  # what scp sent
    names = set(archive.getnames())
  assert {'setup.py', 'vitgan_jax/__init__.py', 'launch/tpu_train_worker.sh'} <= names
  assert not any(n.startswith('.git/') or '__pycache__' in n for n in names)


def test_up_stops_at_a_preempted_tpu(tmp_path):
  env, record = _fake_gcloud(tmp_path, 'PREEMPTED')
  result = _bash(TPU_VM, 'up', *COMMON, env=env, check=False)
  assert result.returncode == 2 and 'PREEMPTED' in result.stderr and 'delete' in result.stderr
  assert len(record.read_text().splitlines()) == 1  # only the describe


@pytest.mark.parametrize('bad, why', [
    (['--workdir=/home/me/run'], 'gs://'),                 # workers would not share it
    (['--workdir='], '--workdir'),
    (['--config=configs/no_such_config.py'], 'no_such_config.py'),
    (['--accelerator-type=v3_8'], '--accelerator-type'),
    (['--name=My_TPU'], '--name'),
    (['--ref=v1'], '--repo'),
])
def test_up_validates_every_argument_before_any_gcloud_call(tmp_path, bad, why):
  """A bad argument must not leave a created (billed) TPU behind a refusal."""
  env, record = _fake_gcloud(tmp_path, None)
  result = _bash(TPU_VM, 'up', *COMMON, *bad, env=env, check=False)
  assert result.returncode == 2 and why in result.stderr, result.stderr
  assert not record.exists(), 'gcloud was called: ' + record.read_text()
  assert not result.stdout
  dry = _bash(TPU_VM, 'up', '--dry-run', *COMMON, *bad, check=False)
  assert dry.returncode == 2 and not _commands(dry.stdout)


# --- tpu_train_worker.sh, on a pretend TPU worker ---------------------------------------------


def _worker_env(tmp_path, worker_id, endpoints):
  return {'VITGAN_TPU_WORKER_ID': worker_id, 'VITGAN_TPU_WORKER_ENDPOINTS': endpoints,
          'VITGAN_VENV': str(tmp_path / 'venv'), 'VITGAN_LOG': str(tmp_path / 'train.log'),
          'VITGAN_PIDFILE': str(tmp_path / 'train.pid'), 'VITGAN_STOP_TIMEOUT': '10'}


@pytest.mark.parametrize('endpoints, worker_id, expected', [
    # worker-network-endpoints as 'name:id:ip' triples (v2/v3/v4 pods) ...
    ('t-w-0:0:10.0.0.2,t-w-1:1:10.0.0.3', '1', ('10.0.0.2:8482', '2', '1')),
    # ... or plain hostnames; worker 0 coordinates.
    ('host-a,host-b,host-c,host-d', '0', ('host-a:8482', '4', '0')),
    ('only-host', '0', ('', '', '')),  # a single-host TPU (v3-8): one process, no coordinator
])
def test_worker_derives_the_jax_distributed_variables(tmp_path, endpoints, worker_id, expected):
  out = _bash(WORKER, 'env', env=_worker_env(tmp_path, worker_id, endpoints)).stdout
  values = dict(line.split('=', 1) for line in out.splitlines())
  assert (values['JAX_COORDINATOR_ADDRESS'], values['JAX_NUM_PROCESSES'],
          values['JAX_PROCESS_ID']) == expected


def _fake_python(bin_dir, record):
  """A `python` that records argv and the jax.distributed variables, then idles."""
  bin_dir.mkdir(parents=True)
  python = bin_dir / 'python'
  python.write_text('#!/bin/sh\n'
                    f'echo "$@" > {record}\n'
                    f'echo "$JAX_COORDINATOR_ADDRESS $JAX_NUM_PROCESSES $JAX_PROCESS_ID" >> {record}\n'
                    'echo training; exec sleep 60\n')
  python.chmod(0o755)
  return python


def _wait_for(path, timeout=10):
  deadline = time.time() + timeout
  while not (path.exists() and len(path.read_text().splitlines()) >= 2):
    assert time.time() < deadline, f'{path} not written'
    time.sleep(0.05)
  return path.read_text().splitlines()


def test_worker_starts_in_the_background_and_stops(tmp_path):
  record = tmp_path / 'argv.txt'
  _fake_python(tmp_path / 'venv' / 'bin', record)
  env = _worker_env(tmp_path, '1', 'w0:0:10.1.1.1,w1:1:10.1.1.2')
  started = _bash(WORKER, 'start', '--config=configs/x.py', f'--workdir={WORKDIR}', env=env)
  assert 'process 1 of 2' in started.stdout
  argv, distributed = _wait_for(record)
  assert argv == f'-m vitgan_jax.main --config=configs/x.py --workdir={WORKDIR}'
  assert distributed == '10.1.1.1:8482 2 1'
  pid = int((tmp_path / 'train.pid').read_text())
  try:
    assert 'running' in _bash(WORKER, 'status', env=env).stdout
    again = _bash(WORKER, 'start', env=env, check=False)
    assert again.returncode == 1 and 'already runs' in again.stderr
    assert 'stopped' in _bash(WORKER, 'stop', env=env).stdout
    deadline = time.time() + 10
    while _alive(pid):
      assert time.time() < deadline, 'still running after stop'
      time.sleep(0.05)
    assert 'not running' in _bash(WORKER, 'status', env=env).stdout
  finally:
    if _alive(pid):
      os.kill(pid, 9)


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie (exited, not yet reaped by its parent) counts as stopped.
  with open(f'/proc/{pid}/stat') as f:
    return f.read().split(')')[-1].split()[0] != 'Z'


# --- gpu.sh ------------------------------------------------------------------------------------


def _gpu_command(stdout):
  command = _commands(stdout)[-1]
  assert command[0] == 'env'
  split = next(i for i, a in enumerate(command[1:], 1) if '=' not in a)
  return dict(a.split('=', 1) for a in command[1:split]), command[split:]


def test_gpu_dry_run(tmp_path):
  out = _bash(GPU, '--dry-run', '--gpus=0,1', '--install', '--',
              '--config.training.batch_size=256', env={'XLA_FLAGS': ''}, cwd=tmp_path).stdout
  install, _ = _commands(out)
  assert install == ['python3', '-m', 'pip', 'install', '-U', 'jax[cuda12]', '-e', REPO_ROOT]
  env, argv = _gpu_command(out)
  assert env == {'CUDA_VISIBLE_DEVICES': '0,1', 'XLA_PYTHON_CLIENT_MEM_FRACTION': '0.90',
                 'XLA_FLAGS': '--xla_gpu_enable_latency_hiding_scheduler=true'}
  assert argv == ['python3', '-m', 'vitgan_jax.main', '--config=configs/vitgan_cifar10.py',
                  f'--workdir={REPO_ROOT}/workdirs/vitgan_cifar10',
                  '--config.training.batch_size=256']


def test_gpu_keeps_user_xla_flags_and_says_it_resumes(tmp_path):
  (tmp_path / 'run' / 'checkpoints').mkdir(parents=True)
  result = subprocess.run(['bash', GPU, '--dry-run', '--workdir', 'run', '--mem-fraction=.5',
                           '--cuda=cuda13', '--install'], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, 'XLA_FLAGS': '--xla_dump_to=/tmp/d'},
                          check=True)
  assert 'resumes from the latest' in result.stdout
  install = _commands(result.stdout)[0]
  assert 'jax[cuda13]' in install
  env, argv = _gpu_command(result.stdout)
  assert env['XLA_FLAGS'] == '--xla_dump_to=/tmp/d --xla_gpu_enable_latency_hiding_scheduler=true'
  assert env['XLA_PYTHON_CLIENT_MEM_FRACTION'] == '.5'
  assert f'--workdir={tmp_path}/run' in argv  # relative to where it was called from


def test_gpu_xla_flags_are_known_to_this_xla():
  """XLA aborts on an unknown flag (even a GPU flag on the CPU build): spelling check."""
  env, _ = _gpu_command(_bash(GPU, '--dry-run', env={'XLA_FLAGS': ''}).stdout)
  result = subprocess.run([sys.executable, '-c', 'import jax; print(jax.numpy.ones(3).sum())'],
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu', 'XLA_FLAGS': env['XLA_FLAGS']},
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0 and result.stdout.strip() == '3.0', result.stderr


def test_gpu_runs_what_it_prints(tmp_path):
  record = tmp_path / 'argv.txt'
  python = tmp_path / 'bin' / 'python'
  python.parent.mkdir()
  python.write_text(f'#!/bin/sh\necho "$@" > {record}\n'
                    f'echo "$XLA_PYTHON_CLIENT_MEM_FRACTION $CUDA_VISIBLE_DEVICES" >> {record}\n')
  python.chmod(0o755)
  out = _bash(GPU, f'--python={python}', '--gpus=3', '--config=configs/smoke.py',
              f'--workdir={tmp_path}/w').stdout
  _, argv = _gpu_command(out)
  assert record.read_text().splitlines() == [' '.join(argv[1:]), '0.90 3']
