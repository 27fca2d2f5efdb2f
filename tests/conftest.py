"""Test setup: the repo root importable (for `configs` and `tests.helpers`)."""

import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

import vitgan_jax  # noqa: E402,F401  # before any jax backend starts: quiet libtpu (tpu_env)
