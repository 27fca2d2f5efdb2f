"""The console command on the smoke config writes event files, a sample grid and checkpoints."""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _command():
  script = os.path.join(os.path.dirname(sys.executable), 'vitgan-train')
  script = script if os.path.exists(script) else shutil.which('vitgan-train')
  return [script] if script else [sys.executable, '-m', 'vitgan_jax.main']


def test_console_command_trains_and_samples(tmp_path):
  workdir = str(tmp_path / 'run')
  flags = ['--config', os.path.join(REPO_ROOT, 'configs', 'smoke.py'), '--workdir', workdir,
           '--config.training.num_steps=4', '--config.logging.every_steps=2',
           '--config.logging.sample_every_steps=4', '--config.checkpoint.every_steps=4']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = subprocess.run(_command() + flags, cwd=str(tmp_path), env=env, capture_output=True,
                          text=True, timeout=600)
  log = result.stdout + result.stderr
  assert result.returncode == 0, log[-3000:]
  assert 'd_loss=' in log and 'g_loss=' in log and 'images_per_sec=' in log
  assert glob.glob(os.path.join(workdir, 'events.out.tfevents.*'))
  grid = np.asarray(Image.open(os.path.join(workdir, 'samples', 'step_00000004.png')))
  assert grid.shape == (4 * 32, 4 * 32, 3) and grid.std() > 0
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4'))

  result = subprocess.run(_command() + flags[:4] + ['--mode', 'sample', '--num_samples', '9'],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  samples = np.load(os.path.join(workdir, 'samples', 'samples.npz'))['x']
  assert samples.shape == (9, 32, 32, 3) and samples.dtype == np.uint8
