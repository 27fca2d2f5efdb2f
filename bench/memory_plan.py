"""Which config fits which device: XLA's memory plan of the full training step, compiled only.

Compiles (never runs) the exact step of each config at the given per-device batch sizes on one
device of the local backend and records XLA's static plan: arguments (the train state and
batch), temporaries, and the estimate of bytes live at once. On a CPU the plan is the CPU
compiler's, a guide for accelerators (same program, different fusion), not a measurement of
one.

  python -m bench.memory_plan --configs configs/vitgan_cifar10.py,configs/vitgan_celeba64.py \
      --batch_sizes 16,128
"""

import argparse
import ast
import time

from bench import common

import jax
import jax.numpy as jnp

from vitgan_jax import sharding, train
from vitgan_jax.gan import GAN

GIB = 2.0 ** 30


def plan(config_path: str, batch_size: int, dtype: str, overrides=None) -> dict:
  """Compiles config's train step for `batch_size` images on one device; returns its plan."""
  config = common.load_config(config_path, {**(overrides or {}), 'training.batch_size': batch_size,
                                            'training.dtype': dtype})
  mesh = sharding.create_mesh(jax.devices()[:1])
  gan = GAN.from_config(config)
  state = jax.eval_shape(gan.init, jax.random.PRNGKey(0))
  batch = {'image': jax.ShapeDtypeStruct((batch_size, *gan.image_shape), jnp.float32)}
  step = train.jit_train_step(train.make_train_step(config, gan, mesh), mesh)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  memory = common.memory_analysis(compiled)
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return {'config': config_path, 'batch_per_device': batch_size, 'dtype': dtype,
          'compile_seconds': time.perf_counter() - start, 'train_state_bytes': state_bytes,
          'xla_memory': memory,
          'estimated_step_gib': memory.get('estimated_step_bytes', 0) / GIB}


def _parse_value(text):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string such as translation


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--configs', default='configs/vitgan_cifar10.py,configs/vitgan_celeba64.py')
  parser.add_argument('--batch_sizes', default='16,128',
                      type=lambda s: [int(x) for x in s.split(',')])
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                      help='config override, e.g. loss.bcr_real=0 (repeatable)')
  parser.add_argument('--out', default=None)
  args = parser.parse_args(argv)
  overrides = {k: _parse_value(v) for k, v in (item.split('=', 1) for item in args.set)}
  result = common.header('memory_plan', quick=False)
  result['overrides'], result['points'] = overrides, []
  for config_path in args.configs.split(','):
    for batch_size in args.batch_sizes:
      point = plan(config_path, batch_size, args.dtype, overrides)
      print(f'{config_path} batch/device {batch_size} {args.dtype}: '
            f'{point["estimated_step_gib"]:.2f} GiB live at once (state '
            f'{point["train_state_bytes"] / 2**20:.0f} MiB), compiled in '
            f'{point["compile_seconds"]:.0f} s', flush=True)
      result['points'].append(point)
  print('wrote', common.write_json(result, args.out or common.default_out('memory_plan', False)))


if __name__ == '__main__':
  main()
