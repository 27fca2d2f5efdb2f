"""StyleGAN2 on CIFAR-10 with StyleGAN2-ADA's 'cifar' configuration.

Source: github.com/NVlabs/stylegan2-ada-pytorch, train.py, cfg_specs['cifar'] = dict(mb=64,
mbstd=32, fmaps=1, lrate=0.0025, gamma=0.01, ema=500, ramp=0.05, map=2, kimg=100000), plus
its cifar overrides: no path-length regularization, no style mixing, D architecture 'orig'.
fmaps=1 gives channel_base 32768 and channel_max 512, i.e. 512 channels at every resolution
up to 64. Adam (0, 0.99, eps 1e-8); R1 every 16 steps (lazy regularization).
FID: LadaGAN's README lists StyleGAN2 at 5.79 on CIFAR-10 (origin not given; PAPER.md Sec. 3).
Not reproduced here: ADA's adaptive augmentation (DiffAugment instead) and the lazy-R1
correction of Adam's lr and betas (x 16/17).
"""

import ml_collections

from configs import default as default_lib


def get_generator_config():
  g = ml_collections.ConfigDict()
  g.name = 'stylegan2'
  g.latent_dim = 512          # z_dim [ADA]
  g.w_dim = 512               # w_dim [ADA]
  g.mapping_layers = 2        # map=2 for cifar [ADA]
  g.mapping_lr_mul = 0.01     # [ADA]
  g.channel_base = 32768      # fmaps=1 -> 32768 [ADA]
  g.channel_max = 512         # [ADA]
  g.noise_mode = 'random'     # per-pixel noise, hashed from z (the train step passes G no rng)
  g.output_activation = 'none'  # StyleGAN2's output is linear
  return g


def get_discriminator_config():
  d = ml_collections.ConfigDict()
  d.name = 'stylegan2'
  d.channel_base = 32768      # [ADA]
  d.channel_max = 512         # [ADA]
  d.architecture = 'orig'     # cifar turns D's residual skips off [ADA]; StyleGAN2: 'resnet'
  d.mbstd_group_size = 32     # mbstd=32 [ADA]
  d.mbstd_num_channels = 1    # [ADA]
  return d


def get_config():
  config = default_lib.get_config()
  config.model.generator = get_generator_config()
  config.model.discriminator = get_discriminator_config()
  config.training.batch_size = 64             # mb=64 [ADA]
  config.training.num_steps = 100_000_000 // 64  # kimg=100000 [ADA]
  config.training.ema_kimg = 500.0            # ema=500 [ADA]
  config.training.ema_rampup = 0.05           # ramp=0.05 [ADA]
  for opt in (config.optimizer.g, config.optimizer.d):
    opt.lr = 0.0025                           # lrate=0.0025 [ADA]
    opt.b1, opt.b2, opt.eps = 0.0, 0.99, 1e-8  # [ADA]
  config.loss.bcr_real = config.loss.bcr_fake = 0.0  # StyleGAN2 uses no consistency regularization
  config.loss.r1_gamma = 0.01                 # gamma=0.01 [ADA]
  config.loss.r1_every = 16                   # D_reg_interval=16 [ADA]
  config.augment.policy = 'translation,color,cutout'  # DiffAugment (Zhao et al.) for ADA's augment
  config.augment.ada_target = 0.6             # target=0.6: p adapts to D's overfitting [ADA]
  config.augment.ada_kimg = 500.0             # ada_kimg=500 [ADA]
  config.eval.every_steps = 10_000
  return config
