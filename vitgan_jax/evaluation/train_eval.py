"""FID / IS / KID of a generator's EMA weights: the evaluator the training loop and --mode eval run.

Samples come from a fixed seed (the same z at every evaluation, so FID curves are not noisier
than the model), are generated sharded over the mesh's 'data' axis, turned to uint8 on device
and fed to the FID Inception. Reference statistics of the training data are computed once and
cached by (dataset, split, resolution, count, Inception weights).
"""

import functools
import hashlib
import os
import time

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils

from vitgan_jax import errors, sharding
from vitgan_jax.evaluation import metrics
from vitgan_jax.evaluation import weights


def make_feature_extractor(config, mesh):
  """The FID Inception (weights per config.eval.inception_weights) over the mesh's devices."""
  try:
    params = weights.load_inception_params(config.eval.inception_weights or None)
  except FileNotFoundError as e:
    raise errors.ConfigError(f'{e} (or set --config.eval.every_steps=0 to train without FID)'
                             ) from e
  shards = mesh.shape[sharding.DATA_AXIS]
  batch_size = metrics.fitting_batch_size(config.eval.batch_size, shards)
  if batch_size < config.eval.batch_size:
    metrics.say(f'FID Inception batch {batch_size} instead of eval.batch_size='
                f'{config.eval.batch_size}: what fits in {MEMORY_WHERE} '
                f'({metrics.INCEPTION_BYTES_PER_IMAGE / 2**20:.0f} MiB per image).')
  return metrics.FeatureExtractor(params, batch_size=batch_size, mesh=mesh)


MEMORY_WHERE = 'half the free memory of the device (host RAM on CPU)'


def _dataset_key(config) -> str:
  """Names the reference data in the stats cache: the TFDS name or a hash of the file path."""
  data = config.data
  if data.source == 'tfds':
    return data.name
  if data.source == 'random':
    return 'random_noise'
  if data.source in ('npz', 'folder'):
    path = os.path.abspath(data.path)
    digest = hashlib.sha256(path.encode()).hexdigest()[:10]
    return f'{os.path.basename(path.rstrip("/"))}-{digest}'
  return ''  # in-memory arrays: nothing stable to key a cache on


def _weights_key(extractor) -> str:
  """A digest of the Inception weights, so stats of other weights are never mixed up."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(extractor.params)):  # a few KiB of each array
    h.update(leaf.tobytes()[:4096])
  return h.hexdigest()[:10]


def load_reference_stats(config, extractor, *, arrays=None) -> metrics.Stats:
  """Stats of the training data: config.eval.reference_stats if set, else the cache.

  A missing reference_stats file is computed and written there. Only the first
  eval.reference_num_samples images are used (0 = all).
  """
  from vitgan_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  num = config.eval.reference_num_samples or None
  images_fn = lambda: input_pipeline.load_images(config, arrays=arrays, max_images=num)  # noqa: E731
  path, dataset = config.eval.reference_stats, _dataset_key(config)
  if not path and not dataset:
    images = images_fn()
    return metrics.compute_stats(images, extractor, num, progress=metrics.Progress(
        'reference statistics', min(len(images), num or len(images))))
  cache_key = None if path else f'{dataset}-inception_{_weights_key(extractor)}'
  return metrics.reference_stats(images_fn, cache_key, config.data.split,
                                 config.model.image_size, num, extractor, path=path or None,
                                 write=sharding.is_main_process())


def make_sampler(config, generator, mesh):
  """sample(state, rng, n) -> uint8 NHWC images of the EMA generator, sharded on 'data'."""
  latent_dim = config.model.generator.latent_dim
  out = sharding.data_sharded(mesh)

  @functools.partial(jax.jit, static_argnums=2, out_shardings=out)
  def images(state, rng, n):
    z = jax.lax.with_sharding_constraint(jax.random.normal(rng, (n, latent_dim)), out)
    x = generator.apply({'params': state.ema_params, **state.g_state}, z)
    return jnp.clip(jnp.round((x.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

  def sample(state, rng, n):
    x = images(state, rng, n)
    if jax.process_count() > 1:  # every process feeds the Inception the same global batch
      return multihost_utils.process_allgather(x, tiled=True)
    return x
  sample.images = images  # the jitted program itself (tpu_compile compiles it for a TPU)
  return sample


def make_evaluator(config, generator, mesh, *, arrays=None, extractor=None):
  """evaluator(state) -> {'fid', 'is', 'is_std', 'kid', 'kid_std', 'eval_seconds'}.

  eval.num_samples images from a fixed seed (eval.seed) against the reference stats; IS
  needs Inception weights with the classifier, and is left out otherwise.
  """
  extractor = extractor or make_feature_extractor(config, mesh)
  reference = load_reference_stats(config, extractor, arrays=arrays)
  sample = make_sampler(config, generator, mesh)
  shards = mesh.shape[sharding.DATA_AXIS]
  # Samples in batches of eval.batch_size (the z, hence FID, do not depend on the machine);
  # the Inception rechunks them into its own batch, bounded by memory.
  batch_size = -(-config.eval.batch_size // shards) * shards

  def evaluator(state):
    start = time.perf_counter()
    num = config.eval.num_samples
    metrics.say(f'Evaluating FID on {num:,} samples (Inception batch {extractor.batch_size}) ...')
    results = metrics.evaluate_generator(
        lambda rng, n: sample(state, rng, n), num,
        jax.random.PRNGKey(config.eval.seed), reference, extractor, batch_size=batch_size,
        progress=metrics.Progress('samples', num))
    results['eval_seconds'] = time.perf_counter() - start
    return results
  return evaluator
