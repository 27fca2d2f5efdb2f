"""TPU chips and the topologies `--mode compile` targets: the one table of numbers, with sources.

Per chip, as Google publishes them. A JAX device is one TensorCore on v2 and v3 (two per
chip), one chip on v4 (its two TensorCores run as one "megacore" device, as JAX shows a
v4 chip), v5e and v6e (one TensorCore per chip); per-device figures divide by
`devices_per_chip`.
"""

import dataclasses
import re
from typing import Optional, Tuple

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  generation: str            # 'v2', 'v3', ...
  peak_bf16_flops: float     # per chip, FLOP/s (bf16 matmuls)
  hbm_gib: float             # per chip
  hbm_bytes_per_s: float     # per chip
  cores_per_chip: int        # TensorCores
  devices_per_chip: int      # JAX devices per chip
  source: str

  @property
  def peak_flops_per_device(self) -> float:
    return self.peak_bf16_flops / self.devices_per_chip

  @property
  def hbm_bytes_per_device(self) -> float:
    return self.hbm_gib * GIB / self.devices_per_chip

  @property
  def hbm_bandwidth_per_device(self) -> float:
    return self.hbm_bytes_per_s / self.devices_per_chip


_JOUPPI_2020 = ('Jouppi et al., "A Domain-Specific Supercomputer for Training Deep Neural '
                'Networks", CACM 63(7), 2020, Table 3 (cited by cloud.google.com/tpu/docs/v2 '
                'and /v3)')

CHIPS = {
    'v2': ChipSpec('v2', 46e12, 16, 700e9, 2, 2, _JOUPPI_2020 + ': TPUv2 46 TFLOPS bf16, '
                   '16 GiB HBM, 700 GB/s'),
    'v3': ChipSpec('v3', 123e12, 32, 900e9, 2, 2, 'cloud.google.com/tpu/docs/v3: peak compute '
                   'per chip 123 teraflops (bf16), HBM2 32 GiB, 900 GBps; two TensorCores'),
    'v4': ChipSpec('v4', 275e12, 32, 1200e9, 2, 1, 'cloud.google.com/tpu/docs/v4: peak compute '
                   'per chip 275 teraflops (bf16), HBM2 32 GiB, 1200 GBps; two TensorCores '
                   '(one megacore JAX device)'),
    'v5e': ChipSpec('v5e', 197e12, 16, 819e9, 1, 1, 'cloud.google.com/tpu/docs/v5e: peak '
                    'compute per chip (bf16) 197 TFLOPs, HBM 16 GiB, 819 GBps; one TensorCore'),
    'v6e': ChipSpec('v6e', 918e12, 32, 1638e9, 1, 1, 'cloud.google.com/tpu/docs/v6e: peak '
                    'compute per chip (bf16) 918 TFLOPs, HBM 32 GB, 1638 GBps; one TensorCore'),
}


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str                  # what users type: 'v3-8' (Cloud TPU accelerator type)
  libtpu_name: str           # what libtpu's get_topology_desc accepts: 'v3:2x2'
  chip: ChipSpec
  num_devices: int
  chip_config_name: Optional[str] = None   # 'megacore' for v4
  chips_per_host_bounds: Optional[Tuple[int, int, int]] = None

  @property
  def num_chips(self) -> int:
    return self.num_devices // self.chip.devices_per_chip


def _topology(name, libtpu_name, generation, **kwargs):
  chip = CHIPS[generation]
  dims = [int(d) for d in libtpu_name.split(':')[1].split('x')]
  chips = 1
  for d in dims:
    chips *= d
  return Topology(name, libtpu_name, chip, chips * chip.devices_per_chip, **kwargs)


# Cloud TPU accelerator types -> libtpu topology names (libtpu refuses 'v2-32', 'v5e-8').
# v2/v3: cores = 2 x chips; v4: cores = 2 x chips, one megacore device per chip; v5e/v6e:
# one core per chip (v5litepod-N is v5e-N).
TOPOLOGIES = {t.name: t for t in [
    _topology('v2-8', 'v2:2x2', 'v2'),
    _topology('v2-32', 'v2:4x4', 'v2'),
    _topology('v2-128', 'v2:8x8', 'v2'),
    _topology('v3-8', 'v3:2x2', 'v3'),
    _topology('v3-32', 'v3:4x4', 'v3'),
    _topology('v3-128', 'v3:8x8', 'v3'),
    _topology('v4-8', 'v4:2x2x1', 'v4', chip_config_name='megacore'),
    _topology('v4-16', 'v4:2x2x2', 'v4', chip_config_name='megacore'),
    _topology('v4-32', 'v4:2x2x4', 'v4', chip_config_name='megacore'),
    _topology('v5e-1', 'v5e:1x1', 'v5e', chips_per_host_bounds=(1, 1, 1)),
    _topology('v5e-4', 'v5e:2x2', 'v5e'),
    _topology('v5e-8', 'v5e:2x4', 'v5e'),
    _topology('v5e-16', 'v5e:4x4', 'v5e'),
    _topology('v5e-32', 'v5e:4x8', 'v5e'),
    _topology('v6e-1', 'v6e:1x1', 'v6e', chips_per_host_bounds=(1, 1, 1)),
    _topology('v6e-4', 'v6e:2x2', 'v6e'),
    _topology('v6e-8', 'v6e:2x4', 'v6e'),
    _topology('v6e-16', 'v6e:4x4', 'v6e'),
    _topology('v6e-32', 'v6e:4x8', 'v6e'),
]}
ALIASES = {'v5litepod': 'v5e'}
_LIBTPU_FORM = re.compile(r'^(v2|v3|v4|v5e|v6e):(\d+(?:x\d+)+)$')


def topology(name: str) -> Topology:
  """A Topology from a Cloud TPU type ('v2-32', 'v5litepod-8') or a libtpu name ('v2:4x4').

  Raises ValueError naming the known names.
  """
  key = name.strip().lower()
  for alias, generation in ALIASES.items():
    if key.startswith(alias + '-'):
      key = generation + key[len(alias):]
  if key in TOPOLOGIES:
    return TOPOLOGIES[key]
  for t in TOPOLOGIES.values():
    if t.libtpu_name == key:
      return t
  match = _LIBTPU_FORM.match(key)
  if match:
    generation = match.group(1)
    kwargs = {'chip_config_name': 'megacore'} if generation == 'v4' else {}
    t = _topology(key, key, generation, **kwargs)
    return t
  raise ValueError(f'unknown TPU topology {name!r}; use one of {", ".join(TOPOLOGIES)} '
                   '(Cloud TPU accelerator types) or a libtpu topology such as v2:4x4 or '
                   'v5e:2x4')
