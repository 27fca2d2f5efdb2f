"""ViTGAN scaled down to learn on a 2-core CPU: the learning benchmark's model (bench/learning_curve.py).

The paper's architecture and recipe (configs/default.py, cited to ../shared/PAPER.md) with every
width divided by 3 and 4 heads: G and D with 4 blocks, patch 4 (L=64 tokens), overlap 2, width
128, MLP 512; batch 32. Trains on the 1,834 real 32x32 images of ../shared/data when pointed
there (`--config.data.path`), else on CIFAR-10 from TFDS like the full config.
"""

from configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  for part in (config.model.generator, config.model.discriminator):
    part.depth = 4         # as the paper at 32x32 [T]
    part.width = 128       # paper 384 [T]
    part.mlp_dim = 512     # 4 x width, as the paper's 1536 / 384 [T]
    part.num_heads = 4     # head dim 32 (paper: 64)
  config.model.generator.latent_dim = 128
  config.model.generator.fourier_dim = 128
  config.model.generator.inr_hidden = 128
  config.training.batch_size = 32
  # Adam lr scaled linearly with the batch: the paper's 2e-3 at batch 128 is 5e-4 at 32. At 2e-3
  # the mini G collapsed to one layout after ~300 steps (FID 300 -> 397), at 1e-3 FID stopped
  # falling at ~320 from step 300; 5e-4 kept falling (README 'Learning benchmark').
  config.optimizer.g.lr = config.optimizer.d.lr = 5e-4
  # bCR off at this scale: at the paper's lambda 10 (and at 1) it left a small ViT D blind within
  # a few hundred steps (README 'Training health'); DiffAugment stays on.
  config.loss.bcr_real = config.loss.bcr_fake = 0.0
  config.training.num_steps = 100_000
  config.logging.every_steps = 250
  config.logging.sample_every_steps = 2500
  config.checkpoint.every_steps = 2500
  return config
