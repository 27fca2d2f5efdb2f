"""LadaGAN (Morales-Juarez & Fuentes-Pineda, 2024): transformer GAN on linear additive attention.

Generator: z -> 8x8 tokens -> Ladaformer stages (self-modulated LayerNorm on z) separated by
pixel shuffle + 3x3 conv, a final 3x3 conv to RGB at the highest resolution. Discriminator:
3x3 conv, residual downsampling blocks, one Ladaformer over the feature map, space-to-depth and
a convolutional head. Follows github.com/milmor/LadaGAN (model.py): its G blocks return the MLP
output without a residual (`mlp_residual=False`), its output is linear.
Differences: Xavier / equalized init instead of orthogonal; SLN is layers.SelfModulatedLayerNorm
(gamma, beta linear in z; LadaGAN adds a ReLU hidden layer); D's BatchNorm is replaced (`norm`);
D's 5x5 map of patch logits is averaged to one logit per image.
"""

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vitgan_jax.models import conv as conv_layers
from vitgan_jax.models import layers

NORMS = ('layer', 'batch', 'none')
OUTPUT_ACTIVATIONS = ('none', 'tanh')
START_GRID = 8  # G's first token grid is 8x8 at every resolution [LadaGAN model.py]


class LinearAdditiveAttention(nn.Module):
  """LadaGAN's linear additive attention (after Fastformer): no token x token matrix.

  Per head h: alpha = softmax_n(w_h . q_n / sqrt(d)) over the N tokens, one global query
  g = sum_n alpha_n q_n, and output token n = W_o (g * k_n * v_n) (elementwise). Cost O(N d).
  Returns (B, N, D); with `return_weights`, also alpha as (B, heads, N).
  """
  num_heads: int
  equalized: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, return_weights: bool = False):
    features = x.shape[-1]
    if features % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} does not divide width={features}')
    head_dim = features // self.num_heads
    dense = lambda n, name: layers.EqualDense(  # noqa: E731
        n, equalized=self.equalized, dtype=self.dtype, name=name)
    split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, head_dim))  # noqa: E731
    q = dense(features, 'query')(x)
    k = dense(features, 'key')(x)
    v = dense(features, 'value')(x)
    logits = dense(self.num_heads, 'query_attention')(q).astype(jnp.float32)  # (B, N, heads)
    alpha = jax.nn.softmax(logits / math.sqrt(head_dim), axis=1)
    global_q = jnp.einsum('bnh,bnhd->bhd', alpha, split(q).astype(jnp.float32))
    out = global_q[:, None].astype(q.dtype) * split(k) * split(v)
    out = dense(features, 'out')(out.reshape(out.shape[:-2] + (features,)))
    if return_weights:
      return out, jnp.transpose(alpha, (0, 2, 1))
    return out


def feature_norm(module: nn.Module, x: jnp.ndarray, kind: str, name: str,
                 eps: float = 1e-5) -> jnp.ndarray:
  """Normalization of NHWC features with a learned per-channel scale and bias.

  'layer': per example over H, W, C. 'batch': over the batch and H, W with the statistics of
  the batch D is called on, in training and evaluation alike, so no running averages and no
  mutable collection (LadaGAN calls its BatchNorm with training=True in both G and D steps).
  """
  if kind == 'none':
    return x
  axes = (1, 2, 3) if kind == 'layer' else (0, 1, 2)
  x32 = x.astype(jnp.float32)
  mean = jnp.mean(x32, axis=axes, keepdims=True)
  var = jnp.mean(jnp.square(x32 - mean), axis=axes, keepdims=True)
  scale = module.param(f'{name}_scale', nn.initializers.ones, (x.shape[-1],))
  bias = module.param(f'{name}_bias', nn.initializers.zeros, (x.shape[-1],))
  return ((x32 - mean) * jax.lax.rsqrt(var + eps) * scale + bias).astype(x.dtype)


class Ladaformer(nn.Module):
  """Pre-norm transformer block with linear additive attention.

  With a latent `z`, both norms are self-modulated LayerNorms SLN(h, z) (LadaGAN's generator);
  without, plain LayerNorms (its discriminator). `mlp_residual=False` returns MLP(norm(h'))
  instead of h' + MLP(norm(h')), as LadaGAN's generator block does.
  """
  num_heads: int
  mlp_dim: int
  mlp_residual: bool = True
  eps: float = 1e-6
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, h, z=None):
    def norm(x, name):
      if z is not None:
        return layers.SelfModulatedLayerNorm(self.eps, name=name)(x, z)
      return nn.LayerNorm(epsilon=self.eps, dtype=jnp.float32, name=name)(x).astype(x.dtype)

    h = h + LinearAdditiveAttention(self.num_heads, dtype=self.dtype,
                                           name='attention')(norm(h, 'norm1'))
    out = layers.MlpBlock(self.mlp_dim, equalized=False, dtype=self.dtype,
                          name='mlp')(norm(h, 'norm2'))
    return h + out if self.mlp_residual else out


class LadaGANGenerator(nn.Module):
  """z (B, latent_dim) -> images (B, H, W, C)."""
  image_size: int
  channels: int = 3
  latent_dim: int = 128
  widths: Sequence[int] = (1024, 256, 64)   # per stage; stage s runs on an 8*2^s token grid
  num_heads: Sequence[int] = (4, 4, 4)
  mlp_dims: Sequence[int] = (512, 512, 512)
  mlp_residual: bool = False
  output_activation: str = 'none'
  dtype: Optional[Any] = None

  def validate(self) -> int:
    """Checks the fields; returns the pixel-shuffle factor from the last token grid to pixels."""
    layers.check_choice('model.generator.output_activation', self.output_activation,
                        OUTPUT_ACTIVATIONS)
    stages = len(self.widths)
    if len(self.num_heads) != stages or len(self.mlp_dims) != stages:
      raise ValueError('model.generator.num_heads and mlp_dims need one entry per stage '
                       f'({stages})')
    for width, heads in zip(self.widths, self.num_heads):
      if width % heads or width % 4:
        raise ValueError(f'model.generator.widths: {width} must be divisible by 4 and by its '
                         f'num_heads {heads}')
    last_grid = START_GRID * 2 ** (stages - 1)
    if self.image_size % last_grid:
      raise ValueError(f'model.image_size={self.image_size} is not a multiple of the last token '
                       f'grid {last_grid}')
    factor = self.image_size // last_grid
    if self.widths[-1] % (factor * factor):
      raise ValueError(f'model.generator.widths[-1] must be divisible by {factor * factor}')
    return factor

  @nn.compact
  def __call__(self, z, train: bool = False):
    factor = self.validate()
    dtype = self.dtype or jnp.float32
    z = z.astype(jnp.float32)
    batch, side = z.shape[0], START_GRID
    h = layers.EqualDense(side * side * self.widths[0], use_bias=False, equalized=False,
                          name='input')(z).reshape(batch, side * side, self.widths[0])
    for stage, width in enumerate(self.widths):
      if stage:
        grid = conv_layers.pixel_shuffle(h.reshape(batch, side, side, -1), 2)
        side *= 2
        grid = conv_layers.EqualConv2D(width, 3, equalized=False, dtype=self.dtype,
                                       name=f'conv{stage}')(grid)
        h = grid.reshape(batch, side * side, width)
      pos = self.param(f'pos_embed{stage}', nn.initializers.normal(0.02), (1, side * side, width))
      h = (h + pos).astype(dtype)
      h = Ladaformer(self.num_heads[stage], self.mlp_dims[stage], self.mlp_residual,
                     dtype=self.dtype, name=f'block{stage}')(h, z)
    grid = h.reshape(batch, side, side, -1)
    if factor > 1:
      grid = conv_layers.pixel_shuffle(grid, factor)
    images = conv_layers.EqualConv2D(self.channels, 3, equalized=False, dtype=self.dtype,
                                     name='to_rgb')(grid).astype(jnp.float32)
    return jnp.tanh(images) if self.output_activation == 'tanh' else images


class DownBlock(nn.Module):
  """(main + direct) / 2 with main = [conv3x3 s2, norm, lrelu, conv3x3, norm, lrelu] and
  direct = [avgpool 2, conv1x1, norm, lrelu] (LadaGAN's D block; no conv biases)."""
  features: int
  norm: str = 'layer'
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x):
    conv = lambda k, s, name: conv_layers.EqualConv2D(  # noqa: E731
        self.features, k, use_bias=False, strides=s, equalized=False, dtype=self.dtype,
        name=name)
    act = lambda t: nn.leaky_relu(t, 0.2)  # noqa: E731
    main = act(feature_norm(self, conv(3, 2, 'conv0')(x), self.norm, 'norm0'))
    main = act(feature_norm(self, conv(3, 1, 'conv1')(main), self.norm, 'norm1'))
    pooled = nn.avg_pool(x, (2, 2), (2, 2))
    direct = act(feature_norm(self, conv(1, 1, 'direct')(pooled), self.norm, 'norm_direct'))
    return (main + direct) / 2


class LadaGANDiscriminator(nn.Module):
  """images (B, H, W, C) -> logits (B,)."""
  image_size: int
  channels: int = 3
  enc_widths: Sequence[int] = (64, 128)   # input conv, then one DownBlock per further entry
  out_widths: Sequence[int] = (512, 1024)
  num_heads: int = 4
  mlp_dim: int = 512
  norm: str = 'layer'
  head_kernel: int = 4
  dtype: Optional[Any] = None

  def validate(self) -> int:
    """Checks the fields; returns the side of the token grid the Ladaformer sees."""
    layers.check_choice('model.discriminator.norm', self.norm, NORMS)
    if len(self.out_widths) != 2:
      raise ValueError('model.discriminator.out_widths needs 2 entries')
    if self.enc_widths[-1] % self.num_heads:
      raise ValueError(f'model.discriminator.num_heads={self.num_heads} does not divide '
                       f'enc_widths[-1]={self.enc_widths[-1]}')
    scale = 2 ** len(self.enc_widths)  # DownBlocks, then space-to-depth
    if self.image_size % scale or self.image_size // scale < self.head_kernel:
      raise ValueError(f'model.image_size={self.image_size} is too small or not divisible by '
                       f'{scale} for enc_widths={tuple(self.enc_widths)}')
    return self.image_size // 2 ** (len(self.enc_widths) - 1)

  @nn.compact
  def __call__(self, images, train: bool = False):
    side = self.validate()
    dtype = self.dtype or jnp.float32
    conv = lambda f, k, name, **kw: conv_layers.EqualConv2D(  # noqa: E731
        f, k, equalized=False, dtype=self.dtype, name=name, **kw)
    x = nn.leaky_relu(conv(self.enc_widths[0], 3, 'input', use_bias=False)(images.astype(dtype)),
                      0.2)
    for i, width in enumerate(self.enc_widths[1:]):
      x = DownBlock(width, self.norm, self.dtype, name=f'down{i}')(x)
    batch, width = x.shape[0], x.shape[-1]
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, side * side, width))
    h = x.reshape(batch, side * side, width) + pos.astype(x.dtype)
    h = Ladaformer(self.num_heads, self.mlp_dim, dtype=self.dtype, name='block')(h)
    x = conv_layers.pixel_unshuffle(h.reshape(batch, side, side, width), 2)
    x = conv(self.out_widths[0], 3, 'conv_out')(x)
    x = nn.leaky_relu(conv(self.out_widths[1], 1, 'head0', use_bias=False)(x), 0.2)
    x = conv(1, self.head_kernel, 'head1', use_bias=False, padding='VALID')(x)
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2, 3))  # mean of the patch logits
