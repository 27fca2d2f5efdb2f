"""Math of the shared layers against independent numpy computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vitgan_jax.models import layers


def _effective_kernel(variables, module, fan_in, train=False):
  """The kernel a bias-free dense actually multiplies by, read off by applying it to I."""
  out, new_vars = module.apply(variables, jnp.eye(fan_in), train, mutable=['spectral'])
  return np.asarray(out), new_vars


@pytest.mark.parametrize('mode', ['sn', 'isn'])
def test_spectral_norm_matches_svd(mode):
  fan_in, fan_out = 12, 20
  module = layers.EqualDense(fan_out, use_bias=False, equalized=False, spectral_norm=mode)
  variables = module.init(jax.random.PRNGKey(0), jnp.ones((1, fan_in)))
  w_init = np.asarray(variables['params']['kernel'])
  sigma_init = np.linalg.svd(w_init, compute_uv=False)[0]
  # Train-time drift: a new weight and a random (not converged) power-iteration vector.
  w_new = 3.0 * w_init + np.random.RandomState(1).normal(size=w_init.shape)
  variables = {
      'params': {'kernel': jnp.asarray(w_new)},
      'spectral': jax.tree.map(lambda x: x, variables['spectral']),
  }
  variables['spectral']['sn']['u'] = jnp.asarray(np.random.RandomState(2).normal(size=fan_out))
  step = jax.jit(lambda v: module.apply(v, jnp.eye(fan_in), True, mutable=['spectral'])[1])
  for _ in range(100):
    variables = {'params': variables['params'], 'spectral': step(variables)['spectral']}
  normalized, _ = _effective_kernel(variables, module, fan_in)
  top = np.linalg.svd(normalized, compute_uv=False)[0]
  expected = sigma_init if mode == 'isn' else 1.0
  np.testing.assert_allclose(top, expected, rtol=1e-4)
  # The normalized weight is the new weight rescaled, not some other matrix.
  np.testing.assert_allclose(normalized, w_new * expected / np.linalg.svd(w_new,
                             compute_uv=False)[0], rtol=1e-4, atol=1e-6)
  if mode == 'isn':
    np.testing.assert_allclose(variables['spectral']['sn']['sigma_init'], sigma_init, rtol=1e-5)


def test_init_sigma_matches_svd_at_model_scale():
  w = np.random.RandomState(0).normal(size=(384, 96)).astype(np.float32)
  u, sigma = jax.jit(lambda w: layers.power_iteration(
      w, layers._l2_normalize(jnp.ones(96)), 200))(jnp.asarray(w))
  np.testing.assert_allclose(sigma, np.linalg.svd(w, compute_uv=False)[0], rtol=1e-3)


def test_spectral_norm_state_advances_only_in_training():
  module = layers.EqualDense(8, use_bias=False, spectral_norm='sn')
  variables = module.init(jax.random.PRNGKey(0), jnp.ones((1, 6)))
  variables['spectral']['sn']['u'] = jnp.ones(8) / math.sqrt(8)
  _, eval_upd = module.apply(variables, jnp.ones((1, 6)), False, mutable=['spectral'])
  _, train_upd = module.apply(variables, jnp.ones((1, 6)), True, mutable=['spectral'])
  np.testing.assert_array_equal(eval_upd['spectral']['sn']['u'], variables['spectral']['sn']['u'])
  assert not np.allclose(train_upd['spectral']['sn']['u'], variables['spectral']['sn']['u'])
  assert 'sigma_init' not in variables['spectral']['sn']  # plain SN stores no init sigma


def test_equal_dense_scales_at_call_time():
  module = layers.EqualDense(5, lr_mul=0.01, bias_init=0.3)
  variables = module.init(jax.random.PRNGKey(0), jnp.ones((1, 16)))
  w = np.asarray(variables['params']['kernel'])
  b = np.asarray(variables['params']['bias'])
  assert abs(w.std() * 0.01 - 1.0) < 0.3  # stored N(0, 1/lr_mul^2)
  x = np.random.RandomState(0).normal(size=(3, 16)).astype(np.float32)
  expected = x @ (w * 0.01 / 4.0) + b * 0.01
  np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(b * 0.01, 0.3, rtol=1e-6)


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


@pytest.mark.parametrize('kind,learned_temperature,l2_form',
                         [('l2', False, 'bias'), ('dot', False, 'bias'), ('l2', True, 'bias'),
                          ('dot', True, 'bias'), ('l2', False, 'augmented'),
                          ('l2', True, 'augmented')])
def test_attention_equals_plain_loop(kind, learned_temperature, l2_form):
  batch, tokens, width, heads = 2, 5, 8, 2
  dh = width // heads
  module = layers.Attention(heads, kind, qk_init_scale=1.0,
                            learned_temperature=learned_temperature, temperature_lr_mul=10.0,
                            l2_form=l2_form)
  x = np.random.RandomState(0).normal(size=(batch, tokens, width)).astype(np.float32)
  variables = module.init(jax.random.PRNGKey(0), x)
  tau = np.ones(heads)
  if learned_temperature:  # a trained-looking log temperature per head: tau = exp(10 t)
    assert np.all(np.asarray(variables['params']['log_temperature']) == 0)  # tau = 1 at init
    t = np.array([0.05, -0.08], np.float32)
    variables = {'params': {**variables['params'], 'log_temperature': jnp.asarray(t)}}
    tau = np.exp(10.0 * t)
  p = jax.tree.map(np.asarray, {k: v for k, v in variables['params'].items()
                                if k != 'log_temperature'})
  eq = 1.0 / math.sqrt(width)  # equalized-LR runtime scale
  if kind == 'l2':
    assert set(p) == {'query_key', 'value', 'out'}  # W_q and W_k are one parameter
    assert 'bias' not in p['query_key']
    wq = wk = p['query_key']['kernel'] * eq
    bq = bk = 0.0
  else:
    wq, bq = p['query']['kernel'] * eq, p['query']['bias']
    wk, bk = p['key']['kernel'] * eq, p['key']['bias']
  wv, bv = p['value']['kernel'] * eq, p['value']['bias']
  wo, bo = p['out']['kernel'] * eq, p['out']['bias']
  expected = np.zeros((batch, tokens, width))
  for b in range(batch):
    q, k, v = x[b] @ wq + bq, x[b] @ wk + bk, x[b] @ wv + bv
    concat = np.zeros((tokens, width))
    for h in range(heads):
      sl = slice(h * dh, (h + 1) * dh)
      for i in range(tokens):
        logits = np.zeros(tokens)
        for j in range(tokens):
          if kind == 'l2':
            logits[j] = -np.sum((q[i, sl] - k[j, sl]) ** 2) / math.sqrt(dh)
          else:
            logits[j] = np.dot(q[i, sl], k[j, sl]) / math.sqrt(dh)
        attn = _softmax(tau[h] * logits)
        concat[i, sl] = sum(attn[j] * v[j, sl] for j in range(tokens))
    expected[b] = concat @ wo + bo
  np.testing.assert_allclose(module.apply(variables, x), expected, rtol=1e-4, atol=1e-5)


def test_l2_attention_small_init_is_near_uniform_and_input_dependent():
  """PAPER.md Sec. 6: tied q/k makes attention one-hot at usual init scales; ours starts flat."""
  x = np.random.RandomState(0).normal(size=(1, 16, 64)).astype(np.float32)
  module = layers.Attention(4, 'l2', qk_init_scale=0.1)
  variables = module.init(jax.random.PRNGKey(0), x)
  # Used weight = stored * init_scale / sqrt(fan_in): the init scale is a run-time gain.
  q = x[0] @ (np.asarray(variables['params']['query_key']['kernel']) * 0.1 / 8.0)
  q = q.reshape(16, 4, 16)[:, 0]
  d2 = ((q[:, None] - q[None]) ** 2).sum(-1) / 4.0
  attn = np.exp(-d2) / np.exp(-d2).sum(-1, keepdims=True)
  assert np.diag(attn).max() < 0.2  # far from one-hot (uniform would be 1/16)


def test_equalized_init_scale_is_a_runtime_gain():
  """Every equalized weight is stored at unit scale whatever its init_scale, so Adam moves each
  by the same relative amount; init_scale and 1/sqrt(fan_in) multiply it at call time."""
  x = np.random.RandomState(0).normal(size=(4, 256)).astype(np.float32)
  outs = {}
  for init_scale in (1.0, 0.1):
    module = layers.EqualDense(256, use_bias=False, init_scale=init_scale)
    variables = module.init(jax.random.PRNGKey(0), x)
    stored = np.asarray(variables['params']['kernel'])
    assert abs(stored.std() - 1.0) < 0.02
    np.testing.assert_allclose(module.apply(variables, x), x @ (stored * init_scale / 16.0),
                               rtol=1e-4, atol=1e-5)
    outs[init_scale] = np.asarray(module.apply(variables, x))
  np.testing.assert_allclose(outs[0.1], 0.1 * outs[1.0], rtol=1e-4, atol=1e-6)


def test_overlapping_patches_equal_explicit_slicing():
  p, o, size, channels, width = 4, 2, 32, 3, 7
  module = layers.OverlappingPatchEmbed(width, p, o, equalized=False)
  images = np.random.RandomState(0).normal(size=(2, size, size, channels)).astype(np.float32)
  variables = module.init(jax.random.PRNGKey(0), images)
  kernel = np.asarray(variables['params']['kernel'])
  bias = np.asarray(variables['params']['bias'])
  assert kernel.shape == (p + 2 * o, p + 2 * o, channels, width)
  padded = np.pad(images, ((0, 0), (o, o), (o, o), (0, 0)))
  patches = []
  for i in range(size // p):
    for j in range(size // p):
      patches.append(padded[:, i * p:i * p + p + 2 * o, j * p:j * p + p + 2 * o, :].reshape(2, -1))
  patches = np.stack(patches, axis=1)
  assert patches.shape == (2, 64, 8 * 8 * 3)  # L = 64 patches of (P + 2o)^2 C = 192 values
  expected = patches @ kernel.reshape(-1, width) + bias
  np.testing.assert_allclose(module.apply(variables, images), expected, rtol=1e-4, atol=1e-4)


def test_self_modulated_layer_norm_matches_formula():
  module = layers.SelfModulatedLayerNorm(eps=1e-3)
  rs = np.random.RandomState(0)
  h = rs.normal(size=(2, 5, 6)).astype(np.float32) * 3 + 1
  w = rs.normal(size=(2, 4)).astype(np.float32)
  variables = module.init(jax.random.PRNGKey(0), h, w)
  p = jax.tree.map(np.asarray, variables['params'])
  lin = lambda q: w @ (q['kernel'] / 2.0) + q['bias']  # noqa: E731  (1/sqrt(fan_in=4))
  gamma, beta = lin(p['gamma']), lin(p['beta'])
  norm = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-3)
  expected = norm * (1 + gamma[:, None]) + beta[:, None]
  np.testing.assert_allclose(module.apply(variables, h, w), expected, rtol=1e-4, atol=1e-5)
  zeroed = jax.tree.map(jnp.zeros_like, variables)
  np.testing.assert_allclose(module.apply(zeroed, h, w), norm, rtol=1e-4, atol=1e-5)


def test_modulated_dense_equals_per_sample_weights():
  module = layers.ModulatedDense(5)
  rs = np.random.RandomState(0)
  x = rs.normal(size=(3, 4, 6)).astype(np.float32)   # (B, T, in)
  style = rs.normal(size=(3, 7)).astype(np.float32)
  variables = module.init(jax.random.PRNGKey(0), x, style)
  p = jax.tree.map(np.asarray, variables['params'])
  s = style @ (p['affine']['kernel'] / math.sqrt(7)) + p['affine']['bias']
  w = p['kernel'] / math.sqrt(6)
  expected = np.zeros((3, 4, 5))
  for b in range(3):
    wb = w * s[b][:, None]
    wb = wb / np.sqrt((wb ** 2).sum(0, keepdims=True) + 1e-8)
    expected[b] = x[b] @ wb + p['bias']
  np.testing.assert_allclose(module.apply(variables, x, style), expected, rtol=1e-4, atol=1e-5)


def test_fourier_features_formula_and_grid():
  coords = layers.grid_coordinates(2, 3)
  np.testing.assert_allclose(coords[:, 0], [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])
  np.testing.assert_allclose(coords[:, 1], [-2 / 3, 0, 2 / 3] * 2, atol=1e-6)
  module = layers.FourierFeatures(16, init_scale=3.0)
  variables = module.init(jax.random.PRNGKey(0), coords)
  k = np.asarray(variables['params']['kernel'])
  assert np.abs(k).max() <= 3.0 / math.sqrt(2)
  expected = np.sin(np.asarray(coords) @ k + np.asarray(variables['params']['bias']))
  np.testing.assert_allclose(module.apply(variables, coords), expected, rtol=1e-5, atol=1e-6)


def test_mapping_network_pixel_norm_invariance():
  """PixelNorm makes w depend only on the direction of z."""
  module = layers.MappingNetwork(8, depth=2)
  z = np.random.RandomState(0).normal(size=(2, 8)).astype(np.float32)
  variables = module.init(jax.random.PRNGKey(0), z)
  np.testing.assert_allclose(module.apply(variables, z), module.apply(variables, 5 * z),
                             rtol=1e-5, atol=1e-6)
