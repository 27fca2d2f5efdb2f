"""Command line: `vitgan-train --config configs/vitgan_cifar10.py --workdir /tmp/run`.

--mode train (default) trains or resumes; --mode sample writes a PNG grid and an .npz of uint8
samples from the latest checkpoint. Any config field can be overridden, e.g.
`--config.training.batch_size=64`.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, logs and samples (may be gs://).')
flags.DEFINE_enum('mode', 'train', ['train', 'sample', 'eval'], 'What to do.')
flags.DEFINE_integer('num_samples', 64, '--mode sample: how many images.')
flags.DEFINE_string('coordinator_address', None, 'Multi-host: jax.distributed coordinator.')
flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process.')
flags.mark_flags_as_required(['config', 'workdir'])


def _quiet_orbax() -> None:
  """Orbax logs every file it writes at INFO; keep stdout for our progress and metrics."""
  logging.get_absl_handler().addFilter(lambda record: '/orbax/' not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  _quiet_orbax()
  from vitgan_jax import sharding  # pylint: disable=g-import-not-at-top
  sharding.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                        FLAGS.process_id)
  import jax  # pylint: disable=g-import-not-at-top
  logging.info('JAX process %d / %d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  config = FLAGS.config
  if FLAGS.mode == 'train':
    from vitgan_jax import train  # pylint: disable=g-import-not-at-top
    train.train_and_evaluate(config, FLAGS.workdir)
  elif FLAGS.mode == 'sample':
    from vitgan_jax import sample  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    images = sample.generate(config, FLAGS.workdir, FLAGS.num_samples,
                             seed=config.training.seed)
    rows = max(int(len(images) ** 0.5), 1)
    path = os.path.join(FLAGS.workdir, 'samples', 'sample_grid.png')
    sample.save_png(path, sample.image_grid(images, rows))
    np.savez_compressed(os.path.join(FLAGS.workdir, 'samples', 'samples.npz'), x=images)
    print(f'Wrote {len(images)} samples to {path} and samples.npz', flush=True)
  else:
    from vitgan_jax.evaluation import run_eval  # pylint: disable=g-import-not-at-top
    run_eval.evaluate_workdir(config, FLAGS.workdir)


def run():
  """Console-script entry point (`vitgan-train`)."""
  app.run(main)


if __name__ == '__main__':
  run()
