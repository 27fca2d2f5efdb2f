"""ViTGAN paper, main comparison table, CIFAR-10 32x32, row "TransGAN".

Paper's number and its source: configs/paper/rows.py.

TransGAN's architecture and TransGAN's own CIFAR recipe: configs/transgan_cifar10.py, with its
differences (non-saturating loss instead of WGAN-GP, a single-scale ViT D).
"""

from configs import transgan_cifar10


def get_config():
  return transgan_cifar10.get_config()
