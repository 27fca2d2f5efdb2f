"""Tests for vitgan_jax/input_pipeline.py: numpy order/resume/sharding, tf.data paths."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import default
from tests.helpers import CIFAR_SUBSET_NPZ, REPO_ROOT
from vitgan_jax import input_pipeline

SHARED_NPZ = pathlib.Path(CIFAR_SUBSET_NPZ)


def _config(source='arrays', image_size=8, channels=3, flip=True, **data):
  config = default.get_config()
  config.model.image_size = image_size
  config.model.channels = channels
  config.data.source = source
  config.data.flip = flip
  config.data.shuffle_buffer = 64
  config.data.update(data)
  return config


def _distinct_images(num_images, size=8, channels=3):
  """Image i is the constant i (flip-invariant), so a batch tells which images it holds."""
  return np.broadcast_to(np.arange(num_images, dtype=np.uint8)[:, None, None, None],
                         (num_images, size, size, channels)).copy()


def _ids(batch):
  return np.rint((batch['image'][:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def _take(iterator, num_batches):
  return [next(iterator) for _ in range(num_batches)]


# ----------------------------------------------------------------------------- numpy

def test_arrays_order_follows_the_documented_permutations():
  images = _distinct_images(20)
  config = _config(flip=False)
  batches = _take(input_pipeline.create_dataset(
      config, batch_size=8, seed=3, process_index=0, process_count=1, arrays=images), 5)
  stream = np.concatenate([_ids(b) for b in batches])
  expected = np.concatenate([np.random.default_rng((3, epoch)).permutation(20)
                             for epoch in range(2)])
  np.testing.assert_array_equal(stream, expected)
  # Every image exactly once per epoch, and the two epochs are shuffled differently.
  assert sorted(stream[:20]) == list(range(20)) == sorted(stream[20:])
  assert not np.array_equal(stream[:20], stream[20:])


def test_arrays_values_range_and_flips():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
  images[0] = 0
  images[1] = 255
  config = _config(flip=True)
  iterator = input_pipeline.create_dataset(config, batch_size=16, seed=1, process_index=0,
                                           process_count=1, arrays=images)
  batch = next(iterator)['image']
  assert batch.dtype == np.float32 and batch.shape == (16, 8, 8, 3)
  assert batch.min() == -1.0 and batch.max() == 1.0
  order = np.random.default_rng((1, 0)).permutation(16)
  flipped = 0
  for out, index in zip(batch, order):
    original = images[index].astype(np.float32) / 127.5 - 1
    if np.array_equal(out, original[:, ::-1]):
      flipped += 1
    else:
      np.testing.assert_array_equal(out, original)
  assert 0 < flipped < 16
  config.data.flip = False
  unflipped = next(input_pipeline.create_dataset(
      config, batch_size=16, seed=1, process_index=0, process_count=1, arrays=images))
  np.testing.assert_array_equal(unflipped['image'], images[order] / np.float32(127.5) - 1)


def test_arrays_deterministic_and_seed_dependent():
  images = np.random.default_rng(1).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
  make = lambda seed: input_pipeline.create_dataset(
      _config(), batch_size=6, seed=seed, process_index=0, process_count=1, arrays=images)
  a, b, c = _take(make(5), 4), _take(make(5), 4), _take(make(6), 4)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  assert not all(np.array_equal(x['image'], z['image']) for x, z in zip(a, c))


def test_arrays_resume_is_exact():
  images = np.random.default_rng(2).integers(0, 256, (13, 8, 8, 3), dtype=np.uint8)
  kwargs = dict(batch_size=4, seed=7, process_index=0, process_count=1, arrays=images)
  fresh = _take(input_pipeline.create_dataset(_config(), **kwargs), 9)
  resumed = _take(input_pipeline.create_dataset(_config(), start_step=5, **kwargs), 4)
  for x, y in zip(fresh[5:], resumed):
    np.testing.assert_array_equal(x['image'], y['image'])


def test_process_slices_concatenate_to_the_global_batch():
  images = np.random.default_rng(3).integers(0, 256, (11, 8, 8, 3), dtype=np.uint8)
  kwargs = dict(batch_size=6, seed=0, arrays=images)
  single = _take(input_pipeline.create_dataset(_config(), process_index=0, process_count=1,
                                               **kwargs), 4)
  parts = [_take(input_pipeline.create_dataset(_config(), process_index=i, process_count=3,
                                               **kwargs), 4) for i in range(3)]
  for step in range(4):
    assert parts[0][step]['image'].shape == (2, 8, 8, 3)
    joined = np.concatenate([parts[i][step]['image'] for i in range(3)])
    np.testing.assert_array_equal(joined, single[step]['image'])


def test_arrays_validation_errors():
  good = _distinct_images(4)
  with pytest.raises(ValueError, match=r'\(N, 8, 8, 3\).*found \(4, 8, 8, 1\)'):
    input_pipeline.create_dataset(_config(), batch_size=2, seed=0, process_index=0,
                                  process_count=1, arrays=good[..., :1])
  with pytest.raises(ValueError, match='uint8'):
    input_pipeline.create_dataset(_config(), batch_size=2, seed=0, process_index=0,
                                  process_count=1, arrays=good.astype(np.float32))
  with pytest.raises(ValueError, match='not divisible'):
    input_pipeline.create_dataset(_config(), batch_size=5, seed=0, process_index=0,
                                  process_count=2, arrays=good)
  with pytest.raises(ValueError, match='no arrays'):
    input_pipeline.create_dataset(_config(), batch_size=2, seed=0, process_index=0,
                                  process_count=1)
  missing = '/nonexistent/images.npz'
  with pytest.raises(FileNotFoundError, match=missing):
    input_pipeline.create_dataset(_config('npz', path=missing), batch_size=2, seed=0,
                                  process_index=0, process_count=1)
  with pytest.raises(ValueError, match="'bogus'"):
    input_pipeline.create_dataset(_config('bogus'), batch_size=2, seed=0, process_index=0,
                                  process_count=1)


def test_npz_path_and_load_images(tmp_path):
  images = np.random.default_rng(4).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)
  path = str(tmp_path / 'images.npz')
  np.savez(path, x=images)
  config = _config('npz', path=path, flip=False)
  batch = next(input_pipeline.create_dataset(config, batch_size=10, seed=0, process_index=0,
                                             process_count=1))
  order = np.random.default_rng((0, 0)).permutation(10)
  np.testing.assert_array_equal(batch['image'], images[order] / np.float32(127.5) - 1)
  np.testing.assert_array_equal(input_pipeline.load_images(config), images)
  np.testing.assert_array_equal(input_pipeline.load_images(config, max_images=3), images[:3])


@pytest.mark.skipif(not SHARED_NPZ.exists(), reason=f'{SHARED_NPZ} absent (shared test data)')
def test_shared_cifar100_npz():
  config = _config('npz', image_size=32, path=str(SHARED_NPZ))
  images = input_pipeline.load_images(config)
  assert images.shape == (1834, 32, 32, 3) and images.dtype == np.uint8
  batch = next(input_pipeline.create_dataset(config, batch_size=64, seed=0, process_index=0,
                                             process_count=1))['image']
  assert batch.shape == (64, 32, 32, 3)
  assert -1.0 <= batch.min() < -0.5 and 0.5 < batch.max() <= 1.0
  wrong_size = _config('npz', image_size=64, path=str(SHARED_NPZ))
  with pytest.raises(ValueError, match='found'):
    input_pipeline.load_images(wrong_size)


def test_arrays_path_never_imports_tensorflow():
  code = (
      'import sys, numpy as np\n'
      'from configs import default\n'
      'from vitgan_jax import input_pipeline\n'
      'c = default.get_config(); c.data.source = "arrays"; c.model.image_size = 4\n'
      'x = np.zeros((8, 4, 4, 3), np.uint8)\n'
      'b = next(input_pipeline.create_dataset(c, batch_size=4, seed=0, arrays=x))\n'
      'assert b["image"].shape == (4, 4, 4, 3)\n'
      'input_pipeline.load_images(c, arrays=x)\n'
      'assert "tensorflow" not in sys.modules, "tensorflow was imported"\n')
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
  assert result.returncode == 0, result.stderr[-2000:]


# --------------------------------------------------------------------------- tf.data

def test_tfds_mock_cifar10(monkeypatch):
  # A dependency (setup.py), so imported, not importorskip'ed: a fresh install that cannot
  # import it, or what it imports, fails here instead of skipping.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # mock_data skips the download, not the reachability check before it (no internet here).
  monkeypatch.setattr(input_pipeline, '_unreachable_hosts', lambda urls: [])
  config = _config('tfds', image_size=32, name='cifar10', flip=False)
  with tfds.testing.mock_data(num_examples=12):
    raw = np.stack([ex['image'] for ex in tfds.as_numpy(
        tfds.load('cifar10', split='train', shuffle_files=False))])
    kwargs = dict(batch_size=4, seed=0)
    fresh = _take(input_pipeline.create_dataset(config, process_index=0, process_count=1,
                                                **kwargs), 8)
    resumed = _take(input_pipeline.create_dataset(config, start_step=5, process_index=0,
                                                  process_count=1, **kwargs), 3)
    shard = _take(input_pipeline.create_dataset(config, process_index=1, process_count=2,
                                                **kwargs), 3)
    np.testing.assert_array_equal(input_pipeline.load_images(config), raw)
    flipped_config = _config('tfds', image_size=32, name='cifar10', flip=True)
    flipped = _take(input_pipeline.create_dataset(flipped_config, process_index=0,
                                                  process_count=1, **kwargs), 3)

  first = fresh[0]['image']
  assert first.shape == (4, 32, 32, 3) and first.dtype == np.float32
  assert -1.0 <= first.min() and first.max() <= 1.0
  as_uint8 = lambda b: np.rint((b['image'] + 1) * 127.5).astype(np.uint8)
  # One epoch (3 batches of 4) is a shuffled copy of the 12 examples, unchanged at 32x32.
  epoch = np.concatenate([as_uint8(b) for b in fresh[:3]])
  key = lambda images: sorted(image.tobytes() for image in images)
  assert key(epoch) == key(raw)
  assert not np.array_equal(epoch, raw)  # shuffled
  second_epoch = np.concatenate([as_uint8(b) for b in fresh[3:6]])
  assert key(second_epoch) == key(raw)
  assert not np.array_equal(second_epoch, epoch)  # reshuffled each epoch
  for x, y in zip(fresh[5:], resumed):
    np.testing.assert_array_equal(x['image'], y['image'])
  # Process 1 of 2 sees examples 1, 3, 5, ... (ds.shard), 6 per epoch.
  shard_epoch = np.concatenate([as_uint8(b) for b in shard])
  assert shard[0]['image'].shape == (2, 32, 32, 3)
  assert key(shard_epoch[:6]) == key(raw[1::2])
  # Flips: every image is an example or its mirror, and some are mirrored.
  flipped_epoch = np.concatenate([as_uint8(b) for b in flipped])
  originals, mirrors = set(key(raw)), set(key(raw[:, :, ::-1]))
  is_mirror = [image.tobytes() in mirrors and image.tobytes() not in originals
               for image in flipped_epoch]
  assert all(image.tobytes() in originals | mirrors for image in flipped_epoch)
  assert 0 < sum(is_mirror) < 12


def _downsample2_reference(image):
  """Antialiased bilinear 2x reduction in numpy: taps 1/8, 3/8, 3/8, 1/8, renormalized."""
  def reduce_axis(x, axis):
    x = np.moveaxis(x, axis, 0).astype(np.float64)
    n = x.shape[0]
    out = []
    for i in range(n // 2):
      taps = [(2 * i - 1, 1), (2 * i, 3), (2 * i + 1, 3), (2 * i + 2, 1)]
      taps = [(j, w) for j, w in taps if 0 <= j < n]
      out.append(sum(w * x[j] for j, w in taps) / sum(w for _, w in taps))
    return np.moveaxis(np.stack(out), 0, axis)
  return reduce_axis(reduce_axis(image, 0), 1)


def _write_folder(root):
  from PIL import Image
  rng = np.random.default_rng(0)
  # 24x40 RGB: red 8-column borders around a green 24x24 centre -> all green after the crop.
  wide = np.zeros((24, 40, 3), np.uint8)
  wide[:, :8] = wide[:, 32:] = (255, 0, 0)
  wide[:, 8:32] = (0, 200, 0)
  Image.fromarray(wide).save(root / 'wide.png')
  gray = rng.integers(0, 256, (32, 32), dtype=np.uint8)
  Image.fromarray(gray, mode='L').save(root / 'gray.png')
  (root / 'sub').mkdir()
  small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
  Image.fromarray(small).save(root / 'sub' / 'small.PNG')
  (root / 'notes.txt').write_text('not an image')
  return {'wide': np.broadcast_to(np.array([0, 200, 0], np.uint8), (16, 16, 3)),
          'gray': np.repeat(_downsample2_reference(gray)[..., None], 3, axis=-1),
          'small': small.astype(np.float64)}


def test_folder_path(tmp_path):
  expected = _write_folder(tmp_path)  # sorted files: gray.png, sub/small.PNG, wide.png
  config = _config('folder', image_size=16, path=str(tmp_path), flip=False)
  loaded = input_pipeline.load_images(config)
  assert loaded.shape == (3, 16, 16, 3) and loaded.dtype == np.uint8
  for image, name in zip(loaded, ['gray', 'small', 'wide']):
    np.testing.assert_allclose(image, expected[name], atol=1.0, err_msg=name)

  pytest.importorskip('tensorflow')
  batches = _take(input_pipeline.create_dataset(config, batch_size=3, seed=0, process_index=0,
                                                process_count=1), 2)
  epoch = np.rint((batches[0]['image'] + 1) * 127.5)
  assert epoch.shape == (3, 16, 16, 3)
  for name, reference in expected.items():  # shuffled: match each file to its nearest output
    errors = np.abs(epoch - reference).max(axis=(1, 2, 3))
    assert errors.min() <= 1.0, name
  with pytest.raises(FileNotFoundError, match='missing_dir'):
    input_pipeline.create_dataset(_config('folder', path=str(tmp_path / 'missing_dir')),
                                  batch_size=2, seed=0, process_index=0, process_count=1)


def test_center_crop_conventions():
  assert input_pipeline._crop_size(_config('tfds', name='celeb_a')) == 108
  assert input_pipeline._crop_size(_config('tfds', name='cifar10')) == 0
  config = _config('tfds', name='celeb_a')
  config.data.center_crop_size = 140
  assert input_pipeline._crop_size(config) == 140

  tf = pytest.importorskip('tensorflow')
  face = np.zeros((218, 178, 3), np.uint8)  # CelebA's aligned size; the central 108^2 is 90
  face[55:163, 35:143] = 90
  out = input_pipeline._tf_fit_image(tf, tf.constant(face), image_size=64, channels=3,
                                     crop_size=108, resize_mode='center_crop')
  np.testing.assert_array_equal(out.numpy(), np.full((64, 64, 3), 90.0))


def test_random_source_is_fixed_noise_of_the_model_shape():
  config = _config(source='random', image_size=16, channels=3)
  first = next(input_pipeline.create_dataset(config, batch_size=4, seed=0))['image']
  again = next(input_pipeline.create_dataset(config, batch_size=4, seed=0))['image']
  assert first.shape == (4, 16, 16, 3) and first.min() >= -1 and first.max() <= 1
  np.testing.assert_array_equal(first, again)
  images = input_pipeline.load_images(config, max_images=10)
  assert images.shape == (10, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 50


def test_describe_says_what_a_run_trains_on(tmp_path):
  noise = input_pipeline.describe(_config(source='random', image_size=16))
  assert noise.startswith('FIXED NOISE IMAGES, not a dataset') and '1,024' in noise
  assert '16x16x3' in noise
  np.savez(tmp_path / 'x.npz', x=np.zeros((1834, 8, 8, 3), np.uint8))
  described = input_pipeline.describe(_config(source='npz', path=str(tmp_path / 'x.npz')))
  assert described == f"1,834 images of {tmp_path / 'x.npz'} (data.source='npz'), 8x8x3"
  assert input_pipeline.describe(_config(), arrays=np.zeros((5, 8, 8, 3), np.uint8)) == (
      "5 images given in memory (data.source='arrays'), 8x8x3")
  folder = input_pipeline.describe(_config(source='folder', path='/data/faces'))
  assert '/data/faces' in folder
  tfds_line = input_pipeline.describe(_config(source='tfds', name='cifar10',
                                              data_dir=str(tmp_path / 'none')))
  assert tfds_line == (f"TFDS cifar10, split 'train', data_dir {tmp_path / 'none'}, "
                       'fitted to 8x8x3')  # not prepared there: no count, and no download


def test_tfds_unprepared_and_offline_fails_in_seconds_with_one_line(tmp_path, monkeypatch):
  """A fresh install reads the builder's download URLs (this import chain once needed a
  package etils stopped pulling in), and an unreachable host is one error, not minutes of
  retries."""
  import tensorflow_datasets  # pylint: disable=g-import-not-at-top,unused-import  # a dependency
  probed = []

  def unreachable(urls, timeout=input_pipeline.DOWNLOAD_PROBE_TIMEOUT_S):
    probed.extend(urls)
    return ['www.cs.toronto.edu']

  monkeypatch.setattr(input_pipeline, '_unreachable_hosts', unreachable)
  config = _config('tfds', image_size=32, name='cifar10', data_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError) as info:
    next(input_pipeline.create_dataset(config, batch_size=4, seed=0, process_index=0,
                                       process_count=1))
  message = str(info.value)
  assert "'cifar10'" in message and str(tmp_path) in message and 'data.source' in message
  assert '\n' not in message
  assert any('cifar-10' in url for url in probed)  # the builder's real download URLs


def test_unreachable_hosts_probes_tcp():
  import socket  # pylint: disable=g-import-not-at-top
  with socket.socket() as listening:
    listening.bind(('127.0.0.1', 0))
    listening.listen(1)
    port = listening.getsockname()[1]
    assert input_pipeline._unreachable_hosts([f'http://127.0.0.1:{port}/x']) == []
  with socket.socket() as closed:  # bound, never listening: the connection is refused
    closed.bind(('127.0.0.1', 0))
    port = closed.getsockname()[1]
    assert input_pipeline._unreachable_hosts([f'http://127.0.0.1:{port}/x'],
                                             timeout=1.0) == ['127.0.0.1']
