"""FID evaluation speed: FID-N end to end, its parts, and Inception images/s.

Parts, each timed after its compile:
  generate    EMA generator, N images to uint8 on the device (images/s);
  inception   the FID Inception (299x299 resize inside) on uint8 images already in host
              memory, per --precisions (images/s, achieved TFLOP/s);
  features    evaluation.generated_features: generate, copy, resize, Inception, pipelined;
  stats       evaluation.activation_stats: mean and covariance in float64 on the host;
  frechet     the Frechet distance by scipy's sqrtm (the default) and by eigendecomposition.
FID-N end to end = features + stats + frechet(sqrtm), against reference statistics that a
real run has cached. Random Inception weights time the same as the real ones (labelled).

  python -m bench.fid_speed                   # FID-50k (accelerator)
  python -m bench.fid_speed --quick           # a few hundred samples at batch 32 on CPU
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench import common
from vitgan_jax import evaluation
from vitgan_jax.evaluation import inception
from vitgan_jax.gan import GAN

PRECISIONS = {'highest': jax.lax.Precision.HIGHEST, 'high': jax.lax.Precision.HIGH,
              'default': jax.lax.Precision.DEFAULT}
PACKAGE_PRECISION = 'highest'  # evaluation.FeatureExtractor's default


def make_sampler(config, seed=0):
  """(sample_fn(rng, n) -> uint8 NHWC on device, G param count): the GAN's own sampler on an
  initial state (random weights time as trained ones)."""
  gan = GAN.from_config(config)
  state = jax.jit(gan.init)(jax.random.PRNGKey(seed))
  sample = gan.sampler()

  def sample_fn(rng, n):
    return sample(state, rng, n)

  count = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.ema_params)))
  return sample_fn, count


def time_generate(sample_fn, num, batch_size):
  rng = jax.random.PRNGKey(1)
  _, compile_s = common.timed(lambda: jax.block_until_ready(sample_fn(rng, batch_size)))
  batches = -(-num // batch_size)
  start = time.perf_counter()
  for _ in range(batches):
    rng, sub = jax.random.split(rng)
    out = sample_fn(sub, batch_size)
  jax.block_until_ready(out)
  seconds = time.perf_counter() - start
  return {'first_call_seconds': compile_s, 'seconds': seconds, 'images': batches * batch_size,
          'images_per_second': batches * batch_size / seconds}


def inception_flops_per_image(params, precision, batch_size, image_shape, model=None):
  if model is None:
    model = inception.InceptionV3(with_logits=inception.has_classifier(params),
                                  precision=precision)
  lowered = jax.jit(lambda p, x: model.apply({'params': p}, x)).lower(
      params, jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.uint8))
  flops = common.flops_of(lowered)
  return flops / batch_size if flops else None


def time_inception(params, precision_name, batch_size, images, peak, model=None):
  """Extractor throughput on uint8 images in host memory (transfers included, pipelined)."""
  precision = PRECISIONS[precision_name]
  extractor = evaluation.FeatureExtractor(params, batch_size=batch_size, precision=precision,
                                          model=model)
  _, first_s = common.timed(extractor, images[:batch_size])  # compile + one batch
  features, seconds = common.timed(extractor, images)
  flops = inception_flops_per_image(params, precision, extractor.batch_size, images.shape[1:],
                                    model)
  rate = len(images) / seconds
  out = {'precision': precision_name, 'batch_size': extractor.batch_size,
         'first_call_seconds': first_s, 'images': len(images), 'seconds': seconds,
         'images_per_second': rate, 'flops_per_image': flops,
         'achieved_tflops': flops * rate / 1e12 if flops else None,
         'fraction_of_peak_bf16': (flops * rate / (peak * jax.device_count())
                                   if flops and peak else None)}
  return out, extractor, features


def end_to_end(sample_fn, extractor, num, reference, batch_size):
  """FID-num as a real evaluation runs it; returns per-part seconds and the FID values."""
  rng = jax.random.PRNGKey(2)
  out, features_s = common.timed(evaluation.generated_features, sample_fn, num, rng, extractor,
                                 batch_size)
  stats, stats_s = common.timed(evaluation.activation_stats, out['pool'], kid_features=None)
  fid_sqrtm, sqrtm_s = common.timed(evaluation.fid_from_stats, stats, reference, 'sqrtm')
  fid_eig, eig_s = common.timed(evaluation.fid_from_stats, stats, reference, 'eig')
  total = features_s + stats_s + sqrtm_s
  return {'num_samples': num, 'features_seconds': features_s,
          'features_images_per_second': num / features_s, 'stats_seconds': stats_s,
          'frechet_sqrtm_seconds': sqrtm_s, 'frechet_eig_seconds': eig_s,
          'fid_sqrtm': fid_sqrtm, 'fid_eig': fid_eig,
          'total_seconds': total, 'total_seconds_with_eig': total - sqrtm_s + eig_s}


def reference_images(path, image_shape, num):
  """Real images of the right size when the .npz fits, else uniform noise (timing only)."""
  if path and os.path.exists(path):
    x = np.load(path)['x']
    if tuple(x.shape[1:]) == tuple(image_shape):
      return x[:num], os.path.basename(path)
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (num, *image_shape), np.uint8), 'uniform noise'


def run(args):
  start_all = time.perf_counter()
  result = common.header('fid_speed', args.quick)
  peak = result['device']['peak_bf16_flops_per_device']
  config = common.load_config(args.config, {'training.dtype': args.generator_dtype})
  size, channels = config.model.image_size, config.model.channels
  params, label, model = common.load_inception(args.inception_weights)
  sample_fn, g_params = make_sampler(config)
  precisions = args.precisions.split(',')
  e2e_precisions = args.e2e_precisions.split(',')
  result['settings'] = {
      'config': args.config, 'generator_dtype': args.generator_dtype,
      'generator_params': g_params, 'num_samples': args.num_samples,
      'batch_size': args.batch_size, 'inception_images': args.inception_images,
      'inception_weights': label, 'package_precision': PACKAGE_PRECISION,
      'image_size': size}
  print(f'[fid_speed] weights {label}, {args.num_samples} samples at batch {args.batch_size}',
        flush=True)

  save = lambda: common.write_json(result, args.out)  # noqa: E731  (after each part)
  result['generate'] = time_generate(sample_fn, args.num_samples, args.batch_size)
  save()
  print(f'[generate] {result["generate"]["images_per_second"]:.0f} img/s', flush=True)

  real, ref_source = reference_images(args.data, (size, size, channels), args.reference_images)
  rng = np.random.default_rng(1)
  probe = rng.integers(0, 256, (args.inception_images, size, size, channels), np.uint8)
  result['inception'], extractors, features = [], {}, {}
  for name in precisions:
    timing, extractors[name], out = time_inception(params, name, args.batch_size, probe, peak,
                                                   model)
    features[name] = out['pool']
    result['inception'].append(timing)
    print(f'[inception/{name}] {timing["images_per_second"]:.1f} img/s, '
          f'{(timing["achieved_tflops"] or 0):.2f} TFLOP/s', flush=True)
  if 'highest' in features:  # what lower precision does to the features
    for timing in result['inception']:
      diff = np.abs(features[timing['precision']] - features['highest'])
      scale = np.abs(features['highest']).max()
      timing['pool_max_abs_diff_vs_highest'] = float(diff.max())
      timing['pool_max_rel_diff_vs_highest'] = float(diff.max() / scale) if scale else None
  save()

  result['e2e'] = []
  for name in e2e_precisions:
    extractor = extractors.get(name) or evaluation.FeatureExtractor(
        params, batch_size=args.batch_size, precision=PRECISIONS[name], model=model)
    reference = evaluation.compute_stats(real, extractor, kid_features=None)
    e2e = end_to_end(sample_fn, extractor, args.num_samples, reference, args.batch_size)
    e2e.update(precision=name, reference=ref_source, reference_images=len(real))
    result['e2e'].append(e2e)
    save()
    print(f'[e2e/{name}] FID-{args.num_samples} in {e2e["total_seconds"]:.1f}s '
          f'(features {e2e["features_seconds"]:.1f}, stats {e2e["stats_seconds"]:.1f}, '
          f'sqrtm {e2e["frechet_sqrtm_seconds"]:.1f}, eig {e2e["frechet_eig_seconds"]:.1f})',
          flush=True)
  result['seconds_total'] = time.perf_counter() - start_all
  return result


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true',
                      help='configs/smoke.py generator, few samples at batch 32, on CPU')
  parser.add_argument('--config', default=None, help='config file of the generator')
  parser.add_argument('--generator_dtype', default='float32')
  parser.add_argument('--num_samples', type=int, default=None, help='N of FID-N')
  parser.add_argument('--batch_size', type=int, default=None)
  parser.add_argument('--inception_images', type=int, default=None,
                      help='images per Inception-alone timing')
  parser.add_argument('--reference_images', type=int, default=None,
                      help='real images for the reference statistics')
  parser.add_argument('--precisions', default=None,
                      help="Inception matmul precisions to time: highest,high,default")
  parser.add_argument('--e2e_precisions', default=None, help='precisions for FID-N end to end')
  parser.add_argument('--inception_weights', default='auto',
                      help="'auto' (carried pack, then cache), 'random', a weights path, "
                      "or 'tiny' (a small conv net: plumbing tests only)")
  parser.add_argument('--data', default=common.first_existing(common.CARRIED_DATA,
                                                              common.DEFAULT_DATA))
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  quick = args.quick
  gpu = jax.devices()[0].platform == 'gpu'
  defaults = dict(config='configs/smoke.py' if quick else 'configs/vitgan_cifar10.py',
                  num_samples=256 if quick else 50_000,
                  batch_size=32 if quick else 500,
                  inception_images=64 if quick else 5000,
                  reference_images=64 if quick else 50_000,
                  precisions='highest,default' if gpu else 'highest',
                  e2e_precisions='highest')
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  args.out = args.out or common.default_out('fid_speed', quick)
  return args


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  common.write_json(result, args.out)
  print(f'wrote {args.out}', flush=True)
  return result


if __name__ == '__main__':
  main()
