"""Tests for vitgan_jax/augment.py against explicit numpy / scipy computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage

from vitgan_jax import augment as augment_lib

ALL_OPS = 'translation,color,cutout,scale'
_jitted_augment = jax.jit(augment_lib.augment, static_argnames='policy')


def _augment(images, rng, policy, p, strength=1.0):
  """Jitted, with p and strength always traced: one compile per (policy, shape)."""
  return _jitted_augment(images, rng, policy, jnp.float32(p), jnp.float32(strength))


def _images(batch_size=4, height=16, width=16, channels=3, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.uniform(-1, 1, (batch_size, height, width, channels)), jnp.float32)


@pytest.mark.parametrize('policy', ['translation', 'color', 'cutout', 'scale', ALL_OPS])
def test_shape_dtype_and_range(policy):
  images = _images()
  out = _augment(images, jax.random.PRNGKey(0), policy, 1.0)
  assert out.shape == images.shape and out.dtype == images.dtype
  assert np.all(np.isfinite(out))
  if policy in ('translation', 'cutout', 'scale'):
    # Geometric ops only move pixels, mix neighbours convexly, or write zeros.
    assert out.min() >= min(images.min(), 0) - 1e-6
    assert out.max() <= max(images.max(), 0) + 1e-6
  else:
    # Brightness +-0.5, then saturation x2 and contrast x1.5 about means: loose bound.
    assert np.abs(out).max() < 1.5 * 3 * 1.5 * 2
  assert not np.allclose(out, images)


def test_identity_at_strength_zero_and_at_p_zero():
  images = _images()
  rng = jax.random.PRNGKey(1)
  np.testing.assert_array_equal(_augment(images, rng, ALL_OPS, 1.0, 0.0), images)
  np.testing.assert_array_equal(_augment(images, rng, ALL_OPS, 0.0), images)
  np.testing.assert_array_equal(_augment(images, rng, '', 1.0), images)


def test_unknown_policy_names_the_bad_op():
  with pytest.raises(ValueError, match="'rotate'"):
    _augment(_images(), jax.random.PRNGKey(0), 'translation,rotate', 1.0)


@pytest.mark.parametrize('policy', ['translation', 'color', 'cutout', 'scale'])
def test_examples_get_different_draws(policy):
  one = _images(batch_size=1, seed=3)
  batch = jnp.tile(one, (8, 1, 1, 1))
  out = np.asarray(_augment(batch, jax.random.PRNGKey(2), policy, 1.0))
  distinct = {out[i].tobytes() for i in range(8)}
  assert len(distinct) >= 4


def test_probability_applies_per_example():
  batch = jnp.tile(_images(batch_size=1), (400, 1, 1, 1))
  out = _augment(batch, jax.random.PRNGKey(4), 'color', p=0.3)
  changed = np.any(np.asarray(out) != np.asarray(batch), axis=(1, 2, 3))
  assert abs(changed.mean() - 0.3) < 0.08


def test_gradient_flows_to_images():
  images = _images()
  rng = jax.random.PRNGKey(5)
  weights = _images(seed=9)

  def loss(x):
    return jnp.sum(_augment(x, rng, ALL_OPS, 1.0) * weights)

  grad = jax.grad(loss)(images)
  assert grad.shape == images.shape
  assert np.all(np.isfinite(grad)) and np.abs(grad).sum() > 0
  # Directional derivative matches central finite differences (the ops are piecewise
  # linear in the images for fixed draws, so this is exact up to rounding).
  direction = _images(seed=11)
  eps = 1e-2
  numeric = (loss(images + eps * direction) - loss(images - eps * direction)) / (2 * eps)
  np.testing.assert_allclose(jnp.sum(grad * direction), numeric, rtol=1e-3, atol=1e-3)


def test_same_rng_same_output_and_jit():
  images = _images()
  rng = jax.random.PRNGKey(6)
  a = _augment(images, rng, ALL_OPS, 0.8)
  b = _augment(images, rng, ALL_OPS, 0.8)
  np.testing.assert_array_equal(a, b)
  # Python-float p and strength (constants at trace time) give the same draws.
  c = _jitted_augment(images, rng, policy=ALL_OPS, p=0.8)
  np.testing.assert_allclose(a, c, atol=1e-6)
  d = _augment(images, jax.random.PRNGKey(7), ALL_OPS, 0.8)
  assert not np.allclose(a, d)


def _numpy_translate(images, shift_y, shift_x):
  out = np.zeros_like(images)
  _, height, width, _ = images.shape
  for b in range(images.shape[0]):
    for y in range(height):
      for x in range(width):
        sy, sx = y - shift_y[b], x - shift_x[b]
        if 0 <= sy < height and 0 <= sx < width:
          out[b, y, x] = images[b, sy, sx]
  return out


def test_translate_matches_numpy_shift():
  images = np.asarray(_images(batch_size=4, height=8, width=6))
  shift_y, shift_x = np.array([2, -1, 0, 7]), np.array([-3, 1, 0, 0])
  out = augment_lib._translate(jnp.asarray(images), jnp.asarray(shift_y), jnp.asarray(shift_x))
  np.testing.assert_array_equal(out, _numpy_translate(images, shift_y, shift_x))


def test_random_translation_is_an_integer_shift_within_one_eighth():
  images = np.asarray(_images(batch_size=16, height=16, width=16))
  out = np.asarray(_augment(jnp.asarray(images), jax.random.PRNGKey(8),
                                       'translation', 1.0))
  for b in range(16):
    matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
               if np.array_equal(out[b], _numpy_translate(images[b:b + 1], [dy], [dx])[0])]
    assert len(matches) == 1, b


def test_cutout_zeroes_expected_pixels():
  height, width, side = 10, 8, 4
  images = jnp.ones((5, height, width, 2))
  center_y, center_x = np.array([5, 0, 9, 10, 3]), np.array([4, 0, 7, 1, 8])
  out = np.asarray(augment_lib._cutout_at(images, jnp.asarray(center_y), jnp.asarray(center_x),
                                          side, side))
  for b in range(5):
    expected = np.ones((height, width, 2))
    expected[max(center_y[b] - 2, 0):max(center_y[b] + 2, 0),
             max(center_x[b] - 2, 0):max(center_x[b] + 2, 0)] = 0
    np.testing.assert_array_equal(out[b], expected)
  assert (out[0] == 0).sum() == side * side * 2            # fully inside
  assert (out[1] == 0).sum() == 2 * 2 * 2                  # clipped at a corner


def test_random_cutout_square_is_half_the_image():
  images = jnp.ones((64, 16, 16, 1))
  out = np.asarray(_augment(images, jax.random.PRNGKey(9), 'cutout', 1.0))
  zeros = (out == 0).sum(axis=(1, 2, 3))
  assert zeros.max() == 8 * 8 and zeros.min() > 0
  for b in range(64):  # the zeros form one axis-aligned rectangle
    rows, cols = np.nonzero(out[b, ..., 0] == 0)
    assert zeros[b] == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)


def test_scale_matches_scipy_bilinear():
  images = np.asarray(_images(batch_size=3, height=12, width=10, channels=2))
  factors = np.array([0.75, 1.0, 1.25], np.float32)
  out = np.asarray(augment_lib._scale_at(jnp.asarray(images), jnp.asarray(factors)))
  for b, s in enumerate(factors):
    ys = 5.5 + (np.arange(12) - 5.5) / s
    xs = 4.5 + (np.arange(10) - 4.5) / s
    grid_y, grid_x = np.meshgrid(ys, xs, indexing='ij')
    for c in range(2):
      expected = scipy.ndimage.map_coordinates(images[b, ..., c], [grid_y, grid_x], order=1,
                                               mode='grid-constant', cval=0.0)
      np.testing.assert_allclose(out[b, ..., c], expected, atol=1e-5)
  np.testing.assert_array_equal(out[1], images[1])


def test_color_matches_diffaugment_formulas():
  images = np.asarray(_images(batch_size=6))
  rng = jax.random.PRNGKey(10)
  out = np.asarray(augment_lib._saturation(jnp.asarray(images), rng, 1.0))
  factors = 1.0 + np.asarray(jax.random.uniform(rng, (6,), minval=-1.0, maxval=1.0))
  mean = images.mean(axis=3, keepdims=True)
  np.testing.assert_allclose(out, (images - mean) * factors[:, None, None, None] + mean,
                             atol=1e-5)
  out = np.asarray(augment_lib._contrast(jnp.asarray(images), rng, 1.0))
  factors = 1.0 + 0.5 * np.asarray(jax.random.uniform(rng, (6,), minval=-1.0, maxval=1.0))
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  np.testing.assert_allclose(out, (images - mean) * factors[:, None, None, None] + mean,
                             atol=1e-5)
  out = np.asarray(augment_lib._brightness(jnp.asarray(images), rng, 1.0))
  deltas = out - images
  assert np.allclose(deltas, deltas[:, :1, :1, :1], atol=1e-6)
  assert np.abs(deltas).max() <= 0.5


def test_resampling_compiles_to_matmuls_not_gathers_or_scatters():
  """Translation and scale (and their gradients) are batched matmuls: no gather / scatter-add,
  which GPUs and TPUs run slowly (bench/augment_speed.py: 28 -> 12 ms on CPU)."""
  x = jnp.zeros((4, 16, 16, 3))
  loss = lambda x, rng: jnp.sum(augment_lib.augment(x, rng, 'translation,scale', 1.0) ** 2)  # noqa: E731
  hlo = jax.jit(jax.grad(loss)).lower(x, jax.random.PRNGKey(0)).compile().as_text()
  assert ' gather(' not in hlo and ' scatter(' not in hlo
  assert ' dot(' in hlo


def test_flip_mirrors_about_half_the_examples_exactly():
  images = np.random.RandomState(0).uniform(-1, 1, (256, 8, 8, 3)).astype(np.float32)
  out = np.asarray(_augment(images, jax.random.PRNGKey(5), 'flip', 1.0))
  mirrored = np.array([np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)])
  unchanged = np.array([np.array_equal(o, i) for o, i in zip(out, images)])
  assert np.all(mirrored ^ unchanged)  # each example exactly one of the two
  assert 0.4 < mirrored.mean() < 0.6
