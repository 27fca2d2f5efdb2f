"""ViTGAN paper, discriminator ablation (CIFAR-10 32x32), row "plain spectral norm instead of ISN
(with R1, as every non-ISN D here)".

Paper's number and its source: configs/paper/rows.py.
G and the training recipe are ViTGAN's.
"""

from configs.paper import common


def get_config():
  config = common.vitgan('cifar10')
  config.model.discriminator.spectral_norm = 'sn'
  common.use_r1(config)
  return config
