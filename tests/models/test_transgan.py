"""TransGAN: pixel shuffle against explicit indexing, locality masks, grid attention against a
numpy per-cell softmax, generator stages and discriminator patches."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitgan_jax.models import conv, transgan


def test_pixel_shuffle_matches_explicit_indexing():
  r, c_out = 2, 3
  x = np.arange(2 * 3 * 4 * r * r * c_out, dtype=np.float32).reshape(2, 3, 4, r * r * c_out)
  out = np.asarray(conv.pixel_shuffle(jnp.asarray(x), r))
  assert out.shape == (2, 6, 8, c_out)
  for b in range(2):
    for h in range(3):
      for w in range(4):
        for i in range(r):
          for j in range(r):
            for c in range(c_out):
              assert out[b, h * r + i, w * r + j, c] == x[b, h, w, (i * r + j) * c_out + c]
  np.testing.assert_array_equal(conv.pixel_unshuffle(jnp.asarray(out), r), x)


def test_pixel_shuffle_is_tensorflows_depth_to_space():
  tf = pytest.importorskip('tensorflow')
  x = np.random.RandomState(0).normal(size=(2, 4, 4, 36)).astype(np.float32)
  np.testing.assert_array_equal(conv.pixel_shuffle(jnp.asarray(x), 3),
                                tf.nn.depth_to_space(x, 3).numpy())


@pytest.mark.parametrize('window', [1, 3, 5])
def test_locality_mask_has_the_stated_window(window):
  height, width = 8, 7
  mask = transgan.locality_mask(height, width, window)
  assert mask.shape == (56, 56) and mask.dtype == bool
  np.testing.assert_array_equal(mask, mask.T)
  assert mask.diagonal().all()
  grid = mask.reshape(height, width, height, width)
  assert grid[4, 3].sum() == window * window                        # interior query
  assert grid[0, 0].sum() == ((window + 1) // 2) ** 2               # corner: clipped square
  ys, xs = np.nonzero(grid[4, 3])
  assert ys.max() - ys.min() == xs.max() - xs.min() == window - 1


def test_locality_mask_off_and_invalid():
  assert transgan.locality_mask(4, 4, 0).all()
  assert transgan.locality_mask(4, 4, 7).all()  # a window covering the grid
  with pytest.raises(ValueError, match='odd'):
    transgan.locality_mask(4, 4, 4)


def _attention_numpy(x, p, num_heads, mask=None):
  """Multi-head softmax attention of one token set with GridAttention's parameters."""
  d = x.shape[-1] // num_heads
  q, k, v = (x @ p[n]['kernel'] for n in ('query', 'key', 'value'))
  out = np.zeros_like(x)
  for h in range(num_heads):
    s = slice(h * d, (h + 1) * d)
    logits = q[:, s] @ k[:, s].T / math.sqrt(d)
    if mask is not None:
      logits = np.where(mask, logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    out[:, s] = (weights / weights.sum(-1, keepdims=True)) @ v[:, s]
  return out @ p['out']['kernel'] + p['out']['bias']


@pytest.mark.parametrize('grid_size,window', [(0, 0), (4, 0), (0, 3), (4, 3)])
def test_grid_attention_matches_per_cell_softmax(grid_size, window):
  height, width, features, heads = 8, 8, 8, 2
  x = np.random.RandomState(0).normal(size=(2, height * width, features)).astype(np.float32)
  module = transgan.GridAttention(heads, grid_size, window)
  variables = module.init(jax.random.PRNGKey(0), x, height, width)
  out = np.asarray(module.apply(variables, x, height, width))
  p = jax.tree.map(np.asarray, variables['params'])
  cell = grid_size or height
  mask = transgan.locality_mask(cell, cell, window) if window else None
  tokens = x.reshape(2, height, width, features)
  for b in range(2):
    for cy in range(0, height, cell):
      for cx in range(0, width, cell):
        region = tokens[b, cy:cy + cell, cx:cx + cell].reshape(-1, features)
        expected = _attention_numpy(region, p, heads, mask).reshape(cell, cell, features)
        got = out[b].reshape(height, width, features)[cy:cy + cell, cx:cx + cell]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def tiny_generator(**kw):
  fields = dict(latent_dim=16, width=64, depths=(1, 2, 1), num_heads=2)
  fields.update(kw)
  return transgan.TransGANGenerator(32, **fields)


def test_generator_stages_shrink_width_and_grow_the_grid():
  """Shapes only (jax.eval_shape)."""
  generator = tiny_generator(grid_sizes=(0, 8, 16), locality_windows=(3, 0, 5))
  z = jax.ShapeDtypeStruct((2, 16), jnp.float32)
  images, variables = jax.eval_shape(generator.init_with_output, jax.random.PRNGKey(1), z)
  params = variables['params']
  assert params['input']['kernel'].shape == (16, 8 * 8 * 64)  # 8x8 start grid for 32 px
  assert params['pos_embed0'].shape == (1, 64, 64)
  assert params['pos_embed1'].shape == (1, 256, 16)
  assert params['pos_embed2'].shape == (1, 1024, 4)
  assert sorted(k for k in params if 'block' in k) == [
      'stage0_block0', 'stage1_block0', 'stage1_block1', 'stage2_block0']
  assert params['to_rgb']['kernel'].shape == (4, 3)
  assert images.shape == (2, 32, 32, 3)


def test_generator_bad_fields_are_refused():
  with pytest.raises(ValueError, match='grid_sizes'):
    tiny_generator(grid_sizes=(0, 0)).validate()
  with pytest.raises(ValueError, match='width'):
    tiny_generator(width=40).validate()
  with pytest.raises(ValueError, match='odd'):
    tiny_generator(locality_windows=(0, 2, 0)).validate()


@pytest.mark.parametrize('patch_size', [4, 8])
def test_discriminator_tokens_are_patches_plus_cls(patch_size):
  discriminator = transgan.TransGANDiscriminator(32, patch_size=patch_size, width=16, depth=1,
                                                 num_heads=2)
  images = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
  logits, variables = jax.eval_shape(discriminator.init_with_output, jax.random.PRNGKey(1),
                                     images)
  grid = 32 // patch_size
  assert variables['params']['pos_embed'].shape == (1, grid * grid + 1, 16)
  kernel = variables['params']['patch_embed']['kernel']
  assert kernel.shape == (patch_size, patch_size, 3, 16)  # one patch of P*P*3 pixels per token
  assert logits.shape == (3,)


def test_discriminator_scores_each_image_alone():
  discriminator = transgan.TransGANDiscriminator(32, patch_size=8, width=16, depth=1,
                                                 num_heads=2)
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 32, 32, 3), minval=-1)
  shapes = jax.eval_shape(discriminator.init, jax.random.PRNGKey(1), images)
  rng = np.random.RandomState(0)  # random weights by shape: skips compiling Flax's init
  variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype) * 0.2, shapes)
  apply = jax.jit(discriminator.apply)
  logits = apply(variables, images)
  changed = apply(variables, images.at[0].set(0.0))
  assert abs(float(changed[0] - logits[0])) > 1e-6
  np.testing.assert_allclose(changed[1:], logits[1:], rtol=1e-6)


def test_super_resolution_input_replaces_the_z_tokens():
  generator = tiny_generator(super_resolution=True)
  z = jax.random.normal(jax.random.PRNGKey(0), (2, 16))
  variables = generator.init(jax.random.PRNGKey(1), z)
  assert variables['params']['low_res_embed']['kernel'].shape == (3, 64)
  low_res = jax.random.uniform(jax.random.PRNGKey(2), (2, 8, 8, 3), minval=-1)
  out = generator.apply(variables, None, low_res=low_res)
  assert out.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(out[1], generator.apply(variables, None, low_res=low_res[1:])[0])
  assert not np.allclose(out[0], out[1])  # each output follows its own low-res input
  with pytest.raises(ValueError, match='low_res must be'):
    generator.apply(variables, None, low_res=low_res[:, :4, :4])
  plain = tiny_generator()
  with pytest.raises(ValueError, match='super_resolution=True'):
    plain.apply(plain.init(jax.random.PRNGKey(1), z), None, low_res=low_res)
