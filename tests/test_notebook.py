"""launch/colab_tpu.ipynb: valid nbformat, and its code cells run top to bottom on CPU.

The code cells are extracted with nbformat and executed as one script in a subprocess (as
"Run all" would), with SMOKE = True and a few steps injected after the parameters cell, 2 CPU
devices (like a multi-core TPU), random training images and no FID weights.
"""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT

nbformat = pytest.importorskip('nbformat', reason='nbformat is a test extra: pip install -e .[test]')

NOTEBOOK = os.path.join(REPO_ROOT, 'launch', 'colab_tpu.ipynb')
NUM_STEPS = 4
FAST_COMPILE_XLA_FLAGS = '--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true'
TIMEOUT_S = 900


def _read():
  return nbformat.read(NOTEBOOK, as_version=4)


def _code_cells(notebook):
  return [cell for cell in notebook.cells if cell.cell_type == 'code']


def test_notebook_is_valid_nbformat():
  notebook = _read()
  nbformat.validate(notebook)
  assert notebook.metadata.get('accelerator') == 'TPU'
  assert all(not cell.get('outputs') for cell in _code_cells(notebook))  # stored without outputs


def test_parameters_cell_comes_first_and_defaults_to_the_real_run():
  first = _code_cells(_read())[0]
  assert 'parameters' in first.metadata.get('tags', [])
  namespace = {}
  exec(first.source, namespace)  # pylint: disable=exec-used
  assert namespace['SMOKE'] is False
  assert namespace['CONFIG'] == 'configs/vitgan_cifar10.py'
  assert namespace['SAVE_TO'] in ('drive', 'gcs', 'local')


def _enclosing_headers(lines, i):
  """The block headers (if/elif/else/def...) that line i is nested in, innermost first."""
  indent = len(lines[i]) - len(lines[i].lstrip())
  for line in reversed(lines[:i]):
    if line.strip() and len(line) - len(line.lstrip()) < indent:
      indent = len(line) - len(line.lstrip())
      yield line.strip()


def test_colab_only_calls_are_guarded():
  """Drive, auth, downloads, git clone and pip run only inside `if ... IN_COLAB` blocks."""
  colab_only = ('from google.colab', "'git', 'clone'", "'pip', 'install'", 'urlretrieve')
  found = 0
  for cell in _code_cells(_read()):
    lines = cell.source.splitlines()
    for i, line in enumerate(lines):
      if any(s in line for s in colab_only):
        found += 1
        assert any('IN_COLAB' in header and header.startswith(('if ', 'elif '))
                   for header in _enclosing_headers(lines, i)), f'unguarded: {line.strip()}'
  assert found >= 5


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """Runs every code cell in order, in a fresh Python, and returns what the cells computed."""
  root = tmp_path_factory.mktemp('notebook')
  data_path = root / 'images.npz'
  np.savez(data_path, x=np.random.RandomState(0).randint(0, 256, (128, 32, 32, 3),
                                                         dtype=np.uint8))
  summary_path = root / 'summary.json'
  overrides = (f'SMOKE = True\nNUM_STEPS = {NUM_STEPS}\nSAVE_TO = "local"\n'
               f'WORKDIR = {str(root / "workdir")!r}\nDATA_NPZ = {str(data_path)!r}\n')
  report = (f'import json\njson.dump(dict(fid=float(FID), real_fid=REAL_FID, '
            f'restored_step=RESTORED_STEP, devices=jax.device_count(), workdir=workdir, '
            f'fresh_std=float(fresh.std()), fresh_shape=list(fresh.shape)), '
            f'open({str(summary_path)!r}, "w"))\n')
  sources = [cell.source for cell in _code_cells(_read())]
  script = '\n\n'.join([sources[0], overrides, *sources[1:], report])
  (root / 'notebook_script.py').write_text(script)
  env = {k: v for k, v in os.environ.items() if k != 'VITGAN_INCEPTION_PT'}
  env.update(JAX_PLATFORMS='cpu', VITGAN_CACHE=str(root / 'cache'),  # no FID weights here
             XLA_FLAGS=f'--xla_force_host_platform_device_count=2 {FAST_COMPILE_XLA_FLAGS}')
  result = subprocess.run([sys.executable, str(root / 'notebook_script.py')],
                          cwd=os.path.join(REPO_ROOT, 'launch'), env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-5000:]
  return json.loads(summary_path.read_text()), output


def test_smoke_run_trains_saves_and_restores(smoke_run):
  summary, output = smoke_run
  assert summary['devices'] == 2
  assert summary['restored_step'] == NUM_STEPS
  workdir = summary['workdir']
  assert str(NUM_STEPS) in os.listdir(os.path.join(workdir, 'checkpoints'))
  assert f'step_{NUM_STEPS:08d}.png' in os.listdir(os.path.join(workdir, 'samples'))
  assert 'd_loss=' in output  # progress and loss lines reach the notebook's output
  assert f'64 new samples from the checkpoint at step {NUM_STEPS}' in output
  assert summary['fresh_shape'] == [64, 32, 32, 3] and summary['fresh_std'] > 0


def test_smoke_run_labels_the_stand_in_fid(smoke_run):
  summary, output = smoke_run
  assert summary['real_fid'] is False
  assert math.isfinite(summary['fid']) and summary['fid'] >= 0
  assert 'NOT an FID' in output


def test_smoke_run_output_has_no_orbax_info_lines(smoke_run):
  """The notebook logs at absl verbosity INFO; Orbax's INFO chatter (205 of this 4-step run's
  242 lines before checkpoint.quiet_orbax_logs, 0 of 37 after) stays out."""
  _, output = smoke_run
  info = [line for line in output.splitlines() if line.startswith('INFO:absl:')]
  assert any(line.startswith('INFO:absl:[') for line in info)  # INFO does reach the cell (clu)
  assert sum(line.startswith('step 1/') for line in output.splitlines()) == 1  # printed once
  # What Orbax's own lines look like: its class and module names, its thread/process tags.
  orbax = re.compile(r'orbax|CheckpointManager|\[thread=|\[process=\d+\]|Write ratio', re.I)
  assert not [line[:120] for line in info if orbax.search(line)]
