"""vitgan_jax: ViTGAN and related transformer GANs in JAX/Flax.

  gan = vitgan_jax.load(workdir)          # a trained generator (vitgan_jax.inference)
  images = gan.generate(64, seed=0)       # uint8 NHWC
"""

from vitgan_jax import tpu_env as _tpu_env

_tpu_env.use_compile_only_env()  # libtpu without TPU chips: quiet CPU start (tpu_env)


def load(workdir, **kwargs):
  """inference.load: the generator of a workdir's checkpoint, config from its config.json."""
  from vitgan_jax import inference  # pylint: disable=g-import-not-at-top  # keeps `import vitgan_jax` light
  return inference.load(workdir, **kwargs)


def __getattr__(name):
  if name == 'TrainedGAN':
    from vitgan_jax import inference  # pylint: disable=g-import-not-at-top
    return inference.TrainedGAN
  raise AttributeError(f'module vitgan_jax has no attribute {name!r}')
