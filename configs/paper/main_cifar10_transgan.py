"""ViTGAN paper, main comparison table, CIFAR-10 32x32, row "TransGAN".

Paper's number: not found in the ViTGAN paper text; third-party tables that cite ViTGAN list
TransGAN at FID 9.26 / IS 9.05; TransGAN's own NeurIPS abstract says IS 9.02, FID 9.26.

TransGAN's architecture and TransGAN's own CIFAR recipe: configs/transgan_cifar10.py, with its
differences (non-saturating loss instead of WGAN-GP, a single-scale ViT D).
"""

from configs import transgan_cifar10


def get_config():
  return transgan_cifar10.get_config()
