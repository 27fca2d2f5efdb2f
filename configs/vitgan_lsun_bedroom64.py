"""ViTGAN on LSUN bedroom 64x64 (paper Table 1; the ViTGAN-only number was not found, PAPER.md Sec. 3).

Same architecture as CelebA 64x64: patch 8, overlap 4, 6 blocks [T].
"""

from configs import vitgan_celeba64


def get_config():
  config = vitgan_celeba64.get_config()
  config.data.name = 'lsun/bedroom'
  config.data.split = 'train'
  return config
