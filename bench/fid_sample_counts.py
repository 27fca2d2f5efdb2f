"""FID of saved generators at nested sample counts: how much a small-sample FID overstates.

FID is biased upward by roughly a constant over the sample count (Chong & Forsyth 2020), and
more so for a varied generator than for a near-constant one, so a 500-sample FID curve
compresses a run's improvement. This draws `--samples` EMA images from each checkpoint with the
learning benchmark's z (eval.seed, batches of 100: the first 500 are the benchmark's own) and
reports FID of the first 250, 500, 1,000, ... of them against all of `--data`, plus the
1/N-extrapolated FID at infinitely many samples from the two largest counts.

  python -m bench.fid_sample_counts --samples 2000 --init \
      --checkpoint vitgan:/tmp/lc/vitgan --checkpoint vitgan:/tmp/lc/vitgan:best
"""

import argparse
import json
import os

import jax
import numpy as np

from bench import common
from bench import learning_curve
from vitgan_jax import checkpoint, sharding
from vitgan_jax.evaluation import features, metrics, train_eval
from vitgan_jax.gan import GAN

BATCH = 100  # the learning benchmark's --fid_batch_size: same z for the same sample index


def counts_up_to(samples: int):
  """250, 500, 1000, ... up to and including `samples`."""
  counts, n = [], 250
  while n < samples:
    counts.append(n)
    n *= 2
  return counts + [samples]


def fid_at_counts(pool, reference, counts):
  """{n: FID of pool[:n]} and the 1/N extrapolation to N = infinity from the two largest n."""
  fids = {n: float(metrics.fid_from_stats(metrics.activation_stats(pool[:n], kid_features=None),
                                          reference)) for n in counts}
  if len(fids) < 2:
    return fids, None
  (n1, f1), (n2, f2) = sorted(fids.items())[-2:]
  return fids, (f2 * n2 - f1 * n1) / (n2 - n1)  # FID_N = FID_inf + k / N through both points


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--config', default='configs/vitgan_mini.py')
  parser.add_argument('--data', default=common.DEFAULT_DATA)
  parser.add_argument('--samples', type=int, default=2000)
  parser.add_argument('--init', action='store_true', help="also the step-0 G (config's seed)")
  parser.add_argument('--checkpoint', action='append', default=[],
                      metavar='ROW:WORKDIR[:STEP|best]',
                      help='a learning-benchmark row (vitgan, vanilla, stylegan2) and its work '
                           'directory (the row folder); latest checkpoint unless STEP or best')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  if args.samples % BATCH:
    parser.error(f'--samples must be a multiple of {BATCH}')

  base = common.load_config(args.config, {'data.source': 'npz',
                                           'data.path': os.path.abspath(args.data)})
  base.eval.reference_num_samples = 0  # all of --data, as the learning benchmark
  base.eval.batch_size = BATCH
  mesh = sharding.create_mesh(jax.devices()[:1])
  extractor = train_eval.feature_extractor(base, mesh)
  reference = train_eval.load_reference_stats(base, extractor)
  counts = counts_up_to(args.samples)

  jobs = [('vitgan', None, None)] if args.init else []
  for item in args.checkpoint:
    row, workdir, *step = item.split(':')
    jobs.append((row, workdir, step[0] if step else None))
  result = {**common.header('fid_sample_counts', quick=False), 'config': args.config,
            'reference': f'all {os.path.basename(args.data)} images', 'counts': counts,
            'rows': []}
  for row, workdir, step in jobs:
    config = learning_curve.row_config(base, row)
    gan = GAN.from_config(config)
    state = gan.init(jax.random.PRNGKey(config.training.seed))
    if workdir:
      state = checkpoint.Checkpointer(workdir, async_save=False).restore(
          state, step=None if step in (None, 'best') else int(step), best=step == 'best')
    draw = gan.sampler(mesh)
    pool = features.generated_features(
        lambda rng, n, state=state, draw=draw: draw(state, rng, n), args.samples,
        jax.random.PRNGKey(config.eval.seed), extractor, batch_size=BATCH,
        progress=features.Progress('samples', args.samples))['pool']
    fids, fid_inf = fid_at_counts(np.asarray(pool), reference, counts)
    entry = {'row': row, 'workdir': workdir, 'which': step or ('latest' if workdir else 'init'),
             'step': int(state.step), 'fid_at': fids, 'fid_inf_extrapolated': fid_inf}
    print(json.dumps(entry), flush=True)
    result['rows'].append(entry)
  if args.out:
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)
    print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
