"""ViTGAN paper, generator ablation (CIFAR-10 32x32), row "generator C, linear output": self-
modulated LayerNorm; linear patch output.

Paper's number: not found (the generator ablation exists only as an image, PAPER.md Sec. 3);
which discriminator the ablation used was not found either: ViTGAN's D here.
"""

from configs.paper import common


def get_config():
  config = common.vitgan('cifar10')
  config.model.generator.variant = 'C'
  config.model.generator.output = 'linear'
  return config
