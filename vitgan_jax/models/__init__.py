"""The one model registry: `build_generator(config.model)`, `build_discriminator(config.model)`.

A model's config lives at `model.generator` / `model.discriminator`; its `name` picks the class
and every other field (except `name`) becomes a constructor argument, so configs are the only
place numbers live. `model.image_size` and `model.channels` are shared by G and D.
"""

import dataclasses
from typing import Callable, Dict

import jax.numpy as jnp

from vitgan_jax.models import ladagan, stylegan2, transgan, vit_discriminator, vit_generator

GENERATORS: Dict[str, Callable] = {
    'vitgan': vit_generator.ViTGenerator,
    'stylegan2': stylegan2.StyleGAN2Generator,
    'transgan': transgan.TransGANGenerator,
    'ladagan': ladagan.LadaGANGenerator,
}
DISCRIMINATORS: Dict[str, Callable] = {
    'vitgan': vit_discriminator.ViTDiscriminator,
    'stylegan2': stylegan2.StyleGAN2Discriminator,
    'transgan': transgan.TransGANDiscriminator,
    'ladagan': ladagan.LadaGANDiscriminator,
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def register_generator(name: str, cls) -> None:
  GENERATORS[name] = cls


def register_discriminator(name: str, cls) -> None:
  DISCRIMINATORS[name] = cls


def _build(registry, model_config, part: str, dtype: str):
  sub = model_config[part]
  name = sub.get('name', None)
  if name not in registry:
    raise ValueError(f'model.{part}.name={name!r} is not one of {sorted(registry)}')
  cls = registry[name]
  fields = {f.name for f in dataclasses.fields(cls)} - {'parent', 'name'}
  kwargs = {k: v for k, v in sub.items() if k != 'name'}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f'model.{part}.{unknown[0]} is not a field of {cls.__name__} '
                     f'(known: {sorted(fields)})')
  for shared in ('image_size', 'channels'):
    if shared in fields and shared in model_config:
      kwargs.setdefault(shared, model_config[shared])
  if dtype not in DTYPES:
    raise ValueError(f'training.dtype={dtype!r} is not one of {tuple(DTYPES)}')
  if 'dtype' in fields:
    kwargs['dtype'] = None if dtype == 'float32' else DTYPES[dtype]
  module = cls(**kwargs)
  if hasattr(module, 'validate'):
    module.validate()  # fail at build time, naming the field, not inside jit
  return module


def build_generator(model_config, dtype: str = 'float32'):
  """Generator module for `config.model`; `dtype` is the compute dtype (training.dtype)."""
  return _build(GENERATORS, model_config, 'generator', dtype)


def build_discriminator(model_config, dtype: str = 'float32'):
  """Discriminator module for `config.model`; `dtype` is the compute dtype (training.dtype)."""
  return _build(DISCRIMINATORS, model_config, 'discriminator', dtype)
