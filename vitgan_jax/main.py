"""Command line: `vitgan-train --config configs/vitgan_cifar10.py --workdir /tmp/run`.

--mode train (default) trains, or resumes from the workdir's latest checkpoint; --mode sample
writes a PNG grid and an .npz of uint8 samples from the latest checkpoint; --mode eval prints
FID / IS / KID of it and writes workdir/eval/step_<N>.json (--step N or --best pick another).
Any config field can be overridden, e.g. `--config.training.batch_size=64`. Bad input (unknown
config key, missing dataset, wrong image shape, a workdir of another model, a NaN loss...) ends
with one line `error: <message>` on stderr and exit status 1; SIGTERM saves a checkpoint and
exits 0.
"""

import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_dict, config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and samples (may be gs://).')
flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'eval', 'compile'], 'What to do.')
flags.DEFINE_integer('num_samples', 64, '--mode sample: how many images.')
flags.DEFINE_integer('seed', None, '--mode sample: seed of the latents (default: '
                     'config.training.seed).')
flags.DEFINE_string('out', None, '--mode sample: where the PNG grid goes (the .npz of uint8 '
                    'images beside it); default workdir/samples/sample_grid.png.')
flags.DEFINE_integer('step', None, '--mode sample/eval: this checkpoint step, not the latest.')
flags.DEFINE_bool('best', False, '--mode sample/eval: the best-FID checkpoint (checkpoints_best).')
flags.DEFINE_string('coordinator_address', None, 'Multi-host: jax.distributed coordinator.')
flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process.')
flags.DEFINE_string('topology', None, '--mode compile: TPU topology to compile for (v2-8, '
                    'v2-32, v3-8, v4-8, v5e-8, v6e-8, ... or a libtpu name like v2:4x4).')
flags.mark_flags_as_required(['config'])
flags.register_multi_flags_validator(
    ['mode', 'workdir', 'topology'],
    lambda f: (f['topology'] is not None) if f['mode'] == 'compile' else f['workdir'] is not None,
    message='--workdir is required (with --mode compile: --topology, e.g. --topology v3-8)')


USAGE = """\
vitgan-train: train, sample and evaluate ViTGAN-family GANs (JAX/Flax).

Usage: vitgan-train --config CONFIG.py --workdir DIR [--mode MODE] [--config.KEY=VALUE ...]
       vitgan-train --config CONFIG.py --mode compile --topology v3-8 [--config.KEY=VALUE ...]

Modes:
  train   (default) train, or resume from the workdir's latest checkpoint; TensorBoard
          events, sample grids (DIR/samples) and checkpoints (DIR/checkpoints) go to DIR
  sample  a PNG grid and an .npz of uint8 images from the latest checkpoint
          (--num_samples, --seed, --out, --step N, --best)
  eval    FID / IS / KID of the latest checkpoint (--step N, --best): printed, written to
          DIR/eval/step_N.json and to TensorBoard (DIR/eval)
  compile compile the train step, sampler and FID eval step for a TPU topology on this
          host (--topology v3-8; needs libtpu: pip install -e ".[tpu]"; no --workdir):
          per-core HBM, FLOPs, collectives and a step-time floor

Examples:
  vitgan-train --config configs/smoke.py --workdir /tmp/smoke        # ~1 min on a CPU
  vitgan-train --config configs/vitgan_cifar10.py --workdir /tmp/c10 \\
      --config.training.batch_size=64 --config.eval.every_steps=5000
  vitgan-train --config configs/vitgan_cifar10.py --workdir /tmp/c10 --mode sample \\
      --num_samples 64 --seed 1 --out /tmp/grid.png
From Python: gan = vitgan_jax.load('/tmp/c10'); images = gan.generate(64, seed=0)
"""
HELP_ARGS = ('-h', '--help', '-help', '--helpshort', '-helpshort', '-?')


def help_text() -> str:
  """USAGE and this module's flags (absl lists only the main module's for console scripts)."""
  module = sys.modules[__name__]
  return f'{USAGE}\nFlags:\n{FLAGS.module_help(module)}\n' \
         '\nAll flags (absl, jax): --helpfull. Config fields: see configs/default.py.'


def fail(message: str) -> None:
  """Prints `error: <message>` (one line) to stderr and exits 1."""
  print(f'error: {" ".join(str(message).split())}', file=sys.stderr, flush=True)
  sys.exit(1)


def _config_overrides(argv):
  """Dotted paths of the `--config.a.b=value` / `--config.a.b value` overrides in argv."""
  return [arg[len('--config.'):].split('=', 1)[0] for arg in argv
          if arg.startswith('--config.')]


def unknown_key_message(config, paths) -> str:
  """Names the first override path that `config` lacks, with the keys its parent has."""
  for path in paths:
    node, parts = config, path.split('.')
    for depth, part in enumerate(parts):
      if not isinstance(node, config_dict.ConfigDict) or part not in node:
        parent = '.'.join(parts[:depth]) or '<top level>'
        known = sorted(node.keys()) if isinstance(node, config_dict.ConfigDict) else []
        return (f'unknown config key {".".join(parts[:depth + 1])} in --config.{path}; '
                f'{parent} has: {", ".join(known) or "no fields (it is a value)"}')
      node = node[part]
  return f'bad --config override among {", ".join("--config." + p for p in paths)}'


def config_file(argv):
  """The --config file named in argv, or None."""
  for i, arg in enumerate(argv):
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
    if arg.startswith('--config='):
      return arg[len('--config='):]
  return None


def make_config_package_importable(path) -> None:
  """Lets a config file import its siblings as config_flags loads it (by path).

  configs/*.py import each other as the package `configs` (`from configs import default`),
  which is not installed: the folder above the config's package goes on sys.path, as
  `python -m` from the repo root would have it.
  """
  if not path:
    return
  folder = os.path.dirname(os.path.abspath(path))
  while os.path.exists(os.path.join(folder, '__init__.py')):
    folder = os.path.dirname(folder)
  if folder not in sys.path:
    sys.path.insert(0, folder)


def parse_flags(argv):
  """absl's flag parsing, with one-line errors for bad flags, config files and config keys."""
  if any(arg in HELP_ARGS for arg in argv[1:]):
    print(help_text(), flush=True)
    sys.exit(0)
  make_config_package_importable(config_file(argv))
  try:
    args = FLAGS(argv)
    getattr(FLAGS.config, 'model')  # a config file that failed to load raises on first access
    return args
  except flags.Error as e:
    fail(e)
  except (AttributeError, KeyError) as e:  # ml_collections: an override names no config field
    paths = _config_overrides(argv)
    base_argv = [arg for arg in argv if not arg.startswith('--config.')]
    FLAGS.unparse_flags()
    sys.argv = base_argv  # ml_collections reads the overrides from sys.argv
    try:  # the config without overrides, to say which key is unknown and what its parent has
      FLAGS(base_argv)
      fail(unknown_key_message(FLAGS.config, paths))
    except (flags.Error, AttributeError, KeyError, OSError):
      fail(f'unknown config key in {" ".join("--config." + p for p in paths)} ({e})')
  except OSError as e:  # the config file itself
    fail(f'cannot load --config: {str(e).strip().splitlines()[-1].strip()}')
  return None


def report_errors(fn):
  """Runs fn(); the project's known errors (vitgan_jax.errors) end in `fail`, others propagate.

  So does an OSError of the disk (full, read-only, permission denied): not a bug.
  """
  from vitgan_jax import errors, workdir  # pylint: disable=g-import-not-at-top
  try:
    return fn()
  except errors.Error as e:
    logging.error('%s: %s', type(e).__name__, e)
    fail(e)
  except OSError as e:
    if not workdir.is_disk_error(e):
      raise
    logging.exception('Disk error')
    fail(f'{e.strerror or e}: {e.filename or "a file"}; free space or fix permissions and '
         'rerun the same command')


class SignalRecorder:
  """SIGTERM handler from start-up until the loop's own: keeps the signal for it to act on."""

  def __init__(self):
    self.reason = None

  def __call__(self, signum, frame):  # pylint: disable=unused-argument
    self.reason = signal.Signals(signum).name


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.mode == 'train':  # a SIGTERM while importing, restoring or compiling is not lost
    signal.signal(signal.SIGTERM, SignalRecorder())
  logging.get_absl_handler().addFilter(lambda record: '/orbax/' not in record.pathname)
  report_errors(lambda: _run_mode(FLAGS.config, FLAGS.workdir, FLAGS.mode))


def _run_mode(config, workdir, mode):
  if mode == 'compile':
    _compile(config)
    return
  from vitgan_jax import sharding  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
  import jax  # pylint: disable=g-import-not-at-top
  from vitgan_jax.gan import GAN  # pylint: disable=g-import-not-at-top
  logging.info('JAX process %d / %d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  if mode == 'train':
    from vitgan_jax import trainer  # pylint: disable=g-import-not-at-top
    trainer.train_and_evaluate(config, workdir, GAN.from_config(config), announce=True)
  elif mode == 'sample':
    from vitgan_jax import inference  # pylint: disable=g-import-not-at-top
    inference.sample_mode(config, workdir, GAN.from_config(config), num_samples=FLAGS.num_samples,
                          seed=FLAGS.seed, out=FLAGS.out, step=FLAGS.step, best=FLAGS.best)
  else:
    from vitgan_jax import inference  # pylint: disable=g-import-not-at-top
    inference.eval_mode(config, workdir, GAN.from_config(config), step=FLAGS.step,
                        best=FLAGS.best)


def _compile(config):
  """--mode compile: the TPU compiler's view of this config on --topology (tpu_compile)."""
  from vitgan_jax import tpu_compile  # pylint: disable=g-import-not-at-top
  say = lambda line: print(line, flush=True)  # noqa: E731
  name = config_flags.get_config_filename(FLAGS['config'])
  report = tpu_compile.check(config, FLAGS.topology, config_name=name, say=say)
  print(tpu_compile.format_report(report), flush=True)


def run():
  """Console-script entry point (`vitgan-train`)."""
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
