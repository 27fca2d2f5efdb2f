"""Building blocks of the paper-table configs: datasets, model swaps and the baselines.

The paper's tables were not readable offline (PAPER.md Sec. 3), so where a row's training
details are not in the text these configs keep one recipe for every row (ViTGAN's: batch 128,
Adam 2e-3 (0, 0.99), DiffAugment p 0.8, bCR 10/10, EMA) and change only what the row names.
Regularization follows the discriminator: ISN for ViTGAN's D (no R1, it hurt ViT-D [T]), and
R1 (gamma 0.01, every 16 steps, StyleGAN2-ADA's CIFAR values) for any D without ISN.
"""

from configs import stylegan2_cifar10, vitgan_celeba64, vitgan_cifar10, vitgan_lsun_bedroom64

DATASETS = {
    'cifar10': vitgan_cifar10,
    'celeba64': vitgan_celeba64,
    'lsun_bedroom64': vitgan_lsun_bedroom64,
}
R1_GAMMA = 0.01   # StyleGAN2-ADA cifar gamma
R1_EVERY = 16     # StyleGAN2-ADA lazy regularization interval


def vitgan(dataset: str):
  """ViTGAN (G and D) with the paper's hyperparameters on `dataset` (a DATASETS key)."""
  return DATASETS[dataset].get_config()


def use_r1(config):
  config.loss.r1_gamma = R1_GAMMA
  config.loss.r1_every = R1_EVERY
  return config


def use_stylegan2_generator(config):
  """StyleGAN2's generator (StyleGAN2-ADA cifar settings) in place of ViTGAN's."""
  config.model.generator = stylegan2_cifar10.get_generator_config()
  return config


def use_stylegan2_discriminator(config):
  """StyleGAN2's residual discriminator (StyleGAN2-ADA cifar settings) with R1."""
  d = stylegan2_cifar10.get_discriminator_config()
  d.architecture = 'resnet'  # StyleGAN2's D (config F); ADA's cifar run used 'orig'
  config.model.discriminator = d
  return use_r1(config)


def use_vanilla_vit_generator(config, variant: str = 'A'):
  """A ViT generator without ViTGAN's SLN and implicit output: `variant` A or B, linear output."""
  config.model.generator.variant = variant
  config.model.generator.output = 'linear'
  return config


def use_vanilla_vit_discriminator(config):
  """A ViT discriminator without ViTGAN's techniques: dot-product attention, plain SN, no
  overlapping patches, R1 instead of ISN."""
  d = config.model.discriminator
  d.attention = 'dot'
  d.spectral_norm = 'sn'
  d.overlap = 0
  return use_r1(config)
