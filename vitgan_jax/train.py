"""The GAN train step: pure, jitted over a 'data' mesh with the state donated.

One step = `n_critic` discriminator updates (NS-logistic + bCR, optional R1 / LeCam, all on
DiffAugment-ed inputs) then one generator update and the EMA of G's weights. The networks,
optimizers and latents come from the `GAN` value (gan.py); the loop that runs the step is
trainer.py.
"""

from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from vitgan_jax import augment as augment_lib
from vitgan_jax import losses, sharding
from vitgan_jax.gan import GAN, TrainState

# Bits of TrainState.bad_what: which quantity went non-finite first.
NONFINITE_QUANTITIES = ('d_loss', 'g_loss', 'd_grads', 'g_grads')
BCR_VIEWS = ('independent', 'stacked')


def lr_factor(step, batch_size: int, decay):
  """Multiplier on both learning rates: 1, then halving every decay.halflife_kimg thousand images
  after decay.start_kimg (0: no decay). A function of the step, so a resumed run continues it."""
  if not decay.start_kimg:
    return jnp.ones((), jnp.float32)
  kimg = step.astype(jnp.float32) * (batch_size / 1000.0)
  return 0.5 ** (jnp.maximum(kimg - decay.start_kimg, 0.0) / decay.halflife_kimg)


def ema_beta(step, batch_size: int, ema_kimg: float, ema_rampup: float):
  """StyleGAN2-ADA EMA: half-life ema_kimg thousand images, ramped up over the first images."""
  ema_nimg = ema_kimg * 1000.0
  if ema_rampup:
    ema_nimg = jnp.minimum(ema_nimg, step.astype(jnp.float32) * batch_size * ema_rampup)
  return 0.5 ** (batch_size / jnp.maximum(ema_nimg, 1e-8))


def make_train_step(config, gan: GAN, mesh=None) -> Callable:
  """Returns train_step(state, batch) -> (state, metrics); pure, jit it (see `jit_train_step`)."""
  generator, discriminator, g_tx, d_tx = gan.generator, gan.discriminator, gan.g_tx, gan.d_tx
  lc, ac, tc = config.loss, config.augment, config.training
  if lc.kind != 'nonsaturating':
    raise ValueError(f"loss.kind={lc.kind!r} is not one of ('nonsaturating',)")
  augment_lib.parse_policy(ac.policy)  # fail now, naming the bad op, not inside jit
  augment_lib.parse_policy(ac.bcr_policy)
  use_bcr = lc.bcr_real > 0 or lc.bcr_fake > 0
  if lc.bcr_views not in BCR_VIEWS:
    raise ValueError(f'loss.bcr_views={lc.bcr_views!r} is not one of {BCR_VIEWS}')
  sr_weight = lc.get('sr_weight', 0.0)
  if sr_weight > 0 and not getattr(generator, 'super_resolution', False):
    raise ValueError(f'loss.sr_weight={sr_weight} needs a generator with a super-resolution '
                     "input: model.generator.name='transgan' with super_resolution=True")
  sr_factor = gan.image_shape[0] // generator.validate() if sr_weight > 0 else 0
  ada = ac.get('ada_target', 0.0) > 0
  if ada and not (ac.get('ada_kimg', 0.0) > 0):
    raise ValueError(f'augment.ada_kimg={ac.get("ada_kimg")} must be > 0 with augment.ada_target')
  decay = config.optimizer.decay
  decayed = bool(decay.start_kimg)  # off: the updates are Adam's own, untouched
  if decayed and not decay.halflife_kimg > 0:
    raise ValueError(f'optimizer.decay.halflife_kimg={decay.halflife_kimg} must be > 0 with '
                     'optimizer.decay.start_kimg')
  batch_spec = sharding.data_sharded(mesh) if mesh is not None else None

  def constrain(x):  # keep per-example work split over devices like the batch
    return jax.lax.with_sharding_constraint(x, batch_spec) if batch_spec is not None else x

  shard_optimizer = mesh is not None and gan.shard_optimizer

  def replicate(params):  # gathered once after the sharded update, not at each use
    if not shard_optimizer:
      return params
    return jax.lax.with_sharding_constraint(params, sharding.replicated(mesh))

  def split_like_optimizer(grads):  # ZeRO-1: each device needs only its slice of the sum
    # (lets XLA reduce-scatter; libtpu for v3-8 still all-reduced, then sliced: README)
    if not shard_optimizer:
      return grads
    return jax.lax.with_sharding_constraint(grads, sharding.split_tree_over_data(grads, mesh))

  def _bcr_view(clean, augmented, rng, p):
    """The second view T(x) that bCR holds D consistent on (loss.bcr_views)."""
    if lc.bcr_views == 'independent':  # a second DiffAugment draw of the clean images
      return augment_lib.augment(clean, rng, ac.policy, p)
    return augment_lib.augment(augmented, rng, ac.bcr_policy, 1.0)  # 'stacked': T on A(x)

  def generate(g_params, g_state, z):
    return generator.apply({'params': g_params, **g_state}, z, train=True)

  def d_loss_fn(d_params, d_state, real, fake, lecam, step, rng, p):
    k_aug, k_bcr = jax.random.split(rng)
    batch = real.shape[0]
    clean = jnp.concatenate([real, fake])
    inputs = constrain(augment_lib.augment(clean, k_aug, ac.policy, p))
    # bCR's view T(x) goes through D in the same call as the augmented batch: one pass over
    # D's weights (and one spectral norm) instead of two; same math (README: TPU compiler view).
    views = [inputs, constrain(_bcr_view(clean, inputs, k_bcr, p))] if use_bcr else [inputs]
    all_logits, new_d_state = discriminator.apply(
        {'params': d_params, **d_state}, constrain(jnp.concatenate(views)), train=True,
        mutable=list(d_state))
    logits, t_logits = all_logits[:2 * batch], all_logits[2 * batch:]
    real_logits, fake_logits = logits[:batch], logits[batch:]
    loss = losses.d_logistic_loss(real_logits, fake_logits)
    aux = {'d_real': jnp.mean(real_logits), 'd_fake': jnp.mean(fake_logits),
           'd_adv_loss': loss}
    variables = {'params': d_params, **new_d_state}
    if use_bcr:
      aux['bcr_real'] = losses.bcr_penalty(real_logits, t_logits[:batch])
      aux['bcr_fake'] = losses.bcr_penalty(fake_logits, t_logits[batch:])
      loss += lc.bcr_real * aux['bcr_real'] + lc.bcr_fake * aux['bcr_fake']
    if lc.r1_gamma > 0:
      d_fn = lambda x: discriminator.apply(variables, x)  # noqa: E731
      every = max(int(lc.r1_every), 1)
      aux['r1'] = jax.lax.cond(step % every == 0,
                               lambda: losses.r1_penalty(d_fn, inputs[:batch]),
                               lambda: jnp.zeros((), jnp.float32))
      loss += 0.5 * lc.r1_gamma * every * aux['r1']  # lazy R1: weight scaled by its interval
    if lc.lecam > 0:
      aux['lecam'] = losses.lecam_penalty(real_logits, fake_logits, lecam['real'], lecam['fake'])
      loss += lc.lecam * aux['lecam']
    aux['d_loss'] = loss
    return loss, (aux, new_d_state, real_logits, fake_logits)

  def g_loss_fn(g_params, g_state, d_params, d_state, z, rng, real, p):
    fake, new_g_state = generator.apply({'params': g_params, **g_state}, z, train=True,
                                        mutable=list(g_state))
    inputs = constrain(augment_lib.augment(fake, rng, ac.policy, p))
    logits = discriminator.apply({'params': d_params, **d_state}, inputs)
    loss = losses.g_logistic_loss(logits)
    aux = {'g_adv_loss': loss}
    if sr_weight > 0:  # TransGAN's co-training: the real image back from its low-res version
      upsampled = generator.apply({'params': g_params, **new_g_state}, None, train=True,
                                  low_res=losses.average_pool(real, sr_factor))
      aux['sr_mse'] = jnp.mean(jnp.square(upsampled.astype(jnp.float32) - real))
      loss += sr_weight * aux['sr_mse']
    aux['g_loss'] = loss
    return loss, (aux, new_g_state)

  def train_step(state: TrainState, batch) -> Tuple[TrainState, Dict[str, jax.Array]]:
    real = constrain(batch['image'].astype(jnp.float32))
    batch_size = real.shape[0]
    rng, step_rng = jax.random.split(state.rng)
    d_params, d_state, d_opt_state, lecam = (state.d_params, state.d_state, state.d_opt_state,
                                             state.lecam)
    p = state.augment_p if ada else ac.p
    lr_scale = lr_factor(state.step, batch_size, decay)

    def scaled(updates):  # Adam's update is linear in lr: scaling it is the decayed lr
      return jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates) if decayed else updates

    d_finite = jnp.array(True)
    d_loss_finite = jnp.array(True)
    for i in range(config.training.n_critic):
      k_z, k_d = jax.random.split(jax.random.fold_in(step_rng, i))
      z = constrain(gan.latents(k_z, batch_size))
      fake = jax.lax.stop_gradient(generate(state.g_params, state.g_state, z))
      (_, (d_aux, d_state, real_logits, fake_logits)), d_grads = jax.value_and_grad(
          d_loss_fn, has_aux=True)(d_params, d_state, real, fake, lecam, state.step, k_d, p)
      d_grads = split_like_optimizer(d_grads)
      d_updates, d_opt_state = d_tx.update(d_grads, d_opt_state, d_params)
      d_updates = scaled(d_updates)
      d_params = replicate(optax.apply_updates(d_params, d_updates))
      if config.loss.lecam > 0:
        lecam = dict(zip(('real', 'fake'), losses.update_lecam_anchors(
            lecam['real'], lecam['fake'], real_logits, fake_logits, config.loss.lecam_decay)))
      d_loss_finite &= jnp.isfinite(d_aux['d_loss'])
      # A NaN or inf anywhere makes the norm non-finite: one reduction per leaf, shared with
      # the metric, instead of a second isfinite pass (a norm past float32's range counts too).
      d_grad_norm = optax.tree.norm(d_grads)
      d_finite &= jnp.isfinite(d_grad_norm)

    k_z, k_g = jax.random.split(jax.random.fold_in(step_rng, config.training.n_critic))
    z = constrain(gan.latents(k_z, batch_size))
    (_, (g_aux, g_state)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state.g_params, state.g_state, d_params, d_state, z, k_g, real, p)
    g_grads = split_like_optimizer(g_grads)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    g_updates = scaled(g_updates)
    g_grad_norm = optax.tree.norm(g_grads)
    beta = ema_beta(state.step, batch_size, tc.ema_kimg, tc.ema_rampup)
    augment_p = state.augment_p
    if ada:  # ADA's overfitting heuristic r_t on the last critic step's augmented real logits
      ada_r = jnp.mean(jnp.sign(real_logits.astype(jnp.float32)))
      augment_p = ada_update(state.augment_p, ada_r, ac.ada_target, batch_size, ac.ada_kimg)
    if config.training.nan_guard:
      # Every check is known here: G's update is kept or dropped inside its own Adam and EMA
      # update (one fused pass), not in a second pass over the state at the end.
      good = _finite_checks(d_loss_finite, g_aux['g_loss'], d_finite, g_grad_norm) == 0
      keep = lambda new, old: jnp.where(good, new, old)  # noqa: E731
      g_params = jax.tree.map(lambda p, u: jnp.where(good, p + u, p), state.g_params, g_updates)
      g_opt_state = jax.tree.map(keep, g_opt_state, state.g_opt_state)
      ema_params = jax.tree.map(lambda e, p: jnp.where(good, beta * e + (1 - beta) * p, e),
                                state.ema_params, g_params)
    else:
      g_params = optax.apply_updates(state.g_params, g_updates)
      ema_params = jax.tree.map(lambda e, p: beta * e + (1 - beta) * p, state.ema_params,
                                g_params)

    new_state = state.replace(
        step=state.step + 1, g_params=g_params, d_params=d_params, ema_params=ema_params,
        g_state=g_state, d_state=d_state, g_opt_state=g_opt_state, d_opt_state=d_opt_state,
        lecam=lecam, augment_p=augment_p, rng=rng)
    metrics = {**d_aux, **g_aux,
               'd_grad_norm': d_grad_norm,
               'g_grad_norm': g_grad_norm,
               'd_lr': d_opt_state.hyperparams['learning_rate'] * lr_scale,
               'g_lr': g_opt_state.hyperparams['learning_rate'] * lr_scale,
               'ema_beta': beta}
    if ada:
      metrics.update(augment_p=augment_p, ada_r=ada_r)
    if config.training.nan_guard:
      new_state = _guard_nonfinite(state, new_state, d_loss_finite, g_aux['g_loss'], d_finite,
                                   g_grad_norm)
    return new_state, metrics

  return train_step


def ada_update(p, r, target: float, batch_size: int, ada_kimg: float):
  """StyleGAN2-ADA's p controller: up when D is too sure of the reals (r > target), else down.

  Each step moves p by batch_size / (ada_kimg * 1000), so it can cross [0, 1] in ada_kimg
  thousand images; r = E[sign D(augmented real)] (1: D calls every real real).
  """
  step = jnp.sign(r - target) * batch_size / (ada_kimg * 1000.0)
  return jnp.clip(p + step, 0.0, 1.0).astype(jnp.float32)


def _finite_checks(d_loss_finite, g_loss, d_grads_finite, g_grad_norm) -> jax.Array:
  """Bitmask over NONFINITE_QUANTITIES of what is non-finite (0: all finite)."""
  ok = jnp.stack([d_loss_finite, jnp.isfinite(g_loss), d_grads_finite,
                  jnp.isfinite(g_grad_norm)])
  return jnp.sum(jnp.where(ok, 0, 2 ** jnp.arange(4))).astype(jnp.int32)


def _guard_nonfinite(old: TrainState, new: TrainState, d_loss_finite, g_loss, d_grads_finite,
                     g_grad_norm) -> TrainState:
  """Keeps the last good state when anything is non-finite, recording the first bad step.

  G's parameters, EMA and optimizer state are guarded where they are updated (train_step).
  """
  what = _finite_checks(d_loss_finite, g_loss, d_grads_finite, g_grad_norm)
  good = what == 0
  kept = jax.tree.map(lambda n, o: jnp.where(good, n, o), new, old)
  kept = kept.replace(g_params=new.g_params, ema_params=new.ema_params,
                      g_opt_state=new.g_opt_state)
  first = (old.bad_step < 0) & ~good
  return kept.replace(
      step=new.step, rng=new.rng,
      bad_step=jnp.where(first, old.step, old.bad_step),
      bad_what=jnp.where(first, what, old.bad_what))


def describe_nonfinite(bad_what: int):
  return [name for i, name in enumerate(NONFINITE_QUANTITIES) if int(bad_what) & (1 << i)]


def jit_train_step(train_step: Callable, mesh, donate: bool = True,
                   state_shardings=None) -> Callable:
  """jit with the state placed as `state_shardings` (`GAN.state_shardings`; default: replicated)
  and the batch split over 'data'; the state is donated."""
  rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  state = rep if state_shardings is None else state_shardings
  return jax.jit(train_step, in_shardings=(state, data), out_shardings=(state, rep),
                 donate_argnums=(0,) if donate else ())
