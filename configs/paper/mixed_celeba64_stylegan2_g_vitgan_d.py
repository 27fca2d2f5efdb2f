"""ViTGAN paper, mixed G x D table, CelebA 64x64, row "StyleGAN2-G x ViTGAN-D".

Paper's number and its source: configs/paper/rows.py.

G is StyleGAN2's (StyleGAN2-ADA cifar settings); D and the recipe are ViTGAN's (ISN, no R1).
"""

from configs.paper import common


def get_config():
  return common.use_stylegan2_generator(common.vitgan('celeba64'))
