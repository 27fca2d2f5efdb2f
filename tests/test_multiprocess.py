"""vitgan-train as 2 jax.distributed processes on CPU, as on a 2-host TPU pod slice.

Both processes share one workdir (as they share a gs:// bucket on a pod). Checks: they log the
same losses, equal to a single process over the same 4-device mesh (so each process fed its own
slice of the global batch); only process 0 writes event files and sample grids; the Orbax
checkpoint both wrote restores to the state that drew the step-4 sample grid.
"""

import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO_ROOT

NUM_STEPS = 4
NUM_IMAGES = 64
CONFIG_OVERRIDES = {
    'training.num_steps': NUM_STEPS,
    'logging.every_steps': 2,
    'checkpoint.every_steps': NUM_STEPS,
    'logging.sample_every_steps': NUM_STEPS,
    'data.source': 'npz',
    # One augmentation and no bCR: a smaller step, so the three processes compile faster.
    'augment.policy': 'translation',
    'loss.bcr_real': 0.0,
    'loss.bcr_fake': 0.0,
}
# Compile time dominates these runs; XLA's cheap CPU code generation halves it.
FAST_COMPILE_XLA_FLAGS = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
TIMEOUT_S = 900
TIMING_METRICS = ('images_per_sec', 'steps_per_sec', 'uptime', 'train_seconds', 'health/seconds')
METRIC_LINE = re.compile(r'logging_writer\.py:\d+\] \[(\d+)\] (.*d_loss=.*)$')


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _smoke_config(data_path):
  from configs import smoke  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  for path, value in {**CONFIG_OVERRIDES, 'data.path': str(data_path)}.items():
    section, field = path.split('.')
    config[section][field] = value
  return config


def _start(workdir, data_path, log_path, devices_per_process, distributed_flags=()):
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(
      f'--xla_force_host_platform_device_count={devices_per_process} {FAST_COMPILE_XLA_FLAGS}'))
  overrides = {**CONFIG_OVERRIDES, 'data.path': data_path}
  cmd = [sys.executable, '-m', 'vitgan_jax.main', '--config=configs/smoke.py',
         f'--workdir={workdir}', *(f'--config.{k}={v}' for k, v in overrides.items()),
         *distributed_flags]
  log = open(log_path, 'w')  # pylint: disable=consider-using-with
  return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log


def _metrics(output):
  """{step: {name: value}} from clu's logging writer lines, timing metrics left out."""
  by_step = {}
  for line in output.splitlines():
    match = METRIC_LINE.search(line)
    if match:
      pairs = (item.split('=') for item in match.group(2).split(', '))
      by_step[int(match.group(1))] = {k: float(v) for k, v in pairs if k not in TIMING_METRICS}
  return by_step


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Starts the 2-process run and a 1-process reference on the same 4-device mesh, in parallel."""
  root = tmp_path_factory.mktemp('multiprocess')
  shared, single = root / 'shared_workdir', root / 'single_process_workdir'
  data_path = root / 'images.npz'  # random images: the test needs no dataset
  np.savez(data_path, x=np.random.RandomState(0).randint(0, 256, (NUM_IMAGES, 32, 32, 3),
                                                         dtype=np.uint8))
  port = _free_port()
  started = [
      _start(shared, data_path, root / f'process_{i}.log', 2,
             [f'--coordinator_address=localhost:{port}', '--num_processes=2',
              f'--process_id={i}'])
      for i in range(2)]
  started.append(_start(single, data_path, root / 'single.log', 4))
  try:
    for proc, _ in started:
      proc.wait(timeout=TIMEOUT_S)
  finally:
    for proc, log in started:
      if proc.poll() is None:
        proc.kill()
      log.close()
  outputs = [(root / name).read_text() for name in ('process_0.log', 'process_1.log',
                                                    'single.log')]
  for (proc, _), output in zip(started, outputs):
    assert proc.returncode == 0, output[-5000:]
  return {'shared': shared, 'single': single, 'outputs': outputs, 'data_path': data_path}


def test_both_processes_log_the_same_losses(runs):
  process_0, process_1 = (_metrics(out) for out in runs['outputs'][:2])
  assert sorted(process_0) == [2, NUM_STEPS]
  assert process_0 == process_1  # replicated metrics: bit-identical on every host


def test_two_processes_match_one_process_on_the_same_mesh(runs):
  multi, single = _metrics(runs['outputs'][0]), _metrics(runs['outputs'][2])
  assert sorted(single) == sorted(multi)
  for step in multi:
    assert multi[step].keys() == single[step].keys()
    for name, value in multi[step].items():
      np.testing.assert_allclose(value, single[step][name], rtol=1e-3, atol=1e-6,
                                 err_msg=f'{name} at step {step}')


def test_only_process_zero_writes_events_and_samples(runs):
  shared = runs['shared']
  events = [p for p in shared.rglob('events.out.tfevents*')]
  assert len(events) == 1, events
  assert sorted(p.name for p in (shared / 'samples').iterdir()) == [
      f'step_{NUM_STEPS:08d}.png']
  assert 'samples_ema' in runs['outputs'][1]  # process 1 still ran the (collective) sampling


def test_shared_checkpoint_restores_the_sampled_state(runs):
  from vitgan_jax import images as images_lib  # pylint: disable=g-import-not-at-top
  from vitgan_jax import inference, trainer  # pylint: disable=g-import-not-at-top
  from vitgan_jax.gan import GAN  # pylint: disable=g-import-not-at-top
  config = _smoke_config(runs['data_path'])
  shared = runs['shared']
  assert sorted(os.listdir(shared / 'checkpoints')) == [str(NUM_STEPS)]

  gan = GAN.from_config(config)
  state = inference.restore_state(gan, str(shared))
  assert int(state.step) == NUM_STEPS
  images = gan.sampler()(state, trainer.fixed_latents(config, gan))
  grid = images_lib.image_grid(np.asarray(jax.device_get(images)), config.logging.sample_grid)
  written = np.asarray(Image.open(shared / 'samples' / f'step_{NUM_STEPS:08d}.png'))
  difference = np.abs(grid.astype(np.int16) - written.astype(np.int16))
  assert difference.max() <= 1  # same params; only float rounding at .5 may differ
  assert difference.mean() < 0.01
