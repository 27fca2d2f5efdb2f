"""ViTGAN paper, main comparison table, CIFAR-10 32x32, row "ViTGAN".

Paper's number: FID 6.66, IS 9.30 (secondary: PwC; the Consistency Models paper's table).
"""

from configs.paper import common


def get_config():
  return common.vitgan('cifar10')
