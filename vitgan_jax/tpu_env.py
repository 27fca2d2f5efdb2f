"""libtpu's environment on a host without TPU chips: quiet CPU runs, and compiles for a topology.

With libtpu installed (the `tpu` extra), JAX tries a TPU backend in every process. On a host
with no TPU chip, libtpu then asks for the cloud metadata it cannot get and prints five lines
of warnings to stderr on every start. Naming a TPU type and the local host ends that: the TPU
backend finds no chip and JAX falls back to CPU at once (measured: 0.1 s more than
JAX_PLATFORMS=cpu). The same settings are what libtpu needs to compile for a topology
without the hardware (`vitgan_jax.tpu_compile`).

Nothing is changed on a TPU VM (TPU chips on the PCI bus), nor when the user set any of these
variables or asked for a TPU backend (JAX_PLATFORMS naming tpu), nor when libtpu is not
installed. Only os, glob and importlib are
imported here: `import vitgan_jax` stays light.
"""

import glob
import importlib.util
import os

# What libtpu reads instead of the cloud metadata server. The first two say which TPU this
# host is: set by the user (or a TPU VM), they are left alone.
TOPOLOGY_ENV = {
    'TPU_ACCELERATOR_TYPE': 'v3-8',    # any valid type; compiles name their own topology
    'TPU_WORKER_HOSTNAMES': 'localhost',
}
COMPILE_ONLY_ENV = {
    **TOPOLOGY_ENV,
    'TPU_SKIP_MDS_QUERY': '1',         # no metadata server queries (jax sets it too)
    # libtpu lets one process at a time hold /tmp/libtpu_lockfile ("Internal error when
    # accessing libtpu multi-process lockfile"); with no chip to share, every process may load it.
    'ALLOW_MULTIPLE_LIBTPU_LOAD': '1',
}
_GOOGLE_PCI_VENDOR = '0x1ae0'  # TPU chips are PCI devices of this vendor (as jax checks)


def has_tpu_chips() -> bool:
  """Whether this host has TPU chips on its PCI bus (a TPU VM)."""
  for vendor_path in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(vendor_path) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def libtpu_installed() -> bool:
  return importlib.util.find_spec('libtpu') is not None


def use_compile_only_env() -> bool:
  """Sets COMPILE_ONLY_ENV on a host without TPU chips where libtpu is installed.

  Returns whether the variables are now in place (set here or before). Call it before JAX
  creates its backends (its first jax.devices() or computation).
  """
  if not libtpu_installed() or has_tpu_chips():
    return False
  user_set = [k for k in TOPOLOGY_ENV if k in os.environ]
  if user_set:
    return len(user_set) == len(TOPOLOGY_ENV)
  if 'tpu' in os.environ.get('JAX_PLATFORMS', ''):
    return False  # the user asked for a TPU backend: let libtpu say what it finds
  for key, value in COMPILE_ONLY_ENV.items():
    os.environ.setdefault(key, value)
  return True
