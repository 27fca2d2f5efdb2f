"""The GAN as one value: both networks, both optimizers and the latent size, built once.

  gan = GAN.from_config(config)
  state = gan.init(jax.random.PRNGKey(0))          # TrainState: G, D, EMA, optimizer states
  images = gan.generate_uint8(state, rng, 64)      # EMA samples, uint8 NHWC

Everything that needs a model (the trainer, checkpoint templates, evaluation, sampling, the
benchmarks) takes a `GAN`; nothing else assembles networks and optimizers.
"""

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vitgan_jax import errors, images as images_lib, models, sharding

PyTree = Any


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
  augment_p: jax.Array   # DiffAugment's probability when adaptive (augment.ada_target > 0)
  rng: jax.Array
  bad_step: jax.Array    # first step with a non-finite loss or gradient (-1: none)
  bad_what: jax.Array    # bitmask over train.NONFINITE_QUANTITIES at bad_step


def _adam(c) -> optax.GradientTransformation:
  """Adam with its hyperparameters injected, so the learning rate is logged and restorable."""
  return optax.inject_hyperparams(optax.adam)(learning_rate=c.lr, b1=c.b1, b2=c.b2, eps=c.eps)


@dataclasses.dataclass(frozen=True, eq=False)
class GAN:
  """Generator, discriminator, their optimizers and the latent size of one config."""
  generator: nn.Module
  discriminator: nn.Module
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation
  latent_dim: int
  image_shape: Tuple[int, int, int]  # (H, W, C) of the images G makes and D reads
  shard_optimizer: bool = False      # training.shard_optimizer: see state_shardings

  @classmethod
  def from_config(cls, config) -> 'GAN':
    """Builds both networks (model.*, training.dtype) and both Adams (optimizer.g / .d).

    A config mistake (unknown model name or field, bad dtype) is a one-line ConfigError.
    """
    try:
      generator = models.build_generator(config.model, config.training.dtype)
      discriminator = models.build_discriminator(config.model, config.training.dtype)
      g_tx, d_tx = _adam(config.optimizer.g), _adam(config.optimizer.d)
    except (ValueError, KeyError) as e:
      if isinstance(e, errors.Error):
        raise
      raise errors.ConfigError(f'config: {e}') from e
    size, channels = config.model.image_size, config.model.channels
    return cls(generator=generator, discriminator=discriminator, g_tx=g_tx, d_tx=d_tx,
               latent_dim=int(config.model.generator.latent_dim),
               image_shape=(size, size, channels),
               shard_optimizer=bool(config.training.get('shard_optimizer', False)))

  def latents(self, rng: jax.Array, n: int) -> jax.Array:
    """z ~ N(0, I) of shape (n, latent_dim): the only place latents are drawn."""
    return jax.random.normal(rng, (n, self.latent_dim))

  def init(self, rng: jax.Array) -> TrainState:
    """Initializes G, D (with spectral state), the EMA copy of G and both optimizer states."""
    g_rng, d_rng, rng = jax.random.split(rng, 3)
    g_vars = self.generator.init(g_rng, jnp.zeros((1, self.latent_dim)))
    d_vars = self.discriminator.init(d_rng, jnp.zeros((1, *self.image_shape)))
    g_params, g_state = g_vars['params'], {k: v for k, v in g_vars.items() if k != 'params'}
    d_params, d_state = d_vars['params'], {k: v for k, v in d_vars.items() if k != 'params'}
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_params, d_params=d_params,
        ema_params=jax.tree.map(jnp.copy, g_params),
        g_state=g_state, d_state=d_state,
        g_opt_state=self.g_tx.init(g_params), d_opt_state=self.d_tx.init(d_params),
        lecam={'real': jnp.zeros(()), 'fake': jnp.zeros(())},
        augment_p=jnp.zeros((), jnp.float32),  # ADA starts without augmentation
        rng=rng,
        bad_step=jnp.full((), -1, jnp.int32), bad_what=jnp.zeros((), jnp.int32))

  @functools.cached_property
  def state_shapes(self) -> TrainState:
    """TrainState of ShapeDtypeStructs, traced from `init` once per GAN."""
    return jax.eval_shape(self.init, jax.random.PRNGKey(0))

  def state_shardings(self, mesh) -> TrainState:
    """Where each state array lives on `mesh`: replicated, except (with shard_optimizer) the
    Adam moments and the EMA, split over 'data' (ZeRO-1): each device updates only its slice of
    them, the step's main memory traffic after the activations. The math is the same."""
    shapes = self.state_shapes
    replicated = sharding.replicated(mesh)
    placed = jax.tree.map(lambda _: replicated, shapes)
    if not self.shard_optimizer:
      return placed
    return placed.replace(g_opt_state=sharding.split_tree_over_data(shapes.g_opt_state, mesh),
                          d_opt_state=sharding.split_tree_over_data(shapes.d_opt_state, mesh),
                          ema_params=sharding.split_tree_over_data(shapes.ema_params, mesh))

  def init_on(self, mesh, seed: int) -> TrainState:
    """`init(PRNGKey(seed))` computed on `mesh`, placed by state_shardings (a fresh run)."""
    return jax.jit(self.init, out_shardings=self.state_shardings(mesh))(
        jax.random.PRNGKey(seed))

  def abstract_state(self, mesh=None) -> TrainState:
    """TrainState of ShapeDtypeStructs (placed as state_shardings) to restore into, no init."""
    mesh = sharding.create_mesh() if mesh is None else mesh
    return jax.tree.map(lambda s, where: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=where),
                        self.state_shapes, self.state_shardings(mesh))

  def generate(self, state, rng_or_z, n: Optional[int] = None, *,
               ema: bool = True) -> jax.Array:
    """Images in G's output range from the EMA (default) or live weights of `state`.

    `state` is a TrainState or anything with `ema_params` / `g_params` and `g_state`;
    `rng_or_z` is a PRNG key (then `n` images) or latents (n, latent_dim).
    """
    z = self.latents(rng_or_z, n) if n is not None else rng_or_z
    params = state.ema_params if ema else state.g_params
    return self.generator.apply({'params': params, **state.g_state}, z)

  def generate_uint8(self, state, rng_or_z, n: Optional[int] = None, *,
                     ema: bool = True) -> jax.Array:
    """`generate` turned to uint8 [0, 255] on the device."""
    return images_lib.to_uint8_device(self.generate(state, rng_or_z, n, ema=ema))

  def sampler(self, mesh=None, *, ema: bool = True) -> Callable:
    """The one jitted sampler: (state, rng, n) or (state, z) -> uint8 NHWC images.

    With `mesh`, latents and images are split over its 'data' axis (n a multiple of it).
    """
    out = sharding.data_sharded(mesh) if mesh is not None else None

    def sample(state, rng_or_z, n=None):
      z = self.latents(rng_or_z, n) if n is not None else rng_or_z
      if out is not None:
        z = jax.lax.with_sharding_constraint(z, out)
      return self.generate_uint8(state, z, ema=ema)

    return jax.jit(sample, static_argnums=2, out_shardings=out)
