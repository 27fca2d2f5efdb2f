"""ViTGAN scaled down to learn on a 2-core CPU: the learning benchmark's model (bench/learning_curve.py).

The paper's architecture and recipe (configs/default.py, cited to ../shared/PAPER.md) scaled
down: G and D with 4 blocks, patch 4 (L=64 tokens), overlap 2; D at width 128, MLP 512, 4 heads;
G at width 192, MLP 768, 6 heads (half the paper's); batch 32; and seven training choices for
this scale (below, each measured). Trains on the 1,834 real 32x32 images of ../shared/data when
pointed there (`--config.data.path`), else on CIFAR-10 from TFDS like the full config.
"""

from configs import default as default_lib


def get_config():
  config = default_lib.get_config()
  g, d = config.model.generator, config.model.discriminator
  g.depth = d.depth = 4  # as the paper at 32x32 [T]
  d.width = 128          # paper 384 [T]
  d.mlp_dim = 512        # 4 x width, as the paper's 1536 / 384 [T]
  d.num_heads = 4        # head dim 32 (paper: 64)
  # G wider than D: width 192, MLP 768, 6 heads (head dim 32), INR hidden 192. At 128 (as D) FID
  # sat at 187-201 from 40 minutes on; at 192 it fell from 345.7 to 170.8 in 90 minutes, still
  # falling, with D's gap >= 4.1 throughout (docs/learning_log.md, tenth run); this config
  # as committed: 171.8, 0.497 of step 0 (docs/learning_log.md, eleventh run).
  g.width, g.mlp_dim, g.num_heads, g.inr_hidden = 192, 768, 6, 192
  g.latent_dim = 128
  g.fourier_dim = 128
  config.training.batch_size = 32
  # Two time-scale Adam: D at 1e-3, G at 5e-4 (the paper's 2e-3 is for batch 128). With both at
  # 2e-3 the mini G collapsed to one layout within ~300 steps; at 1e-3 both, or 5e-4 both, it
  # collapsed later (docs/learning_log.md). With ADA (below), G at 1e-3 reached the same
  # ~185-200 plateau in 20 minutes instead of 60 and ended at 201.5 (5e-4:
  # 187.5); at 2e-3 G shared one layout from 20 minutes on (docs/learning_log.md, ninth run).
  config.optimizer.d.lr = 1e-3
  config.optimizer.g.lr = 5e-4
  # bCR off at this scale: at the paper's lambda 10 (and at 1) it left a small ViT D blind within
  # a few hundred steps (docs/learning_log.md).
  config.loss.bcr_real = config.loss.bcr_fake = 0.0
  # DiffAugment not at a fixed p at this scale: at p=0.8 the 128-wide D kept a gap of only ~1 and
  # G drifted into one layout (FID ~290 at 24 minutes; at p=0: 242.3, docs/learning_log.md).
  # Adaptive instead (StyleGAN2-ADA's controller on DiffAugment's p, target 0.6, 0 -> 1 within
  # 20k images): p starts at 0 and rises as D overfits the 1,834 images (0.5 by step 600). Slower
  # than p=0 for 20 minutes (FID 270.7 against 210.6), better from 40 on: 187.5 at 60 minutes
  # against 239.7, still falling (docs/learning_log.md, sixth run). Paper configs: p=0.8.
  config.augment.p = 0.0  # unused while ada_target > 0 (ADA starts at p=0)
  config.augment.ada_target = 0.6
  config.augment.ada_kimg = 20.0
  # R1 stays off (as in configs/default.py): on top of ADA, lazy R1 at gamma 0.01 held D's input
  # gradient at 1.8-3.7 (not 14) and ADA's p at 0.84 (not 0.97), yet FID at 60 minutes was 190.4
  # against 187.5; at 0.1 FID sat at 247 from 10 minutes on (docs/learning_log.md, eighth run).
  # Smoother in-patch Fourier features (W ~ U(+-1/sqrt(2)), not +-3): the implicit decoder's
  # shared per-patch texture dominated the early samples at 3.0 (docs/learning_log.md).
  config.model.generator.fourier_init_scale = 1.0
  # Tied q/k of D's L2 attention at the usual init scale (paper configs: 0.1). At 0.1 with ISN the
  # attention stayed uniform (entropy >= 0.999) for 85 minutes; at 1.0 it attends (0.2-0.8) and
  # FID at 20 minutes was 210.6 against 253.1 (docs/learning_log.md, fifth run).
  config.model.discriminator.qk_init_scale = 1.0
  config.training.num_steps = 100_000
  config.logging.every_steps = 250
  config.logging.sample_every_steps = 2500
  config.checkpoint.every_steps = 2500
  return config
