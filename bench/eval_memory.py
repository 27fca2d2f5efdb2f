"""Peak host memory (RSS) of an FID evaluation at given Inception batch sizes.

Each batch size runs in its own subprocess (ru_maxrss is a per-process maximum): the
configs/smoke.py generator (initial weights) -> eval.num_samples uint8 samples -> FID Inception
at exactly that batch (no memory cap) -> statistics -> FID against reference statistics of
data.source='random' images, as `train_eval.make_evaluator` runs it. The slope of peak RSS
between batch sizes is the per-image cost that `features.INCEPTION_BYTES_PER_IMAGE` records.

  python -m bench.eval_memory --batch_sizes 2,4,8 --num_samples 16

On CPU the RSS is the whole story; on an accelerator it is host memory only (the device
allocator's peak is recorded too). Inception weights: random by default (same shapes, same
memory; FID values then mean nothing).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 2 ** 20


def _maxrss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _hwm_bytes():
  """VmHWM of /proc/self/status: this process's own peak RSS (ru_maxrss can carry the peak of
  the parent it was forked from across exec); None where there is no /proc."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def child(batch_size: int, num_samples: int, weights_spec: str) -> dict:
  """One evaluation at `batch_size` in this process; returns the measurements."""
  import jax  # pylint: disable=g-import-not-at-top
  from bench import common  # pylint: disable=g-import-not-at-top
  from vitgan_jax import sharding  # pylint: disable=g-import-not-at-top
  from vitgan_jax.evaluation import features, train_eval  # pylint: disable=g-import-not-at-top
  from vitgan_jax.gan import GAN  # pylint: disable=g-import-not-at-top
  rss_imported = _maxrss_bytes()
  config = common.load_config('configs/smoke.py')
  config.data.source = 'random'
  config.eval.num_samples = num_samples
  config.eval.reference_num_samples = num_samples
  config.eval.batch_size = batch_size
  config.eval.reference_stats = os.path.join(
      os.environ.get('TMPDIR', '/tmp'), f'eval_memory_ref_{os.getpid()}.npz')
  params, label, model = common.load_inception(weights_spec)
  mesh = sharding.create_mesh()
  extractor = features.FeatureExtractor(params, batch_size=batch_size, mesh=mesh, model=model)
  del params
  gan = GAN.from_config(config)
  state = jax.jit(gan.init)(jax.random.PRNGKey(0))
  rss_ready = _maxrss_bytes()
  start = time.perf_counter()
  evaluator = train_eval.make_evaluator(config, gan, mesh, extractor=extractor)
  rss_reference = _maxrss_bytes()
  results = evaluator(state)
  seconds = time.perf_counter() - start
  try:
    os.remove(config.eval.reference_stats)
  except OSError:
    pass
  return {
      'batch_size': extractor.batch_size,
      'num_samples': num_samples,
      'weights': label,
      'peak_rss_bytes': _maxrss_bytes(),
      'peak_vmhwm_bytes': _hwm_bytes(),
      'rss_after_imports_bytes': rss_imported,
      'rss_before_eval_bytes': rss_ready,
      'rss_after_reference_stats_bytes': rss_reference,
      # The Inception phase alone (compile + forward at this batch, reference statistics):
      # the rise of the running maximum over what the process held before it.
      'inception_rss_increase_bytes': rss_reference - rss_ready,
      'device_memory': common.device_memory(),
      'eval_seconds_incl_compile': seconds,
      'fid': float(results['fid']),
  }


def run_point(batch_size: int, num_samples: int, weights_spec: str, timeout: float) -> dict:
  """child() in a fresh interpreter (same environment: XLA_FLAGS, threads)."""
  command = [sys.executable, '-m', 'bench.eval_memory', '--child', f'--batch_size={batch_size}',
             f'--num_samples={num_samples}', f'--weights={weights_spec}']
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
  lines = [l for l in result.stdout.splitlines() if l.startswith('RESULT ')]
  if result.returncode != 0 or not lines:
    return {'batch_size': batch_size, 'error': (result.stdout + result.stderr)[-2000:]}
  return json.loads(lines[-1][len('RESULT '):])


def per_image_bytes(points, key='inception_rss_increase_bytes') -> float | None:
  """Least-squares slope of `key` against batch size (bytes per image in a batch)."""
  good = [p for p in points if key in p]
  if len(good) < 2:
    return None
  xs = [p['batch_size'] for p in good]
  ys = [p[key] for p in good]
  mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
  var = sum((x - mx) ** 2 for x in xs)
  return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else None


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch_sizes', default='2,4,8')
  parser.add_argument('--num_samples', type=int, default=16)
  parser.add_argument('--weights', default='random',
                      help="'random' (default), 'auto', 'tiny' or a weights path")
  parser.add_argument('--timeout', type=float, default=1800)
  parser.add_argument('--out', default=None)
  parser.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--batch_size', type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    print('RESULT ' + json.dumps(child(args.batch_size, args.num_samples, args.weights)),
          flush=True)
    return None

  points = []  # children first: a parent that imported jax would lend them its RSS
  for b in (int(s) for s in args.batch_sizes.split(',')):
    point = run_point(b, max(args.num_samples, b), args.weights, args.timeout)
    points.append(point)
    shown = (f'peak RSS {point["peak_rss_bytes"] / MIB:.0f} MiB, Inception phase '
             f'+{point["inception_rss_increase_bytes"] / MIB:.0f} MiB, '
             f'{point["eval_seconds_incl_compile"]:.0f} s' if 'peak_rss_bytes' in point
             else f'failed: {point["error"][-300:]}')
    print(f'batch {b}: {shown}', flush=True)
  from bench import common  # pylint: disable=g-import-not-at-top
  slope = per_image_bytes(points)
  peak_slope = per_image_bytes(points, 'peak_rss_bytes')
  result = {**common.header('eval_memory', quick=False), 'points': points,
            'per_image_bytes': slope,
            'per_image_mib': slope / MIB if slope else None,
            'peak_rss_slope_mib': peak_slope / MIB if peak_slope else None,
            'method': 'least-squares slope over batch sizes of the rise of ru_maxrss during the '
                      'Inception phase (reference statistics: compile + forward), one '
                      'subprocess per batch size; peak_rss_bytes is the whole evaluation '
                      '(at small batches the 2048x2048 Frechet distance sets it)',
            'omp_num_threads': os.environ.get('OMP_NUM_THREADS')}
  if slope:
    print(f'Inception per image: {slope / MIB:.1f} MiB', flush=True)
  path = common.write_json(result, args.out or common.default_out('eval_memory', quick=False))
  print(f'wrote {path}', flush=True)
  return result


if __name__ == '__main__':
  main()
