"""Tests for vitgan_jax/health.py: each diagnostic against an independent computation, the alarm."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from vitgan_jax import health
from vitgan_jax.gan import GAN
from vitgan_jax.models import layers


def _tiny_models():
  config = smoke.get_config()
  config.model.discriminator.qk_init_scale = 1.0  # attention far from uniform: a real test
  gan = GAN.from_config(config)
  return config, gan.generator, gan.discriminator, gan.init(jax.random.PRNGKey(0))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize('log_tau', [None, (0.04, -0.07)])
def test_attention_maps_sown_equal_the_l2_attention_written_out(log_tau):
  x = np.random.RandomState(0).normal(size=(2, 5, 8)).astype(np.float32)
  module = layers.Attention(2, 'l2', qk_init_scale=1.0, learned_temperature=log_tau is not None)
  variables = module.init(jax.random.PRNGKey(1), x)
  tau = np.ones(2)
  if log_tau is not None:  # tau_h = exp(temperature_lr_mul * t_h)
    variables = {'params': {**variables['params'], 'log_temperature': jnp.asarray(log_tau)}}
    tau = np.exp(module.temperature_lr_mul * np.asarray(log_tau))
  _, sown = module.apply(variables, x, mutable=[layers.DIAGNOSTICS])
  probs = np.asarray(sown[layers.DIAGNOSTICS]['attention_probs'][0])  # (B, H, Q, K)
  w = np.asarray(variables['params']['query_key']['kernel']) / math.sqrt(8)
  for b in range(2):
    q = (x[b] @ w).reshape(5, 2, 4)
    for h in range(2):
      d2 = ((q[:, None, h] - q[None, :, h]) ** 2).sum(-1)
      np.testing.assert_allclose(probs[b, h], _softmax(-tau[h] * d2 / 2.0), rtol=1e-4, atol=1e-6)
  if log_tau is not None:
    np.testing.assert_allclose(sown[layers.DIAGNOSTICS]['temperature'][0], tau.mean(), rtol=1e-5)


def test_attention_stats_match_numpy():
  rng = np.random.RandomState(0)
  probs = _softmax(rng.normal(size=(3, 2, 5, 5)) * 2).astype(np.float32)
  stats = health._attention_stats(jnp.asarray(probs), has_cls=True)
  entropy = -(probs * np.log(probs)).sum(-1).mean() / np.log(5)
  np.testing.assert_allclose(float(stats['attn_entropy']), entropy, rtol=1e-5)
  np.testing.assert_allclose(float(stats['attn_cls_to_patches']),
                             probs[:, :, 0, 1:].sum(-1).mean(), rtol=1e-5)
  uniform = health._attention_stats(jnp.full((1, 1, 4, 4), 0.25), has_cls=True)
  np.testing.assert_allclose(float(uniform['attn_entropy']), 1.0, rtol=1e-6)


def test_health_of_a_discriminator_matches_direct_computations():
  config, generator, discriminator, state = _tiny_models()
  images = jax.random.uniform(jax.random.PRNGKey(3), (8, 32, 32, 3), minval=-1.0)
  rng = jax.random.PRNGKey(4)
  fn = health.make_health_fn(generator, discriminator, config.model.generator.latent_dim,
                             num_examples=4)
  out = {k: float(v) for k, v in fn(state, images, rng).items()}

  d_vars = {'params': state.d_params, **state.d_state}
  d = lambda x: np.asarray(discriminator.apply(d_vars, x), np.float64)  # noqa: E731
  real = np.asarray(images[:4])
  fake = generator.apply({'params': state.g_params},
                         jax.random.normal(rng, (4, config.model.generator.latent_dim)))
  np.testing.assert_allclose(out['d_gap'], d(real).mean() - d(fake).mean(), rtol=1e-4,
                             atol=1e-6)
  # Input sensitivity against central finite differences along each image's gradient direction.
  grads = np.asarray(jax.grad(lambda x: jnp.sum(discriminator.apply(d_vars, x)))(real))
  norms = np.sqrt((grads ** 2).sum(axis=(1, 2, 3)))
  eps = 1e-2
  for i in range(4):
    u = grads[i] / norms[i]
    plus, minus = real.copy(), real.copy()
    plus[i] += eps * u
    minus[i] -= eps * u
    np.testing.assert_allclose((d(plus)[i] - d(minus)[i]) / (2 * eps), norms[i], rtol=2e-2)
  np.testing.assert_allclose(out['d_sensitivity'], norms.mean(), rtol=1e-4)

  # sigma(W) / sigma(W_init) of the head against numpy's SVD (equal at init, up to power its.).
  ratios = {k: v for k, v in out.items() if k.startswith('sigma_ratio/')}
  assert len(ratios) == 2 + 5 * config.model.discriminator.depth  # patch, head, 5 per block
  for value in ratios.values():
    np.testing.assert_allclose(value, 1.0, rtol=1e-3)
  attention = [k for k in out if k.startswith('attn_entropy/')]
  assert attention == ['attn_entropy/block0/attention']
  assert 0.0 < out['attn_entropy/block0/attention'] < 1.0
  assert 0.0 < out['attn_cls_to_patches/block0/attention'] < 1.0


def test_sigma_ratio_tracks_a_changed_weight():
  """Doubling a layer's stored kernel doubles sigma(W) / sigma(W_init) (u from the init)."""
  x = np.random.RandomState(0).normal(size=(4, 16)).astype(np.float32)
  module = layers.EqualDense(8, spectral_norm='isn')
  variables = module.init(jax.random.PRNGKey(0), x)
  doubled = jax.tree.map(lambda a: a, variables)
  doubled['params']['kernel'] = 2 * variables['params']['kernel']
  _, sown = module.apply(doubled, x, mutable=[layers.DIAGNOSTICS])
  ratio = float(sown[layers.DIAGNOSTICS]['sn']['sigma_ratio'][0])
  np.testing.assert_allclose(ratio, 2.0, rtol=1e-4)


def test_stall_alarm_fires_once_after_patience_and_rearms():
  alarm = health.StallAlarm(max_gap=0.1, max_sensitivity=0.05, patience=3)
  blind = {'d_gap': 0.01, 'd_sensitivity': 0.01}
  seeing = {'d_gap': 0.5, 'd_sensitivity': 0.01}
  assert alarm.update(100, blind) is None
  assert alarm.update(200, blind) is None
  line = alarm.update(300, blind)
  assert line.startswith('warning:') and 'step 300' in line and 'since step 100' in line
  assert '\n' not in line
  assert alarm.update(400, blind) is None  # once per episode
  assert alarm.update(500, seeing) is None  # a seeing D re-arms it
  for step in (600, 700):
    assert alarm.update(step, blind) is None
  assert 'step 800' in alarm.update(800, blind)


def test_summary_reduces_per_layer_values():
  values = {'d_gap': 1.0, 'sigma_ratio/a': 0.9, 'sigma_ratio/b': 1.2, 'attn_entropy/x': 0.5}
  assert health.summary(values) == {'sigma_ratio_min': 0.9, 'sigma_ratio_max': 1.2,
                                    'attn_entropy_min': 0.5, 'attn_entropy_max': 0.5}


def test_progress_line_shows_the_health_numbers():
  from vitgan_jax import trainer  # pylint: disable=g-import-not-at-top
  line = trainer.progress_line(250, 1000, {
      'd_loss': 1.2, 'g_loss': 0.9, 'd_real': 0.4, 'd_fake': -0.5, 'health/d_gap': 0.9,
      'health/d_sensitivity': 1.25, 'bcr_real': 1e-3, 'bcr_fake': 2e-3, 'd_grad_norm': 0.5,
      'g_grad_norm': 0.25, 'images_per_sec': 40.0})
  assert line.startswith('step 250/1000 | d_loss 1.200 | g_loss 0.900')
  assert 'gap +0.900 | |dD/dx| 1.250 | bcr 1.00e-03/2.00e-03' in line
  assert line.endswith('40 img/s') and '\n' not in line
