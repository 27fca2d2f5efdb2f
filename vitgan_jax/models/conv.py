"""Convolutions and resampling of the convolutional families (StyleGAN2, LadaGAN's D) and the
token-grid reshapes (pixel shuffle) of TransGAN and LadaGAN. The ViT layers are layers.py.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vitgan_jax.models import layers

Dtype = layers.Dtype

FIR_TAPS = (1.0, 3.0, 3.0, 1.0)  # StyleGAN2's resampling filter (binomial, separable)
_NHWC = ('NHWC', 'HWIO', 'NHWC')


def pixel_shuffle(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Depth to space: (B, H, W, r*r*C) -> (B, H*r, W*r, C), channel order of tf.nn.depth_to_space.

  out[b, h*r + i, w*r + j, c] = x[b, h, w, (i*r + j)*C + c]. Upsamples token grids in TransGAN
  and LadaGAN: width drops by r*r, sequence length grows by r*r.
  """
  b, h, w, c = x.shape
  r = factor
  if c % (r * r):
    raise ValueError(f'pixel_shuffle: {c} channels are not divisible by {r}*{r}')
  x = x.reshape(b, h, w, r, r, c // (r * r)).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * r, w * r, c // (r * r))


def pixel_unshuffle(x: jnp.ndarray, factor: int) -> jnp.ndarray:
  """Space to depth, the inverse of `pixel_shuffle`: (B, H*r, W*r, C) -> (B, H, W, r*r*C)."""
  b, hr, wr, c = x.shape
  r = factor
  x = x.reshape(b, hr // r, r, wr // r, r, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, hr // r, wr // r, r * r * c)


def fir_kernel(taps=FIR_TAPS) -> np.ndarray:
  """Separable 2-D FIR filter: outer(taps, taps) normalized to sum 1."""
  t = np.asarray(taps, np.float32)
  k = np.outer(t, t)
  return k / k.sum()


def _depthwise_fir(x, kernel, *, strides=(1, 1), padding=((0, 0), (0, 0)), lhs_dilation=(1, 1)):
  """The same 2-D filter on every channel (a depthwise convolution), as a true convolution."""
  channels = x.shape[-1]
  k = jnp.asarray(kernel[::-1, ::-1], x.dtype)[:, :, None, None]
  return jax.lax.conv_general_dilated(
      x, jnp.tile(k, (1, 1, 1, channels)), window_strides=strides, padding=padding,
      lhs_dilation=lhs_dilation, dimension_numbers=_NHWC, feature_group_count=channels)


def blur(x: jnp.ndarray, padding, taps=FIR_TAPS) -> jnp.ndarray:
  """FIR low-pass filter of NHWC `x` with `padding` = (before, after) zeros on each spatial axis."""
  return _depthwise_fir(x, fir_kernel(taps), padding=(tuple(padding),) * 2)


def upsample_2x(x: jnp.ndarray, taps=FIR_TAPS) -> jnp.ndarray:
  """StyleGAN2's upfirdn2d(up=2): zero insertion then the FIR filter with gain 4 (per axis 2).

  With [1, 3, 3, 1] this is bilinear upsampling with half-pixel centres:
  out[2i] = (x[i-1] + 3 x[i]) / 4, out[2i+1] = (3 x[i] + x[i+1]) / 4 per axis (zero outside).
  """
  k = fir_kernel(taps) * 4.0
  n = k.shape[0]
  pad = ((n + 1) // 2, n // 2)  # upfirdn2d's (fw+up-1)//2 and (fw-up)//2 + the trailing zero
  return _depthwise_fir(x, k, padding=(pad, pad), lhs_dilation=(2, 2))


def downsample_2x(x: jnp.ndarray, taps=FIR_TAPS) -> jnp.ndarray:
  """StyleGAN2's upfirdn2d(down=2): the FIR filter, then every second pixel.

  With [1, 3, 3, 1]: out[i] = (x[2i-1] + 3 x[2i] + 3 x[2i+1] + x[2i+2]) / 8 per axis.
  """
  k = fir_kernel(taps)
  pad = ((k.shape[0] - 1) // 2, (k.shape[0] - 2) // 2)
  return _depthwise_fir(x, k, strides=(2, 2), padding=(pad, pad))


class EqualConv2D(nn.Module):
  """2-D convolution (NHWC) with equalized learning rate, optional bias and resampling.

  `down`: StyleGAN2's downsampling convolution (FIR blur, then the kernel with stride 2).
  `strides`/`padding`: a plain strided convolution (LadaGAN); padding as in lax ('SAME'/'VALID').
  `equalized=False` stores Xavier-uniform weights used as they are.
  """
  features: int
  kernel_size: int = 3
  use_bias: bool = True
  down: bool = False
  strides: int = 1
  padding: str = 'SAME'
  lr_mul: float = 1.0
  bias_init: float = 0.0
  equalized: bool = True
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    k = self.kernel_size
    kernel = layers.equalized_kernel(self, (k, k, x.shape[-1], self.features), train=False,
                              lr_mul=self.lr_mul, equalized=self.equalized)
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    if self.down:
      # upfirdn2d's padding for a k x k kernel after the 4-tap filter: the output is H / 2.
      p = len(FIR_TAPS) - 2 + k - 1
      x = blur(x, ((p + 1) // 2, p // 2))
      strides, padding = (2, 2), 'VALID'
    else:
      strides, padding = (self.strides,) * 2, self.padding
    y = jax.lax.conv_general_dilated(x, kernel.astype(dtype), strides, padding,
                                     dimension_numbers=_NHWC)
    if self.use_bias:
      y = y + layers.scaled_bias(self, self.features, self.lr_mul, self.bias_init).astype(dtype)
    return y


class ModulatedConv2D(nn.Module):
  """StyleGAN2 modulated convolution: per-sample weights W * s[in], demodulated per output.

  w'_{o,i,k} = W_{o,i,k} s_i;  y = conv(x, w') / sqrt(sum_{i,k} w'^2 + eps) with s = affine(style)
  (bias init 1). Computed without per-sample weights: conv(x * s, W) times the demodulation
  factor, which is the same linear map. No bias: callers add noise, then bias, then activation.
  """
  features: int
  kernel_size: int = 3
  demodulate: bool = True
  eps: float = 1e-8
  dtype: Optional[Dtype] = None

  @nn.compact
  def __call__(self, x: jnp.ndarray, style: jnp.ndarray) -> jnp.ndarray:
    fan_in = x.shape[-1]
    k = self.kernel_size
    s = layers.EqualDense(fan_in, bias_init=1.0, name='affine')(style.astype(jnp.float32))
    kernel = layers.equalized_kernel(self, (k, k, fan_in, self.features), train=False)
    dtype = self.dtype or x.dtype
    y = jax.lax.conv_general_dilated(
        (x * s[:, None, None, :]).astype(dtype), kernel.astype(dtype), (1, 1), 'SAME',
        dimension_numbers=_NHWC)
    if self.demodulate:
      demod = jax.lax.rsqrt(jnp.square(s) @ jnp.sum(jnp.square(kernel), axis=(0, 1)) + self.eps)
      y = y * demod[:, None, None, :].astype(dtype)
    return y


def minibatch_stddev(x: jnp.ndarray, group_size: int, num_channels: int = 1,
                     eps: float = 1e-8) -> jnp.ndarray:
  """StyleGAN's minibatch standard deviation: appends `num_channels` feature maps to NHWC `x`.

  Groups are `group_size` consecutive examples (StyleGAN2-ADA strides them instead): the train
  step scores [real; fake] in one batch, and consecutive groups keep reals and fakes apart
  whenever group_size divides the batch of each. Per group, the std over its members of every
  feature, averaged over H, W and the channels of each of `num_channels` channel slices.
  """
  n, h, w, c = x.shape
  f = num_channels
  y = layers.group_std(x.reshape(n, h, w, f, c // f), group_size, 'minibatch_stddev', eps)
  y = jnp.mean(y, axis=(1, 2, 4))                       # (n/g, f)
  g = n // y.shape[0]
  y = jnp.broadcast_to(y[:, None, None, None, :], (n // g, g, h, w, f)).reshape(n, h, w, f)
  return jnp.concatenate([x, y.astype(x.dtype)], axis=-1)
