"""ViTGAN discriminator: parameter counts, ablation switches, input dependence, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default as default_lib
from configs import vitgan_celeba64
from vitgan_jax import models


def expected_discriminator_params(d, image_size, channels=3):
  """Parameter count derived by hand (weights + biases + CLS + position embedding)."""
  w = d.width
  dense = lambda i, o: i * o + o  # noqa: E731
  tokens = (image_size // d.patch_size) ** 2
  total = dense((d.patch_size + 2 * d.overlap) ** 2 * channels, w) + w + (tokens + 1) * w
  # L2: one tied q/k weight without bias, then value and output projections.
  attention = (w * w + 2 * dense(w, w)) if d.attention == 'l2' else 4 * dense(w, w)
  block = 2 * 2 * w + attention + dense(w, d.mlp_dim) + dense(d.mlp_dim, w)
  return total + d.depth * block + 2 * w + dense(w, 1)


ABLATIONS = [('l2', 'isn', 2), ('dot', 'isn', 2), ('l2', 'sn', 2), ('dot', 'sn', 0),
             ('l2', 'none', 0)]


def test_paper_cifar_discriminator_size():
  """6,605,569 parameters: the independent implementation in PAPER.md Sec. 6 reports the same."""
  config = default_lib.get_config()
  d = models.build_discriminator(config.model)
  shapes = jax.eval_shape(d.init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
  assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == 6_605_569


@pytest.mark.parametrize('get_config', [default_lib.get_config, vitgan_celeba64.get_config],
                         ids=['32px', '64px'])
@pytest.mark.parametrize('attention,sn,overlap', ABLATIONS)
def test_param_count_full_size(get_config, attention, sn, overlap):
  config = get_config()
  d = config.model.discriminator
  d.attention, d.spectral_norm = attention, sn
  d.overlap = overlap * d.patch_size // 4
  disc = models.build_discriminator(config.model)
  size = config.model.image_size
  shapes = jax.eval_shape(disc.init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)))
  count = sum(x.size for x in jax.tree.leaves(shapes['params']))
  expected = expected_discriminator_params(d, size)
  assert abs(count - expected) <= 0.05 * expected, (count, expected)


def tiny(config):
  d = config.model.discriminator
  d.width, d.mlp_dim, d.num_heads, d.depth = 32, 48, 2, 2
  return config


@pytest.mark.parametrize('image_size,patch', [(32, 4), (64, 8)])
@pytest.mark.parametrize('attention,sn,overlap', ABLATIONS)
def test_forward_jit_gradients_and_spectral_state(image_size, patch, attention, sn, overlap):
  config = tiny(default_lib.get_config())
  config.model.image_size = image_size
  d = config.model.discriminator
  d.attention, d.spectral_norm, d.patch_size, d.overlap = attention, sn, patch, overlap
  disc = models.build_discriminator(config.model)
  images = jax.random.uniform(jax.random.PRNGKey(1), (3, image_size, image_size, 3), minval=-1)
  variables = disc.init(jax.random.PRNGKey(0), images)
  assert ('spectral' in variables) == (sn != 'none')
  logits, updates = jax.jit(lambda v, x: disc.apply(v, x, train=True, mutable=['spectral']))(
      variables, images)
  assert logits.shape == (3,) and logits.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(logits)))
  # D's logit must depend on the image (PAPER.md Sec. 6: tied q/k can make it constant).
  assert float(jnp.std(logits)) > 1e-4
  grads = jax.grad(lambda p, x: jnp.sum(disc.apply({**variables, 'params': p}, x)),
                   argnums=(0, 1))(variables['params'], images)
  flat = jnp.concatenate([x.ravel() for x in jax.tree.leaves(grads)])
  assert bool(jnp.all(jnp.isfinite(flat)))
  assert float(jnp.abs(grads[1]).max()) > 0  # gradient reaches the pixels


def test_logit_changes_when_one_patch_changes():
  config = default_lib.get_config()  # full-size paper D, L2 attention + ISN
  disc = models.build_discriminator(config.model)
  images = jax.random.uniform(jax.random.PRNGKey(1), (1, 32, 32, 3), minval=-1)
  variables = jax.jit(disc.init)(jax.random.PRNGKey(0), images)
  changed = images.at[:, 12:16, 12:16, :].set(0.0)
  a, b = jax.jit(disc.apply)(variables, jnp.concatenate([images, changed]))
  assert abs(float(a - b)) > 1e-5


def test_token_minibatch_std_against_a_plain_loop():
  """Per token: std over each group of 4 consecutive examples, averaged over features."""
  from vitgan_jax.models.vit_discriminator import token_minibatch_std
  h = np.random.RandomState(0).randn(8, 5, 6).astype(np.float32)
  got = np.asarray(token_minibatch_std(jnp.asarray(h), 4))
  want = np.zeros((8, 5, 1), np.float32)
  for i in range(8):
    group = h[(i // 4) * 4:(i // 4) * 4 + 4]
    for t in range(5):
      want[i, t, 0] = np.mean([np.sqrt(np.var(group[:, t, f]) + 1e-8) for f in range(6)])
  np.testing.assert_allclose(got, want, rtol=1e-5)
  with pytest.raises(ValueError, match='minibatch_std_group'):
    token_minibatch_std(jnp.zeros((6, 5, 6)), 4)


def test_minibatch_std_sees_a_collapsed_group_and_keeps_groups_apart():
  """With minibatch_std_group=4, a group of identical images scores alike and the other group
  is untouched; without it every image's logit is its own."""
  config = default_lib.get_config()
  d = config.model.discriminator
  d.depth, d.width, d.mlp_dim, d.num_heads, d.minibatch_std_group = 2, 32, 64, 2, 4
  disc = models.build_discriminator(config.model)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 32, 32, 3))
  variables = disc.init(jax.random.PRNGKey(1), x)
  assert variables['params']['minibatch_std']['kernel'].shape == (1, 32)
  collapsed = x.at[4:].set(x[4])
  a, b = np.asarray(disc.apply(variables, x)), np.asarray(disc.apply(variables, collapsed))
  np.testing.assert_allclose(a[:4], b[:4], rtol=1e-5)        # first group unchanged
  np.testing.assert_allclose(b[4:], b[4], rtol=1e-5)         # identical copies, identical logits
  assert abs(float(a[4] - b[4])) > 1e-4                      # x[4] scored differently in a copy group
  d.minibatch_std_group = 0
  plain = models.build_discriminator(config.model)
  v0 = plain.init(jax.random.PRNGKey(1), x)
  assert 'minibatch_std' not in v0['params']
  np.testing.assert_allclose(np.asarray(plain.apply(v0, collapsed))[4],
                             np.asarray(plain.apply(v0, x[4:5]))[0], rtol=1e-4)


def test_l2_forms_give_one_discriminator():
  """l2_form='augmented' (bias-free, fused-kernel form) is the 'bias' D: same params, logits,
  and gradients, in float32 and (to bfloat16 rounding) in bfloat16."""
  config = default_lib.get_config()
  config.model.discriminator.update(width=48, mlp_dim=96, num_heads=3, depth=2,
                                    qk_init_scale=1.0, learned_temperature=True)
  images = jax.random.uniform(jax.random.PRNGKey(1), (4, 32, 32, 3), minval=-1)
  for dtype, tol in (('float32', 2e-5), ('bfloat16', 5e-2)):
    outs = {}
    for form in ('bias', 'augmented'):
      config.model.discriminator.l2_form = form
      disc = models.build_discriminator(config.model, dtype)
      variables = disc.init(jax.random.PRNGKey(0), images)
      loss = lambda v, x: jnp.sum(disc.apply(v, x) ** 2)  # noqa: E731
      outs[form] = (disc.apply(variables, images), jax.grad(loss)(variables, images))
    np.testing.assert_allclose(outs['augmented'][0], outs['bias'][0], rtol=tol, atol=tol)
    for a, b in zip(jax.tree.leaves(outs['augmented'][1]), jax.tree.leaves(outs['bias'][1])):
      np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.abs(b).max() + 1e-6))
  with pytest.raises(ValueError, match='l2_form'):
    config.model.discriminator.l2_form = 'fused'
    models.build_discriminator(config.model).init(jax.random.PRNGKey(0), images)
