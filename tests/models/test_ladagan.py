"""LadaGAN: linear additive attention against a numpy loop and its linear cost in XLA FLOPs,
the Ladaformer's residuals, the generator's stages and the discriminator's normalizations."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitgan_jax.models import ladagan, layers


def additive_attention_loop(x, p, num_heads):
  """LadaGAN's attention for one example (N, D), token by token, with plain Python loops."""
  n, features = x.shape
  d = features // num_heads
  dense = lambda t, name: t @ p[name]['kernel'] + p[name]['bias']  # noqa: E731
  q, k, v = dense(x, 'query'), dense(x, 'key'), dense(x, 'value')
  logits = dense(q, 'query_attention') / math.sqrt(d)             # (N, heads)
  out = np.zeros((n, features))
  for h in range(num_heads):
    s = slice(h * d, (h + 1) * d)
    weights = np.exp(logits[:, h] - logits[:, h].max())
    weights /= weights.sum()
    global_q = np.zeros(d)
    for i in range(n):
      global_q += weights[i] * q[i, s]
    for i in range(n):
      out[i, s] = global_q * k[i, s] * v[i, s]
  return dense(out, 'out'), logits


def test_linear_additive_attention_matches_loop():
  heads = 3
  x = np.random.RandomState(0).normal(size=(2, 10, 12)).astype(np.float32)
  module = ladagan.LinearAdditiveAttention(heads)
  variables = module.init(jax.random.PRNGKey(0), x)
  p = jax.tree.map(lambda t: np.asarray(t, np.float64), variables['params'])
  for name in p:  # non-zero biases so each one is exercised
    p[name]['bias'] = np.random.RandomState(1).normal(size=p[name]['bias'].shape) * 0.3
  out, weights = module.apply({'params': p}, x, return_weights=True)
  for b in range(2):
    expected, logits = additive_attention_loop(x[b].astype(np.float64), p, heads)
    np.testing.assert_allclose(out[b], expected, rtol=1e-4, atol=1e-5)
    softmax = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    np.testing.assert_allclose(weights[b], softmax.T, rtol=1e-4, atol=1e-6)


def _flops(module, seq_len, features=32):
  x = jax.ShapeDtypeStruct((1, seq_len, features), jnp.float32)
  variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)  # shapes are enough
  cost = jax.jit(module.apply).lower(variables, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost['flops']


def test_additive_attention_cost_grows_linearly_with_sequence_length():
  lada = ladagan.LinearAdditiveAttention(4)
  ratio = _flops(lada, 1024) / _flops(lada, 256)
  assert 3.8 < ratio < 4.2, ratio                 # 4x the tokens, 4x the work
  dot = layers.Attention(4, 'dot')
  assert _flops(dot, 1024) / _flops(dot, 256) > 8  # the T x T matrix: quadratic


def test_ladaformer_residuals():
  """h' = h + attn(norm h); out = h' + MLP(norm h') or, as LadaGAN's G block, MLP(norm h')."""
  h = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 8))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 6))
  with_res = ladagan.Ladaformer(2, 12, mlp_residual=True)
  without = ladagan.Ladaformer(2, 12, mlp_residual=False)
  shapes = jax.eval_shape(with_res.init, jax.random.PRNGKey(2), h, z)
  rng = np.random.RandomState(0)  # random weights by shape: skips compiling Flax's init
  variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype) * 0.3, shapes)
  p = variables['params']
  sln = lambda name, x: layers.SelfModulatedLayerNorm(1e-6).apply(  # noqa: E731
      {'params': p[name]}, x, z)
  h1 = h + ladagan.LinearAdditiveAttention(2).apply({'params': p['attention']}, sln('norm1', h))
  mlp = layers.MlpBlock(12, equalized=False).apply({'params': p['mlp']}, sln('norm2', h1))
  np.testing.assert_allclose(jax.jit(with_res.apply)(variables, h, z), h1 + mlp, rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(jax.jit(without.apply)(variables, h, z), mlp, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('size', [32, 64])
def test_generator_stages(size):
  """Shapes only (jax.eval_shape)."""
  generator = ladagan.LadaGANGenerator(size, latent_dim=16, widths=(64, 32, 16),
                                       num_heads=(2, 2, 2), mlp_dims=(24, 24, 24))
  z = jax.ShapeDtypeStruct((2, 16), jnp.float32)
  images, variables = jax.eval_shape(generator.init_with_output, jax.random.PRNGKey(1), z)
  p = variables['params']
  assert p['input']['kernel'].shape == (16, 8 * 8 * 64)
  assert [p[f'pos_embed{s}'].shape for s in range(3)] == [(1, 64, 64), (1, 256, 32), (1, 1024, 16)]
  # Pixel shuffle divides the width by 4, then a 3x3 conv sets the next stage's width.
  assert p['conv1']['kernel'].shape == (3, 3, 64 // 4, 32)
  assert p['conv2']['kernel'].shape == (3, 3, 32 // 4, 16)
  channels_at_output = 16 // (size // 32) ** 2
  assert p['to_rgb']['kernel'].shape == (3, 3, channels_at_output, 3)
  assert images.shape == (2, size, size, 3)


def test_feature_norms():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 5, 5, 3)) * 3 + 2

  class Norm(nn.Module):
    kind: str

    @nn.compact
    def __call__(self, x):
      return ladagan.feature_norm(self, x, self.kind, 'n')

  for kind, axes in (('batch', (0, 1, 2)), ('layer', (1, 2, 3))):
    module = Norm(kind)
    out = np.asarray(module.apply(module.init(jax.random.PRNGKey(0), x), x))
    np.testing.assert_allclose(out.mean(axes), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axes), 1, rtol=1e-3)


@pytest.mark.parametrize('norm,independent', [('layer', True), ('none', True), ('batch', False)])
def test_discriminator_examples_interact_only_through_batch_norm(norm, independent):
  discriminator = ladagan.LadaGANDiscriminator(32, enc_widths=(4, 8), out_widths=(8, 8),
                                               num_heads=2, mlp_dim=8, norm=norm)
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 32, 32, 3), minval=-1)
  shapes = jax.eval_shape(discriminator.init, jax.random.PRNGKey(1), images)
  assert shapes['params']['pos_embed'].shape == (1, 16 * 16, 8)  # 16x16 tokens at 32 px
  rng = np.random.RandomState(0)  # random weights by shape: skips compiling Flax's init
  variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype) * 0.3, shapes)
  apply = jax.jit(discriminator.apply)
  logits = apply(variables, images)
  assert logits.shape == (3,)
  changed = apply(variables, images.at[0].set(0.0))
  assert abs(float(changed[0] - logits[0])) > 1e-6
  assert np.allclose(changed[1:], logits[1:], rtol=1e-6) == independent
