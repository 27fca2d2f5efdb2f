"""Tiny ViTGAN on the real 32x32 .npz subset (or noise images): runs on a laptop CPU in ~a minute.

Same code path and losses as the paper configs, with a model small enough for a quick check.
"""

import os

from configs import default as default_lib

# The shared sample data beside the repo (a path only: nothing is looked up at import).
_NPZ = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                     'shared', 'data', 'cifar100_classes0-9_1834.npz'))


def get_config():
  config = default_lib.get_config()
  for part in (config.model.generator, config.model.discriminator):
    part.depth = 1
    part.width = 32
    part.mlp_dim = 64
    part.num_heads = 2
  config.model.generator.patch_size = 8
  config.model.discriminator.patch_size = 8
  config.model.discriminator.overlap = 4
  config.model.generator.latent_dim = 32
  config.model.generator.mapping_layers = 2
  config.model.generator.fourier_dim = 32
  config.model.generator.inr_hidden = 32
  # The shared sample data when present when training starts; otherwise fixed noise images (a
  # plumbing check only; input_pipeline.Data decides).
  config.data.source = 'npz'
  config.data.path = _NPZ
  config.data.if_missing = 'random'
  config.training.batch_size = 16
  # bCR off, DiffAugment on: why, for small ViT Ds, is docs/learning_log.md.
  config.loss.bcr_real = config.loss.bcr_fake = 0.0
  config.training.num_steps = 60
  config.training.ema_kimg = 0.5
  config.logging.every_steps = 10
  config.logging.sample_every_steps = 30
  config.logging.sample_grid = 4
  config.checkpoint.every_steps = 30
  config.eval.every_steps = 0
  config.eval.num_samples = 256
  config.eval.batch_size = 64
  return config
