"""Every config under configs/ builds and traces a train step; steps run on CPU, losses finite.

Configs are found by walking the folder, so a new one is covered without touching this file.
Models are shrunk generically (width-like fields / 16, depths 1, batch 4); configs that are
identical after shrinking (e.g. the same model on two 64 px datasets) share one result.
Every config's step is traced (jax.eval_shape: fields, shapes, code paths). Compiling and
running a step costs ~10-40 s per config on CPU, so by default it runs for one config per new
model family (ViTGAN's step runs in tests/test_train.py); VITGAN_TEST_ALL_CONFIGS=1 runs every
config's step.
"""

import importlib
import os
import re

import jax
import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from vitgan_jax import train
from vitgan_jax.gan import GAN

CONFIG_DIR = os.path.join(REPO_ROOT, 'configs')
WIDTH_FIELD = re.compile(r'width|dim|hidden|channel')  # widths, latent/mlp dims, channel counts
DEPTH_FIELD = re.compile(r'depth|layers')
SHRINK = 16        # widths are divided by this: keeps the divisibility the architectures need
BATCH_SIZE = 4
MAX_PARAMS = 500_000  # a shrunk G + D above this has a width field the patterns above miss
RUN_SECTIONS = ('model', 'training', 'optimizer', 'loss', 'augment')
RUN_ALL = os.environ.get('VITGAN_TEST_ALL_CONFIGS', '') == '1'
RUN_BY_DEFAULT = ('configs.stylegan2_cifar10', 'configs.transgan_cifar10',
                  'configs.ladagan_cifar10')
# Less XLA optimization (about half the compile time): each program runs once.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def config_modules():
  """Dotted names of every configs/**/*.py that defines get_config()."""
  names = []
  for root, _, files in os.walk(CONFIG_DIR):
    for filename in files:
      if filename.endswith('.py') and filename != '__init__.py':
        path = os.path.relpath(os.path.join(root, filename), REPO_ROOT)[:-3]
        names.append(path.replace(os.sep, '.'))
  return sorted(n for n in names if hasattr(importlib.import_module(n), 'get_config'))


def _map_ints(value, fn):
  if isinstance(value, bool) or not isinstance(value, (int, tuple, list)):
    return value
  if isinstance(value, int):
    return fn(value)
  return type(value)(fn(v) for v in value)


def shrink(config, batch_size=BATCH_SIZE):
  """The same config with tiny networks: width-like fields / SHRINK, depths 1, a small batch."""
  for part in (config.model.generator, config.model.discriminator):
    for key in list(part.keys()):
      if DEPTH_FIELD.search(key):
        part[key] = _map_ints(part[key], lambda v: 1)
      elif WIDTH_FIELD.search(key):
        part[key] = _map_ints(part[key], lambda v: max(1, v // SHRINK))
  config.training.batch_size = batch_size
  return config


def _parts(config):
  gan = GAN.from_config(config)  # every model field is valid
  batch_shape = (config.training.batch_size, *gan.image_shape)
  return gan.init, train.make_train_step(config, gan), batch_shape


def trace_train_step(config):
  """(state shapes before, state shapes after, metric shapes) of one step, without compiling."""
  init, step, batch_shape = _parts(config)
  state = jax.eval_shape(init, jax.random.PRNGKey(0))
  new_state, metrics = jax.eval_shape(
      step, state, {'image': jax.ShapeDtypeStruct(batch_shape, np.float32)})
  return state, new_state, metrics


def run_train_step(config):
  """(metrics, parameter count, bad_step) after one compiled step from a fresh state."""
  init, step, batch_shape = _parts(config)
  rng = jax.random.PRNGKey(0)
  state = jax.jit(init).lower(rng).compile(compiler_options=FAST_COMPILE)(rng)
  num_params = sum(x.size for x in jax.tree.leaves((state.g_params, state.d_params)))
  batch = {'image': jax.random.uniform(jax.random.PRNGKey(1), batch_shape, minval=-1.0,
                                       maxval=1.0)}
  compiled = jax.jit(step).lower(state, batch).compile(compiler_options=FAST_COMPILE)
  state, metrics = compiled(state, batch)
  return jax.tree.map(np.asarray, metrics), num_params, int(state.bad_step)


_TRACES, _RUNS = {}, {}


def shrunk(module_name):
  config = shrink(importlib.import_module(module_name).get_config())
  return config, '\n'.join(config[s].to_json(sort_keys=True) for s in RUN_SECTIONS)


@pytest.mark.parametrize('module_name', config_modules())
def test_config_traces_one_train_step(module_name):
  config, key = shrunk(module_name)
  if key not in _TRACES:
    _TRACES[key] = trace_train_step(config)
  state, new_state, metrics = _TRACES[key]
  num_params = sum(x.size for x in jax.tree.leaves((state.g_params, state.d_params)))
  assert num_params < MAX_PARAMS, f'{module_name}: shrunk models still have {num_params} params'
  assert (jax.tree.map(lambda x: (x.shape, x.dtype), new_state)
          == jax.tree.map(lambda x: (x.shape, x.dtype), state))
  for name in ('d_loss', 'g_loss', 'd_real', 'd_fake', 'd_grad_norm', 'g_grad_norm'):
    assert metrics[name].shape == () and metrics[name].dtype == np.float32, name


@pytest.mark.parametrize('module_name', config_modules())
def test_config_trains_one_step(module_name):
  if not (RUN_ALL or module_name in RUN_BY_DEFAULT):
    pytest.skip('compiling this step is left to VITGAN_TEST_ALL_CONFIGS=1 (traced above)')
  config, key = shrunk(module_name)
  if key not in _RUNS:
    _RUNS[key] = run_train_step(config)
  metrics, num_params, bad_step = _RUNS[key]
  assert num_params < MAX_PARAMS
  assert bad_step == -1
  for name in ('d_loss', 'g_loss', 'd_grad_norm', 'g_grad_norm'):
    assert np.isfinite(metrics[name]), f'{module_name}: {name}={metrics[name]}'
  assert metrics['d_grad_norm'] > 0 and metrics['g_grad_norm'] > 0


def test_shrink_divides_widths_and_flattens_depths():
  from configs import ladagan_cifar10
  config = shrink(ladagan_cifar10.get_config())
  assert tuple(config.model.generator.widths) == (64, 16, 4)
  assert config.model.generator.latent_dim == 8
  assert tuple(config.model.discriminator.enc_widths) == (4, 8)
  assert config.model.discriminator.num_heads == 4  # heads are kept
  assert config.training.batch_size == BATCH_SIZE


def test_readme_paper_table_is_generated_from_rows():
  """configs/paper/rows.py is the one source of the paper's numbers: README shows its table."""
  from configs.paper import rows  # pylint: disable=g-import-not-at-top
  with open(os.path.join(REPO_ROOT, 'README.md')) as f:
    readme = f.read()
  begin = '<!-- paper rows: generated by python -m configs.paper.rows -->\n'
  section = readme[readme.index(begin) + len(begin):readme.index('\n<!-- /paper rows -->')]
  assert section == rows.markdown(), 'README is stale: python -m configs.paper.rows'


def test_every_paper_config_has_one_row_and_aliases_are_their_targets():
  from configs.paper import rows  # pylint: disable=g-import-not-at-top
  files = sorted(name[:-3] for name in os.listdir(os.path.join(CONFIG_DIR, 'paper'))
                 if name.endswith('.py') and name not in ('__init__.py', 'common.py', 'rows.py'))
  assert files == sorted(rows.BY_CONFIG) and len(rows.ROWS) == len(rows.BY_CONFIG)
  for row in rows.ROWS:
    module = importlib.import_module(f'configs.paper.{row.config}')
    target = row.same_run_as or row.config_of
    assert bool(target) == (module.__doc__.count('An alias of') == 1), row.config
    if row.same_run_as:  # one run, one number: kept on the row it aliases
      assert not (row.paper or row.source), row.config
    if target:
      assert module.get_config is importlib.import_module(
          f'configs.paper.{target}').get_config, row.config
