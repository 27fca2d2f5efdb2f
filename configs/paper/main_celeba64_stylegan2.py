"""ViTGAN paper, main comparison table, CelebA 64x64, row "StyleGAN2"; also the mixed G x D table's
StyleGAN2-G x StyleGAN2-D cell.

Paper's number and its source: configs/paper/rows.py.

StyleGAN2's G and residual D (StyleGAN2-ADA cifar settings) trained with this project's recipe:
DiffAugment, bCR 10/10, R1 gamma 0.01 every 16 steps (common.py).
"""

from configs.paper import common


def get_config():
  config = common.vitgan('celeba64')
  common.use_stylegan2_generator(config)
  return common.use_stylegan2_discriminator(config)
