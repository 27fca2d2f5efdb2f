"""vitgan_jax.load(workdir).generate(n, seed): the config from config.json, G's weights only."""

import os
import shutil

import jax
import numpy as np
import pytest

import vitgan_jax
from tests.helpers import RecordingWriter, real_images
from tests.helpers import tiny_eval_config as tiny_config
from vitgan_jax import errors, images as images_lib, inference, input_pipeline, trainer
from vitgan_jax import workdir as workdir_lib
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


def test_sample_and_eval_read_a_workdir_that_a_training_run_holds(trained, tmp_path):
  """--mode sample and --mode eval take no lock: they work beside a live training run."""
  from tests.evaluation.test_train_eval import tiny_extractor  # pylint: disable=g-import-not-at-top
  config, source = trained
  run_dir = str(tmp_path / 'run')
  shutil.copytree(source, run_dir)
  held = workdir_lib.WorkdirLock(run_dir)  # as the training run would hold it
  held.acquire()
  try:
    lock = os.path.join(run_dir, workdir_lib.LOCK_FILE)
    before = open(lock).read()
    line = inference.sample_mode(config, run_dir, num_samples=4, seed=0)
    assert line.startswith('Wrote 4 samples (step 2, seed 0)')
    record = inference.eval_mode(config, run_dir, data=input_pipeline.Data(config, real_images()),
                                 extractor=tiny_extractor())
    assert record['step'] == 2 and np.isfinite(record['fid'])
    assert open(lock).read() == before  # untouched, still the training run's
    with pytest.raises(errors.WorkdirError, match='in use by another training run'):
      workdir_lib.WorkdirLock(run_dir).acquire()
  finally:
    held.release()
