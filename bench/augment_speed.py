"""DiffAugment's cost in the step: jit(value_and_grad) of the full policy on a D-sized batch.

Times `augment.augment` forward + backward (the G step differentiates through it) on
real + fake at the paper's batch (2 x 128 images, 32x32), and counts the gathers, scatters and
dots XLA compiled it to. `--repo` points at another checkout to compare two versions.

  python -m bench.augment_speed [--repo PATH] [--out results.json]
"""

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(batch_size=256, image_size=32, policy='translation,color,cutout,scale', calls=20,
            repeats=5):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vitgan_jax import augment  # pylint: disable=g-import-not-at-top
  images = jax.random.uniform(jax.random.PRNGKey(0), (batch_size, image_size, image_size, 3),
                              minval=-1)

  def loss(x, rng):
    return jnp.sum(jnp.square(augment.augment(x, rng, policy, 0.8)))

  step = jax.jit(jax.value_and_grad(loss))
  hlo = step.lower(images, jax.random.PRNGKey(1)).compile().as_text()
  jax.block_until_ready(step(images, jax.random.PRNGKey(1)))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for i in range(calls):
      out = step(images, jax.random.PRNGKey(i))
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / calls * 1e3)
  return {'batch_size': batch_size, 'image_size': image_size, 'policy': policy,
          'ms_forward_backward_median': float(np.median(times)),
          'hlo_ops': {op: hlo.count(f' {op}(') for op in ('gather', 'scatter', 'dot', 'while')}}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--repo', default=ROOT, help='checkout whose vitgan_jax to time')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.abspath(args.repo))
  sys.path.insert(1, ROOT)
  from bench import common  # pylint: disable=g-import-not-at-top
  result = {**common.header('augment_speed', quick=False), 'repo': os.path.abspath(args.repo),
            **measure(args.batch_size)}
  print(f'{result["ms_forward_backward_median"]:.1f} ms forward+backward, {result["hlo_ops"]}')
  if args.out:
    common.write_json(result, args.out)
  return result


if __name__ == '__main__':
  main()
