"""Shared pieces of the benchmarks: configs, device facts, FLOPs, compile counting, JSON.

Imports only JAX, numpy and ml_collections (through the configs): the GPU machines have no
TensorFlow or clu, so nothing here may pull them in.
"""

import contextlib
import datetime
import importlib.util
import json
import os
import platform
import re
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

RESULTS_DIR = os.path.join(ROOT, 'bench', 'results')
DEFAULT_DATA = os.path.join(ROOT, '..', 'shared', 'data', 'cifar100_classes0-9_1834.npz')
CARRIED_DATA = os.path.join(ROOT, '.carry', 'cifar100_classes0-9_1834.npz')
CARRIED_INCEPTION = os.path.join(ROOT, '.carry', 'inception_fid_float16.npz')

# Peak dense bf16 matrix rate per chip (vendor spec sheets, no sparsity), matched in order
# against jax's device_kind. MFU is reported against this number; CPUs get none.
PEAK_BF16_FLOPS = (
    ('H100 PCIe', 756e12),
    ('H100', 989e12),      # H100 SXM
    ('H200', 989e12),
    ('A100', 312e12),
    ('TPU v3', 123e12),
    ('TPU v4', 275e12),
    ('TPU v5 lite', 197e12),  # v5e
    ('TPU v5e', 197e12),
    ('TPU v5p', 459e12),
    ('TPU v6 lite', 918e12),  # v6e (Trillium)
)

_BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


def peak_flops(device_kind: str):
  """(peak bf16 FLOP/s per chip, the table key used) or (None, None) when unknown (CPU)."""
  for key, flops in PEAK_BF16_FLOPS:
    if key.lower() in device_kind.lower():
      return flops, key
  return None, None


def load_config(path: str, overrides=None):
  """get_config() of a config file (path relative to the repo root), with dotted overrides."""
  full = path if os.path.isabs(path) else os.path.join(ROOT, path)
  name = 'bench_config_' + re.sub(r'\W', '_', os.path.relpath(full, ROOT))
  spec = importlib.util.spec_from_file_location(name, full)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in (overrides or {}).items():
    set_dotted(config, key, value)
  return config


def set_dotted(config, key: str, value) -> None:
  *parents, leaf = key.split('.')
  for part in parents:
    config = config[part]
  if leaf not in config:
    raise KeyError(f'config has no field {key!r}')
  config[leaf] = value


def versions() -> dict:
  out = {'python': platform.python_version(), 'jax': jax.__version__}
  for name in ('jaxlib', 'flax', 'optax', 'numpy', 'scipy'):
    try:
      out[name] = __import__(name).__version__
    except ImportError:
      out[name] = None
  return out


def device_info() -> dict:
  """Platform, device kind and count, and the peak rate used for MFU."""
  devices = jax.devices()
  kind = devices[0].device_kind
  peak, key = peak_flops(kind)
  return {
      'platform': devices[0].platform,
      'device_kind': kind,
      'num_devices': len(devices),
      'num_processes': jax.process_count(),
      'host_cpus': os.cpu_count(),
      'peak_bf16_flops_per_device': peak,
      'peak_spec_key': key,
  }


def device_slug(info=None) -> str:
  """Short file-name form of a device_info(), e.g. 'nvidia-h100-80gb-hbm3' or 'cpu'."""
  info = info or device_info()
  name = 'cpu' if info['platform'] == 'cpu' else info['device_kind']
  slug = re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')
  return f'{slug}-x{info["num_devices"]}' if info['num_devices'] > 1 else slug


def header(benchmark: str, quick: bool) -> dict:
  """Fields every results JSON starts with."""
  info = device_info()
  return {
      'benchmark': benchmark,
      'date': datetime.date.today().isoformat(),
      'time_utc': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'quick': quick,
      'device': info,
      'is_cpu_result': info['platform'] == 'cpu',
      'versions': versions(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }


def flops_of(stage):
  """'flops' of a Lowered/Compiled's cost analysis (a dict, or a list of dicts), or None."""
  try:
    analysis = stage.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if analysis is None:
    return None
  if isinstance(analysis, dict):
    analysis = [analysis]
  values = [a.get('flops') for a in analysis if a and a.get('flops') is not None]
  return float(sum(values)) if values else None


def memory_analysis(compiled) -> dict:
  """XLA's static memory plan of one executable (bytes), or {} where unsupported."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if stats is None:
    return {}
  fields = ('argument_size_in_bytes', 'output_size_in_bytes', 'alias_size_in_bytes',
            'temp_size_in_bytes', 'generated_code_size_in_bytes')
  out = {f: int(getattr(stats, f, 0)) for f in fields}
  # Live at once during the step: inputs, outputs not aliased to (donated) inputs, temps.
  out['estimated_step_bytes'] = (out['argument_size_in_bytes'] + out['output_size_in_bytes']
                                 - out['alias_size_in_bytes'] + out['temp_size_in_bytes'])
  return out


def device_memory() -> dict:
  """Device allocator figures (peak is a running maximum over the process); None on CPU."""
  stats = jax.devices()[0].memory_stats()
  if not stats:
    return {'peak_bytes_in_use': None, 'bytes_in_use': None, 'bytes_limit': None}
  return {k: stats.get(k) for k in ('peak_bytes_in_use', 'bytes_in_use', 'bytes_limit')}


class CompileCounter:
  """Counts XLA backend compilations (jax.monitoring events) made by the counting thread.

  Compiles that other threads run meanwhile (a background compile pool) are not counted.
  """

  def __init__(self):
    self.count = 0
    self._thread = None
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event, duration, **kwargs):
    del duration, kwargs
    if event == _BACKEND_COMPILE_EVENT and threading.get_ident() == self._thread:
      self.count += 1

  @contextlib.contextmanager
  def counting(self):
    self._thread, start = threading.get_ident(), self.count
    try:
      yield lambda: self.count - start
    finally:
      self._thread = None


@contextlib.contextmanager
def attention_implementation(implementation):
  """Makes jax.nn.dot_product_attention use `implementation` ('xla', 'cudnn') while tracing.

  The models call jax.nn.dot_product_attention without an implementation, which means XLA's;
  this lets the benchmark try cuDNN's fused kernel without a model change. Calls with a bias
  (the L2 attention of ViTGAN's D: a (B, H, 1, S) key bias over 65 tokens) stay on XLA, since
  cuDNN takes only a full (B, H, T, S) bias and, when training with one, even lengths.
  """
  if implementation in (None, 'xla'):
    yield
    return
  original = jax.nn.dot_product_attention

  def patched(*args, **kwargs):
    if kwargs.get('bias') is None and len(args) < 4:
      kwargs.setdefault('implementation', implementation)
    return original(*args, **kwargs)

  jax.nn.dot_product_attention = patched
  try:
    yield
  finally:
    jax.nn.dot_product_attention = original


def timed(fn, *args, **kwargs):
  """(result, seconds)."""
  start = time.perf_counter()
  out = fn(*args, **kwargs)
  return out, time.perf_counter() - start


def write_json(result: dict, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)) or '.', exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(result, f, indent=1, default=_json_default)
    f.write('\n')
  os.replace(tmp, path)
  return path


def _json_default(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


def default_out(benchmark: str, quick: bool) -> str:
  suffix = '-quick' if quick else ''
  name = f'{datetime.date.today().isoformat()}-{device_slug()}-{benchmark}{suffix}.json'
  return os.path.join(RESULTS_DIR, name)


def first_existing(*paths):
  for path in paths:
    if path and os.path.exists(path):
      return path
  return None


def load_inception(spec: str = 'auto'):
  """(params in float32, label, model) for the FID feature network from spec.

  spec: 'auto' (the carried float16 pack in .carry/, see pack_inception.py; else the
  evaluation module's loader: $VITGAN_INCEPTION_PT, the cache dir; else random weights),
  'random', 'tiny', or a weights path. Labels: 'float16-packed', 'float32', 'random' (fine
  for timing; FID values then mean nothing) and 'tiny' (a small conv net instead of Inception,
  for plumbing tests only). model is None for the real InceptionV3 (FeatureExtractor's own).
  """
  from vitgan_jax.evaluation import inception, weights  # pylint: disable=g-import-not-at-top
  if spec == 'tiny':
    model = TinyFeatures()
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3), np.uint8))['params']
    return jax.tree.map(np.asarray, params), 'tiny', model
  if spec == 'auto':
    if os.path.exists(CARRIED_INCEPTION):
      spec = CARRIED_INCEPTION
    else:
      try:
        return _as_float32(weights.load_inception_params()), 'float32', None
      except FileNotFoundError:
        spec = 'random'
  if spec == 'random':
    params = inception.init_params(jax.random.PRNGKey(0), with_logits=True)
    return jax.tree.map(np.asarray, params), 'random', None
  params = weights.load_inception_params(spec)  # float16 kernels come back as float32
  packed = spec.endswith('.npz') and _has_float16(spec)
  return _as_float32(params), 'float16-packed' if packed else 'float32', None


def _has_float16(npz_path):
  with np.load(npz_path) as f:
    return any(f[name].dtype == np.float16 for name in f.files)


def _as_float32(params):
  return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


class TinyFeatures(nn.Module):
  """Two strided convs and a mean: 64-d 'pool' features in place of Inception's 2048.

  Only for smoke tests of the benchmark plumbing on CPU, where Inception at 299x299 and the
  2048x2048 matrix square root take minutes.
  """
  features: int = 64

  @nn.compact
  def __call__(self, images):
    x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    x = nn.relu(nn.Conv(16, (3, 3), strides=(2, 2))(x))
    x = nn.Conv(self.features, (3, 3), strides=(2, 2))(x)
    return {'pool': jnp.mean(x, axis=(1, 2))}
