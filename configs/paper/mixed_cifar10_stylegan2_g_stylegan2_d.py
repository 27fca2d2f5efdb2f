"""ViTGAN paper, mixed G x D table, CIFAR-10 32x32, row "StyleGAN2-G x StyleGAN2-D": the same run
as main_cifar10_stylegan2.

Paper's number: see main_cifar10_stylegan2 (not found in the ViTGAN paper text).
"""

from configs.paper import main_cifar10_stylegan2


def get_config():
  return main_cifar10_stylegan2.get_config()
