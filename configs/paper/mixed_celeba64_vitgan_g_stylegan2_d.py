"""ViTGAN paper, mixed G x D table, CelebA 64x64, row "ViTGAN-G x StyleGAN2-D" (the authors'
PyTorch reproduction implements only this pairing and calls it their best).

Paper's number and its source: configs/paper/rows.py.

D is StyleGAN2's residual discriminator with R1 (gamma 0.01 every 16 steps); G and the rest of
the recipe are ViTGAN's (common.py). [code] uses R1 0.1 and other coefficients.
"""

from configs.paper import common


def get_config():
  return common.use_stylegan2_discriminator(common.vitgan('celeba64'))
