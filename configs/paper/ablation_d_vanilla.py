"""ViTGAN paper, discriminator ablation (CIFAR-10 32x32), row "vanilla ViT D: dot-product
attention, plain SN, no overlap, R1 instead of ISN".

Paper's number and its source: configs/paper/rows.py.
G and the training recipe are ViTGAN's.
"""

from configs.paper import common


def get_config():
  config = common.vitgan('cifar10')
  common.use_vanilla_vit_discriminator(config)
  return config
