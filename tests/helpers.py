"""What several test files share: paths, the tiny configs, a recording metric writer, images."""

import os

import numpy as np

from bench import learning_curve
from configs import smoke

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, 'tests')
SHARED_DATA = os.path.join(REPO_ROOT, '..', 'shared', 'data')
CIFAR_SUBSET_NPZ = os.path.join(SHARED_DATA, 'cifar100_classes0-9_1834.npz')

# configs/smoke.py shrunk to a 16x16 ViTGAN of width 16; bCR off and one augmentation keep the
# traced step small. Logs every step, so every step's losses are compared; saves every 3.
TINY = {
    'model.image_size': 16,
    'model.generator.width': 16, 'model.generator.mlp_dim': 32,
    'model.generator.latent_dim': 16, 'model.generator.fourier_dim': 16,
    'model.generator.inr_hidden': 16,
    'model.discriminator.width': 16, 'model.discriminator.mlp_dim': 32,
    'augment.policy': 'translation', 'loss.bcr_real': 0.0, 'loss.bcr_fake': 0.0,
    'training.batch_size': 8, 'training.num_steps': 6,
    'logging.every_steps': 1, 'logging.sample_every_steps': 0,
    'checkpoint.every_steps': 3, 'checkpoint.keep': 3, 'eval.every_steps': 0,
}
TIMING_METRICS = ('images_per_sec', 'steps_per_sec', 'uptime', 'train_seconds', 'health/seconds')
EVAL_METRICS = ('fid', 'inception_score')


def set_dotted(config, changes) -> None:
  """Sets {'training.num_steps': 3, ...} on a ConfigDict."""
  for key, value in changes.items():
    *parents, name = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[name] = value


def tiny_run_config(**changes):
  """The TINY config on 'arrays' data (whole runs); `changes` maps dotted keys to values."""
  config = smoke.get_config()
  config.data.source = 'arrays'
  config.data.if_missing = 'error'  # smoke's noise fallback is for its own shared .npz only
  set_dotted(config, {**TINY, **changes})
  return config


def cli_overrides(**changes):
  """TINY (and `changes`) as vitgan-train flags."""
  return [f'--config.{k}={v}' for k, v in {**TINY, **changes}.items()]


def tiny_step_config(batch_size=8):
  """A 32x32 ViTGAN of width 16 on 'arrays' data, for tests of the train step itself."""
  config = smoke.get_config()
  config.data.source = 'arrays'
  config.training.batch_size = batch_size
  for part in (config.model.generator, config.model.discriminator):
    part.width, part.mlp_dim, part.num_heads, part.depth = 16, 32, 2, 1
  g = config.model.generator
  g.latent_dim, g.fourier_dim, g.inr_hidden, g.mapping_layers = 8, 16, 16, 1
  # One augmentation, no bCR: a smaller step to compile. Tests of those terms switch them on.
  config.augment.policy, config.loss.bcr_real, config.loss.bcr_fake = 'translation', 0.0, 0.0
  return config


def tiny_eval_config(num_samples=12):
  """tiny_step_config at 16x16 with a small FID evaluation (eval.num_samples, batch 8)."""
  config = tiny_step_config(batch_size=8)
  config.model.image_size = 16
  config.logging.sample_every_steps = 0
  config.eval.num_samples, config.eval.batch_size = num_samples, 8
  config.eval.reference_num_samples = 20
  return config


def real_images(n=24, size=16):
  """n random uint8 images (the 'training set' of the FID tests)."""
  return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), np.uint8)


class RecordingWriter(learning_curve.RecordingWriter):
  """bench/learning_curve.py's in-memory writer (every scalar by step, texts as 'text/<name>'
  markers), plus `losses()` for comparing runs."""

  def losses(self):
    """{step: {metric: value}} without timing, evaluation or text markers: what must be equal
    between a run and its interrupted-and-resumed twin (a stall alarm's text depends on the
    alarm's in-memory history, which a resume starts afresh)."""
    return {step: {k: v for k, v in values.items()
                   if k not in (*TIMING_METRICS, *EVAL_METRICS) and not k.startswith('text/')}
            for step, values in self.scalars.items()}
