"""Test setup: repo root importable (for `configs`), paths to shared data."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import vitgan_jax  # noqa: E402,F401  # before any jax backend starts: quiet libtpu (tpu_env)

SHARED_DATA = os.path.join(REPO_ROOT, '..', 'shared', 'data')
CIFAR_SUBSET_NPZ = os.path.join(SHARED_DATA, 'cifar100_classes0-9_1834.npz')
