"""vitgan_jax.load(workdir).generate(n, seed): the config from config.json, G's weights only."""

import jax
import numpy as np
import pytest

import vitgan_jax
from vitgan_jax import checkpoint, errors, loop, sample
from tests.evaluation.test_train_eval import real_images, tiny_config
from tests.test_reliability import RecordingWriter


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  config = tiny_config()
  config.training.num_steps, config.eval.every_steps = 2, 0
  config.logging.every_steps, config.checkpoint.every_steps = 1, 1
  workdir = str(tmp_path_factory.mktemp('inference') / 'run')
  loop.run(config, workdir, arrays=real_images(), writer=RecordingWriter())
  return config, workdir


def test_load_and_generate_in_three_lines(trained):
  config, workdir = trained
  gan = vitgan_jax.load(workdir)  # no config module: rebuilt from workdir/config.json
  images = gan.generate(5, seed=0)
  assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 0
  assert gan.step == 2 and isinstance(gan, vitgan_jax.TrainedGAN)

  # The EMA generator of the full checkpoint, on the same z.
  state, generator = checkpoint.restore_for_inference(config, workdir)
  z = jax.random.normal(jax.random.split(jax.random.PRNGKey(0))[1],
                        (5, config.model.generator.latent_dim))
  expected = sample.to_uint8(generator.apply({'params': state.ema_params, **state.g_state}, z))
  np.testing.assert_array_equal(images, expected)
  np.testing.assert_array_equal(gan.generate(5, seed=0), images)  # same seed, same images
  assert not np.array_equal(gan.generate(5, seed=1), images)
  raw = sample.to_uint8(generator.apply({'params': state.g_params, **state.g_state}, z))
  np.testing.assert_array_equal(vitgan_jax.load(workdir, use_ema=False).generate(5, seed=0), raw)
  # sample.generate (--mode sample) is the same code.
  np.testing.assert_array_equal(sample.generate(config, workdir, 5, seed=0), images)
  assert gan.generate(0).shape == (0, 16, 16, 3)


def test_load_names_what_is_missing(tmp_path, trained):
  with pytest.raises(errors.CheckpointError, match='config.json'):
    vitgan_jax.load(str(tmp_path / 'nothing'))
  _, workdir = trained
  with pytest.raises(errors.CheckpointError, match='no checkpoint step 99'):
    vitgan_jax.load(workdir, step=99)
