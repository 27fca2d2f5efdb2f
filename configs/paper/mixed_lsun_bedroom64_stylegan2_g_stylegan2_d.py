"""ViTGAN paper, mixed G x D table, LSUN bedroom 64x64, row "StyleGAN2-G x StyleGAN2-D": the same
run as main_lsun_bedroom64_stylegan2.

Paper's number: see main_lsun_bedroom64_stylegan2 (not found in the ViTGAN paper text).
"""

from configs.paper import main_lsun_bedroom64_stylegan2


def get_config():
  return main_lsun_bedroom64_stylegan2.get_config()
