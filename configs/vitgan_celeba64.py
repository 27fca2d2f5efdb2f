"""ViTGAN on CelebA 64x64 (paper Table 1: FID 3.74, secondary source; PAPER.md Sec. 3).

64x64: patch 8 (L=64) in G and D, overlap o = P/2 = 4, 6 blocks each [T]; the rest as at 32x32.
"""

from configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  config.model.image_size = 64
  for part in (config.model.generator, config.model.discriminator):
    part.patch_size = 8   # 8x8 at 64^2 [T]
    part.depth = 6        # 6 blocks at 64^2 [T]
  config.model.discriminator.overlap = 4  # o = P/2 [T appendix]
  config.data.source = 'tfds'
  config.data.name = 'celeb_a'
  config.data.split = 'train'
  config.data.shuffle_buffer = 20_000
  config.eval.every_steps = 10_000
  return config
