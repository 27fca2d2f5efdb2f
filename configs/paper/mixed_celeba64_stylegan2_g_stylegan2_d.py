"""ViTGAN paper, mixed G x D table, CelebA 64x64, row "StyleGAN2-G x StyleGAN2-D": the same run as
main_celeba64_stylegan2.

Paper's number: see main_celeba64_stylegan2 (not found in the ViTGAN paper text).
"""

from configs.paper import main_celeba64_stylegan2


def get_config():
  return main_celeba64_stylegan2.get_config()
