"""The console command on the smoke config writes event files, a sample grid and checkpoints."""

import glob
import os
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from tests.helpers import REPO_ROOT



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

  # What the run said it trained on, and its closing summary.
  assert 'Training on ' in log and ('1,834 images of' in log or 'FIXED NOISE IMAGES' in log)
  assert 'Finished at step 4 of 4: 64 images seen' in log and f'Checkpoints: {workdir}' in log
  # Each line once in a terminal (stdout + stderr), not again as an absl INFO record.
  assert log.count('Finished at step 4 of 4') == 1 and log.count('Training on ') == 1

  out = str(tmp_path / 'elsewhere' / 'grid.png')
  result = subprocess.run(_command() + flags[:4] + ['--mode', 'sample', '--num_samples', '4',
                                                    '--seed', '3', '--out', out],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  seeded = np.load(str(tmp_path / 'elsewhere' / 'grid.npz'))['x']
  assert np.asarray(Image.open(out)).shape == (2 * 32, 2 * 32, 3)
  assert seeded.shape == (4, 32, 32, 3) and not np.array_equal(seeded, samples[:4])
  import vitgan_jax  # pylint: disable=g-import-not-at-top
  np.testing.assert_array_equal(vitgan_jax.load(workdir).generate(4, seed=3), seeded)


def test_help_lists_modes_flags_and_an_example():
  result = subprocess.run(_command() + ['--help'], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert result.returncode == 0, result.stderr[-2000:]
  out = result.stdout
  for needle in ('Modes:', 'train', 'sample', 'eval', '--config', '--workdir', '--mode',
                 '--num_samples', '--seed', '--out', 'Examples:', 'vitgan_jax.load'):
    assert needle in out, needle
  assert 'Try --helpfull' not in out
