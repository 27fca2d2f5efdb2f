"""ViTGAN paper, main comparison table, CelebA 64x64, row "ViTGAN".

Paper's number: FID 3.74 (secondary: wiz, "19k samples"; LadaGAN README).
"""

from configs.paper import common


def get_config():
  return common.vitgan('celeba64')
