"""ViTGAN on CIFAR-10 32x32 (paper Table 1: FID 6.66, IS 9.30; PAPER.md Sec. 3).

All numbers are the paper's (PAPER.md Sec. 2, [T]) and already the defaults: 4 blocks in G and
D, patch 4 (L=64), overlap 2, width 384, MLP 1536, 6 heads, batch 128, Adam 2e-3 (0, 0.99),
bCR 10/10, DiffAugment translation/color/cutout/scale p=0.8, EMA of G.
"""

from configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.data.source = 'tfds'
  config.data.name = 'cifar10'
  config.data.split = 'train'
  config.eval.every_steps = 10_000
  return config
