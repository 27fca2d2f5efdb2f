"""Base config: ViTGAN at 32x32 with the paper's hyperparameters.

Every experiment config starts from `get_config()` here and overrides what differs.
Sources are tagged as in ../shared/PAPER.md: [T] paper v1 text (Sec. 4 implementation
details, appendix), [code] the authors' PyTorch reproduction (github.com/mlpc-ucsd/ViTGAN),
[StyleGAN2-ADA] for training defaults the paper says it follows.
"""

import ml_collections


def get_generator_config():
  """ViTGAN generator (variant C: SLN + implicit neural output)."""
  g = ml_collections.ConfigDict()
  g.name = 'vitgan'
  g.variant = 'C'             # 'A': w added to pos. emb., 'B': w as a token, 'C': SLN [T]
  g.output = 'implicit'       # 'implicit' (Fourier features + modulated MLP) | 'linear'
  g.patch_size = 4            # 4x4 at 32^2, L=64 tokens [T]
  g.depth = 4                 # 4 blocks at 32^2 [T]
  g.width = 384               # hidden D = 384 (ViT-Small style) [T]
  g.mlp_dim = 1536            # MLP hidden 1536 [T]
  g.num_heads = 6             # 6 heads [T]
  g.latent_dim = 384          # z and w dims: 384 [code]; not in the paper text
  g.mapping_layers = 8        # PixelNorm + 8 equalized-LR layers [code]
  g.mapping_lr_mul = 0.01     # [code] (StyleGAN mapping net)
  g.attention = 'dot'         # G uses standard self-attention [T]
  g.spectral_norm = 'none'    # ISN is a discriminator technique [T]
  g.fourier_dim = 384         # width of the Fourier pixel-coordinate features E_fou (not in paper)
  g.fourier_init_scale = 3.0  # E_fou = sin(Wc), W ~ U(+-3/sqrt(2)) as [code]'s LFF init
  g.inr_hidden = 384          # hidden width of the 2-layer INR MLP f_theta (not in paper; [code] 512)
  g.sln_eps = 1e-3            # LayerNorm eps in SLN [code]
  # Linear output, clipped only for display and FID, as [code] (0.5 img + 0.5) and StyleGAN2.
  # The paper does not say. A tanh saturates a third of the CIFAR G's pixels at init (|out| >
  # 0.9 for 34%: pre-activation std 1.5), where its gradient is below 0.19.
  g.output_activation = 'none'
  return g


def get_discriminator_config():
  """ViTGAN discriminator: overlapping patches, L2 attention, ISN."""
  d = ml_collections.ConfigDict()
  d.name = 'vitgan'
  d.patch_size = 4            # 4x4 at 32^2 [T]
  d.overlap = 2               # o = P/2 [T appendix]; 0 turns overlapping off
  d.depth = 4                 # 4 blocks at 32^2 [T]
  d.width = 384               # [T]
  d.mlp_dim = 1536            # [T]
  d.num_heads = 6             # [T]
  d.attention = 'l2'          # 'l2' (tied W_q = W_k, [T]) | 'dot' (baseline)
  d.spectral_norm = 'isn'     # 'isn' [T] | 'sn' | 'none'
  d.power_iterations = 1      # per training step [code]
  d.qk_init_scale = 0.1       # small tied q/k init so L2 attention starts near uniform (PAPER.md Sec. 6)
  d.learned_temperature = False  # per-head learnable logit scale tau ([code]); see layers.Attention
  d.l2_form = 'bias'          # L2 logits as 'bias' (per-key bias) | 'augmented' (q, k + 1 channel, no bias; fused-kernel friendly)
  # Minibatch std per token before the last block, over groups of this many images (StyleGAN's
  # mbstd, not in the paper; 0 = off): lets D see a G whose samples share one layout.
  d.minibatch_std_group = 0
  d.final_norm = True         # LayerNorm on the class token before the head (ViT)
  return d


def get_config():
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.image_size = 32
  config.model.channels = 3
  config.model.generator = get_generator_config()
  config.model.discriminator = get_discriminator_config()

  config.data = ml_collections.ConfigDict()
  config.data.source = 'tfds'   # 'tfds' | 'folder' | 'npz' | 'arrays' | 'random' (noise)
  config.data.name = 'cifar10'  # TFDS name
  config.data.split = 'train'
  config.data.data_dir = ''     # TFDS data_dir (may be gs://); '' = TFDS default
  config.data.path = ''         # folder or .npz path
  config.data.if_missing = 'error'  # path absent when training starts: 'error' | 'random' (noise)
  config.data.flip = True       # random horizontal flip
  config.data.shuffle_buffer = 50_000
  config.data.resize_mode = 'center_crop'  # how non-square / wrong-size images are fitted

  config.training = ml_collections.ConfigDict()
  config.training.batch_size = 128   # [T]
  config.training.num_steps = 500_000
  config.training.max_train_seconds = 0.0  # also stop (save, evaluate) after this much training time; 0 = off
  config.training.n_critic = 1       # D updates per G update [code]
  config.training.seed = 0
  config.training.dtype = 'float32'  # compute dtype: 'float32' | 'bfloat16'
  # EMA half-life in thousands of images: StyleGAN2-ADA's CIFAR value ([code]: 1000). The ramp-up
  # caps it at ema_rampup x images seen, so short runs average over their recent past only.
  config.training.ema_kimg = 500.0   # [StyleGAN2-ADA cifar]
  config.training.ema_rampup = 0.05  # EMA half-life ramp-up, fraction of images seen [StyleGAN2-ADA]
  config.training.nan_guard = True   # stop on a non-finite loss or gradient
  # ZeRO-1: split the Adam moments and the EMA over the devices (each updates its slice);
  # same math, less HBM traffic per device but more collectives (README: TPU compile).
  config.training.shard_optimizer = False
  config.training.debug_poison_step = -1  # test hook: NaN real images at this step (-1: off)

  config.optimizer = ml_collections.ConfigDict()
  # Adam lr 0.002, beta1 0, beta2 0.99, following StyleGAN2-ADA [T]
  config.optimizer.g = ml_collections.ConfigDict(dict(lr=0.002, b1=0.0, b2=0.99, eps=1e-8))
  config.optimizer.d = ml_collections.ConfigDict(dict(lr=0.002, b1=0.0, b2=0.99, eps=1e-8))
  # Optional decay of both: after start_kimg thousand images, each lr halves every halflife_kimg.
  # Off (start_kimg 0) as in the paper, whose lr is constant [T].
  config.optimizer.decay = ml_collections.ConfigDict(dict(start_kimg=0.0, halflife_kimg=0.0))

  config.loss = ml_collections.ConfigDict()
  config.loss.kind = 'nonsaturating'  # non-saturating logistic loss [T]
  config.loss.bcr_real = 10.0         # bCR lambda_real = 10 [T]
  config.loss.bcr_fake = 10.0         # bCR lambda_fake = 10 [T]
  config.loss.bcr_views = 'independent'  # T(x): a 2nd DiffAugment draw of x ([code]) | 'stacked'
  config.loss.r1_gamma = 0.0          # R1 off for ViTGAN: it hurt ViT-D training [T]
  config.loss.r1_every = 1            # lazy R1 interval (weight scaled by the interval)
  config.loss.lecam = 0.0             # LeCam helps but was left out of the paper's runs [T]
  config.loss.lecam_decay = 0.99      # EMA decay of LeCam's anchors
  config.loss.sr_weight = 0.0         # TransGAN's super-resolution co-training (MSE), 0 = off

  config.augment = ml_collections.ConfigDict()
  config.augment.policy = 'translation,color,cutout,scale'  # DiffAugment [T]
  config.augment.p = 0.8                                    # [T]
  config.augment.bcr_policy = 'translation,cutout'           # T(.) of bCR (Zhao et al.)
  # Adaptive p (StyleGAN2-ADA, Karras et al. 2020), not in the paper: 0 keeps p fixed; > 0 starts
  # at p=0 and moves p so that E[sign D(augmented real)] stays at this target (ADA: 0.6).
  config.augment.ada_target = 0.0
  config.augment.ada_kimg = 100.0     # thousands of images for p to move by 1 (ADA: 500)

  config.eval = ml_collections.ConfigDict()
  config.eval.every_steps = 0          # FID during training; 0 = off
  config.eval.every_seconds = 0.0      # ... or every this many seconds of training (and at step 0)
  config.eval.num_samples = 50_000     # FID-50k
  config.eval.batch_size = 500
  config.eval.inception_weights = ''   # '' = look in $VITGAN_CACHE / ~/.cache/vitgan_jax
  config.eval.reference_stats = ''     # .npz of mu/sigma (made there if absent); '' = cache dir
  config.eval.reference_num_samples = 50_000  # first N training images (0 = all); all of CIFAR-10
  config.eval.seed = 0                 # the same z at every evaluation

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 5000
  config.checkpoint.keep = 3
  # A workdir lock (train.lock) from another host older than this is taken over (README).
  config.checkpoint.lock_stale_hours = 24.0

  config.logging = ml_collections.ConfigDict()
  config.logging.every_steps = 100
  config.logging.sample_every_steps = 5000
  config.logging.sample_grid = 8       # 8x8 grid of EMA samples from a fixed z
  # Training health (vitgan_jax/health.py), every every_steps on a slice of the batch: D gap,
  # D's input sensitivity, attention entropy, sigma(W)/sigma(W_init); README 'Training health'.
  config.logging.health = True
  config.logging.health_examples = 32
  # Stall alarm: D counts as blind when |D(real) - D(fake)| and mean ||grad_x D|| are both below
  # these for stall_patience intervals in a row (thresholds from measured runs, see README).
  config.logging.stall_max_gap = 0.1
  config.logging.stall_max_sensitivity = 0.05
  config.logging.stall_patience = 3

  return config
