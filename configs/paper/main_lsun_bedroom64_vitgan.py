"""ViTGAN paper, main comparison table, LSUN bedroom 64x64, row "ViTGAN".

Paper's number: not found (wiz lists FID 1.49 for an unlabeled ViTGAN variant).
"""

from configs.paper import common


def get_config():
  return common.vitgan('lsun_bedroom64')
