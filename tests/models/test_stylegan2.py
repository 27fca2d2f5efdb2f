"""StyleGAN2 G and D: modulated conv, minibatch stddev and FIR resampling against numpy,
hand-counted parameters, z-derived noise, mbstd groups."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitgan_jax.models import conv, stylegan2

SMALL = dict(channel_base=256, channel_max=32)  # 32 channels at 4 and 8 px, 16 at 16, 8 at 32
TINY = dict(channel_base=64, channel_max=8)


def random_variables(module, *inputs, seed=0):
  """Variables of `module` drawn from N(0, 1) by shape: skips compiling Flax's init.

  Every weight here is stored at unit scale (equalized LR), so this is close to the init.
  """
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def conv2d_same_numpy(x, w):
  """Direct 'SAME' convolution (cross-correlation) of one HWC image with a KKIO kernel."""
  k = w.shape[0]
  p = k // 2
  xp = np.pad(x, ((p, p), (p, p), (0, 0)))
  out = np.zeros(x.shape[:2] + (w.shape[-1],))
  for i in range(x.shape[0]):
    for j in range(x.shape[1]):
      out[i, j] = np.einsum('abi,abio->o', xp[i:i + k, j:j + k], w)
  return out


@pytest.mark.parametrize('demodulate,kernel_size', [(True, 3), (False, 1), (True, 1)])
def test_modulated_conv_equals_conv_with_per_sample_weights(demodulate, kernel_size):
  rng = np.random.RandomState(0)
  x = rng.normal(size=(3, 5, 6, 4)).astype(np.float32)
  style = rng.normal(size=(3, 7)).astype(np.float32)
  module = conv.ModulatedConv2D(5, kernel_size, demodulate=demodulate)
  variables = module.init(jax.random.PRNGKey(0), x, style)
  p = jax.tree.map(np.asarray, variables['params'])
  p['affine']['bias'] = rng.normal(size=4)  # a non-trivial modulation
  out = np.asarray(module.apply({'params': p}, x, style))

  s = style @ (p['affine']['kernel'] / math.sqrt(7)) + p['affine']['bias']     # (B, in)
  weight = p['kernel'] / math.sqrt(kernel_size * kernel_size * 4)              # equalized LR
  for n in range(3):
    w_n = weight * s[n][None, None, :, None]
    if demodulate:
      w_n = w_n / np.sqrt(np.sum(w_n ** 2, axis=(0, 1, 2)) + 1e-8)
    np.testing.assert_allclose(out[n], conv2d_same_numpy(x[n], w_n), rtol=2e-4, atol=2e-5)


def test_demodulation_gives_unit_variance_outputs():
  """With demodulation the output std per channel is ~1 for unit-variance iid inputs."""
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 16, 16, 64))
  style = jax.random.normal(jax.random.PRNGKey(1), (8, 16)) * 3
  module = conv.ModulatedConv2D(32, 3)
  variables = module.init(jax.random.PRNGKey(2), x, style)
  out = np.asarray(module.apply(variables, x, style))[:, 1:-1, 1:-1]  # away from zero padding
  np.testing.assert_allclose(out.std(), 1.0, rtol=0.05)


def test_minibatch_stddev_by_hand():
  rng = np.random.RandomState(0)
  x = rng.normal(size=(8, 3, 2, 6)).astype(np.float32)
  out = np.asarray(conv.minibatch_stddev(jnp.asarray(x), group_size=4, num_channels=2))
  assert out.shape == (8, 3, 2, 8)
  np.testing.assert_array_equal(out[..., :6], x)
  for n in range(8):
    group = x[(n // 4) * 4:(n // 4) * 4 + 4]          # 4 consecutive examples
    std = np.sqrt(((group - group.mean(0)) ** 2).mean(0) + 1e-8)
    for f in range(2):
      expected = std[..., 3 * f:3 * f + 3].mean()
      np.testing.assert_allclose(out[n, ..., 6 + f], expected, rtol=1e-5)


def test_minibatch_stddev_group_larger_than_batch_uses_the_whole_batch():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 2, 2, 3))
  np.testing.assert_allclose(conv.minibatch_stddev(x, 32), conv.minibatch_stddev(x, 4))
  with pytest.raises(ValueError, match='not divisible'):
    conv.minibatch_stddev(jnp.zeros((6, 2, 2, 3)), 4)


def _bilinear_up_1d(v):
  """Half-pixel bilinear 2x upsampling with zeros outside, the [1,3,3,1] upfirdn result."""
  padded = np.concatenate([[0.0], v, [0.0]])
  out = np.zeros(2 * len(v))
  for i in range(len(v)):
    out[2 * i] = (padded[i] + 3 * padded[i + 1]) / 4
    out[2 * i + 1] = (3 * padded[i + 1] + padded[i + 2]) / 4
  return out


def _down_1d(v):
  padded = np.concatenate([[0.0], v, [0.0]])
  return np.array([(padded[2 * i] + 3 * padded[2 * i + 1] + 3 * padded[2 * i + 2]
                    + padded[2 * i + 3]) / 8 for i in range(len(v) // 2)])


def test_fir_resampling_matches_separable_formulas():
  x = np.random.RandomState(0).normal(size=(1, 6, 8, 2)).astype(np.float32)
  up = np.asarray(conv.upsample_2x(jnp.asarray(x)))
  down = np.asarray(conv.downsample_2x(jnp.asarray(x)))
  for c in range(2):
    expected_up = np.stack([_bilinear_up_1d(r) for r in x[0, :, :, c]])          # along W
    expected_up = np.stack([_bilinear_up_1d(col) for col in expected_up.T]).T    # along H
    np.testing.assert_allclose(up[0, :, :, c], expected_up, rtol=1e-5, atol=1e-6)
    expected_down = np.stack([_down_1d(r) for r in x[0, :, :, c]])
    expected_down = np.stack([_down_1d(col) for col in expected_down.T]).T
    np.testing.assert_allclose(down[0, :, :, c], expected_down, rtol=1e-5, atol=1e-6)


def test_downsampling_conv_is_blur_then_strided_conv():
  x = np.random.RandomState(1).normal(size=(2, 8, 8, 3)).astype(np.float32)
  module = conv.EqualConv2D(4, 3, down=True, use_bias=False)
  variables = module.init(jax.random.PRNGKey(0), x)
  out = np.asarray(module.apply(variables, x))
  assert out.shape == (2, 4, 4, 4)
  w = np.asarray(variables['params']['kernel']) / math.sqrt(27)
  f = conv.fir_kernel()
  for n in range(2):
    xp = np.pad(x[n], ((2, 2), (2, 2), (0, 0)))                     # upfirdn2d padding for k=3
    blurred = np.stack([[np.einsum('ab,abc->c', f, xp[i:i + 4, j:j + 4]) for j in range(9)]
                        for i in range(9)])
    expected = np.stack([[np.einsum('abi,abio->o', blurred[2 * i:2 * i + 3, 2 * j:2 * j + 3], w)
                          for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(out[n], expected, rtol=1e-4, atol=1e-5)


def expected_generator_params(size, latent, w_dim, mapping, channels=3):
  ch = lambda r: stylegan2.channels_at(r, **SMALL)  # noqa: E731
  total = latent * w_dim + w_dim + (mapping - 1) * (w_dim * w_dim + w_dim)
  # affine, kernel, noise strength, bias
  layer = lambda i, o: (w_dim * i + i) + 9 * i * o + 1 + o  # noqa: E731
  to_rgb = lambda i: (w_dim * i + i) + i * channels + channels  # noqa: E731
  total += 16 * ch(4) + layer(ch(4), ch(4)) + to_rgb(ch(4))
  r = 8
  while r <= size:
    total += layer(ch(r // 2), ch(r)) + layer(ch(r), ch(r)) + to_rgb(ch(r))
    r *= 2
  return total


def expected_discriminator_params(size, architecture, channels=3):
  ch = lambda r: stylegan2.channels_at(r, **SMALL)  # noqa: E731
  total = channels * ch(size) + ch(size)
  r = size
  while r > 4:
    total += 9 * ch(r) * ch(r) + ch(r) + 9 * ch(r) * ch(r // 2) + ch(r // 2)
    if architecture == 'resnet':
      total += ch(r) * ch(r // 2)
    r //= 2
  c = ch(4)
  return total + 9 * (c + 1) * c + c + 16 * c * c + c + c + 1


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('size', [32, 64])
def test_generator_and_discriminator_shapes_and_parameter_counts(size):
  """Shapes only (jax.eval_shape): parameter counts derived by hand from the architecture."""
  z = jax.ShapeDtypeStruct((4, 16), jnp.float32)
  generator = stylegan2.StyleGAN2Generator(size, latent_dim=16, w_dim=24, mapping_layers=2,
                                           **SMALL)
  images, g_vars = jax.eval_shape(generator.init_with_output, jax.random.PRNGKey(1), z)
  assert images.shape == (4, size, size, 3)
  assert _count(g_vars) == expected_generator_params(size, 16, 24, 2)
  for architecture in ('resnet', 'orig'):
    discriminator = stylegan2.StyleGAN2Discriminator(size, architecture=architecture, **SMALL)
    logits, d_vars = jax.eval_shape(discriminator.init_with_output, jax.random.PRNGKey(2),
                                    images)
    assert logits.shape == (4,)
    assert _count(d_vars) == expected_discriminator_params(size, architecture)


def test_noise_is_a_function_of_each_latent():
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 16))
  noise = np.asarray(stylegan2.noise_from_latents(z, 5000))
  np.testing.assert_array_equal(noise, stylegan2.noise_from_latents(z, 5000))
  np.testing.assert_array_equal(noise[::-1], stylegan2.noise_from_latents(z[::-1], 5000))
  assert not np.allclose(noise[0], noise[1])
  np.testing.assert_allclose([noise.mean(), noise.std()], [0, 1], atol=0.03)


def test_generator_noise_inputs():
  tiny = dict(latent_dim=8, w_dim=8, mapping_layers=1, **TINY)
  generator = stylegan2.StyleGAN2Generator(32, **tiny)
  z = jax.random.normal(jax.random.PRNGKey(0), (3, 8))
  params = random_variables(generator, z)['params']  # noise strengths are non-zero
  apply = jax.jit(generator.apply)
  a = np.asarray(apply({'params': params}, z))
  np.testing.assert_array_equal(a, apply({'params': params}, z))     # deterministic in z
  np.testing.assert_allclose(apply({'params': params}, z[::-1]), a[::-1], atol=1e-5)
  const = stylegan2.StyleGAN2Generator(32, noise_mode='const', **tiny)
  assert not np.allclose(a, jax.jit(const.apply)({'params': params}, z), atol=1e-3)
  none = stylegan2.StyleGAN2Generator(32, noise_mode='none', **tiny)
  assert not any('noise_strength' in jax.tree_util.keystr(path) for path, _ in
                 jax.tree_util.tree_flatten_with_path(jax.eval_shape(
                     none.init, jax.random.PRNGKey(1), z))[0])


def test_minibatch_groups_in_the_discriminator_are_consecutive_examples():
  discriminator = stylegan2.StyleGAN2Discriminator(32, mbstd_group_size=2, **TINY)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  variables = random_variables(discriminator, x)
  apply = jax.jit(discriminator.apply)
  base = np.asarray(apply(variables, x))
  changed = np.asarray(apply(variables, x.at[1].multiply(3.0)))
  assert abs(changed[0] - base[0]) > 1e-6                        # same group {0, 1}
  np.testing.assert_allclose(changed[2:], base[2:], rtol=1e-6)   # other group {2, 3}


def test_bad_fields_are_refused():
  with pytest.raises(ValueError, match='image_size'):
    stylegan2.StyleGAN2Generator(48).validate()
  with pytest.raises(ValueError, match='noise_mode'):
    stylegan2.StyleGAN2Generator(32, noise_mode='per_layer').validate()
  with pytest.raises(ValueError, match='architecture'):
    stylegan2.StyleGAN2Discriminator(32, architecture='skip').validate()
