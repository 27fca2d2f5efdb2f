"""Tests for vitgan_jax/losses.py against numpy formulas and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitgan_jax import losses

REAL = np.array([2.0, -1.0, 0.5, 30.0, -30.0])
FAKE = np.array([-0.5, 1.5, 0.0, -25.0, 40.0])


def _softplus(x):
  return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)  # stable log(1 + e^x)


@pytest.mark.parametrize('shape', [(5,), (5, 1)])
def test_logistic_losses_match_numpy(shape):
  real, fake = jnp.asarray(REAL.reshape(shape)), jnp.asarray(FAKE.reshape(shape))
  expected_d = np.mean(_softplus(-REAL)) + np.mean(_softplus(FAKE))
  expected_g = np.mean(_softplus(-FAKE))
  np.testing.assert_allclose(losses.d_logistic_loss(real, fake), expected_d, rtol=1e-6)
  np.testing.assert_allclose(losses.g_logistic_loss(fake), expected_g, rtol=1e-6)
  # Hand value: softplus(0) = log 2.
  np.testing.assert_allclose(losses.d_logistic_loss(jnp.zeros(3), jnp.zeros(3)),
                             2 * np.log(2), rtol=1e-6)


def test_losses_reduce_in_float32():
  real = jnp.asarray(REAL, jnp.bfloat16)
  assert losses.d_logistic_loss(real, real).dtype == jnp.float32
  assert losses.bcr_penalty(real, real[::-1]).dtype == jnp.float32


def test_bcr_penalty():
  logits = jnp.asarray(REAL)
  assert float(losses.bcr_penalty(logits, logits)) == 0.0
  augmented = jnp.asarray(FAKE).reshape(5, 1)
  np.testing.assert_allclose(losses.bcr_penalty(logits, augmented),
                             np.mean((REAL - FAKE) ** 2), rtol=1e-6)


def _numpy_discriminator(images, weights, bias):
  """A small nonlinear D in float64: per-example tanh features, a square and a product."""
  features = np.tanh(images * weights + bias)
  flat = features.reshape(images.shape[0], -1)
  return flat.sum(axis=1) + 0.3 * flat[:, 0] * flat[:, -1] + 0.1 * (images.reshape(
      images.shape[0], -1).sum(axis=1)) ** 2


def _jax_discriminator(images, weights, bias):
  features = jnp.tanh(images * weights + bias)
  flat = features.reshape(images.shape[0], -1)
  return flat.sum(axis=1) + 0.3 * flat[:, 0] * flat[:, -1] + 0.1 * (images.reshape(
      images.shape[0], -1).sum(axis=1)) ** 2


def test_r1_matches_central_finite_differences():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(3, 4, 4, 2))
  weights, bias = rng.normal(size=(4, 4, 2)), rng.normal(size=(4, 4, 2))
  eps = 1e-5
  squared_norms = []
  for b in range(images.shape[0]):
    grad = np.zeros(images.shape[1:])
    for index in np.ndindex(*images.shape[1:]):
      plus, minus = images.copy(), images.copy()
      plus[(b,) + index] += eps
      minus[(b,) + index] -= eps
      grad[index] = (_numpy_discriminator(plus, weights, bias)[b]
                     - _numpy_discriminator(minus, weights, bias)[b]) / (2 * eps)
    squared_norms.append(np.sum(grad ** 2))
  expected = np.mean(squared_norms)

  d_fn = lambda x: _jax_discriminator(x, jnp.asarray(weights, jnp.float32),
                                      jnp.asarray(bias, jnp.float32))
  r1 = losses.r1_penalty(d_fn, jnp.asarray(images, jnp.float32))
  np.testing.assert_allclose(r1, expected, rtol=1e-4)
  # [B, 1] logits give the same penalty.
  r1_column = losses.r1_penalty(lambda x: d_fn(x)[:, None], jnp.asarray(images, jnp.float32))
  np.testing.assert_allclose(r1_column, r1, rtol=1e-6)


def test_r1_is_differentiable_wrt_d_params():
  images = jnp.ones((2, 3, 3, 1))
  penalty = lambda w: losses.r1_penalty(lambda x: jnp.sum(jnp.sin(w * x), axis=(1, 2, 3)),
                                        images)
  # R1 = mean_b sum_pixels (w cos(w))^2 = 9 (w cos w)^2; d/dw = 18 w cos w (cos w - w sin w).
  w = 0.7
  expected = 18 * w * np.cos(w) * (np.cos(w) - w * np.sin(w))
  np.testing.assert_allclose(jax.grad(penalty)(w), expected, rtol=1e-5)


def test_lecam_penalty_matches_numpy():
  anchor_real, anchor_fake = 0.8, -0.3
  expected = (np.mean(np.maximum(REAL - anchor_fake, 0) ** 2)
              + np.mean(np.maximum(anchor_real - FAKE, 0) ** 2))
  value = losses.lecam_penalty(jnp.asarray(REAL)[:, None], jnp.asarray(FAKE),
                               jnp.float32(anchor_real), jnp.float32(anchor_fake))
  np.testing.assert_allclose(value, expected, rtol=1e-6)
  # No gradient reaches the anchors.
  grad_anchor = jax.grad(lambda a: losses.lecam_penalty(jnp.asarray(REAL), jnp.asarray(FAKE),
                                                        a, a))(0.1)
  assert float(grad_anchor) == 0.0


def test_update_lecam_anchors_is_an_ema():
  anchor_real, anchor_fake = 0.0, 1.0
  for step in range(3):
    real, fake = REAL + step, FAKE - step
    expected_real = 0.9 * anchor_real + 0.1 * real.mean()
    expected_fake = 0.9 * anchor_fake + 0.1 * fake.mean()
    anchor_real, anchor_fake = losses.update_lecam_anchors(
        anchor_real, anchor_fake, jnp.asarray(real), jnp.asarray(fake)[:, None], 0.9)
    np.testing.assert_allclose([anchor_real, anchor_fake], [expected_real, expected_fake],
                               rtol=1e-5)
