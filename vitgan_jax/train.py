"""TrainState, the jitted GAN train step, and the training loop.

One step = `n_critic` discriminator updates (NS-logistic + bCR, optional R1 / LeCam, all on
DiffAugment-ed inputs) then one generator update and the EMA of G's weights. The step is a
pure function of (state, batch), jitted over a 'data' mesh with the state donated.
"""

from typing import Any, Callable, Dict, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vitgan_jax import augment as augment_lib
from vitgan_jax import losses, models, sharding

PyTree = Any

# Bits of TrainState.bad_what: which quantity went non-finite first.
NONFINITE_QUANTITIES = ('d_loss', 'g_loss', 'd_grads', 'g_grads')
BCR_VIEWS = ('independent', 'stacked')


@flax.struct.dataclass
class TrainState:
  """Everything a run needs to continue exactly: one pytree, checkpointed whole."""
  step: jax.Array
  g_params: PyTree
  d_params: PyTree
  ema_params: PyTree
  g_state: PyTree        # G's non-param collections (e.g. 'spectral'); {} for ViTGAN's G
  d_state: PyTree        # D's power-iteration vectors and sigma(W_init)
  g_opt_state: PyTree
  d_opt_state: PyTree
  lecam: Dict[str, jax.Array]  # EMA anchors of D(real), D(fake)
  rng: jax.Array
  bad_step: jax.Array    # first step with a non-finite loss or gradient (-1: none)
  bad_what: jax.Array    # bitmask over NONFINITE_QUANTITIES at bad_step


def create_models(config) -> Tuple[nn.Module, nn.Module]:
  dtype = config.training.dtype
  return (models.build_generator(config.model, dtype),
          models.build_discriminator(config.model, dtype))


def create_optimizers(config):
  """Adam per network; hyperparameters injected so the learning rate is logged and restorable."""
  make = lambda c: optax.inject_hyperparams(optax.adam)(  # noqa: E731
      learning_rate=c.lr, b1=c.b1, b2=c.b2, eps=c.eps)
  return make(config.optimizer.g), make(config.optimizer.d)


def latent_dim(config) -> int:
  return config.model.generator.latent_dim


def create_train_state(config, rng, generator, discriminator, g_tx, d_tx) -> TrainState:
  """Initializes G, D (with spectral state), the EMA copy of G and both optimizer states."""
  g_rng, d_rng, rng = jax.random.split(rng, 3)
  size, channels = config.model.image_size, config.model.channels
  g_vars = generator.init(g_rng, jnp.zeros((1, latent_dim(config))))
  d_vars = discriminator.init(d_rng, jnp.zeros((1, size, size, channels)))
  g_params, g_state = g_vars['params'], {k: v for k, v in g_vars.items() if k != 'params'}
  d_params, d_state = d_vars['params'], {k: v for k, v in d_vars.items() if k != 'params'}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params, d_params=d_params,
      ema_params=jax.tree.map(jnp.copy, g_params),
      g_state=g_state, d_state=d_state,
      g_opt_state=g_tx.init(g_params), d_opt_state=d_tx.init(d_params),
      lecam={'real': jnp.zeros(()), 'fake': jnp.zeros(())},
      rng=rng,
      bad_step=jnp.full((), -1, jnp.int32), bad_what=jnp.zeros((), jnp.int32))


def ema_beta(config, step):
  """StyleGAN2-ADA EMA: half-life ema_kimg thousand images, ramped up over the first images."""
  batch = config.training.batch_size
  ema_nimg = config.training.ema_kimg * 1000.0
  if config.training.ema_rampup:
    ema_nimg = jnp.minimum(ema_nimg, step.astype(jnp.float32) * batch * config.training.ema_rampup)
  return 0.5 ** (batch / jnp.maximum(ema_nimg, 1e-8))


def _all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(config, generator, discriminator, g_tx, d_tx, mesh=None) -> Callable:
  """Returns train_step(state, batch) -> (state, metrics); pure, jit it (see `jit_train_step`)."""
  lc, ac = config.loss, config.augment
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
  sr_factor = config.model.image_size // generator.validate() if sr_weight > 0 else 0
  batch_spec = sharding.data_sharded(mesh) if mesh is not None else None

  def constrain(x):  # keep per-example work split over devices like the batch
    return jax.lax.with_sharding_constraint(x, batch_spec) if batch_spec is not None else x

  def _bcr_view(clean, augmented, rng):
    """The second view T(x) that bCR holds D consistent on (loss.bcr_views)."""
    if lc.bcr_views == 'independent':  # a second DiffAugment draw of the clean images
      return augment_lib.augment(clean, rng, ac.policy, ac.p)
    return augment_lib.augment(augmented, rng, ac.bcr_policy, 1.0)  # 'stacked': T on A(x)

  def generate(g_params, g_state, z):
    return generator.apply({'params': g_params, **g_state}, z, train=True)

  def d_loss_fn(d_params, d_state, real, fake, lecam, step, rng):
    k_aug, k_bcr = jax.random.split(rng)
    batch = real.shape[0]
    clean = jnp.concatenate([real, fake])
    inputs = constrain(augment_lib.augment(clean, k_aug, ac.policy, ac.p))
    logits, new_d_state = discriminator.apply(
        {'params': d_params, **d_state}, inputs, train=True, mutable=list(d_state))
    real_logits, fake_logits = logits[:batch], logits[batch:]
    loss = losses.d_logistic_loss(real_logits, fake_logits)
    aux = {'d_real': jnp.mean(real_logits), 'd_fake': jnp.mean(fake_logits),
           'd_adv_loss': loss}
    variables = {'params': d_params, **new_d_state}
    if use_bcr:
      transformed = constrain(_bcr_view(clean, inputs, k_bcr))
      t_logits = discriminator.apply(variables, transformed)
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

  def g_loss_fn(g_params, g_state, d_params, d_state, z, rng, real):
    fake, new_g_state = generator.apply({'params': g_params, **g_state}, z, train=True,
                                        mutable=list(g_state))
    inputs = constrain(augment_lib.augment(fake, rng, ac.policy, ac.p))
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
    d_finite = jnp.array(True)
    d_loss_finite = jnp.array(True)
    for i in range(config.training.n_critic):
      k_z, k_d = jax.random.split(jax.random.fold_in(step_rng, i))
      z = constrain(jax.random.normal(k_z, (batch_size, latent_dim(config))))
      fake = jax.lax.stop_gradient(generate(state.g_params, state.g_state, z))
      (_, (d_aux, d_state, real_logits, fake_logits)), d_grads = jax.value_and_grad(
          d_loss_fn, has_aux=True)(d_params, d_state, real, fake, lecam, state.step, k_d)
      d_updates, d_opt_state = d_tx.update(d_grads, d_opt_state, d_params)
      d_params = optax.apply_updates(d_params, d_updates)
      if config.loss.lecam > 0:
        lecam = dict(zip(('real', 'fake'), losses.update_lecam_anchors(
            lecam['real'], lecam['fake'], real_logits, fake_logits, config.loss.lecam_decay)))
      d_loss_finite &= jnp.isfinite(d_aux['d_loss'])
      d_finite &= _all_finite(d_grads)

    k_z, k_g = jax.random.split(jax.random.fold_in(step_rng, config.training.n_critic))
    z = constrain(jax.random.normal(k_z, (batch_size, latent_dim(config))))
    (_, (g_aux, g_state)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
        state.g_params, state.g_state, d_params, d_state, z, k_g, real)
    g_updates, g_opt_state = g_tx.update(g_grads, state.g_opt_state, state.g_params)
    beta = ema_beta(config, state.step)
    if config.training.nan_guard:
      # Every check is known here: G's update is kept or dropped inside its own Adam and EMA
      # update (one fused pass), not in a second pass over the state at the end.
      good = _finite_checks(d_loss_finite, g_aux['g_loss'], d_finite, g_grads) == 0
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
        lecam=lecam, rng=rng)
    metrics = {**d_aux, **g_aux,
               'd_grad_norm': optax.tree.norm(d_grads),
               'g_grad_norm': optax.tree.norm(g_grads),
               'd_lr': d_opt_state.hyperparams['learning_rate'],
               'g_lr': g_opt_state.hyperparams['learning_rate'],
               'ema_beta': beta}
    if config.training.nan_guard:
      new_state = _guard_nonfinite(state, new_state, d_loss_finite, g_aux['g_loss'], d_finite,
                                   g_grads)
    return new_state, metrics

  return train_step


def _finite_checks(d_loss_finite, g_loss, d_grads_finite, g_grads) -> jax.Array:
  """Bitmask over NONFINITE_QUANTITIES of what is non-finite (0: all finite)."""
  ok = jnp.stack([d_loss_finite, jnp.isfinite(g_loss), d_grads_finite, _all_finite(g_grads)])
  return jnp.sum(jnp.where(ok, 0, 2 ** jnp.arange(4))).astype(jnp.int32)


def _guard_nonfinite(old: TrainState, new: TrainState, d_loss_finite, g_loss, d_grads_finite,
                     g_grads) -> TrainState:
  """Keeps the last good state when anything is non-finite, recording the first bad step.

  G's parameters, EMA and optimizer state are guarded where they are updated (train_step).
  """
  what = _finite_checks(d_loss_finite, g_loss, d_grads_finite, g_grads)
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


def jit_train_step(train_step: Callable, mesh, donate: bool = True) -> Callable:
  """jit with the state replicated and the batch split over 'data'; the state is donated."""
  rep, data = sharding.replicated(mesh), sharding.data_sharded(mesh)
  return jax.jit(train_step, in_shardings=(rep, data), out_shardings=(rep, rep),
                 donate_argnums=(0,) if donate else ())


def sample_fn(generator, use_ema: bool = True) -> Callable:
  """jitted (state, z) -> images in [-1, 1] from the EMA (default) or raw generator."""
  @jax.jit
  def sample(state: TrainState, z):
    params = state.ema_params if use_ema else state.g_params
    return generator.apply({'params': params, **state.g_state}, z)
  return sample


def train_and_evaluate(config, workdir: str) -> TrainState:
  """Trains per `config` from scratch or from the latest checkpoint in `workdir`.

  Writes TensorBoard events + stdout lines (losses, D outputs, regularizers, grad norms, lrs,
  steps/s, images/s), 8x8 EMA sample grids from a fixed z, checkpoints, and FID when enabled.
  """
  from vitgan_jax import loop  # the loop's I/O lives apart from the pure step above
  return loop.run(config, workdir, announce=True)
