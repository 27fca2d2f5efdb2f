"""TransGAN on CIFAR-10 (Jiang et al., NeurIPS 2021: IS 9.02, FID 9.26; PAPER.md Sec. 5).

Numbers from github.com/VITA-Group/TransGAN exps/cifar_train.py: latent 256, bottom width 8,
G width 1024 (gf_dim) with stages of depth 5, 4, 2 (widths 1024, 256, 64), 4 heads, MLP ratio
4; D width 384 (df_dim), depth 3, 4 heads; Adam lr 1e-4 (0, 0.99); n_critic 4; D batch 64;
EMA half-life 500 kimg with warm-up 0.1; DiffAugment translation, cutout, color; 500k iterations.
Differences: TransGAN's loss is WGAN-GP ('wgangp-eps') with weight decay 1e-3 and a generator
batch of 128; ours is the non-saturating loss (the only one in train.py), no weight decay, one
batch size. Its NeurIPS D is multi-scale (patch 2); ours is a single-scale ViT. The patch size
follows the issue's 8 x 8 pixels; TransGAN v1's D (models/ViT_8_8.py) cuts an 8 x 8 grid of
4 x 4-pixel patches (patch_size=4). Its G attends globally at every CIFAR stage (window 8/16/32),
so grid attention and locality masks are off. Super-resolution co-training (TransGAN paper,
MSE weight 50) is off here; `--config.model.generator.super_resolution=True
--config.loss.sr_weight=50` turns it on.
"""

import ml_collections

from configs import default as default_lib


def get_generator_config():
  g = ml_collections.ConfigDict()
  g.name = 'transgan'
  g.latent_dim = 256               # --latent_dim 256
  g.width = 1024                   # --gf_dim 1024; /4 per pixel shuffle
  g.depths = (5, 4, 2)             # --g_depth 5,4,2 (8x8, 16x16, 32x32 tokens)
  g.num_heads = 4                  # default num_heads=4
  g.mlp_ratio = 4.0                # --g_mlp default 4
  g.grid_sizes = (0, 0, 0)         # full attention: windows 8/16/32 cover each stage's grid
  g.locality_windows = (0, 0, 0)   # locality-aware init masks off (TransGAN grows them to global)
  g.output_activation = 'tanh'     # TransGAN's code ends linear; tanh keeps images in [-1, 1]
  g.super_resolution = False       # low-res input for SR co-training (with loss.sr_weight)
  return g


def get_discriminator_config():
  d = ml_collections.ConfigDict()
  d.name = 'transgan'
  d.patch_size = 8                 # the 8x8 px (v1 code: 4; NeurIPS: 2, multi-scale)
  d.width = 384                    # --df_dim 384
  d.depth = 3                      # --d_depth 3
  d.num_heads = 4                  # --d_heads 4
  d.mlp_ratio = 4.0                # --d_mlp default 4
  return d


def get_config():
  config = default_lib.get_config()
  config.model.generator = get_generator_config()
  config.model.discriminator = get_discriminator_config()
  config.training.batch_size = 64      # -dis_bs 64
  config.training.n_critic = 4         # --n_critic 4
  config.training.num_steps = 500_000  # --max_iter 500000
  config.training.ema_kimg = 500.0     # --ema_kimg 500
  config.training.ema_rampup = 0.1     # --ema_warmup 0.1
  for opt in (config.optimizer.g, config.optimizer.d):
    opt.lr = 1e-4                      # --g_lr / --d_lr 0.0001
    opt.b1, opt.b2 = 0.0, 0.99         # --beta1 0 --beta2 0.99
  config.loss.bcr_real = config.loss.bcr_fake = 0.0  # TransGAN uses no bCR
  config.augment.policy = 'translation,cutout,color'  # --diff_aug translation,cutout,color
  config.augment.p = 1.0               # DiffAugment applies every op to every batch
  config.eval.every_steps = 10_000
  return config
