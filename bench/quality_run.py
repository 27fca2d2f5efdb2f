"""Quality per minute: train on real images for a fixed wall-clock budget, FID every few minutes.

Trains a config (vitgan_cifar10 at full size; --quick: configs/smoke.py sizes) on the uint8
images of --data through the package's numpy input pipeline and exactly the training step
(train.make_train_step on the 'data' mesh); no clu or TensorFlow, which the GPU machines lack.
FID of --fid_samples EMA samples against the statistics of the whole --data set is computed at
step 0, every --eval_every_s seconds of training and at the end. --minutes bounds training plus
evaluations (setup and compiles are reported apart). The curve (step, images seen, wall and
training seconds, FID) goes into the results JSON, and an 8x8 grid of EMA samples beside it.

With random Inception weights (no weights found) the curve only checks the plumbing, and the
JSON says so; `pack_inception.py` makes the carried weights for a device call.

  python bench/quality_run.py --minutes 8.5 --data .carry/cifar100_classes0-9_1834.npz
  python bench/quality_run.py --quick        # smoke sizes, tiny feature net, CPU, ~3 minutes
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench import common  # pylint: disable=g-import-not-at-top,wrong-import-position

import jax  # pylint: disable=g-import-not-at-top,wrong-import-order
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top,wrong-import-order
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-order

from vitgan_jax import evaluation, input_pipeline, sample, sharding, train  # pylint: disable=g-import-not-at-top


_FEATURES_NOTE = {'tiny': 'a tiny stand-in conv net, not Inception',
                  'random': 'random Inception weights'}


def make_ema_sampler(generator, config):
  """sample_fn(rng, n) -> uint8 EMA samples (the state is bound by `bind`)."""
  latent = config.model.generator.latent_dim

  @jax.jit
  def draw(state, z):
    images = generator.apply({'params': state.ema_params, **state.g_state}, z)
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)

  def bind(state):
    return lambda rng, n: draw(state, jax.random.normal(rng, (n, latent)))

  return bind


def run(args):
  wall_start = time.perf_counter()
  budget = args.minutes * 60.0
  result = common.header('quality_run', args.quick)
  overrides = {'data.source': 'npz', 'data.path': os.path.abspath(args.data)}
  if args.dtype:
    overrides['training.dtype'] = args.dtype
  if args.batch_size:
    overrides['training.batch_size'] = args.batch_size
  config = common.load_config(args.config, overrides)
  batch_size = config.training.batch_size
  mesh = sharding.create_mesh()
  sharding.check_batch_size(batch_size, mesh)

  params, label, model = common.load_inception(args.inception_weights)
  extractor = evaluation.FeatureExtractor(params, batch_size=args.fid_batch_size, model=model)
  real = input_pipeline.load_images(config, max_images=args.reference_images)
  reference, ref_seconds = common.timed(evaluation.compute_stats, real, extractor,
                                        kid_features=None)
  result['settings'] = {
      'config': args.config, 'overrides': overrides, 'batch_size': batch_size,
      'dtype': config.training.dtype, 'minutes': args.minutes,
      'eval_every_s': args.eval_every_s, 'fid_samples': args.fid_samples,
      'fid_reference': f'{os.path.basename(args.data)} ({len(real)} real images)',
      'inception_weights': label,
      'meaning': ('FID against the training images themselves (a small set): a learning '
                  'curve, not a paper number' if label in ('float32', 'float16-packed') else
                  f'{_FEATURES_NOTE.get(label, label)}: the curve only checks the plumbing, '
                  'the FID values mean nothing'),
  }
  print(f'[quality] {args.config} batch {batch_size} {config.training.dtype}, '
        f'{len(real)} real images, Inception {label}, budget {args.minutes} min', flush=True)

  generator, discriminator = train.create_models(config)
  g_tx, d_tx = train.create_optimizers(config)
  state = jax.jit(lambda r: train.create_train_state(config, r, generator, discriminator,
                                                     g_tx, d_tx),
                  out_shardings=sharding.replicated(mesh))(
                      jax.random.PRNGKey(config.training.seed))
  step_fn = train.jit_train_step(
      train.make_train_step(config, generator, discriminator, g_tx, d_tx, mesh), mesh)
  data = input_pipeline.create_dataset(config, batch_size=batch_size, seed=config.training.seed)
  batch = sharding.global_batch(next(data), mesh)
  (_, compile_seconds) = common.timed(lambda: step_fn.lower(state, batch).compile())
  bind = make_ema_sampler(generator, config)
  fid_rng = jax.random.PRNGKey(1234)  # the same latents at every evaluation
  setup_seconds = time.perf_counter() - wall_start
  run_start = time.perf_counter()  # the budget counts training and evaluations, not setup

  curve, step, train_seconds, metrics = [], 0, 0.0, None

  def evaluate():
    start = time.perf_counter()
    features = evaluation.generated_features(bind(state), args.fid_samples, fid_rng, extractor)
    fid = evaluation.fid_from_stats(
        evaluation.activation_stats(features['pool'], kid_features=None), reference)
    seconds = time.perf_counter() - start
    curve.append({'step': step, 'images_seen': step * batch_size,
                  'wall_seconds': time.perf_counter() - run_start,
                  'train_seconds': train_seconds, 'fid': fid, 'eval_seconds': seconds})
    print(f'[eval] step {step} images {step * batch_size} train {train_seconds:.0f}s '
          f'FID {fid:.2f} ({seconds:.1f}s)', flush=True)
    return seconds

  eval_seconds = evaluate()
  next_eval = args.eval_every_s
  stop_reason = 'time budget'
  while True:
    # Leave room for the last evaluation inside the budget.
    if time.perf_counter() - run_start + eval_seconds * 1.2 > budget:
      break
    start = time.perf_counter()
    chunk = 0
    while chunk < args.steps_per_check:
      state, metrics = step_fn(state, batch)
      batch = sharding.global_batch(next(data), mesh)  # prepared while the step runs
      chunk += 1
    jax.block_until_ready(state)
    train_seconds += time.perf_counter() - start
    step += chunk
    if int(state.bad_step) >= 0:
      stop_reason = f'non-finite {train.describe_nonfinite(int(state.bad_what))}'
      break
    if step % args.log_every < chunk:
      print(f'[train] step {step} {step * batch_size / train_seconds:.0f} img/s '
            f'd_loss {float(metrics["d_loss"]):.3f} g_loss {float(metrics["g_loss"]):.3f}',
            flush=True)
    if train_seconds >= next_eval:
      eval_seconds = evaluate()
      next_eval += args.eval_every_s
  if not curve or curve[-1]['step'] != step:
    evaluate()

  grid = sample.image_grid(np.asarray(bind(state)(jax.random.PRNGKey(7), 64)), 8)
  grid_path = os.path.splitext(args.out)[0] + '-samples.png'
  sample.save_png(grid_path, grid)
  result.update({
      'curve': curve, 'steps': step, 'images_seen': step * batch_size,
      'train_seconds': train_seconds,
      'train_images_per_second': step * batch_size / train_seconds if train_seconds else None,
      'setup_seconds': setup_seconds, 'compile_seconds': compile_seconds,
      'reference_stats_seconds': ref_seconds,
      'stop_reason': stop_reason, 'samples_png': os.path.basename(grid_path),
      'final_metrics': ({k: float(v) for k, v in jax.device_get(metrics).items()}
                        if metrics is not None else None),
      'seconds_total': time.perf_counter() - wall_start})
  return result


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true', help='smoke sizes on CPU, ~2 minutes')
  parser.add_argument('--config', default=None)
  parser.add_argument('--data', default=common.first_existing(common.CARRIED_DATA,
                                                              common.DEFAULT_DATA),
                      help='.npz with uint8 images under x (also the FID reference)')
  parser.add_argument('--minutes', type=float, default=None, help='wall-clock budget')
  parser.add_argument('--eval_every_s', type=float, default=None,
                      help='seconds of training between FID evaluations')
  parser.add_argument('--fid_samples', type=int, default=None)
  parser.add_argument('--fid_batch_size', type=int, default=None)
  parser.add_argument('--dtype', default=None, help='training.dtype override')
  parser.add_argument('--batch_size', type=int, default=None)
  parser.add_argument('--steps_per_check', type=int, default=None,
                      help='steps between clock checks (one host sync each)')
  parser.add_argument('--log_every', type=int, default=None)
  parser.add_argument('--inception_weights', default=None,
                      help="'auto' (carried pack, then cache; the default), 'random', a "
                      "weights path, or 'tiny' (a small conv net: plumbing only; --quick's "
                      "default, as Inception runs ~1 image/s on a small CPU)")
  parser.add_argument('--reference_images', type=int, default=None,
                      help='real images for the FID reference (default: all)')
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  quick = args.quick
  defaults = dict(config='configs/smoke.py' if quick else 'configs/vitgan_cifar10.py',
                  minutes=2.0 if quick else 8.5, eval_every_s=30 if quick else 60,
                  fid_samples=128 if quick else 5000, fid_batch_size=32 if quick else 500,
                  steps_per_check=5 if quick else 50, log_every=20 if quick else 1000,
                  inception_weights='tiny' if quick else 'auto')
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  if not args.data or not os.path.exists(args.data):
    raise SystemExit(f'--data {args.data!r} not found: pass the .npz of real images')
  args.out = args.out or common.default_out('quality_run', quick)
  return args


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  common.write_json(result, args.out)
  print(f'wrote {args.out}', flush=True)
  return result


if __name__ == '__main__':
  main()
