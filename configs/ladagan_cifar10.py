"""LadaGAN on CIFAR-10 (Morales-Juarez & Fuentes-Pineda 2024: FID 3.29, older README 3.48;
PAPER.md Sec. 5).

From github.com/milmor/LadaGAN: config.py (batch 128, noise 128, G widths 1024/256/64 with
4 heads and MLP 512 per stage, D heads 4, MLP 512, out dims 512/1024, Adam 2e-4 (0.5, 0.99),
non-saturating loss, R1 weight 1e-4, EMA decay 0.999, DiffAugment 'color,translation') and
model.py (D encoder dims for 32 px: two entries, [64, 128]; 8x8 start grid; linear output).
The repo's config.py is its 64 px setting; the CIFAR-specific values beyond the model's 32 px
defaults were not found. 68M training images (README) -> 531,250 steps at batch 128.
LadaGAN's D uses BatchNorm; ours uses a per-example LayerNorm over H, W, C (norm='layer'), as
our train step scores reals and fakes in one batch (norm='batch' uses that joint batch's stats).
"""

import math

import ml_collections

from configs import default as default_lib

BATCH_SIZE = 128     # config.py batch_size
EMA_DECAY = 0.999    # config.py ema_decay, per step


def get_generator_config():
  g = ml_collections.ConfigDict()
  g.name = 'ladagan'
  g.latent_dim = 128               # noise_dim
  g.widths = (1024, 256, 64)       # g_dim
  g.num_heads = (4, 4, 4)          # g_heads
  g.mlp_dims = (512, 512, 512)     # g_mlp
  g.mlp_residual = False           # model.py: SMLadaformer returns the MLP output alone
  g.output_activation = 'none'     # model.py: ch_conv output is linear
  return g


def get_discriminator_config():
  d = ml_collections.ConfigDict()
  d.name = 'ladagan'
  d.enc_widths = (64, 128)         # model.py: 32 px needs 2 entries (64 px: 64, 128, 256)
  d.out_widths = (512, 1024)       # d_out_dim
  d.num_heads = 4                  # d_heads
  d.mlp_dim = 512                  # d_mlp
  d.norm = 'layer'                 # for BatchNorm, see the docstring
  d.head_kernel = 4                # final 4x4 valid conv -> 5x5 patch logits, averaged
  return d


def get_config():
  config = default_lib.get_config()
  config.model.generator = get_generator_config()
  config.model.discriminator = get_discriminator_config()
  config.training.batch_size = BATCH_SIZE
  config.training.num_steps = 68_000_000 // BATCH_SIZE   # 68M images (README)
  # EMA decay 0.999 per step as a half-life in kimg, without ramp-up.
  config.training.ema_kimg = BATCH_SIZE * math.log(0.5) / math.log(EMA_DECAY) / 1000
  config.training.ema_rampup = 0.0
  for opt in (config.optimizer.g, config.optimizer.d):
    opt.lr = 2e-4                  # g_lr, d_lr
    opt.b1, opt.b2 = 0.5, 0.99     # g_beta1/2, d_beta1/2
  config.loss.bcr_real = config.loss.bcr_fake = 0.0
  # LadaGAN adds gp_weight * E||grad D(x)||^2 on augmented reals; ours adds r1_gamma / 2 * that.
  config.loss.r1_gamma = 2 * 1e-4  # gp_weight 1e-4 (TF config.py; the PyTorch port uses 0.01)
  config.loss.r1_every = 1
  config.augment.policy = 'color,translation'  # policy
  config.augment.p = 1.0
  config.eval.every_steps = 10_000
  return config
