"""ViTGAN paper, discriminator ablation (CIFAR-10 32x32), row "ViTGAN's D: L2 attention, ISN,
overlapping patches".

Paper's number: not found (the discriminator ablation exists only as an image, PAPER.md Sec. 3).
G and the training recipe are ViTGAN's.
"""

from configs.paper import common


def get_config():
  config = common.vitgan('cifar10')
  return config
