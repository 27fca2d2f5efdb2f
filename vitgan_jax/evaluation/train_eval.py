"""FID / IS / KID of a generator's EMA weights: the evaluator the trainer and --mode eval run.

Samples come from a fixed seed (the same z at every evaluation, so FID curves are not noisier
than the model), are drawn by the GAN's one sampler sharded over the mesh's 'data' axis
(uint8 on device) and fed to the FID Inception. Reference statistics of the training data are
computed once and cached by (dataset, split, resolution, count, Inception weights).
"""

import hashlib
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from vitgan_jax import errors, input_pipeline, sharding
from vitgan_jax.evaluation import features, metrics, weights
from vitgan_jax.gan import GAN

MEMORY_WHERE = 'half the free memory of the device (host RAM on CPU)'


def feature_extractor(config, mesh) -> features.FeatureExtractor:
  """The FID Inception (weights per config.eval.inception_weights) over the mesh's devices."""
  try:
    params = weights.load_inception_params(config.eval.inception_weights or None)
  except FileNotFoundError as e:
    raise errors.ConfigError(f'{e} (or set --config.eval.every_steps=0 to train without FID)'
                             ) from e
  shards = mesh.shape[sharding.DATA_AXIS]
  batch_size = features.fitting_batch_size(config.eval.batch_size, shards)
  if batch_size < config.eval.batch_size:
    features.say(f'FID Inception batch {batch_size} instead of eval.batch_size='
                 f'{config.eval.batch_size}: what fits in {MEMORY_WHERE} '
                 f'({features.INCEPTION_BYTES_PER_IMAGE / 2**20:.0f} MiB per image).')
  return features.FeatureExtractor(params, batch_size=batch_size, mesh=mesh)


def _weights_key(extractor) -> str:
  """A digest of the Inception weights, so stats of other weights are never mixed up."""
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(extractor.params)):  # a few KiB of each array
    h.update(leaf.tobytes()[:4096])
  return h.hexdigest()[:10]


def load_reference_stats(config, extractor, data=None) -> metrics.Stats:
  """Stats of the training images (`data`, an input_pipeline.Data; default config.data).

  config.eval.reference_stats if set (a missing file is computed and written there), else the
  cache. Only the first eval.reference_num_samples images are used (0 = all).
  """
  data = data if data is not None else input_pipeline.Data(config)
  num = config.eval.reference_num_samples or None
  images_fn = lambda: data.images(num)  # noqa: E731
  path, dataset = config.eval.reference_stats, data.cache_key()
  if not path and not dataset:
    images = images_fn()
    return features.compute_stats(images, extractor, num, progress=features.Progress(
        'reference statistics', min(len(images), num or len(images))))
  cache_key = None if path else f'{dataset}-inception_{_weights_key(extractor)}'
  return features.reference_stats(images_fn, cache_key, config.data.split,
                                  config.model.image_size, num, extractor, path=path or None,
                                  write=sharding.is_main_process())


def make_evaluator(config, gan: GAN, mesh, *, data=None, reference=None, extractor=None):
  """evaluator(state) -> {'fid', 'is', 'is_std', 'kid', 'kid_std', 'layout_similarity',
  'eval_seconds'}.

  eval.num_samples EMA images from a fixed seed (eval.seed) against `reference` (Stats; by
  default those of `data`, see load_reference_stats); IS needs Inception weights with the
  classifier, and is left out otherwise. `extractor` replaces the FID Inception.
  """
  extractor = extractor or feature_extractor(config, mesh)
  if reference is None:
    reference = load_reference_stats(config, extractor, data)
  draw = gan.sampler(mesh)

  def sample(state, rng, n):
    x = draw(state, rng, n)
    if jax.process_count() > 1:  # every process feeds the Inception the same global batch
      return multihost_utils.process_allgather(x, tiled=True)
    return x

  shards = mesh.shape[sharding.DATA_AXIS]
  # Samples in batches of eval.batch_size (the z, hence FID, do not depend on the machine);
  # the Inception rechunks them into its own batch, bounded by memory.
  batch_size = -(-config.eval.batch_size // shards) * shards

  def evaluator(state):
    start = time.perf_counter()
    num = config.eval.num_samples
    features.say(f'Evaluating FID on {num:,} samples (Inception batch {extractor.batch_size}) ...')
    first = []  # the FID's first batch, kept for layout sameness

    def draw(rng, n):
      x = sample(state, rng, n)
      if not first:
        first.append(np.asarray(x))
      return x
    results = features.evaluate_generator(
        draw, num, jax.random.PRNGKey(config.eval.seed), reference, extractor,
        batch_size=batch_size, progress=features.Progress('samples', num))
    results['layout_similarity'] = metrics.layout_similarity(first[0][:num])
    results['eval_seconds'] = time.perf_counter() - start
    return results
  return evaluator
