"""Packs the FID Inception weights as float16 kernels in one .npz (~44 MB) to copy elsewhere.

The float32 weights are 87 MB; for a machine that has to be sent a small bundle, the conv and
classifier kernels go to float16 (relative rounding 2^-11), the batch-norm vectors stay
float32. `common.load_inception` reads the pack back as float32 and labels it
'float16-packed'. `--check N` measures what the rounding does to the pool features and to the
FID between two halves of the real images.

  python -m bench.pack_inception --weights /path/to/pt_inception-2015-12-05-6726825d.pth
  python -m bench.pack_inception   # $VITGAN_INCEPTION_PT or the evaluation cache
"""

import argparse
import os

from bench import common

import numpy as np

from vitgan_jax.evaluation import weights

PACKED_DTYPE = np.float16


def pack(params):
  """Flat {'a/b/kernel': array}: kernels in float16, everything else float32."""
  flat = weights.flatten_params(params)
  return {k: v.astype(PACKED_DTYPE if k.endswith('kernel') else np.float32)
          for k, v in flat.items()}


def check(original, packed_path, data_path, num_images, batch_size):
  """Max feature difference and FID(half A, half B) with the original vs the packed weights."""
  from vitgan_jax import evaluation  # pylint: disable=g-import-not-at-top
  packed, _, _ = common.load_inception(packed_path)
  images = np.load(data_path)['x'][:num_images]
  half = len(images) // 2
  out = {}
  for name, params in (('float32', original), ('float16-packed', packed)):
    extractor = evaluation.FeatureExtractor(params, batch_size=batch_size)
    pool = extractor(images)['pool']
    out[name] = pool
    out[f'fid_halves_{name}'] = evaluation.frechet_distance(
        pool[:half].mean(0), np.cov(pool[:half].astype(np.float64), rowvar=False),
        pool[half:].mean(0), np.cov(pool[half:].astype(np.float64), rowvar=False))
  diff = np.abs(out.pop('float32') - out.pop('float16-packed'))
  out['pool_max_abs_diff'] = float(diff.max())
  out['pool_mean_abs_diff'] = float(diff.mean())
  out['num_images'] = len(images)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--weights', default=None,
                      help='.pth / TorchScript .pt / converted .npz; default: the loader')
  parser.add_argument('--out', default=common.CARRIED_INCEPTION)
  parser.add_argument('--check', type=int, default=0,
                      help='compare features and FID on this many real images')
  parser.add_argument('--data', default=common.DEFAULT_DATA)
  parser.add_argument('--batch_size', type=int, default=50)
  args = parser.parse_args(argv)

  original = weights.load_inception_params(args.weights)
  flat = pack(original)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  tmp = args.out + '.tmp.npz'
  np.savez(tmp, **flat)
  os.replace(tmp, args.out)
  size = os.path.getsize(args.out)
  print(f'wrote {args.out}: {len(flat)} arrays, {size / 2**20:.1f} MiB'
        f'{" (with classifier)" if "fc/kernel" in flat else " (no classifier)"}')
  if args.check:
    print(check(original, args.out, args.data, args.check, args.batch_size))


if __name__ == '__main__':
  main()
