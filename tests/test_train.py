"""The train step: EMA math, learning on a toy distribution, 8-device == 1-device, bad configs."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import tiny_step_config as tiny_config
from vitgan_jax import augment as augment_lib
from vitgan_jax import sharding, train
from vitgan_jax.gan import GAN



def build(config, mesh=None):
  mesh = mesh or sharding.create_mesh(jax.devices()[:1])
  gan = GAN.from_config(config)
  state = gan.init(jax.random.PRNGKey(config.training.seed))
  step = train.jit_train_step(train.make_train_step(config, gan, mesh), mesh, donate=False,
                              state_shardings=gan.state_shardings(mesh))
  return gan, state, step


def test_ema_equals_hand_computed_after_three_steps():
  config = tiny_config()
  config.training.ema_kimg = 0.05  # beta well inside (0, 1) within the first steps
  _, state, step = build(config)
  batch = {'image': jax.random.uniform(jax.random.PRNGKey(3), (8, 32, 32, 3), minval=-1)}
  expected = jax.tree.map(np.asarray, state.ema_params)
  betas = []
  for i in range(3):
    state, metrics = step(state, batch)
    # Same formula as StyleGAN2-ADA: half-life min(ema_kimg * 1000, images_seen * rampup).
    ema_nimg = min(config.training.ema_kimg * 1000, i * 8 * config.training.ema_rampup)
    beta = 0.5 ** (8 / max(ema_nimg, 1e-8))
    betas.append(beta)
    np.testing.assert_allclose(float(metrics['ema_beta']), beta, rtol=1e-6)
    expected = jax.tree.map(lambda e, p: beta * e + (1 - beta) * np.asarray(p), expected,
                            state.g_params)
  assert betas[0] == 0.0 and 0 < betas[2] < 1
  for e, got, raw in zip(jax.tree.leaves(expected), jax.tree.leaves(state.ema_params),
                         jax.tree.leaves(state.g_params)):
    np.testing.assert_allclose(got, e, rtol=1e-5, atol=1e-6)
  differs = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(state.ema_params),
                                                   jax.tree.leaves(state.g_params))]
  assert any(differs)


def _distance_to_data(samples, data):
  """Mean over samples of the squared distance to the nearest data image."""
  d = ((samples[:, None] - data[None]) ** 2).mean(axis=(2, 3, 4))
  return float(d.min(axis=1).mean())


def test_gan_learns_a_toy_distribution():
  config = tiny_config(batch_size=16)
  config.augment.p = 0.0  # two flat colours: nothing for augmentation to protect against
  config.loss.bcr_real = config.loss.bcr_fake = 0.0  # a consistency term only slows a toy D
  config.training.ema_kimg = 0.2
  # Two saturated colours: a tanh output reaches them in 100 steps (measured 1.21 -> 0.73); the
  # default linear output starts at std 1.5 and needs longer (2.37 -> 2.18).
  config.model.generator.output_activation = 'tanh'
  gan, state, step = build(config)
  colours = np.array([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]], np.float32)  # red, blue
  data = np.broadcast_to(colours[:, None, None, :], (2, 32, 32, 3))
  batch = {'image': jnp.asarray(np.concatenate([data] * 8))}
  sample = jax.jit(gan.generate)
  z = gan.latents(jax.random.PRNGKey(7), 32)
  before = _distance_to_data(np.asarray(sample(state, z)), data)
  for _ in range(100):
    state, metrics = step(state, batch)
  after = _distance_to_data(np.asarray(sample(state, z)), data)
  assert np.isfinite(float(metrics['d_loss'])) and np.isfinite(float(metrics['g_loss']))
  assert after < 0.8 * before, (before, after)  # measured: 1.21 -> 0.73


def test_metrics_have_every_logged_quantity():
  config = tiny_config()
  config.loss.r1_gamma, config.loss.lecam = 1.0, 0.1
  config.loss.bcr_real = config.loss.bcr_fake = 10.0
  _, state, step = build(config)
  batch = {'image': jnp.zeros((8, 32, 32, 3))}
  state, metrics = step(state, batch)
  for key in ('d_loss', 'g_loss', 'd_real', 'd_fake', 'bcr_real', 'bcr_fake', 'r1', 'lecam',
              'd_grad_norm', 'g_grad_norm', 'd_lr', 'g_lr', 'ema_beta'):
    assert np.isfinite(float(metrics[key])), key
  assert int(state.step) == 1 and int(state.bad_step) == -1
  assert float(metrics['d_lr']) == pytest.approx(0.002)


def test_bcr_view_in_the_same_d_call_gives_the_losses_of_separate_calls():
  """D scores the augmented batch and bCR's view T(x) in one call (one pass over its weights);
  the D-step terms equal those of D called on each view separately, with the same draws."""
  config = tiny_config()
  config.augment.policy = 'translation,color,cutout'
  config.loss.bcr_real, config.loss.bcr_fake = 10.0, 5.0
  gan, state, step = build(config)
  real = jax.random.uniform(jax.random.PRNGKey(3), (8, 32, 32, 3), minval=-1.0)
  _, metrics = step(state, {'image': real})
  # train_step's draws for its one critic step, then D called once per view, plainly.
  _, step_rng = jax.random.split(state.rng)
  k_z, k_d = jax.random.split(jax.random.fold_in(step_rng, 0))
  fake = gan.generator.apply({'params': state.g_params, **state.g_state}, gan.latents(k_z, 8),
                             train=True)
  k_aug, k_bcr = jax.random.split(k_d)
  clean = jnp.concatenate([real, fake])
  inputs = augment_lib.augment(clean, k_aug, config.augment.policy, config.augment.p)
  logits, d_state = gan.discriminator.apply({'params': state.d_params, **state.d_state}, inputs,
                                            train=True, mutable=list(state.d_state))
  view = augment_lib.augment(clean, k_bcr, config.augment.policy, config.augment.p)
  t_logits = gan.discriminator.apply({'params': state.d_params, **d_state}, view)
  expected = {'d_real': jnp.mean(logits[:8]), 'd_fake': jnp.mean(logits[8:]),
              'bcr_real': jnp.mean(jnp.square(logits[:8] - t_logits[:8])),
              'bcr_fake': jnp.mean(jnp.square(logits[8:] - t_logits[8:]))}
  assert float(expected['bcr_real']) > 1e-6 and float(expected['bcr_fake']) > 1e-6
  for key, value in expected.items():
    assert float(metrics[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-6), key


def test_ada_update_is_karras_et_al_controller():
  """p moves by batch / (ada_kimg * 1000) toward keeping E[sign D(real)] at the target."""
  assert float(train.ada_update(0.5, 0.9, 0.6, 32, 0.32)) == pytest.approx(0.6)  # sure: up
  assert float(train.ada_update(0.5, 0.2, 0.6, 32, 0.32)) == pytest.approx(0.4)  # unsure: down
  assert float(train.ada_update(0.0, -1.0, 0.6, 32, 0.32)) == 0.0                # clipped
  assert float(train.ada_update(0.95, 1.0, 0.6, 32, 0.32)) == 1.0


def test_adaptive_augment_p_is_state_and_is_used():
  """With augment.ada_target > 0, p starts at 0, follows r each step, and feeds DiffAugment."""
  config = tiny_config()
  config.augment.p = 0.0  # ignored under ADA
  config.augment.ada_target, config.augment.ada_kimg = 0.6, 0.08  # 8 images: p moves 0.1/step
  _, state, step = build(config)
  batch = {'image': jax.random.uniform(jax.random.PRNGKey(3), (8, 32, 32, 3), minval=-1)}
  p = 0.0
  for _ in range(3):
    state, metrics = step(state, batch)
    r = float(metrics['ada_r'])
    assert -1.0 <= r <= 1.0
    p = min(max(p + (0.1 if r > 0.6 else -0.1), 0.0), 1.0)
    assert float(state.augment_p) == pytest.approx(p, abs=1e-6)
    assert float(metrics['augment_p']) == pytest.approx(p, abs=1e-6)
  # The same state at p = 1 and p = 0 gives different D losses: p reaches the augmentation.
  losses_at = []
  for forced in (0.0, 1.0):
    _, m = step(state.replace(augment_p=jnp.asarray(forced, jnp.float32)), batch)
    losses_at.append(float(m['d_loss']))
  assert losses_at[0] != losses_at[1]
  # Off (the default): the config's fixed p, nothing adaptive in the state or the metrics.
  _, state, step = build(tiny_config())
  state, metrics = step(state, batch)
  assert 'augment_p' not in metrics and float(state.augment_p) == 0.0


def test_lr_decay_halves_adam_steps_on_schedule():
  """optimizer.decay: factor 1 until start_kimg, then 0.5 per halflife_kimg; a decayed step is
  the undecayed step at the scaled learning rates (Adam's update is linear in lr)."""
  decay = tiny_config().optimizer.decay
  decay.start_kimg, decay.halflife_kimg = 1.0, 2.0
  for step, want in ((0, 1.0), (125, 1.0), (250, 0.5 ** 0.5), (625, 0.25)):  # batch 8
    assert float(train.lr_factor(jnp.asarray(step), 8, decay)) == pytest.approx(want, rel=1e-6)
  decay.start_kimg = 0.0
  assert float(train.lr_factor(jnp.asarray(10 ** 6), 8, decay)) == 1.0  # off
  batch = {'image': jax.random.uniform(jax.random.PRNGKey(3), (8, 32, 32, 3), minval=-1)}
  results = []
  for scale, decayed in ((1.0, True), (0.25, False)):
    config = tiny_config()
    config.optimizer.g.eps = config.optimizer.d.eps = 1.0  # update continuous in g
    config.optimizer.g.lr *= scale
    config.optimizer.d.lr *= scale
    if decayed:  # step 625 of batch 8 is 5 kimg: two half-lives after 1 kimg
      config.optimizer.decay.start_kimg, config.optimizer.decay.halflife_kimg = 1.0, 2.0
    _, state, step = build(config)
    state, metrics = step(state.replace(step=jnp.asarray(625, jnp.int32)), batch)
    assert float(metrics['g_lr']) == pytest.approx(0.25 * tiny_config().optimizer.g.lr)
    results.append(jax.tree.leaves(jax.device_get((state.g_params, state.d_params))))
  for a, b in zip(*results):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_bad_training_config_is_refused():
  config = tiny_config()
  config.augment.policy = 'translation,blur'
  gan = GAN.from_config(config)
  with pytest.raises(ValueError, match='blur'):
    train.make_train_step(config, gan)
  config = tiny_config()
  config.loss.kind = 'hinge'
  with pytest.raises(ValueError, match='loss.kind'):
    train.make_train_step(config, gan)
  config = tiny_config()
  config.optimizer.decay.start_kimg = 1.0  # halflife_kimg left at 0
  with pytest.raises(ValueError, match='optimizer.decay.halflife_kimg'):
    train.make_train_step(config, gan)


EIGHT_DEVICES = textwrap.dedent('''
    import jax, numpy as np, sys
    sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
    assert jax.device_count() == 8
    from test_train import build
    from tests.helpers import tiny_step_config as tiny_config
    from vitgan_jax import sharding
    config = tiny_config(batch_size=16)
    # Adam's first updates are lr * sign(g): a gradient that is ~0 flips with the order of a
    # sum across devices. A large eps makes the update continuous in g, which is what we compare.
    config.optimizer.g.eps = config.optimizer.d.eps = 1.0
    batch = {{'image': jax.random.uniform(jax.random.PRNGKey(3), (16, 32, 32, 3), minval=-1)}}
    for shard in (False, True):  # training.shard_optimizer: the same math either way
      config.training.shard_optimizer = shard
      results = []
      for devices in (jax.devices()[:1], jax.devices()):
        mesh = sharding.create_mesh(devices)
        _, state, step = build(config, mesh)
        losses = []
        for _ in range(2):
          state, metrics = step(state, sharding.global_batch(batch, mesh))
          losses.append([float(metrics[k]) for k in ('d_loss', 'g_loss', 'd_real', 'd_fake')])
        results.append((np.array(losses), jax.tree.leaves(jax.device_get(
            (state.g_params, state.ema_params, state.d_opt_state)))))
      # With it, Adam's moments and the EMA are split over the 8 devices, the weights not.
      mu = state.d_opt_state.inner_state[0].mu
      split = [tuple(x.sharding.spec) for x in jax.tree.leaves((mu, state.ema_params))]
      assert (sum('data' in s for s in split) >= len(split) // 2) == shard, split
      assert all(tuple(x.sharding.spec) == () for x in jax.tree.leaves(state.g_params))
      (l1, p1), (l8, p8) = results
      print(shard, 'losses 1 device', l1.tolist()); print('losses 8 devices', l8.tolist())
      np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-5)
      for a, b in zip(p1, p8):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # The split state checkpoints and restores split (and into one device, as a resume on a
    # smaller machine would).
    import tempfile
    from vitgan_jax import checkpoint
    from vitgan_jax.gan import GAN
    with tempfile.TemporaryDirectory() as workdir:
      ckpt = checkpoint.Checkpointer(workdir, async_save=False)
      ckpt.save(2, state)
      ckpt.wait()
      for devices in (jax.devices(), jax.devices()[:1]):
        template = GAN.from_config(config).abstract_state(sharding.create_mesh(devices))
        restored = ckpt.restore(template)
        for a, b, t in zip(jax.tree.leaves(state), jax.tree.leaves(restored),
                           jax.tree.leaves(template)):
          assert b.sharding == t.sharding
          np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
      ckpt.close()
    try:
      sharding.check_batch_size(12, sharding.create_mesh())
    except ValueError as e:
      assert 'does not divide over 8 devices' in str(e), e
    else:
      raise AssertionError('batch 12 over 8 devices was accepted')
    print('OK')
''')


def test_eight_devices_match_one_device():
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=(  # cheap CPU code generation
      '--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 '
      '--xla_llvm_disable_expensive_passes=true'))
  code = EIGHT_DEVICES.format(root=REPO_ROOT, tests=os.path.join(REPO_ROOT, 'tests'))
  result = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0 and 'OK' in result.stdout, result.stdout + result.stderr[-3000:]


def test_transgan_super_resolution_loss_is_the_mse_of_the_upsampled_real_batch():
  """loss.sr_weight: g_loss = adversarial + 50 * MSE(G(avg-pool_4(x)), x), on the step's G."""
  from configs import transgan_cifar10  # pylint: disable=g-import-not-at-top
  config = transgan_cifar10.get_config()
  config.data.source, config.training.batch_size, config.training.n_critic = 'arrays', 4, 1
  g, d = config.model.generator, config.model.discriminator
  g.latent_dim, g.width, g.depths, g.num_heads, g.super_resolution = 16, 64, (1, 1, 1), 2, True
  d.width, d.depth, d.num_heads = 16, 1, 2
  config.loss.sr_weight = 50.0
  config.augment.policy = 'translation'  # a smaller step to compile
  gan, state, step = build(config)
  generator = gan.generator
  real = jax.random.uniform(jax.random.PRNGKey(3), (4, 32, 32, 3), minval=-1)
  _, metrics = step(state, {'image': real})
  low_res = np.asarray(real).reshape(4, 8, 4, 8, 4, 3).mean(axis=(2, 4))  # 4x4 block means
  upsampled = generator.apply({'params': state.g_params, **state.g_state}, None, low_res=low_res)
  expected = np.mean((np.asarray(upsampled, np.float64) - np.asarray(real)) ** 2)
  assert float(metrics['sr_mse']) == pytest.approx(expected, rel=1e-5)
  assert float(metrics['g_loss']) == pytest.approx(
      float(metrics['g_adv_loss']) + 50 * expected, rel=1e-5)
  config.model.generator.super_resolution = False
  with pytest.raises(ValueError, match='loss.sr_weight=50.0 needs'):
    train.make_train_step(config, GAN.from_config(config))


def test_nonfinite_step_keeps_the_whole_state():
  """NaN images: every array of the state stays as it was (G's part is guarded where it is
  updated, the rest at the end); only step, rng and the record of the bad step move."""
  _, state, step = build(tiny_config())
  good = {'image': jnp.zeros((8, 32, 32, 3))}
  state, _ = step(state, good)
  after, _ = step(state, {'image': jnp.full((8, 32, 32, 3), jnp.nan)})
  assert (int(after.step), int(after.bad_step)) == (2, 1)
  assert train.describe_nonfinite(int(after.bad_what))[0] == 'd_loss'
  for field in ('g_params', 'd_params', 'ema_params', 'g_state', 'd_state', 'g_opt_state',
                'd_opt_state', 'lecam'):
    for old, new in zip(jax.tree.leaves(getattr(state, field)),
                        jax.tree.leaves(getattr(after, field))):
      np.testing.assert_array_equal(np.asarray(old), np.asarray(new), err_msg=field)
  next_state, _ = step(after, good)  # and training goes on from it
  assert int(next_state.bad_step) == 1
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after.g_params),
                                                      jax.tree.leaves(next_state.g_params)))


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_a_nonfinite_gradient_in_any_leaf_is_caught_through_the_norm(bad):
  """The guard reads the grad norms (also the metrics): one bad entry in one leaf flags it."""
  import optax  # pylint: disable=g-import-not-at-top
  grads = {'a': np.ones((3, 4), np.float32), 'b': {'c': np.ones(5, np.float32)}}
  finite = optax.tree.norm(grads)
  grads['b']['c'][2] = bad
  broken = optax.tree.norm(grads)
  checks = lambda d_ok, g_norm: int(train._finite_checks(  # pylint: disable=protected-access  # noqa: E731
      jnp.array(True), jnp.float32(1.0), d_ok, g_norm))
  assert checks(jnp.array(True), finite) == 0
  assert train.describe_nonfinite(checks(jnp.array(True), broken)) == ['g_grads']
  assert train.describe_nonfinite(checks(jnp.isfinite(broken), finite)) == ['d_grads']
