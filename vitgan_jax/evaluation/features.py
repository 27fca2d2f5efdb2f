"""Features of the FID Inception on the mesh and what is built on them: stats, FID, the cache.

A jitted Inception sharded over the mesh's 'data' axis (the one mesh factory,
sharding.create_mesh), its batch bounded by the device's memory; image sources are arrays,
iterables of batches or folders (images.list_image_files, read with PIL); reference
statistics are cached as .npz. TensorFlow is never imported. The formulas are metrics.py.
"""

import os
import re
import time

import jax
import numpy as np
from absl import logging
from PIL import Image

from vitgan_jax import images as images_lib
from vitgan_jax import sharding
from vitgan_jax.evaluation import inception, weights
from vitgan_jax.evaluation.metrics import (KID_REFERENCE_SIZE, Stats, activation_stats,
                                           fid_from_stats, inception_score,
                                           kernel_inception_distance)

DEFAULT_BATCH_SIZE = 200
# Memory per image of an Inception batch (299x299 activations, XLA's buffers), to bound the
# batch by the device's memory. Measured on CPU (bench/eval_memory.py,
# bench/results/2026-12-02-cpu-eval_memory.json): 27.9 MiB per image, the slope of peak RSS
# over batches of 2 to 16; an end-of-run FID-50k at batch 500 peaked at 18.8 GB, 36 MiB per
# image all included. The larger figure is used.
INCEPTION_BYTES_PER_IMAGE = 36 * 2 ** 20
MEMORY_FRACTION = 0.5  # of the free memory, for the Inception batch (the rest: everything else)
PROGRESS_QUIET_SECONDS = 5.0  # no progress lines for feature extraction shorter than this


# ----------------------------------------------------------------------------
# Memory and progress.


def _host_available_bytes():
  """MemAvailable from /proc/meminfo, else free physical pages (os.sysconf), else None."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    return None


def available_memory_bytes(device=None):
  """Free memory of `device` (default: the first local one): its allocator's bytes_limit less
  bytes_in_use where it reports them (GPU, TPU), the host's available RAM on CPU."""
  device = device or jax.local_devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:  # pylint: disable=broad-except  # not implemented on some backends
    stats = None
  if stats and stats.get('bytes_limit'):
    return int(stats['bytes_limit']) - int(stats.get('bytes_in_use', 0))
  return _host_available_bytes()


def fitting_batch_size(requested, shards=1, per_image_bytes=INCEPTION_BYTES_PER_IMAGE,
                       available_bytes=None, fraction=MEMORY_FRACTION):
  """min(requested, what fits), a multiple of `shards` (>= shards).

  What fits: `fraction` of the free memory (available_memory_bytes(), per device) over the
  per-image cost, times the shards (each device holds batch / shards images).
  """
  requested = -(-int(requested) // shards) * shards
  if available_bytes is None:
    available_bytes = available_memory_bytes()
  if not available_bytes or per_image_bytes <= 0:
    return requested
  per_device = int(available_bytes * fraction // per_image_bytes)
  if jax.local_devices()[0].platform == 'cpu':  # CPU "devices" share one host memory
    fits = max(per_device // shards, 1) * shards
  else:
    fits = max(per_device, 1) * shards
  return min(requested, fits)


def say(message):
  """One line on stdout on process 0, in the log on the others (not both: absl's INFO goes to
  stderr, so a terminal would show the line twice)."""
  if jax.process_index() == 0:
    print(message, flush=True)
  else:
    logging.info('%s', message)


class Progress:
  """Lines 'what: 40% (2,000/5,000 images), 812 images/s, ETA 4 s' at every ~10% of `total`.

  Quiet for the first `quiet_s` seconds, so short jobs print nothing; with total None (not
  known in advance), a line every `every` images instead.
  """

  def __init__(self, what, total=None, quiet_s=None, every=10_000, out=None):
    self.what, self.total, self.every = what, total, every
    self.quiet_s = PROGRESS_QUIET_SECONDS if quiet_s is None else quiet_s
    self.out = out or say
    self.done, self._next = 0, self._step()
    self._start = time.perf_counter()
    self.printed = False  # whether any line was said (the job is a slow one)

  def _step(self):
    return max(self.total // 10, 1) if self.total else self.every

  def update(self, n):
    self.done += n
    if self.done < self._next:
      return
    while self._next <= self.done:
      self._next += self._step()
    elapsed = time.perf_counter() - self._start
    if elapsed < self.quiet_s:
      return
    rate = self.done / max(elapsed, 1e-9)
    self.printed = True
    if self.total:
      left = max(self.total - self.done, 0) / max(rate, 1e-9)
      self.out(f'{self.what}: {100 * min(self.done / self.total, 1):.0f}% '
               f'({self.done:,}/{self.total:,} images), {rate:.1f} images/s, ETA {left:.0f} s')
    else:
      self.out(f'{self.what}: {self.done:,} images, {rate:.1f} images/s')


# ----------------------------------------------------------------------------
# Feature extraction.


class FeatureExtractor:
  """Runs the FID Inception on batches sharded over a mesh's 'data' axis.

  Call it on a uint8-range NHWC array, a folder, or an iterable of batches
  (sizes may differ between batches); returns numpy arrays: 'pool' (N, 2048)
  and, when the weights have a classifier, 'logits' / 'logits_unbiased'.
  `model` replaces the InceptionV3 (any module returning such a dict).
  """

  def __init__(self, params, batch_size=DEFAULT_BATCH_SIZE, mesh=None,
               precision=inception.HIGHEST, model=None):
    self.mesh = mesh or sharding.create_mesh()
    shards = self.mesh.shape[sharding.DATA_AXIS]
    self.batch_size = -(-batch_size // shards) * shards  # multiple of shards
    if model is None:
      model = inception.InceptionV3(
          with_logits=inception.has_classifier(params), precision=precision)
    replicated = sharding.replicated(self.mesh)
    self._data_sharding = sharding.data_sharded(self.mesh)
    self._params = jax.device_put(params, replicated)
    self._apply = jax.jit(
        lambda p, x: model.apply({'params': p}, x),
        in_shardings=(replicated, self._data_sharding),
        out_shardings=replicated)

  @property
  def params(self):
    """The Inception weights (replicated on the mesh)."""
    return self._params

  def _dispatch(self, images):
    """Pads to a full batch and starts the (asynchronous) device computation."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
      images = images.astype(np.float32)
    n = len(images)
    pad = self.batch_size - n
    if pad:
      images = np.concatenate(
          [images, np.zeros((pad, *images.shape[1:]), images.dtype)])
    x = jax.device_put(images, self._data_sharding)
    return self._apply(self._params, x), n

  def __call__(self, images, progress=None):
    outputs, pending = [], None
    for batch in _batches(images, self.batch_size):
      running = self._dispatch(batch)
      if pending:  # fetch the previous batch while this one runs
        outputs.append(_fetch(*pending))
        if progress:
          progress.update(pending[1])
      pending = running
    if not pending:
      raise ValueError('No images to extract features from')
    outputs.append(_fetch(*pending))
    if progress:
      progress.update(pending[1])
    return {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}


def _fetch(device_outputs, n):
  return {k: np.asarray(v)[:n] for k, v in device_outputs.items()}


def make_feature_extractor(params=None, batch_size=DEFAULT_BATCH_SIZE,
                           mesh=None, weights_path=None):
  """FeatureExtractor with `params`, else weights from load_inception_params.

  The batch is at most what fits in the device's memory (fitting_batch_size).
  """
  if params is None:
    params = weights.load_inception_params(weights_path)
  mesh = mesh or sharding.create_mesh()
  batch_size = fitting_batch_size(batch_size, mesh.shape[sharding.DATA_AXIS])
  return FeatureExtractor(params, batch_size=batch_size, mesh=mesh)


def _batches(images, batch_size):
  """Yields chunks of at most batch_size from an array or iterable of arrays."""
  for block in image_batches(images, batch_size):
    block = np.asarray(block)
    if block.ndim != 4:
      raise ValueError(f'Expected NHWC images, got shape {block.shape}')
    for start in range(0, len(block), batch_size):
      yield block[start:start + batch_size]


def _take(batches, limit):
  """Stops an iterable of batches after `limit` images in total."""
  seen = 0
  for batch in batches:
    if limit is not None and seen + len(batch) >= limit:
      yield batch[:limit - seen]
      return
    seen += len(batch)
    yield batch


# ----------------------------------------------------------------------------
# Image sources: arrays or folders.


def iterate_folder(folder, batch_size=DEFAULT_BATCH_SIZE):
  """Yields uint8 NHWC RGB batches; a batch ends early when the size changes."""
  batch = []
  for path in images_lib.list_image_files(folder):
    with Image.open(path) as im:
      image = np.asarray(im.convert('RGB'), np.uint8)
    if batch and (len(batch) == batch_size or image.shape != batch[0].shape):
      yield np.stack(batch)
      batch = []
    batch.append(image)
  if batch:
    yield np.stack(batch)


def image_batches(source, batch_size=DEFAULT_BATCH_SIZE):
  """An iterable of NHWC batches from an array, a folder or such an iterable."""
  if isinstance(source, (str, os.PathLike)):
    return iterate_folder(os.fspath(source), batch_size)
  if isinstance(source, (np.ndarray, jax.Array)):
    return [source]
  return source


def compute_stats(source, extractor, num_samples=None,
                  kid_features=KID_REFERENCE_SIZE, progress=None):
  """Stats of images (array, iterable of batches or folder path)."""
  batches = _take(image_batches(source, extractor.batch_size), num_samples)
  features = extractor(batches, progress=progress)['pool']
  return activation_stats(features, kid_features=kid_features)


def _as_stats(source, get_extractor):
  if isinstance(source, Stats):
    return source
  if isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(
      '.npz') and os.path.isfile(source):
    return Stats.load(os.fspath(source))
  return compute_stats(source, get_extractor())


def compute_fid(a, b, extractor=None, method='sqrtm'):
  """FID between two image sets, like clean-fid's compute_fid.

  Each set is a uint8 NHWC array, an iterable of batches, a folder of images,
  a Stats or a saved stats .npz. Without `extractor`, weights come from
  load_inception_params().
  """
  made = []

  def get_extractor():  # weights are loaded only if images need features
    if not made:
      made.append(extractor or make_feature_extractor())
    return made[0]

  return fid_from_stats(_as_stats(a, get_extractor),
                        _as_stats(b, get_extractor), method)


# ----------------------------------------------------------------------------
# Reference statistics and generator evaluation.


def reference_stats_path(dataset, split, resolution, num_samples,
                         cache_dir=None):
  """Cache file for (dataset, split, resolution, sample count)."""
  key = f'{dataset}-{split}-{resolution}px-{num_samples or "all"}'
  key = re.sub(r'[^A-Za-z0-9._-]+', '_', key).strip('_')
  return os.path.join(cache_dir or weights.cache_dir(), 'fid_stats',
                      key + '.npz')


def reference_stats(images_fn, dataset, split, resolution, num_samples,
                    extractor, cache_dir=None, path=None, write=True):
  """Reference Stats of a dataset, computed once and cached as .npz.

  `images_fn()` returns the real images (array, iterable of uint8 NHWC batches
  or folder path) and is called only on a cache miss; the first `num_samples`
  images are used (None: all). `path` replaces the cache file; `write=False`
  computes without saving (e.g. on all but one of several hosts).
  """
  path = path or reference_stats_path(dataset, split, resolution, num_samples,
                                      cache_dir)
  if os.path.exists(path):
    return Stats.load(path)
  images = images_fn()
  total = num_samples
  if isinstance(images, np.ndarray):
    total = min(len(images), num_samples or len(images))
  say(f'Computing FID reference statistics of {f"{total:,}" if total else "all"} images '
      f'(once; cached in {path}) ...')
  progress = Progress('reference statistics', total)
  stats = compute_stats(images, extractor, num_samples, progress=progress)
  if write:
    stats.save(path)
  return stats


def generated_features(sample_fn, num_samples, rng, extractor,
                       batch_size=None, progress=None):
  """Features of num_samples images from sample_fn(rng, n) -> uint8 NHWC.

  sample_fn is always called with the same n (no recompiles); the surplus of
  the last batch is dropped.
  """
  batch_size = batch_size or extractor.batch_size

  def batches():
    key = rng
    for _ in range(-(-num_samples // batch_size)):
      key, sub = jax.random.split(key)
      yield np.asarray(sample_fn(sub, batch_size))

  return extractor(_take(batches(), num_samples), progress=progress)


def evaluate_generator(sample_fn, num_samples, rng, reference, extractor,
                       batch_size=None, method='sqrtm', progress=None):
  """FID, IS and KID of a generator against reference Stats (or .npz path).

  Returns {'fid', 'kid', 'kid_std', 'is', 'is_std'}; IS needs weights with the
  classifier and KID reference features, else those keys are left out.
  """
  if not isinstance(reference, Stats):
    reference = Stats.load(os.fspath(reference))
  out = generated_features(sample_fn, num_samples, rng, extractor, batch_size,
                           progress)
  if progress is not None and progress.printed:  # a slow run: the last minute is not silent
    progress.out(f'{progress.what}: features done; statistics, Frechet distance'
                 f'{", KID" if reference.features is not None else ""} ...')
  stats = activation_stats(out['pool'], kid_features=None)
  results = {'fid': fid_from_stats(stats, reference, method)}
  if reference.features is not None:
    results['kid'], results['kid_std'] = kernel_inception_distance(
        out['pool'], reference.features)
  if 'logits_unbiased' in out:
    results['is'], results['is_std'] = inception_score(out['logits_unbiased'])
  return results
