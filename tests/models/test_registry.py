"""The model registry builds from config and names the field of any bad value."""

import pytest

from configs import default as default_lib
from vitgan_jax import models


@pytest.mark.parametrize('path,value,field', [
    ('discriminator.attention', 'cosine', 'model.discriminator.attention'),
    ('generator.attention', 'cosine', 'model.generator.attention'),
    ('generator.variant', 'D', 'model.generator.variant'),
    ('generator.output', 'conv', 'model.generator.output'),
    ('discriminator.spectral_norm', 'weight', 'model.discriminator.spectral_norm'),
    ('generator.patch_size', 5, 'model.generator.patch_size'),
    ('discriminator.patch_size', 3, 'model.discriminator.patch_size'),
    ('generator.name', 'nope', 'model.generator.name'),
    ('discriminator.name', 'nope', 'model.discriminator.name'),
])
def test_bad_model_config_names_the_field(path, value, field):
  config = default_lib.get_config()
  part, key = path.split('.')
  config.model[part][key] = value
  with pytest.raises(ValueError, match=field.replace('.', r'\.')):
    models.build_generator(config.model)
    models.build_discriminator(config.model)


def test_unknown_field_is_refused():
  config = default_lib.get_config()
  config.model.generator.widht = 3
  with pytest.raises(ValueError, match=r'model\.generator\.widht'):
    models.build_generator(config.model)


def test_bad_dtype_is_refused():
  with pytest.raises(ValueError, match='training.dtype'):
    models.build_generator(default_lib.get_config().model, dtype='float16')
