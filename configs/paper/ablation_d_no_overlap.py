"""ViTGAN paper, discriminator ablation (CIFAR-10 32x32), row "non-overlapping patches (overlap
0)".

Paper's number and its source: configs/paper/rows.py.
G and the training recipe are ViTGAN's.
"""

from configs.paper import common


def get_config():
  config = common.vitgan('cifar10')
  config.model.discriminator.overlap = 0
  return config
