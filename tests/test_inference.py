"""vitgan_jax.load(workdir).generate(n, seed): the config from config.json, G's weights only."""

import os

import jax
import numpy as np
import pytest

import vitgan_jax
from tests.helpers import RecordingWriter, real_images
from tests.helpers import tiny_eval_config as tiny_config
from vitgan_jax import errors, images as images_lib, inference, input_pipeline, trainer
from vitgan_jax.gan import GAN


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  config = tiny_config()
  config.training.num_steps, config.eval.every_steps = 2, 0
  config.logging.every_steps, config.checkpoint.every_steps = 1, 1
  workdir = str(tmp_path_factory.mktemp('inference') / 'run')
  trainer.train_and_evaluate(config, workdir, data=input_pipeline.Data(config, real_images()),
                             writer=RecordingWriter())
  return config, workdir


def test_load_and_generate_in_three_lines(trained):
  config, workdir = trained
  gan = vitgan_jax.load(workdir)  # no config module: rebuilt from workdir/config.json
  images = gan.generate(5, seed=0)
  assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8 and images.std() > 0
  assert gan.step == 2 and isinstance(gan, vitgan_jax.TrainedGAN)

  # The EMA generator of the full checkpoint, on the same z.
  state = inference.restore_state(GAN.from_config(config), workdir)
  generator = gan.generator
  z = jax.random.normal(jax.random.split(jax.random.PRNGKey(0))[1],
                        (5, config.model.generator.latent_dim))
  expected = images_lib.to_uint8(generator.apply({'params': state.ema_params, **state.g_state}, z))
  np.testing.assert_array_equal(images, expected)
  np.testing.assert_array_equal(gan.generate(5, seed=0), images)  # same seed, same images
  assert not np.array_equal(gan.generate(5, seed=1), images)
  raw = images_lib.to_uint8(generator.apply({'params': state.g_params, **state.g_state}, z))
  np.testing.assert_array_equal(vitgan_jax.load(workdir, use_ema=False).generate(5, seed=0), raw)
  # --mode sample is the same code.
  out = inference.sample_mode(config, workdir, num_samples=5, seed=0,
                              out=os.path.join(workdir, 'five.png'))
  assert out.startswith('Wrote 5 samples (step 2, seed 0)')
  with np.load(os.path.join(workdir, 'five.npz')) as written:
    np.testing.assert_array_equal(written['x'], images)
  assert gan.generate(0).shape == (0, 16, 16, 3)


def test_load_names_what_is_missing(tmp_path, trained):
  with pytest.raises(errors.CheckpointError, match='config.json'):
    vitgan_jax.load(str(tmp_path / 'nothing'))
  _, workdir = trained
  with pytest.raises(errors.CheckpointError, match='no checkpoint step 99'):
    vitgan_jax.load(workdir, step=99)
