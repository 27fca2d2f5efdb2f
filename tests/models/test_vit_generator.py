"""ViTGAN generator: variants, output range, hand-derived parameter counts, INR behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_lib
from configs import vitgan_celeba64
from vitgan_jax import models
from vitgan_jax.models import vit_generator


def expected_generator_params(g, image_size, channels=3):
  """Parameter count derived by hand from the architecture (weights + biases)."""
  w, m, f, hid = g.width, g.mlp_dim, g.fourier_dim, g.inr_hidden
  dense = lambda i, o: i * o + o  # noqa: E731
  total = dense(g.latent_dim, w) + (g.mapping_layers - 1) * dense(w, w)   # mapping
  total += dense(2, w)                                                    # Fourier pos. emb.
  norm = 2 * dense(w, w) if g.variant == 'C' else 2 * w                   # SLN (gamma, beta) | LN
  attention = 4 * dense(w, w)
  mlp = dense(w, m) + dense(m, w)
  total += g.depth * (2 * norm + attention + mlp) + norm
  p2 = g.patch_size ** 2
  if g.output == 'implicit':
    total += dense(2, f)                                   # E_fou
    total += dense(w, f) + dense(f, hid)                   # modulated layer 1 (affine + weight)
    total += dense(w, hid) + dense(hid, channels)          # modulated to-pixels
  else:
    total += dense(w, p2 * channels)
  return total


def tiny(config):
  g = config.model.generator
  g.width, g.mlp_dim, g.num_heads, g.latent_dim = 32, 48, 2, 16
  g.fourier_dim = g.inr_hidden = 24
  g.mapping_layers = 2
  return config


VARIANT_ROWS = [('A', 'linear'), ('A', 'implicit'), ('B', 'linear'), ('B', 'implicit'),
                ('C', 'linear'), ('C', 'implicit')]


@pytest.mark.parametrize('get_config', [default_lib.get_config, vitgan_celeba64.get_config],
                         ids=['32px', '64px'])
@pytest.mark.parametrize('variant,output', VARIANT_ROWS)
def test_param_count_full_size(get_config, variant, output):
  config = get_config()
  config.model.generator.variant = variant
  config.model.generator.output = output
  generator = models.build_generator(config.model)
  shapes = jax.eval_shape(generator.init, jax.random.PRNGKey(0), jnp.zeros((1, 384)))
  count = sum(x.size for x in jax.tree.leaves(shapes['params']))
  expected = expected_generator_params(config.model.generator, config.model.image_size)
  assert abs(count - expected) <= 0.05 * expected, (count, expected)


@pytest.mark.parametrize('image_size,patch', [(32, 4), (64, 8)])
@pytest.mark.parametrize('variant,output', VARIANT_ROWS)
def test_forward_jit_and_gradients(image_size, patch, variant, output):
  config = tiny(default_lib.get_config())
  config.model.image_size = image_size
  g = config.model.generator
  g.variant, g.output, g.patch_size = variant, output, patch
  g.output_activation = 'tanh'  # the default is now linear; tanh bounds the range checked below
  generator = models.build_generator(config.model)
  z = jax.random.normal(jax.random.PRNGKey(1), (2, g.latent_dim))
  variables = generator.init(jax.random.PRNGKey(0), z)
  images = jax.jit(generator.apply)(variables, z)
  assert images.shape == (2, image_size, image_size, 3) and images.dtype == jnp.float32
  assert float(jnp.abs(images).max()) <= 1.0
  assert float(jnp.std(images[0] - images[1])) > 1e-3  # different z, different image
  grads = jax.grad(lambda p: jnp.mean(generator.apply({'params': p}, z) ** 2))(
      variables['params'])
  flat = jnp.concatenate([x.ravel() for x in jax.tree.leaves(grads)])
  assert bool(jnp.all(jnp.isfinite(flat))) and float(jnp.abs(flat).max()) > 0


def test_bfloat16_compute_keeps_float32_params_and_output():
  config = tiny(default_lib.get_config())
  generator = models.build_generator(config.model, dtype='bfloat16')
  z = jnp.ones((2, 16))
  variables = generator.init(jax.random.PRNGKey(0), z)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  images = generator.apply(variables, z)
  assert images.dtype == jnp.float32
  reference = models.build_generator(config.model).apply(variables, z)
  np.testing.assert_allclose(images, reference, atol=0.1)


def _decoder(patch_size=16):
  decoder = vit_generator.ImplicitPatchDecoder(patch_size, 3, fourier_dim=32, hidden=32)
  tokens = jax.random.normal(jax.random.PRNGKey(0), (1, 2, 24))
  variables = decoder.init(jax.random.PRNGKey(1), tokens)
  return decoder.apply(variables, tokens).reshape(2, patch_size, patch_size, 3)


def test_implicit_output_is_smooth_within_a_patch():
  patch = np.asarray(_decoder()[0])
  neighbour = np.abs(np.diff(patch, axis=1)).mean() + np.abs(np.diff(patch, axis=0)).mean()
  flat = patch.reshape(-1, 3)
  random_pairs = np.abs(flat - flat[np.random.RandomState(0).permutation(len(flat))]).mean()
  assert neighbour / 2 < 0.5 * random_pairs, (neighbour, random_pairs)


def test_implicit_output_depends_on_the_token():
  patches = np.asarray(_decoder())
  assert np.abs(patches[0] - patches[1]).mean() > 1e-2


def test_stitch_patches_is_row_major():
  patches = np.arange(2 * 2 * 2 * 2).reshape(1, 4, 4, 1).astype(np.float32)  # grid 2, P 2, C 1
  image = np.asarray(vit_generator.stitch_patches(patches.reshape(1, 4, 4), 2, 2, 1))[0, :, :, 0]
  np.testing.assert_array_equal(image[:2, :2], [[0, 1], [2, 3]])      # token 0, top-left
  np.testing.assert_array_equal(image[:2, 2:], [[4, 5], [6, 7]])      # token 1, top-right
  np.testing.assert_array_equal(image[2:, :2], [[8, 9], [10, 11]])    # token 2, bottom-left
