"""Train-step throughput: images/s, ms/step, compile time, memory, FLOPs and MFU over a sweep.

Times exactly the step training runs: `train.make_train_step` jitted by `train.jit_train_step`
on `sharding.create_mesh()` (D step on DiffAugment-ed real+fake with bCR, G step, EMA, NaN
guard), fed one random batch that lives on the device, so input never limits it. Per point:
trace+lower and XLA compile times (`.lower().compile()`), warm-up, then `--repeats` x `--steps`
steps ended by block_until_ready; FLOPs from the step's jaxpr; MFU against the chip's peak
dense bf16 rate (common.PEAK_BF16_FLOPS; none on CPU). Fails a point that recompiles after its
first step.

Points run in the sweep's order (the paper batch in bf16 first, then one-change variants at that
batch, then the batch sweeps) until --budget_s runs out; `--trace DIR` also profiles the first
point (kernel time by op). Compiles after the first run --compile_workers at a time (XLA
releases the GIL), timings run one at a time with nothing else going on.

  python -m bench.train_throughput            # full sweep (accelerator; see bench/README.md)
  python -m bench.train_throughput --quick    # configs/smoke.py sizes on CPU, under a minute
"""

import argparse
import dataclasses
import statistics
import threading
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from bench import common, profile_step
from vitgan_jax import sharding, train
from vitgan_jax.gan import GAN

# name -> (config file, overrides). Every variant is the paper's step with one change at most.
CIFAR = 'configs/vitgan_cifar10.py'
VARIANTS = {
    'cifar10': (CIFAR, {}),
    'celeba64': ('configs/vitgan_celeba64.py', {}),
    'cifar10-dot': (CIFAR, {'model.discriminator.attention': 'dot'}),
    'cifar10-l2aug': (CIFAR, {'model.discriminator.l2_form': 'augmented'}),
    'cifar10-no-guard': (CIFAR, {'training.nan_guard': False}),
    'cifar10-no-bcr': (CIFAR, {'loss.bcr_real': 0.0, 'loss.bcr_fake': 0.0}),
    'cifar10-no-augment': (CIFAR, {'augment.policy': ''}),
    'cifar10-no-isn': (CIFAR, {'model.discriminator.spectral_norm': 'none'}),
    'smoke': ('configs/smoke.py', {}),
}
# The full sweep, in the order it runs: 'variant/batch/dtype/attention implementation'. The
# paper batch in bf16 first; then its one-change variants (what each feature costs, and the
# fused-attention forms); then the batch sweeps.
FULL_SWEEP = (
    'cifar10/128/bfloat16/xla', 'cifar10/128/bfloat16/cudnn', 'cifar10-l2aug/128/bfloat16/cudnn',
    'cifar10-l2aug/128/bfloat16/xla', 'cifar10/128/float32/xla',
    'cifar10-no-guard/128/bfloat16/xla', 'cifar10-no-bcr/128/bfloat16/xla',
    'cifar10-no-augment/128/bfloat16/xla',
    'cifar10/256/bfloat16/xla', 'cifar10/512/bfloat16/xla', 'cifar10/1024/bfloat16/xla',
    'celeba64/128/bfloat16/xla', 'celeba64/512/bfloat16/xla', 'celeba64/1024/bfloat16/xla',
    'cifar10-l2aug/1024/bfloat16/cudnn', 'cifar10-dot/128/bfloat16/xla',
    'cifar10/1024/float32/xla', 'celeba64/128/float32/xla', 'celeba64/256/bfloat16/xla',
    'cifar10-no-isn/128/bfloat16/xla', 'cifar10/64/bfloat16/xla',
)
QUICK_SWEEP = ('smoke/16/float32/xla', 'smoke/32/float32/xla')
PAPER_BATCH = 128


@dataclasses.dataclass
class Point:
  variant: str
  batch_size: int
  dtype: str
  attention_impl: str = 'xla'
  result: dict = dataclasses.field(default_factory=dict)
  step: object = None
  compiled: object = None
  compile_done: object = None

  @property
  def name(self):
    return f'{self.variant}/b{self.batch_size}/{self.dtype}/{self.attention_impl}'


def parse_point(spec):
  """'variant/batch/dtype/impl' -> Point; ValueError naming what is wrong."""
  parts = spec.split('/')
  if len(parts) != 4 or parts[0] not in VARIANTS or not parts[1].isdigit():
    raise ValueError(f'point {spec!r}: want variant/batch/dtype/impl, variant one of '
                     f'{sorted(VARIANTS)}')
  return Point(parts[0], int(parts[1]), parts[2], parts[3])


def make_points(specs, platform):
  """Points in the given order; cuDNN ones only on a GPU in bfloat16 (its fused attention
  takes 16-bit inputs)."""
  points = [parse_point(s) for s in specs]
  return [p for p in points
          if p.attention_impl != 'cudnn' or (platform == 'gpu' and p.dtype == 'bfloat16')]


def cross_product(variants, batch_sizes, dtypes, impls):
  """Specs for every combination, the paper batch first, then by variant and batch."""
  specs = [(b != PAPER_BATCH, i, b, d != 'bfloat16', m != 'xla', f'{v}/{b}/{d}/{m}')
           for i, v in enumerate(variants) for b in batch_sizes for d in dtypes for m in impls]
  return [s[-1] for s in sorted(specs)]


def point_config(point):
  path, overrides = VARIANTS[point.variant]
  overrides = dict(overrides, **{'training.dtype': point.dtype,
                                 'training.batch_size': point.batch_size})
  return common.load_config(path, overrides)


class Variant:
  """One model variant's initial train state (on device) and its copier; shared by its points."""

  def __init__(self, name, mesh):
    config = common.load_config(*VARIANTS[name])
    gan = GAN.from_config(config)
    start = time.perf_counter()
    self.state = jax.block_until_ready(gan.init_on(mesh, config.training.seed))
    self.init_seconds = time.perf_counter() - start
    # The step donates its state: each point trains a fresh copy of the same initial state.
    self.copy = jax.jit(lambda s: jax.tree.map(jnp.copy, s),
                        out_shardings=gan.state_shardings(mesh))
    self.image_shape = (config.model.image_size, config.model.image_size, config.model.channels)
    self.num_params = {'generator': _count(self.state.g_params),
                       'discriminator': _count(self.state.d_params)}


def _count(tree):
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


class CompilePool:
  """Daemon threads running Lowered.compile(); a point's `compile_done` event fires when ready.

  Daemon threads, so a compile still running when the budget ends does not hold up the exit.
  """

  def __init__(self, workers):
    self.workers = workers
    self._queue, self._pending = [], 0
    self._lock = threading.Condition()
    for _ in range(workers):
      threading.Thread(target=self._work, daemon=True).start()

  def submit(self, point, lowered):
    point.compile_done = threading.Event()
    with self._lock:
      self._queue.append((point, lowered))
      self._pending += 1
      self._lock.notify_all()

  def pending(self):
    with self._lock:
      return self._pending

  def wait_idle(self, until):
    """Waits until no compile is queued or running, or the clock passes `until`."""
    with self._lock:
      while self._pending and time.perf_counter() < until:
        self._lock.wait(timeout=max(0.0, min(1.0, until - time.perf_counter())))
      return self._pending == 0

  def _work(self):
    while True:
      with self._lock:
        while not self._queue:
          self._lock.wait()
        point, lowered = self._queue.pop(0)
        point.result['compiles_running_at_start'] = self._pending - len(self._queue) - 1
      try:
        start = time.perf_counter()
        point.compiled = lowered.compile()
        point.result['compile_seconds'] = time.perf_counter() - start
      except Exception as e:  # pylint: disable=broad-except
        point.result['error'] = f'compile: {type(e).__name__}: {str(e)[:500]}'
      with self._lock:
        self._pending -= 1
        self._lock.notify_all()
      point.compile_done.set()


def lower_point(point, variant, batch, mesh):
  """Traces and lowers the jitted step for this point (main thread: tracing holds the GIL)."""
  config = point_config(point)
  fn = train.make_train_step(config, GAN.from_config(config), mesh)
  point.step = train.jit_train_step(fn, mesh,  # the step takes the variant's state as placed
                                    state_shardings=profile_step.placement(variant.state))
  start = time.perf_counter()
  with common.attention_implementation(point.attention_impl):
    lowered = point.step.lower(variant.state, batch)
  point.result['lower_seconds'] = time.perf_counter() - start
  flops = step_matmul_flops(fn, variant.state, batch)
  point.result['flops_per_step'] = flops
  point.result['flops_per_image'] = flops / point.batch_size
  point.result['xla_flops_per_step'] = common.flops_of(lowered)
  return lowered


def step_matmul_flops(fn, state, batch):
  """FLOPs of every matmul and convolution in the step's jaxpr (forward and backward): the
  same count on every platform. XLA's cost analysis is not: on a GPU it left out the work of
  library GEMMs (an H200 reported 6.6 GFLOP per image at batch 128, 1.3 at batch 1024, for
  a step this count puts at 17.5 and the CPU's analysis at 17.8). Traced apart from the
  lowering, outside the attention patch, so cuDNN points count the same math as XLA ones."""
  jaxpr = jax.make_jaxpr(fn)(state, batch)
  return float(sum(f for _, _, f in profile_step.matmul_flops(jaxpr.jaxpr)))


def time_point(point, variant, batch, args, counter, peak):
  """Warm-up, then repeats x steps; images/s, TFLOP/s, MFU, memory, recompile check."""
  r = point.result
  r['flops_per_step_compiled'] = common.flops_of(point.compiled)
  r['xla_memory'] = common.memory_analysis(point.compiled)
  state = variant.copy(variant.state)
  with counter.counting() as compiles:
    start = time.perf_counter()
    state, metrics = point.step(state, batch)
    jax.block_until_ready((state, metrics))
    r['first_step_seconds'] = time.perf_counter() - start
    r['compiles_in_first_step'] = compiles()  # 0: the AOT executable was reused by jit
    for _ in range(args.warmup - 1):
      state, metrics = point.step(state, batch)
    jax.block_until_ready((state, metrics))
    after_first = compiles()
    per_step = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      for _ in range(args.steps):
        state, metrics = point.step(state, batch)
      jax.block_until_ready((state, metrics))
      per_step.append((time.perf_counter() - start) / args.steps)
    r['recompiles_after_first_step'] = compiles() - after_first
  r['jit_cache_size'] = _cache_size(point.step)
  seconds = statistics.median(per_step)
  r['ms_per_step'] = 1e3 * seconds
  r['ms_per_step_min'] = 1e3 * min(per_step)
  r['ms_per_step_repeats'] = [1e3 * s for s in per_step]
  r['images_per_second'] = point.batch_size / seconds
  flops = r.get('flops_per_step')
  r['achieved_tflops'] = flops / seconds / 1e12 if flops else None
  r['mfu'] = (flops / seconds / (peak * jax.device_count())) if flops and peak else None
  r['finite'] = bool(np.isfinite(float(metrics['d_loss'])) and
                     np.isfinite(float(metrics['g_loss'])))
  r['device_memory'] = common.device_memory()
  del state, metrics
  if r['recompiles_after_first_step']:
    raise RuntimeError(f'{point.name} recompiled {r["recompiles_after_first_step"]} times '
                       'after its first step')


def trace_point(point, variant, batch, trace_dir, steps=5):
  """Device kernel time by op over `steps` steps under jax.profiler (profile_step's reader)."""
  return profile_step.traced_steps(point.step, variant.copy(variant.state), batch, steps,
                                   trace_dir)


def _cache_size(jitted):
  try:
    return int(jitted._cache_size())  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    return None


def run(args):
  """Runs the sweep; returns the results dict (also written to args.out)."""
  start_all = time.perf_counter()
  deadline = start_all + args.budget_s
  if args.prng_impl:  # e.g. 'rbg': XLA's RngBitGenerator instead of threefry for every draw
    jax.config.update('jax_default_prng_impl', args.prng_impl)
  result = common.header('train_throughput', args.quick)
  info = result['device']
  peak = info['peak_bf16_flops_per_device']
  mesh = sharding.create_mesh()
  if args.points:
    specs = args.points.split(',')
  elif args.variants or args.batch_sizes or args.dtypes or args.attention_impls:
    specs = cross_product(
        (args.variants or ('smoke' if args.quick else 'cifar10,celeba64')).split(','),
        args.batch_sizes or (PAPER_BATCH,),
        (args.dtypes or ('float32' if args.quick else 'bfloat16')).split(','),
        (args.attention_impls or 'xla').split(','))
  else:
    specs = QUICK_SWEEP if args.quick else FULL_SWEEP
  points = make_points(specs, info['platform'])
  used = list(dict.fromkeys(p.variant for p in points))
  result['settings'] = {
      'steps': args.steps, 'warmup': args.warmup, 'repeats': args.repeats,
      'budget_s': args.budget_s, 'compile_workers': args.compile_workers,
      'prng_impl': args.prng_impl or jax.config.jax_default_prng_impl,
      'points': [p.name for p in points],
      'variants': {k: {'config': VARIANTS[k][0], 'overrides': VARIANTS[k][1]} for k in used},
      'input': 'one fixed random batch resident on the device',
      'flops_source': 'matmul and convolution FLOPs of the step\'s jaxpr (forward and '
                      'backward; profile_step.matmul_flops); xla_flops_per_step and '
                      'flops_per_step_compiled are XLA\'s cost analysis, which misses '
                      'library GEMMs on GPU',
      'mfu_definition': 'flops_per_step / step time / (peak_bf16_flops_per_device x devices)',
  }
  counter = common.CompileCounter()
  variants, batches = {}, {}
  init_spent = 0.0  # state inits (~30 s each on an H200: compiling init) are off the budget

  def variant_for(point):
    nonlocal init_spent
    if point.variant not in variants:
      v = variants[point.variant] = Variant(point.variant, mesh)
      init_spent += v.init_seconds
      print(f'[init] {point.variant}: state ready in {v.init_seconds:.1f}s, '
            f'params {v.num_params}', flush=True)
    return variants[point.variant]

  rng = np.random.default_rng(0)

  def batch_for(point):
    key = (variant_for(point).image_shape, point.batch_size)
    if key not in batches:
      images = rng.uniform(-1, 1, (point.batch_size, *key[0])).astype(np.float32)
      batches[key] = {'image': jax.device_put(images, sharding.data_sharded(mesh))}
    return batches[key]

  # Phase 1: lower every point in order (tracing holds the GIL), compile in the background;
  # the first point compiles alone, so one compile time is measured without company.
  pool = CompilePool(max(1, args.compile_workers))
  compile_deadline = start_all + args.compile_budget_fraction * args.budget_s
  for i, point in enumerate(points):
    if point.batch_size % mesh.devices.size:
      point.result['skipped'] = f'batch not divisible by {mesh.devices.size} devices'
      continue
    if time.perf_counter() - init_spent > compile_deadline:
      point.result['skipped'] = 'time budget (not lowered)'
      continue
    try:
      lowered = lower_point(point, variant_for(point), batch_for(point), mesh)
    except Exception as e:  # pylint: disable=broad-except
      point.result['error'] = f'lower: {type(e).__name__}: {str(e)[:500]}'
      print(f'[error] {point.name}: {point.result["error"][:300]}', flush=True)
      continue
    pool.submit(point, lowered)
    if i == 0 and args.first_compile_alone:
      point.compile_done.wait()
    print(f'[lowered] {point.name} in {point.result["lower_seconds"]:.1f}s', flush=True)
  # Timings run with no compile going on, unless compiles outlast this share of the budget.
  deadline += init_spent
  pool.wait_idle(start_all + init_spent + args.idle_wait_fraction * args.budget_s)

  # Phase 2: time the compiled points one at a time, in priority order.
  for point in points:
    r = point.result
    if point.compile_done is None:
      continue
    if not point.compile_done.wait(timeout=max(0.0, deadline - time.perf_counter())):
      r['skipped'] = 'time budget (still compiling)'
      continue
    if 'error' in r:
      print(f'[error] {point.name}: {r["error"][:300]}', flush=True)
      continue
    if time.perf_counter() > deadline:
      r['skipped'] = 'time budget (compiled, not timed)'
      continue
    r['compiles_running_while_timed'] = pool.pending()
    try:
      with common.attention_implementation(point.attention_impl):  # in case of a retrace
        time_point(point, variants[point.variant], batch_for(point), args, counter, peak)
      if args.trace and point is points[0]:
        r['kernel_times'] = trace_point(point, variants[point.variant], batch_for(point),
                                        args.trace)
      print(f'[timed] {point.name}: {r["images_per_second"]:.0f} img/s, '
            f'{r["ms_per_step"]:.2f} ms/step, compile {r["compile_seconds"]:.1f}s, '
            f'{(r["achieved_tflops"] or 0):.3f} TFLOP/s, MFU {r["mfu"]}', flush=True)
    except Exception as e:  # pylint: disable=broad-except
      r['error'] = f'run: {type(e).__name__}: {str(e)[:500]}'
      print(f'[error] {point.name}: {r["error"][:300]}', flush=True)
      if args.verbose:
        traceback.print_exc()
    point.compiled = None  # frees the executable
    point.step = None

  result['variants'] = {name: {'num_params': v.num_params, 'init_seconds': v.init_seconds}
                        for name, v in variants.items()}
  result['init_seconds_total'] = init_spent  # not counted in --budget_s
  result['points'] = [dict(variant=p.variant, batch_size=p.batch_size, dtype=p.dtype,
                           attention_impl=p.attention_impl, **p.result) for p in points]
  result['seconds_total'] = time.perf_counter() - start_all
  return result


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--quick', action='store_true',
                      help='tiny model (configs/smoke.py) at batch 16 and 32, float32, on CPU')
  parser.add_argument('--points', default='',
                      help="comma list of 'variant/batch/dtype/impl' (impl 'xla' or 'cudnn'); "
                           'default: the full sweep (or --quick\'s)')
  parser.add_argument('--variants', default='',
                      help=f'with --batch_sizes/--dtypes/--attention_impls: every combination; '
                           f'variants from {sorted(VARIANTS)}')
  parser.add_argument('--batch_sizes', type=lambda s: [int(x) for x in s.split(',')],
                      default=None, help='global batch sizes, e.g. 64,128,256')
  parser.add_argument('--dtypes', default=None, help='comma list of float32,bfloat16')
  parser.add_argument('--attention_impls', default=None,
                      help="comma list of 'xla','cudnn' (cudnn: GPU and bfloat16 only)")
  parser.add_argument('--trace', default='',
                      help='profile the first point for a few steps here: kernel time by op')
  parser.add_argument('--steps', type=int, default=None, help='timed steps per repeat')
  parser.add_argument('--warmup', type=int, default=3, help='untimed steps, the first included')
  parser.add_argument('--repeats', type=int, default=None, help='timed repeats (median kept)')
  parser.add_argument('--budget_s', type=float, default=None,
                      help='wall-clock budget; points not reached are marked skipped')
  parser.add_argument('--compile_budget_fraction', type=float, default=0.6,
                      help='no new point is lowered after this fraction of the budget')
  parser.add_argument('--idle_wait_fraction', type=float, default=0.8,
                      help='timings wait for background compiles up to this fraction')
  parser.add_argument('--compile_workers', type=int, default=None,
                      help='parallel XLA compiles after the first point')
  parser.add_argument('--first_compile_alone', type=int, default=1,
                      help='1: the first point compiles before any other is lowered (its compile '
                           'time without company); 0: all compile at once (a short budget)')
  parser.add_argument('--prng_impl', default='',
                      help="jax_default_prng_impl for the run ('threefry2x32', 'rbg', ...)")
  parser.add_argument('--out', default=None, help='results JSON path')
  parser.add_argument('--verbose', action='store_true')
  args = parser.parse_args(argv)
  quick = args.quick
  defaults = dict(steps=3 if quick else 20, repeats=2 if quick else 3,
                  budget_s=600, compile_workers=1 if quick else 8)
  for key, value in defaults.items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  if quick:
    args.warmup = min(args.warmup, 2)
  args.out = args.out or common.default_out('train_throughput', quick)
  return args


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  common.write_json(result, args.out)
  print(f'wrote {args.out}', flush=True)
  return result


if __name__ == '__main__':
  main()
