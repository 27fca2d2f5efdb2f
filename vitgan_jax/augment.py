"""DiffAugment (Zhao et al., 2020): differentiable, per-example augmentations for GANs.

Images are NHWC floats in [-1, 1]. Every op is differentiable w.r.t. the images (G is
trained through D(T(G(z)))), draws its randomness per example, and is applied to each
example with probability p. Magnitudes follow DiffAugment's reference code, scaled by
`strength` (0 = identity); `strength` and `p` may be traced scalars (e.g. ADA-style
adaptive augmentation), `policy` is static.
"""

import jax
import jax.numpy as jnp

# Magnitudes at strength 1, as in DiffAugment's reference implementation.
BRIGHTNESS_DELTA = 0.5     # x + U(-0.5, 0.5)
SATURATION_DELTA = 1.0     # factor U(0, 2) about the per-pixel channel mean
CONTRAST_DELTA = 0.5       # factor U(0.5, 1.5) about the per-image mean
TRANSLATION_RATIO = 0.125  # integer shift of up to 1/8 of the image size, zero fill
CUTOUT_RATIO = 0.5         # a square of 1/2 the image size set to 0
# ViTGAN adds 'scaling' to DiffAugment without giving its range. We zoom about the image
# centre by a factor U(0.75, 1.25) (bilinear, zero fill): the strongest zoom-out leaves a
# zero border of 1/8 of the image on each side, the same as the largest translation, and
# the spread matches ADA's isotropic scaling (2^N(0, 0.2): 95% within [0.76, 1.32]).
SCALE_DELTA = 0.25


def _per_example(values):
  """[B] -> [B, 1, 1, 1], to broadcast a per-example draw over an NHWC batch."""
  return values[:, None, None, None]


def _symmetric_uniform(rng, batch_size):
  return jax.random.uniform(rng, (batch_size,), minval=-1.0, maxval=1.0)


def _brightness(images, rng, strength):
  delta = BRIGHTNESS_DELTA * strength * _symmetric_uniform(rng, images.shape[0])
  return images + _per_example(delta).astype(images.dtype)


def _saturation(images, rng, strength):
  # x + (f - 1) (x - mean) is exactly x at f = 1 (strength 0), unlike (x - mean) f + mean.
  factor_minus_one = SATURATION_DELTA * strength * _symmetric_uniform(rng, images.shape[0])
  mean = jnp.mean(images, axis=3, keepdims=True)
  return images + _per_example(factor_minus_one).astype(images.dtype) * (images - mean)


def _contrast(images, rng, strength):
  factor_minus_one = CONTRAST_DELTA * strength * _symmetric_uniform(rng, images.shape[0])
  mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
  return images + _per_example(factor_minus_one).astype(images.dtype) * (images - mean)


def _interpolation_matrix(coords, size):
  """[B, out, size] linear-interpolation weights at `coords` [B, out]; taps outside read 0."""
  lower = jnp.floor(coords)
  frac = (coords - lower)[..., None]
  source = jnp.arange(size, dtype=coords.dtype)
  lower = lower[..., None]
  return jnp.where(source == lower, 1.0 - frac, 0.0) + jnp.where(source == lower + 1, frac, 0.0)


def _sample_axis(images, coords, axis):
  """Linear interpolation of `images` along `axis` (1 = rows, 2 = columns).

  coords: [B, size] float source coordinates per example; taps outside the image read 0.
  A batched matmul with a two-tap interpolation matrix, not a gather: its gradient is another
  matmul rather than a scatter-add, which GPUs and TPUs run far better. HIGHEST precision keeps
  it exact (integer shifts move pixels bit for bit) where float32 matmuls default to bf16.
  """
  weights = _interpolation_matrix(coords, images.shape[axis]).astype(images.dtype)
  spec = 'boi,biwc->bowc' if axis == 1 else 'boj,bhjc->bhoc'
  return jnp.einsum(spec, weights, images, precision=jax.lax.Precision.HIGHEST)


def _translate(images, shift_y, shift_x):
  """out[b, y, x] = images[b, y - shift_y[b], x - shift_x[b]], zero outside the image."""
  _, height, width, _ = images.shape
  rows = jnp.arange(height)[None, :] - jnp.asarray(shift_y)[:, None]
  cols = jnp.arange(width)[None, :] - jnp.asarray(shift_x)[:, None]
  images = _sample_axis(images, rows.astype(jnp.float32), axis=1)
  return _sample_axis(images, cols.astype(jnp.float32), axis=2)


def _random_integer(rng, batch_size, max_abs):
  """Per-example integer uniform in [-max_abs, max_abs]; max_abs may be traced."""
  u = jax.random.uniform(rng, (batch_size,))
  return jnp.floor(u * (2 * max_abs + 1)) - max_abs


def _translation(images, rng, strength):
  batch_size, height, width, _ = images.shape
  rng_y, rng_x = jax.random.split(rng)
  max_y = jnp.floor(height * TRANSLATION_RATIO * strength + 0.5)
  max_x = jnp.floor(width * TRANSLATION_RATIO * strength + 0.5)
  return _translate(images, _random_integer(rng_y, batch_size, max_y),
                    _random_integer(rng_x, batch_size, max_x))


def _cutout_mask(height, width, center_y, center_x, size_y, size_x):
  """[B, H, W, 1] bool: True inside each example's (border-clipped) square."""
  top = jnp.asarray(center_y)[:, None] - jnp.asarray(size_y) // 2
  left = jnp.asarray(center_x)[:, None] - jnp.asarray(size_x) // 2
  rows = jnp.arange(height)[None, :]
  cols = jnp.arange(width)[None, :]
  in_rows = (rows >= top) & (rows < top + size_y)
  in_cols = (cols >= left) & (cols < left + size_x)
  return (in_rows[:, :, None] & in_cols[:, None, :])[..., None]


def _cutout_at(images, center_y, center_x, size_y, size_x):
  """Zeroes rows [cy - sy//2, cy - sy//2 + sy) x cols likewise, clipped to the image."""
  _, height, width, _ = images.shape
  mask = _cutout_mask(height, width, center_y, center_x, size_y, size_x)
  return jnp.where(mask, jnp.zeros((), images.dtype), images)


def _cutout(images, rng, strength):
  # As DiffAugment: centre uniform in [0, size + 1 - side % 2), so the square may be
  # clipped by the border; every pixel is covered with (nearly) equal probability.
  batch_size, height, width, _ = images.shape
  rng_y, rng_x = jax.random.split(rng)
  size_y = jnp.floor(height * CUTOUT_RATIO * strength + 0.5).astype(jnp.int32)
  size_x = jnp.floor(width * CUTOUT_RATIO * strength + 0.5).astype(jnp.int32)
  center_y = jax.random.randint(rng_y, (batch_size,), 0, height + 1 - size_y % 2)
  center_x = jax.random.randint(rng_x, (batch_size,), 0, width + 1 - size_x % 2)
  return _cutout_at(images, center_y, center_x, size_y, size_x)


def _scale_at(images, factors):
  """Zooms each example by factors[b] (> 1 enlarges) about the centre; bilinear, zero fill."""
  _, height, width, _ = images.shape
  inverse_minus_one = (1.0 / jnp.asarray(factors, jnp.float32) - 1.0)[:, None]

  def source(size):
    # i + (i - c)(1/s - 1) = c + (i - c)/s, written to be exactly i at s = 1.
    index = jnp.arange(size, dtype=jnp.float32)[None, :]
    return index + (index - (size - 1) / 2.0) * inverse_minus_one

  images = _sample_axis(images, source(height), axis=1)
  return _sample_axis(images, source(width), axis=2)


def _scale(images, rng, strength):
  factors = 1.0 + SCALE_DELTA * strength * _symmetric_uniform(rng, images.shape[0])
  return _scale_at(images, factors)


def _flip(images, rng, strength):
  """Horizontal flip of each example with probability 1/2 (x strength); exact, no resampling."""
  flip = jax.random.uniform(rng, (images.shape[0],)) < 0.5 * strength
  return jnp.where(_per_example(flip), images[:, :, ::-1], images)


_OPS = {
    'color': (_brightness, _saturation, _contrast),
    'flip': (_flip,),
    'translation': (_translation,),
    'cutout': (_cutout,),
    'scale': (_scale,),
}


def parse_policy(policy):
  """'translation,color' -> ['translation', 'color']; '' -> []. Raises on unknown names."""
  names = [name.strip() for name in policy.split(',') if name.strip()]
  for name in names:
    if name not in _OPS:
      raise ValueError(f'Unknown augmentation {name!r} in policy {policy!r}; '
                       f'known: {", ".join(_OPS)}.')
  return names


def augment(images, rng, policy, p, strength=1.0):
  """Applies the comma-separated DiffAugment `policy` to NHWC `images` in [-1, 1].

  Each named op is applied to each example independently with probability `p`
  ('color' = brightness, saturation and contrast together); ops run in policy order.
  """
  names = parse_policy(policy)
  if not names:
    return images
  batch_size = images.shape[0]
  for name, rng_op in zip(names, jax.random.split(rng, len(names))):
    rng_apply, rng_op = jax.random.split(rng_op)
    augmented = images
    for op, rng_fn in zip(_OPS[name], jax.random.split(rng_op, len(_OPS[name]))):
      augmented = op(augmented, rng_fn, strength)
    apply = jax.random.uniform(rng_apply, (batch_size,)) < p
    images = jnp.where(_per_example(apply), augmented, images)
  return images
