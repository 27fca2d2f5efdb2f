"""Where a train step's work goes: FLOPs by network, pass and layer; XLA op counts; ablations.

  * FLOPs: every dot_general / convolution of the step's jaxpr, attributed by the Flax name
    stack (G or D, forward or backward, attention / MLP / patch embedding / spectral norm...),
    next to XLA's cost-analysis total (which adds the elementwise work). No compile needed.
  * --compile: XLA's optimized module: FLOPs, memory plan, and the top-level ops of the entry
    computation (each fusion / custom call is one kernel launch on a GPU).
  * --ablations: the same step with one feature off at a time (bCR, DiffAugment, ISN, the NaN
    guard; dot attention, bfloat16), timed; differences show what each feature costs.
  * --trace DIR: a jax.profiler trace of a few steps; on a GPU, kernel time by op name.

  python -m bench.profile_step --config configs/vitgan_cifar10.py --batch_size 128
  python -m bench.profile_step --config configs/smoke.py --batch_size 32 --compile --ablations
"""

import argparse
import collections
import glob
import os
import re
import time

from bench import common

import jax
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-order

from vitgan_jax import sharding, train
from vitgan_jax.gan import GAN

ABLATIONS = (
    ('full step', {}),
    ('no bCR', {'loss.bcr_real': 0.0, 'loss.bcr_fake': 0.0}),
    ('no DiffAugment', {'augment.policy': ''}),
    ('no ISN in D', {'model.discriminator.spectral_norm': 'none'}),
    ('no NaN guard', {'training.nan_guard': False}),
    ('dot attention in D', {'model.discriminator.attention': 'dot'}),
    ('bfloat16', {'training.dtype': 'bfloat16'}),
)
# (substring of the name stack, component), first match wins.
COMPONENTS = (
    ('/sn', 'spectral norm (power iteration)'),
    ('attention/vmap', 'attention core (QK^T, AV)'),
    ('attention/', 'attention projections'),
    ('mlp/', 'MLP'),
    ('patch_embed', 'patch embedding'),
    ('decoder/', 'implicit (INR) output'),
    ('mapping/', 'mapping network'),
    ('SelfModulatedLayerNorm', 'SLN affine'),
    ('head', 'D head'),
)


def dot_flops(eqn):
  """2 x output elements x contracted size, for dot_general and conv_general_dilated."""
  out = eqn.outvars[0].aval
  if eqn.primitive.name == 'dot_general':
    (lhs_contract, _), _ = eqn.params['dimension_numbers']
    lhs = eqn.invars[0].aval
    return 2 * int(np.prod(out.shape)) * int(np.prod([lhs.shape[d] for d in lhs_contract]))
  rhs = eqn.invars[1].aval  # conv: kernel in the layout of dimension_numbers
  spec = eqn.params['dimension_numbers'].rhs_spec  # (out feature, in feature, spatial...)
  # A dilated input (the input gradient of a strided conv) holds zeros between its pixels:
  # each output meets only ceil(k / dilation) real pixels per spatial dimension.
  dilation = eqn.params.get('lhs_dilation') or (1,) * (len(spec) - 2)
  taps = [-(-rhs.shape[d] // step) for d, step in zip(spec[2:], dilation)]
  per_output = rhs.shape[spec[1]] * int(np.prod(taps))
  return 2 * int(np.prod(out.shape)) * per_output


def _subjaxprs(eqn):
  """(jaxpr, multiplicity) of the sub-computations of an equation."""
  for key, value in eqn.params.items():
    for item in value if isinstance(value, (list, tuple)) else (value,):
      inner = getattr(item, 'jaxpr', item)
      if hasattr(inner, 'eqns'):
        times = eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1
        if eqn.primitive.name == 'cond' and key == 'branches':
          times = 1.0 / len(value)  # one branch runs; count their mean
        yield inner, times


def matmul_flops(jaxpr, prefix='', times=1.0):
  """[(name stack, primitive, flops)] of every dot / conv, nested computations included."""
  found = []
  for eqn in jaxpr.eqns:
    stack = '/'.join(s for s in (prefix, str(eqn.source_info.name_stack)) if s)
    if eqn.primitive.name in ('dot_general', 'conv_general_dilated'):
      found.append((stack, eqn.primitive.name, times * dot_flops(eqn)))
    for inner, mult in _subjaxprs(eqn):
      found += matmul_flops(inner, stack, times * mult)
  return found


def classify(stack):
  net = ('G' if 'ViTGenerator' in stack else 'D' if 'ViTDiscriminator' in stack else 'other')
  direction = 'backward' if 'transpose(' in stack else 'forward'
  component = next((name for key, name in COMPONENTS if key in stack), 'other')
  return net, direction, component


def flop_breakdown(fn, state, batch, batch_size):
  """GFLOP per real image of the step's matmuls, by (network, pass) and by component."""
  jaxpr = jax.make_jaxpr(fn)(state, batch)
  by_pass, by_component = collections.Counter(), collections.Counter()
  for stack, _, flops in matmul_flops(jaxpr.jaxpr):
    net, direction, component = classify(stack)
    by_pass[f'{net} {direction}'] += flops
    by_component[f'{net} {component}'] += flops
  per_image = lambda c: {k: v / batch_size / 1e9 for k, v in c.most_common()}  # noqa: E731
  total = sum(by_pass.values())
  return {'matmul_gflop_per_image': total / batch_size / 1e9,
          'by_network_and_pass': per_image(by_pass),
          'by_component': per_image(by_component)}


def entry_op_counts(hlo_text):
  """Opcode counts of the optimized module's ENTRY computation (kernels, roughly, on GPU)."""
  entry = hlo_text[hlo_text.index('\nENTRY'):]
  entry = entry[:entry.index('\n}')]
  ops = re.findall(r'=\s*[^=]*?\s([a-z][\w-]*)\(', entry)
  skip = {'parameter', 'constant', 'get-tuple-element', 'tuple', 'bitcast'}
  counts = collections.Counter(op for op in ops if op not in skip)
  return {'total_non_trivial': sum(counts.values()), 'by_opcode': dict(counts.most_common(12))}


def build(config_path, overrides, batch_size, mesh):
  config = common.load_config(config_path, dict(overrides, **{
      'training.batch_size': batch_size}))
  gan = GAN.from_config(config)
  state = gan.init_on(mesh, 0)
  fn = train.make_train_step(config, gan, mesh)
  size = config.model.image_size
  images = np.random.default_rng(0).uniform(-1, 1, (batch_size, size, size, 3))
  batch = {'image': jax.device_put(images.astype(np.float32), sharding.data_sharded(mesh))}
  return config, fn, state, batch


def placement(state):
  """The shardings `state` lives in (GAN.init_on's), for jit_train_step."""
  return jax.tree.map(lambda x: x.sharding, state)


def time_steps(step, state, batch, steps):
  state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  return 1e3 * (time.perf_counter() - start) / steps


def traced_steps(step, state, batch, steps, trace_dir, top=40):
  """kernel_times over `steps` steps traced after one untraced warm-up, with wall ms per step.

  The warm-up stays outside the trace so the kernel times and the wall time cover the same
  steps. A string says why when the profiler or its trace format is missing.
  """
  state, metrics = step(state, batch)
  jax.block_until_ready((state, metrics))
  try:
    with jax.profiler.trace(trace_dir):
      start = time.perf_counter()
      for _ in range(steps):
        state, metrics = step(state, batch)
      jax.block_until_ready((state, metrics))
      wall_ms = 1e3 * (time.perf_counter() - start) / steps
    times = kernel_times(trace_dir, top=top)
  except Exception as e:  # pylint: disable=broad-except  (profiler or trace format missing)
    return f'unreadable: {type(e).__name__}: {e}'[:500]
  if not isinstance(times, dict):
    times = {}  # CPU: no device planes in the trace
  times.update(steps=steps, traced_wall_ms_per_step=wall_ms)
  if 'total_ms' in times:
    times['ms_per_step'] = times['total_ms'] / steps
  return times


def kernel_kind(name):
  """An XLA op or kernel name without its instance number; library kernels by library."""
  if name.startswith('nvjet') or name.startswith('sm90_xmma') or 'cublas' in name.lower():
    return 'cuBLAS GEMM (nvjet_*, ...)'
  if 'convolve' in name or 'cudnn' in name.lower():
    return 'cuDNN kernels'
  return re.sub(r'[.\d_]+$', '', name)


def kernel_times(trace_dir, top=25):
  """Device op time by name from a trace (GPU/TPU planes); None where there is none (CPU).

  Also by kind (the name without its trailing .N / digits: 'loop_add_fusion', 'gemm_fusion',
  'custom-call'...), with event counts: how many kernels a step launches, and of which kinds.
  """
  paths = sorted(glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'), recursive=True))
  if not paths:
    return None
  data = jax.profiler.ProfileData.from_file(paths[-1])
  totals, counts = collections.Counter(), collections.Counter()
  device_lines = [line for plane in data.planes if plane.name.startswith('/device:')
                  for line in plane.lines]
  lines_seen = sorted({line.name for line in device_lines})
  wanted = [line for line in device_lines if 'Ops' in line.name or 'Kernels' in line.name]
  if not wanted:  # GPU traces may hold only per-stream kernel lines
    wanted = [line for line in device_lines if line.name.startswith('Stream')]
  for line in wanted:
    for event in line.events:
      totals[f'{line.name}: {event.name}'] += event.duration_ns
      counts[f'{line.name}: {event.name}'] += 1
  if not totals:
    return {'lines_seen': lines_seen[:40]} if lines_seen else None
  whole = sum(totals.values())
  kinds, kind_counts = collections.Counter(), collections.Counter()
  for name, ns in totals.items():
    kind = kernel_kind(name.split(': ', 1)[1])
    kinds[kind] += ns
    kind_counts[kind] += counts[name]
  return {'total_ms': whole / 1e6, 'events': sum(counts.values()), 'lines_seen': lines_seen[:40],
          'top': [(name, ns / 1e6, ns / whole, counts[name])
                  for name, ns in totals.most_common(top)],
          'by_kind': [(kind, ns / 1e6, ns / whole, kind_counts[kind])
                      for kind, ns in kinds.most_common(top)]}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', default='configs/vitgan_cifar10.py')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--compile', action='store_true', help='also compile: XLA FLOPs, ops')
  parser.add_argument('--ablations', nargs='?', const='all', default='',
                      help="time one-feature-off steps: 'all' or comma-separated names")
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--trace', default='', help='write a profiler trace of --steps here')
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  mesh = sharding.create_mesh()
  result = common.header('profile_step', False)
  result['settings'] = {'config': args.config, 'batch_size': args.batch_size}
  config, fn, state, batch = build(args.config, {}, args.batch_size, mesh)
  step = train.jit_train_step(fn, mesh, state_shardings=placement(state))
  lowered = step.lower(state, batch)
  flops = common.flops_of(lowered)
  result['xla_gflop_per_image'] = flops / args.batch_size / 1e9
  result.update(flop_breakdown(fn, state, batch, args.batch_size))
  print(f'XLA cost analysis: {result["xla_gflop_per_image"]:.2f} GFLOP per real image; '
        f'matmuls and convolutions: {result["matmul_gflop_per_image"]:.2f}', flush=True)
  for title in ('by_network_and_pass', 'by_component'):
    print(f'  {title}:', ', '.join(f'{k} {v:.3f}' for k, v in result[title].items()))
  if args.compile or args.trace:
    compiled, seconds = common.timed(lowered.compile)
    result['compile_seconds'] = seconds
    result['xla_compiled_gflop_per_image'] = (common.flops_of(compiled) or 0) / args.batch_size / 1e9
    result['xla_memory'] = common.memory_analysis(compiled)
    result['entry_ops'] = entry_op_counts(compiled.as_text())
    print(f'compiled in {seconds:.0f}s; entry ops: {result["entry_ops"]}', flush=True)
  if args.trace:
    result['kernel_times'] = traced_steps(step, state, batch, args.steps, args.trace)
    print('kernel times:', result['kernel_times'], flush=True)
  if args.ablations:
    result['ablations'] = []
    wanted = None if args.ablations == 'all' else args.ablations.split(',')
    for name, overrides in ABLATIONS:
      if wanted and name not in wanted:
        continue
      _, fn_a, state_a, batch_a = build(args.config, overrides, args.batch_size, mesh)
      step_a = train.jit_train_step(fn_a, mesh, state_shardings=placement(state_a))
      low = step_a.lower(state_a, batch_a)
      compiled_a, compile_s = common.timed(low.compile)
      ops = entry_op_counts(compiled_a.as_text())
      ms = time_steps(step_a, state_a, batch_a, args.steps)
      result['ablations'].append({'name': name, 'overrides': overrides, 'ms_per_step': ms,
                                  'gflop_per_image': (common.flops_of(low) or 0)
                                  / args.batch_size / 1e9, 'compile_seconds': compile_s,
                                  'entry_ops': ops})
      print(f'  {name}: {ms:.1f} ms/step, compile {compile_s:.0f}s, entry ops {ops}',
            flush=True)
  out = args.out or common.default_out('profile_step', False)
  common.write_json(result, out)
  print(f'wrote {out}')


if __name__ == '__main__':
  main()
