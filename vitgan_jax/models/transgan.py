"""TransGAN (Jiang et al., NeurIPS 2021): a pure-transformer GAN, the paper's transformer baseline.

Generator: z -> a small token grid (8x8 for 32 px) -> transformer stages separated by
pixel-shuffle upsampling (sequence x4, width /4 per stage) -> linear projection of every token to
RGB. High-resolution stages may use grid self-attention (`grid_sizes`) and a locality mask
(`locality_windows`, static: TransGAN grows it during training). Discriminator: a ViT over
P x P pixel patches with a CLS token, scored from the CLS output.
With `super_resolution`, G also takes a low-resolution image (the real image average-pooled to
the first token grid, embedded per pixel in place of the z tokens) and must reproduce the full
image through the same stages: TransGAN's super-resolution co-training (loss.sr_weight, MSE).
Left out: relative position bias, attention noise and the multi-scale discriminator of the
NeurIPS code.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitgan_jax.models import conv, layers

OUTPUT_ACTIVATIONS = ('tanh', 'none')


def locality_mask(height: int, width: int, window: int) -> np.ndarray:
  """TransGAN's locality-aware attention mask over a row-major height x width token grid.

  mask[q, k] is true where key k lies in the window x window square centred on query q
  (`window` odd; clipped at the border). window 0 allows everything. TransGAN grows the window
  during training until attention is global; here the window is a static config value.
  """
  if window < 0 or (window and window % 2 == 0):
    raise ValueError(f'locality window={window} must be 0 (off) or odd')
  if window == 0:
    return np.ones((height * width, height * width), bool)
  ys, xs = np.divmod(np.arange(height * width), width)
  radius = window // 2
  return ((np.abs(ys[:, None] - ys[None, :]) <= radius)
          & (np.abs(xs[:, None] - xs[None, :]) <= radius))


def grid_partition(x: jnp.ndarray, height: int, width: int, cell: int) -> jnp.ndarray:
  """(B, H*W, C) row-major tokens -> (B * H/cell * W/cell, cell*cell, C) non-overlapping cells."""
  b, _, c = x.shape
  x = x.reshape(b, height // cell, cell, width // cell, cell, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, cell * cell, c)


def grid_merge(x: jnp.ndarray, height: int, width: int, cell: int) -> jnp.ndarray:
  """Inverse of `grid_partition`: cells back to (B, H*W, C) row-major tokens."""
  c = x.shape[-1]
  x = x.reshape(-1, height // cell, width // cell, cell, cell, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, height * width, c)


class GridAttention(nn.Module):
  """Multi-head dot-product self-attention over an H x W token grid (TransGAN's generator).

  grid_size g > 0: grid self-attention, each token attends only within its g x g cell of a
  non-overlapping partition, costing H*W*g^2 instead of (H*W)^2. window w > 0: a locality mask
  (`locality_mask`) within the attended region. Both 0: full attention.
  """
  num_heads: int
  grid_size: int = 0
  window: int = 0
  qkv_bias: bool = False
  equalized: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    features = x.shape[-1]
    if features % self.num_heads:
      raise ValueError(f'num_heads={self.num_heads} does not divide width={features}')
    cell = self.grid_size if 0 < self.grid_size < max(height, width) else 0
    if cell and (height % cell or width % cell):
      raise ValueError(f'grid_size={cell} does not tile the {height}x{width} token grid')
    h = grid_partition(x, height, width, cell) if cell else x
    region = (cell, cell) if cell else (height, width)
    head_dim = features // self.num_heads
    dense = lambda n, name, bias: layers.EqualDense(  # noqa: E731
        n, use_bias=bias, equalized=self.equalized, dtype=self.dtype, name=name)
    split = lambda t: t.reshape(t.shape[:-1] + (self.num_heads, head_dim))  # noqa: E731
    q = split(dense(features, 'query', self.qkv_bias)(h))
    k = split(dense(features, 'key', self.qkv_bias)(h))
    v = split(dense(features, 'value', self.qkv_bias)(h))
    mask = None
    if self.window:
      mask = jnp.asarray(locality_mask(*region, self.window))[None, None]
    out = jax.nn.dot_product_attention(q, k, v, mask=mask)
    out = out.reshape(out.shape[:-2] + (features,))
    if cell:
      out = grid_merge(out, height, width, cell)
    return dense(features, 'out', True)(out)


def _layer_norm(name):
  return nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name=name)


class GeneratorBlock(nn.Module):
  """Pre-LN block on an H x W token grid: h + GridAttention(LN h), then h + MLP(LN h)."""
  num_heads: int
  mlp_dim: int
  grid_size: int = 0
  window: int = 0
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, h, height: int, width: int):
    attention = GridAttention(self.num_heads, self.grid_size, self.window,
                                     dtype=self.dtype, name='attention')
    h = h + attention(_layer_norm('norm1')(h).astype(h.dtype), height, width)
    mlp = layers.MlpBlock(self.mlp_dim, equalized=False, dtype=self.dtype, name='mlp')
    return h + mlp(_layer_norm('norm2')(h).astype(h.dtype))


class TransGANGenerator(nn.Module):
  """z (B, latent_dim) -> images (B, H, W, C)."""
  image_size: int
  channels: int = 3
  latent_dim: int = 256
  width: int = 1024              # stage-1 width; each pixel shuffle divides it by 4
  depths: Sequence[int] = (5, 4, 2)
  num_heads: int = 4
  mlp_ratio: float = 4.0
  grid_sizes: Sequence[int] = (0, 0, 0)        # per stage; 0 = full attention
  locality_windows: Sequence[int] = (0, 0, 0)  # per stage; 0 = no mask
  output_activation: str = 'tanh'
  super_resolution: bool = False   # also accept low_res= (SR co-training, loss.sr_weight)
  dtype: Optional[Any] = None

  def validate(self) -> int:
    """Checks the fields; returns the side of the first token grid."""
    layers.check_choice('model.generator.output_activation', self.output_activation,
                        OUTPUT_ACTIVATIONS)
    stages = len(self.depths)
    for field in ('grid_sizes', 'locality_windows'):
      if len(getattr(self, field)) != stages:
        raise ValueError(f'model.generator.{field} needs one entry per stage ({stages})')
    scale = 2 ** (stages - 1)
    if self.image_size % scale:
      raise ValueError(f'model.image_size={self.image_size} is not divisible by 2^(stages-1)')
    last_width = self.width // 4 ** (stages - 1)
    if self.width % 4 ** (stages - 1) or last_width % self.num_heads:
      raise ValueError(f'model.generator.width={self.width} must stay divisible by num_heads='
                       f'{self.num_heads} after {stages - 1} pixel shuffles (/4 each)')
    for window in self.locality_windows:
      locality_mask(1, 1, window)  # raises on an even window
    return self.image_size // scale

  @nn.compact
  def __call__(self, z, train: bool = False, low_res=None):
    """Images from z, or, with low_res (B, s, s, C) at the first grid's side s, its upsampling."""
    side = self.validate()
    dtype = self.dtype or jnp.float32
    width = self.width
    if self.super_resolution:
      embed_low_res = layers.EqualDense(width, equalized=False, name='low_res_embed')
      if low_res is None and self.is_initializing():
        embed_low_res(jnp.zeros((1, self.channels)))  # create its params at init
    elif low_res is not None:
      raise ValueError('low_res= needs model.generator.super_resolution=True')
    if low_res is not None:
      if low_res.shape[1:] != (side, side, self.channels):
        raise ValueError(f'low_res must be (B, {side}, {side}, {self.channels}), got '
                         f'{low_res.shape}')
      h = embed_low_res(low_res.astype(jnp.float32).reshape(low_res.shape[0], side * side, -1))
    else:
      h = layers.EqualDense(side * side * width, equalized=False, name='input')(
          z.astype(jnp.float32)).reshape(z.shape[0], side * side, width)
    for stage, depth in enumerate(self.depths):
      if stage:
        grid = h.reshape(h.shape[0], side, side, width)
        side, width = side * 2, width // 4
        h = conv.pixel_shuffle(grid, 2).reshape(h.shape[0], side * side, width)
      pos = self.param(f'pos_embed{stage}', nn.initializers.normal(0.02), (1, side * side, width))
      h = (h + pos).astype(dtype)
      for i in range(depth):
        h = GeneratorBlock(self.num_heads, int(width * self.mlp_ratio), self.grid_sizes[stage],
                           self.locality_windows[stage], self.dtype,
                           name=f'stage{stage}_block{i}')(h, side, side)
    pixels = layers.EqualDense(self.channels, equalized=False, name='to_rgb')(
        h.astype(jnp.float32))  # a 1x1 conv on the token grid
    images = pixels.reshape(h.shape[0], side, side, self.channels)
    return jnp.tanh(images) if self.output_activation == 'tanh' else images


class DiscriminatorBlock(nn.Module):
  """Pre-LN ViT block with dot-product attention and plain (Xavier-initialized) weights."""
  num_heads: int
  mlp_dim: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, h):
    attention = layers.Attention(self.num_heads, 'dot', equalized=False, dtype=self.dtype,
                                 name='attention')
    h = h + attention(_layer_norm('norm1')(h).astype(h.dtype))
    mlp = layers.MlpBlock(self.mlp_dim, equalized=False, dtype=self.dtype, name='mlp')
    return h + mlp(_layer_norm('norm2')(h).astype(h.dtype))


class TransGANDiscriminator(nn.Module):
  """images (B, H, W, C) -> logits (B,): P x P patches -> tokens, CLS, position embeddings, ViT."""
  image_size: int
  channels: int = 3
  patch_size: int = 4
  width: int = 384
  depth: int = 3
  num_heads: int = 4
  mlp_ratio: float = 4.0
  dtype: Optional[Any] = None

  def validate(self) -> int:
    return layers.check_patch_grid(self.image_size, self.patch_size,
                                   'model.discriminator.patch_size')

  @nn.compact
  def __call__(self, images, train: bool = False):
    grid = self.validate()
    dtype = self.dtype or jnp.float32
    # Flattened P x P x C patches through one dense layer == a conv with kernel = stride = P.
    h = layers.OverlappingPatchEmbed(self.width, self.patch_size, 0, equalized=False,
                                     dtype=self.dtype, name='patch_embed')(images.astype(dtype))
    cls = self.param('cls', nn.initializers.normal(0.02), (1, 1, self.width))
    h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, self.width)).astype(h.dtype), h],
                        axis=1)
    pos = self.param('pos_embed', nn.initializers.normal(0.02), (1, grid * grid + 1, self.width))
    h = h + pos.astype(h.dtype)
    for i in range(self.depth):
      h = DiscriminatorBlock(self.num_heads, int(self.width * self.mlp_ratio), self.dtype,
                             name=f'block{i}')(h)
    cls_out = _layer_norm('final_norm')(h[:, 0])
    return layers.EqualDense(1, equalized=False, name='head')(cls_out)[:, 0].astype(jnp.float32)
