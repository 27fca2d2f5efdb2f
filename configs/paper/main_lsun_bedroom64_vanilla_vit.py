"""ViTGAN paper, main comparison table, LSUN bedroom 64x64, row "Vanilla-ViT" (ViT G and D without
ViTGAN's techniques).

Paper's number and its source: configs/paper/rows.py.
The paper's exact baseline is not in the text we
have: here G is variant A (w added to the position embeddings, LayerNorm) with a linear patch
output, D uses dot-product attention, plain SN, no overlapping patches and R1 instead of ISN.
"""

from configs.paper import common


def get_config():
  config = common.vitgan('lsun_bedroom64')
  common.use_vanilla_vit_generator(config, 'A')
  return common.use_vanilla_vit_discriminator(config)
