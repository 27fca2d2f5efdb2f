"""ViTGAN paper, generator ablation (CIFAR-10 32x32), row "generator C, linear output": self-
modulated LayerNorm; linear patch output.

Paper's number and its source: configs/paper/rows.py.
Which discriminator the ablation used was not found: ViTGAN's D here.
"""

from configs.paper import common


def get_config():
  config = common.vitgan('cifar10')
  config.model.generator.variant = 'C'
  config.model.generator.output = 'linear'
  return config
