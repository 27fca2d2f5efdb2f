"""ViTGAN paper, main comparison table, CIFAR-10 32x32, row "ViTGAN".

Paper's number and its source: configs/paper/rows.py.
"""

from configs.paper import common


def get_config():
  return common.vitgan('cifar10')
