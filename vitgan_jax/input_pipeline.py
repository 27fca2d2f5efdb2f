"""Training images as per-process numpy batches: {'image': float32 [B/P, H, W, C] in [-1, 1]}.

Two back ends behind `create_dataset`:
- 'arrays' / 'npz' / 'random': pure numpy, never imports TensorFlow (the GPU machines lack it). The
  order is a pure function of (seed, step), so resuming at any step is exact and free.
- 'tfds' / 'folder': tf.data, imported lazily; sharded per process, seeded shuffle.
Images are fitted to model.image_size by a center crop to a square (or a dataset's
conventional crop) and an antialiased bilinear resize; `load_images` does the same with
PIL (within one grey level of tf.image.resize) for FID reference statistics.
"""

import dataclasses
import functools
import hashlib
import os
import socket
import urllib.parse
from typing import Any, Iterator, Optional

import jax
import numpy as np

from vitgan_jax import images as images_lib

# Conventional center crops before resizing, by TFDS name prefix. CelebA-64 GAN work
# (DCGAN-tensorflow, TTUR's FID statistics, SNGAN...) crops the central 108x108 of the
# 178x218 aligned faces, then resizes to 64. Other datasets take the largest central square.
TFDS_CENTER_CROP = {'celeb_a': 108}
DOWNLOAD_PROBE_TIMEOUT_S = 5.0  # how long a TFDS download host gets to answer
# Tags the flip stream so its seeds never coincide with the epoch permutations' (seed, epoch).
_FLIP_STREAM = 0x5F11


def _process_info(process_index, process_count):
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  return process_index, process_count


def _local_batch_size(batch_size, process_count):
  if batch_size % process_count:
    raise ValueError(f'batch_size {batch_size} is not divisible by the number of '
                     f'processes {process_count}.')
  return batch_size // process_count


def _crop_size(config):
  """Explicit config.data.center_crop_size (optional field), else the dataset's convention."""
  crop = config.data.get('center_crop_size', 0)
  if not crop and config.data.source == 'tfds':
    crop = TFDS_CENTER_CROP.get(config.data.name.split('/')[0].split(':')[0], 0)
  return crop


def _validate(images, config):
  """Checks uint8 NHWC images of the model's size; returns them."""
  size, channels = config.model.image_size, config.model.channels
  expected = (size, size, channels)
  if images.ndim != 4 or tuple(images.shape[1:]) != expected:
    raise ValueError(f'Expected images of shape (N, {size}, {size}, {channels}) from '
                     f'model.image_size/channels, found {tuple(images.shape)}.')
  if images.dtype != np.uint8:
    raise ValueError(f'Expected uint8 images, found {images.dtype}.')
  if not len(images):
    raise ValueError('The dataset has no images (an empty array or .npz "x").')
  return images


def _load_npz(path):
  if not os.path.exists(path):
    raise FileNotFoundError(f'No such .npz file: {path!r} (config.data.path).')
  with np.load(path) as data:
    if 'x' not in data:
      raise ValueError(f'{path!r} has no array "x" (found {sorted(data.keys())}).')
    return data['x']


RANDOM_IMAGES = 1024  # size of data.source 'random'
NUMPY_SOURCES = ('arrays', 'npz', 'random')  # read without TensorFlow


def random_images(config, num_images=RANDOM_IMAGES):
  """data.source 'random': fixed uint8 noise images, for plumbing checks without any dataset."""
  shape = (num_images, config.model.image_size, config.model.image_size, config.model.channels)
  return np.random.default_rng(1234).integers(0, 256, shape, np.uint8)


def _load_numpy_images(config, arrays):
  if config.data.source == 'random':
    return random_images(config)
  if config.data.source == 'arrays':
    if arrays is None:
      raise ValueError("data.source is 'arrays' but no arrays= were given.")
    return _validate(np.asarray(arrays), config)
  return _validate(_load_npz(config.data.path), config)


@functools.lru_cache(maxsize=8)  # a step touches one or two epochs: no O(N) work per step
def _epoch_permutation(seed, epoch, num_images):
  return np.random.default_rng((seed, epoch)).permutation(num_images)


def global_batch_indices(num_images, batch_size, seed, step):
  """Indices of the global batch at `step`: items [step*B, (step+1)*B) of the
  concatenation of per-epoch permutations from default_rng((seed, epoch))."""
  positions = step * batch_size + np.arange(batch_size)
  epochs, offsets = np.divmod(positions, num_images)
  indices = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    in_epoch = epochs == epoch
    indices[in_epoch] = _epoch_permutation(seed, int(epoch), num_images)[offsets[in_epoch]]
  return indices


def global_batch_flips(batch_size, seed, step):
  """Per-example horizontal-flip decisions of the global batch at `step`."""
  return np.random.default_rng((seed, step, _FLIP_STREAM)).random(batch_size) < 0.5


def _to_unit_range(images):
  return images.astype(np.float32) / 127.5 - 1.0


def _numpy_batches(images, *, batch_size, seed, start_step, process_index, process_count,
                   flip):
  """Yields this process's contiguous slice of each global batch, from `start_step` on."""
  local = _local_batch_size(batch_size, process_count)
  mine = slice(process_index * local, (process_index + 1) * local)
  step = start_step
  while True:
    indices = global_batch_indices(len(images), batch_size, seed, step)[mine]
    batch = images[indices]
    if flip:
      flips = global_batch_flips(batch_size, seed, step)[mine]
      batch = np.where(flips[:, None, None, None], batch[:, :, ::-1], batch)
    yield {'image': _to_unit_range(batch)}
    step += 1


def _import_tf():
  """TensorFlow and TFDS, imported only for the tf.data back ends; TF kept off the GPUs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # devices already initialized by an earlier call
    pass
  return tf, tfds


def _tf_fit_image(tf, image, *, image_size, channels, crop_size, resize_mode):
  """uint8 [h, w, c] -> float32 [image_size, image_size, channels] in [0, 255], rounded."""
  have = image.shape[-1]
  if have != channels:
    if have == 1:
      image = tf.image.grayscale_to_rgb(image)
    elif channels == 1:
      image = tf.image.rgb_to_grayscale(image[..., :3])
    else:
      image = image[..., :channels]  # RGBA -> RGB
  if resize_mode == 'center_crop':
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = crop_size if crop_size else tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    image = image[top:top + side, left:left + side]
  elif resize_mode != 'resize':
    raise ValueError(f"Unknown data.resize_mode {resize_mode!r}; use 'center_crop' or "
                     "'resize'.")
  # Antialiased bilinear resize is exactly the identity when the size already matches.
  image = tf.image.resize(image, [image_size, image_size], method='bilinear', antialias=True)
  image = tf.clip_by_value(tf.round(image), 0.0, 255.0)
  return tf.ensure_shape(image, [image_size, image_size, channels])


def _unreachable_hosts(urls, timeout=DOWNLOAD_PROBE_TIMEOUT_S):
  """The hosts of `urls` that no TCP connection reaches within `timeout` seconds."""
  hosts = sorted({(u.hostname, u.port or (443 if u.scheme == 'https' else 80))
                  for u in map(urllib.parse.urlparse, urls) if u.hostname})
  unreachable = []
  for host, port in hosts:
    try:
      socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
      unreachable.append(host)
  return unreachable


def _prepare_tfds(builder, data):
  """Downloads and prepares a TFDS dataset unless it is there; fails in seconds when offline.

  TFDS retries an unreachable download for minutes; a quick connection test first turns that
  into one line saying where the data was looked for and what else to use.
  """
  if builder.is_prepared():
    return
  where = f"data.data_dir={data.data_dir!r}" if data.data_dir else 'the TFDS default data_dir'
  unreachable = _unreachable_hosts(list(builder.url_infos or {}))
  if unreachable:
    raise FileNotFoundError(
        f'TFDS dataset {data.name!r} is not prepared in {builder.data_dir} ({where}) and '
        f'cannot be downloaded ({", ".join(unreachable)} unreachable). Prepare it on a machine '
        f'with internet (tfds build {data.name.split(":")[0]} --data_dir DIR) and set '
        "--config.data.data_dir=DIR, or train from files with data.source='folder' or 'npz' "
        'and data.path.')
  builder.download_and_prepare()


def _tf_encoded_images(config, tf, tfds):
  """(dataset of encoded images, decode fn), in a fixed order."""
  data = config.data
  if data.source == 'tfds':
    builder = tfds.builder(data.name, data_dir=data.data_dir or None)
    _prepare_tfds(builder, data)
    # Decode after sharding and skipping: a process never decodes what it throws away.
    ds = builder.as_dataset(split=data.split, shuffle_files=False,
                            decoders={'image': tfds.decode.SkipDecoding()})
    feature = builder.info.features['image']
    return ds.map(lambda example: example['image']), feature.decode_example
  files = images_lib.list_image_files(data.path, walk=tf.io.gfile.walk, isdir=tf.io.gfile.isdir,
                                      field='config.data.path')
  channels = config.model.channels

  def decode(filename):
    return tf.io.decode_image(tf.io.read_file(filename), channels=channels,
                              expand_animations=False)

  return tf.data.Dataset.from_tensor_slices(files), decode


def _tf_batches(config, *, batch_size, seed, start_step, process_index, process_count):
  """tf.data: shard, seeded shuffle, repeat, decode/crop/resize/flip, batch, prefetch.

  Resume replays the stream and skips start_step * local_batch examples before decoding:
  exact for a fixed seed (the shuffle is seeded, the flips are a function of the example's
  position in the stream), and cheap since skipped examples are never decoded.
  """
  tf, tfds = _import_tf()
  local = _local_batch_size(batch_size, process_count)
  ds, decode = _tf_encoded_images(config, tf, tfds)
  fit = functools.partial(
      _tf_fit_image, tf, image_size=config.model.image_size,
      channels=config.model.channels, crop_size=_crop_size(config),
      resize_mode=config.data.resize_mode)

  def preprocess(position, encoded):
    image = fit(decode(encoded))
    if config.data.flip:
      example_id = position * process_count + process_index
      draw = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64),
                                                            example_id]))
      image = tf.where(draw < 0.5, tf.reverse(image, axis=[1]), image)
    return image / 127.5 - 1.0

  ds = ds.shard(process_count, process_index)
  ds = ds.shuffle(config.data.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat().enumerate().skip(start_step * local)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ({'image': images} for images in tfds.as_numpy(ds))


def create_dataset(config, *, batch_size, seed, start_step=0, process_index=None,
                   process_count=None, arrays=None):
  """Endless iterator of this process's batches {'image': float32 [B/P, H, W, C] in [-1, 1]}.

  batch_size is global; `arrays` (uint8 NHWC) feeds config.data.source == 'arrays'.
  """
  process_index, process_count = _process_info(process_index, process_count)
  _local_batch_size(batch_size, process_count)
  source = config.data.source
  if source in NUMPY_SOURCES:
    return _numpy_batches(
        _load_numpy_images(config, arrays), batch_size=batch_size, seed=seed,
        start_step=start_step, process_index=process_index, process_count=process_count,
        flip=config.data.flip)
  if source in ('tfds', 'folder'):
    return _tf_batches(config, batch_size=batch_size, seed=seed, start_step=start_step,
                       process_index=process_index, process_count=process_count)
  raise ValueError(f"Unknown data.source {source!r}; use 'tfds', 'folder', 'npz', 'arrays' "
                   "or 'random'.")


def _npz_count(path):
  """Rows of the array 'x' in an .npz, from its header (nothing loaded); None if unreadable."""
  import zipfile  # pylint: disable=g-import-not-at-top
  try:
    with zipfile.ZipFile(path) as archive, archive.open('x.npy') as f:
      version = np.lib.format.read_magic(f)
      header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
      return int(header(f)[0][0])
  except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile):
    return None


def _tfds_count(data):
  """num_examples of a prepared TFDS split, without preparing or downloading; None if unknown."""
  try:
    _, tfds = _import_tf()
    builder = tfds.builder(data.name, data_dir=data.data_dir or None)
    return int(builder.info.splits[data.split].num_examples) if builder.is_prepared() else None
  except Exception:  # pylint: disable=broad-except  # a description must never fail a run
    return None


def describe(config, arrays=None) -> str:
  """What a run trains on, in words: source, where, how many images (when known), size."""
  data, size = config.data, config.model.image_size
  shape = f'{size}x{size}x{config.model.channels}'
  count = lambda n: f'{n:,} images' if n is not None else 'images'  # noqa: E731
  if data.source == 'random':
    return (f"FIXED NOISE IMAGES, not a dataset (data.source='random': {RANDOM_IMAGES:,} "
            f'uniform-noise images, {shape}; a plumbing check, the model learns noise)')
  if data.source == 'arrays':
    n = None if arrays is None else len(arrays)
    return f"{count(n)} given in memory (data.source='arrays'), {shape}"
  if data.source == 'npz':
    return f"{count(_npz_count(data.path))} of {data.path} (data.source='npz'), {shape}"
  if data.source == 'folder':
    return f"the images under {data.path} (data.source='folder'), fitted to {shape}"
  if data.source == 'tfds':
    where = f', data_dir {data.data_dir}' if data.data_dir else ''
    n = _tfds_count(data)
    return (f"TFDS {data.name}, split {data.split!r}{where}"
            f'{f" ({n:,} images)" if n is not None else ""}, fitted to {shape}')
  return f'data.source={data.source!r}'


def _pil_fit_image(path, *, image_size, channels, crop_size, resize_mode):
  """PIL twin of _tf_fit_image for one file: uint8 [image_size, image_size, channels]."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    image = image.convert('RGB' if channels == 3 else 'L')
  if resize_mode == 'center_crop':
    width, height = image.size
    side = crop_size or min(width, height)
    top, left = (height - side) // 2, (width - side) // 2
    image = image.crop((left, top, left + side, top + side))
  if image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), Image.BILINEAR)  # antialiased, as TF's
  return np.asarray(image, np.uint8).reshape(image_size, image_size, channels)


def load_images(config, *, arrays=None, max_images=None):
  """All images of a dataset as uint8 [N, H, W, C] at model.image_size, in a fixed order.

  For small datasets (FID reference statistics): 'arrays', 'npz' and 'folder' need no
  TensorFlow ('folder' decodes with PIL); 'tfds' reads the split through tf.data.
  """
  source = config.data.source
  size, channels = config.model.image_size, config.model.channels
  if source in NUMPY_SOURCES:
    images = _load_numpy_images(config, arrays)
    return images[:max_images]
  if source == 'folder':
    files = images_lib.list_image_files(config.data.path, field='config.data.path')[:max_images]
    return np.stack([
        _pil_fit_image(path, image_size=size, channels=channels, crop_size=_crop_size(config),
                       resize_mode=config.data.resize_mode) for path in files])
  if source == 'tfds':
    tf, tfds = _import_tf()
    ds, decode = _tf_encoded_images(config, tf, tfds)
    if max_images:
      ds = ds.take(max_images)
    fit = functools.partial(_tf_fit_image, tf, image_size=size, channels=channels,
                            crop_size=_crop_size(config), resize_mode=config.data.resize_mode)
    ds = ds.map(lambda encoded: tf.cast(fit(decode(encoded)), tf.uint8),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return np.concatenate(list(tfds.as_numpy(ds.batch(1024))))
  raise ValueError(f"Unknown data.source {source!r}; use 'tfds', 'folder', 'npz', 'arrays' "
                   "or 'random'.")


@dataclasses.dataclass(frozen=True)
class Data:
  """What a run trains on: batches from any step, the images themselves, a description.

  `Data(config)` reads what config.data names; `Data(config, arrays)` serves in-memory uint8
  NHWC images (data.source 'arrays', e.g. from a notebook or a test).
  """
  config: Any
  arrays: Optional[np.ndarray] = None

  def __post_init__(self):
    # data.if_missing='random': a missing npz / folder means fixed noise images (plumbing
    # checks, e.g. configs/smoke.py without the shared data), decided now, not at config import.
    data = self.config.data
    if (data.get('if_missing', 'error') == 'random' and data.source in ('npz', 'folder')
        and not os.path.exists(data.path)):
      config = self.config.copy_and_resolve_references()
      config.data.source = 'random'
      object.__setattr__(self, 'config', config)

  def batches(self, *, batch_size: int, seed: int, start_step: int = 0) -> Iterator[dict]:
    """This process's batches from `start_step` on (see `create_dataset`)."""
    return create_dataset(self.config, batch_size=batch_size, seed=seed, start_step=start_step,
                          arrays=self.arrays)

  def images(self, max_images: Optional[int] = None) -> np.ndarray:
    """The first `max_images` images, uint8 at model.image_size (see `load_images`)."""
    return load_images(self.config, arrays=self.arrays, max_images=max_images)

  def describe(self) -> str:
    return describe(self.config, self.arrays)

  def cache_key(self) -> str:
    """Names the images in the FID statistics cache: the TFDS name or a hash of the path."""
    data = self.config.data
    if data.source == 'tfds':
      return data.name
    if data.source == 'random':
      return 'random_noise'
    if data.source in ('npz', 'folder'):
      path = os.path.abspath(data.path)
      digest = hashlib.sha256(path.encode()).hexdigest()[:10]
      return f'{os.path.basename(path.rstrip("/"))}-{digest}'
    return ''  # in-memory arrays: nothing stable to key a cache on
