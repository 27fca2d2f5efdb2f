"""StyleGAN2 generator and discriminator (Karras et al., 2020) at 32 and 64 px: the convolutional
side of the ViTGAN paper's mixed G x D table.

Follows StyleGAN2-ADA's networks: mapping net, constant 4x4 input, modulated / demodulated 3x3
convolutions with per-pixel noise, 'skip' toRGB outputs summed across resolutions; a residual
('resnet') or plain ('orig') discriminator with minibatch stddev; equalized LR everywhere and
[1, 3, 3, 1] FIR resampling. Left out: style mixing, path-length regularization, truncation,
fp16 and clamping. Channels at resolution r: min(channel_base / r, channel_max).
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitgan_jax.models import conv as conv_layers
from vitgan_jax.models import layers

NOISE_MODES = ('random', 'const', 'none')
ARCHITECTURES = ('resnet', 'orig')
OUTPUT_ACTIVATIONS = ('none', 'tanh')
NOISE_SEED_VALUES = 4  # z entries hashed into each example's noise key
FNV_OFFSET, FNV_PRIME = 2166136261, 16777619  # 32-bit FNV-1a hash constants


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
  return min(channel_base // resolution, channel_max)


def check_resolution(image_size: int) -> int:
  """log2(image_size); the networks run from 4x4 to image_size by factors of 2."""
  log2 = int(round(math.log2(image_size))) if image_size > 0 else 0
  if image_size < 8 or 2 ** log2 != image_size:
    raise ValueError(f'model.image_size={image_size} must be a power of 2 >= 8 for StyleGAN2')
  return log2


def noise_from_latents(z: jnp.ndarray, size: int) -> jnp.ndarray:
  """(B, size) standard-normal noise, a deterministic function of each example's latent.

  The train step passes G no rng, so the per-pixel noise is drawn from a key hashed (FNV-1a)
  from the bits of z's first entries: G stays a function of z (EMA samples from a fixed z are
  reproducible) and distinct z get independent noise. One draw serves every layer.
  """
  bits = jax.lax.bitcast_convert_type(z[:, :NOISE_SEED_VALUES].astype(jnp.float32), jnp.uint32)
  seed = jnp.full(bits.shape[:1], FNV_OFFSET, jnp.uint32)
  for i in range(bits.shape[1]):
    seed = (seed ^ bits[:, i]) * jnp.uint32(FNV_PRIME)
  return jax.vmap(lambda s: jax.random.normal(jax.random.PRNGKey(s), (size,)))(seed)


class SynthesisLayer(nn.Module):
  """[2x upsample ->] modulated 3x3 conv -> + noise * strength -> + bias -> leaky ReLU * sqrt 2.

  noise: (B or 1, H, W, 1) at the output resolution, or None for no noise input.
  """
  features: int
  up: bool = False
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, w, noise):
    if self.up:
      x = conv_layers.upsample_2x(x)  # commutes with the per-input-channel modulation
    x = conv_layers.ModulatedConv2D(self.features, 3, dtype=self.dtype, name='conv')(x, w)
    if noise is not None:
      strength = self.param('noise_strength', nn.initializers.zeros, ())
      x = x + (noise * strength).astype(x.dtype)
    x = x + self.param('bias', nn.initializers.zeros, (self.features,)).astype(x.dtype)
    return layers.leaky_relu_gain(x)


class ToRGB(nn.Module):
  """1x1 modulated conv without demodulation, plus bias (StyleGAN2's skip-generator output)."""
  channels: int
  dtype: Optional[Any] = None

  @nn.compact
  def __call__(self, x, w):
    y = conv_layers.ModulatedConv2D(self.channels, 1, demodulate=False, dtype=self.dtype,
                                    name='conv')(x, w)
    return y + self.param('bias', nn.initializers.zeros, (self.channels,)).astype(y.dtype)


class StyleGAN2Generator(nn.Module):
  """z (B, latent_dim) -> images (B, H, W, C); linear output as StyleGAN2 (or tanh)."""
  image_size: int
  channels: int = 3
  latent_dim: int = 512
  w_dim: int = 512
  mapping_layers: int = 8
  mapping_lr_mul: float = 0.01
  channel_base: int = 16384
  channel_max: int = 512
  noise_mode: str = 'random'
  output_activation: str = 'none'
  dtype: Optional[Any] = None

  def validate(self) -> int:
    layers.check_choice('model.generator.noise_mode', self.noise_mode, NOISE_MODES)
    layers.check_choice('model.generator.output_activation', self.output_activation,
                        OUTPUT_ACTIVATIONS)
    return check_resolution(self.image_size)

  def noise_images(self, z, sides):
    """One (B or 1, s, s, 1) noise image per synthesis layer of output side s (or Nones)."""
    if self.noise_mode == 'none':
      return [None] * len(sides)
    total = sum(s * s for s in sides)
    if self.noise_mode == 'random':
      flat = noise_from_latents(z, total)
    else:  # 'const': one fixed draw shared by every example
      flat = jax.random.normal(jax.random.PRNGKey(0), (1, total))
    offsets = np.cumsum([0] + [s * s for s in sides])
    return [flat[:, offsets[i]:offsets[i + 1]].reshape(-1, s, s, 1) for i, s in enumerate(sides)]

  @nn.compact
  def __call__(self, z, train: bool = False):
    log2 = self.validate()
    ch = lambda r: channels_at(r, self.channel_base, self.channel_max)  # noqa: E731
    w = layers.MappingNetwork(self.w_dim, self.mapping_layers, self.mapping_lr_mul,
                              name='mapping')(z)
    sides = [4] + [2 ** level for level in range(3, log2 + 1) for _ in range(2)]
    noise = self.noise_images(z, sides)
    layer = lambda f, name, up=False: SynthesisLayer(f, up, self.dtype, name=name)  # noqa: E731
    const = self.param('const', nn.initializers.normal(1.0), (4, 4, ch(4)))
    x = jnp.broadcast_to(const, (z.shape[0],) + const.shape).astype(self.dtype or jnp.float32)
    x = layer(ch(4), 'b4_conv1')(x, w, noise[0])
    img = ToRGB(self.channels, self.dtype, name='b4_torgb')(x, w).astype(jnp.float32)
    for level in range(3, log2 + 1):
      res = 2 ** level
      x = layer(ch(res), f'b{res}_conv0', up=True)(x, w, noise[2 * level - 5])
      x = layer(ch(res), f'b{res}_conv1')(x, w, noise[2 * level - 4])
      img = conv_layers.upsample_2x(img) + ToRGB(self.channels, self.dtype,
                                                 name=f'b{res}_torgb')(x, w).astype(jnp.float32)
    return jnp.tanh(img) if self.output_activation == 'tanh' else img


class StyleGAN2Discriminator(nn.Module):
  """images (B, H, W, C) -> logits (B,): fromRGB, blocks down to 4x4, mbstd, conv, fc, out."""
  image_size: int
  channels: int = 3
  channel_base: int = 16384
  channel_max: int = 512
  architecture: str = 'resnet'
  mbstd_group_size: int = 4
  mbstd_num_channels: int = 1
  dtype: Optional[Any] = None

  def validate(self) -> int:
    layers.check_choice('model.discriminator.architecture', self.architecture, ARCHITECTURES)
    if self.mbstd_group_size < 1 or self.mbstd_num_channels < 1:
      raise ValueError('model.discriminator.mbstd_group_size and mbstd_num_channels must be >= 1')
    if channels_at(4, self.channel_base, self.channel_max) % self.mbstd_num_channels:
      raise ValueError(f'model.discriminator.mbstd_num_channels={self.mbstd_num_channels} must '
                       'divide the 4x4 channel count')
    return check_resolution(self.image_size)

  @nn.compact
  def __call__(self, images, train: bool = False):
    log2 = self.validate()
    ch = lambda r: channels_at(r, self.channel_base, self.channel_max)  # noqa: E731
    conv = lambda f, k, name, **kw: conv_layers.EqualConv2D(  # noqa: E731
        f, k, dtype=self.dtype, name=name, **kw)
    act = layers.leaky_relu_gain
    x = act(conv(ch(self.image_size), 1, 'fromrgb')(images.astype(self.dtype or jnp.float32)))
    for level in range(log2, 2, -1):
      res = 2 ** level
      y = act(conv(ch(res), 3, f'b{res}_conv0')(x))
      y = act(conv(ch(res // 2), 3, f'b{res}_conv1', down=True)(y))
      if self.architecture == 'resnet':
        skip = conv(ch(res // 2), 1, f'b{res}_skip', use_bias=False, down=True)(x)
        y = (skip + y) * math.sqrt(0.5)
      x = y
    x = conv_layers.minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
    x = act(conv(ch(4), 3, 'b4_conv')(x))
    x = act(layers.EqualDense(ch(4), dtype=self.dtype, name='b4_fc')(x.reshape(x.shape[0], -1)))
    return layers.EqualDense(1, dtype=self.dtype, name='b4_out')(x)[:, 0].astype(jnp.float32)
