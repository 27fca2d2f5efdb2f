"""ViTGAN paper, main comparison table, CelebA 64x64, row "ViTGAN".

Paper's number and its source: configs/paper/rows.py.
"""

from configs.paper import common


def get_config():
  return common.vitgan('celeba64')
