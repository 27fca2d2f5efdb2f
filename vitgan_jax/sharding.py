"""Device mesh and shardings: batch split over a 'data' axis, train state replicated.

(With training.shard_optimizer the Adam moments and the EMA are split over 'data' too:
`GAN.state_shardings`.)

Works the same on 1 CPU, 8 GPUs or a TPU pod slice: each process feeds its local slice of the
global batch and `global_batch` assembles them into one jax.Array on the mesh.
"""

import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vitgan_jax import errors

DATA_AXIS = 'data'


def maybe_initialize_distributed(coordinator_address: Optional[str] = None,
                                 num_processes: Optional[int] = None,
                                 process_id: Optional[int] = None) -> None:
  """Starts jax.distributed for multi-host runs; a no-op on a single host.

  Explicit arguments (or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) win;
  on a Cloud TPU pod slice (TPU_WORKER_HOSTNAMES lists several hosts) JAX detects everything.
  """
  coordinator_address = coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS')
  if coordinator_address:
    num_processes = num_processes or int(os.environ.get('JAX_NUM_PROCESSES', '1'))
    process_id = process_id if process_id is not None else int(
        os.environ.get('JAX_PROCESS_ID', '0'))
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif len(os.environ.get('TPU_WORKER_HOSTNAMES', '').split(',')) > 1:
    jax.distributed.initialize()


def create_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A 1-D mesh over all (global) devices with the single axis 'data'."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def split_over_data(shape: Sequence[int], mesh: Mesh) -> NamedSharding:
  """An array's first dimension that divides evenly split over 'data'; replicated if none."""
  devices = mesh.shape[DATA_AXIS]
  for i, size in enumerate(shape):
    if devices > 1 and size >= devices and size % devices == 0:
      return NamedSharding(mesh, P(*([None] * i), DATA_AXIS))
  return replicated(mesh)


def split_tree_over_data(tree: Any, mesh: Mesh) -> Any:
  """`split_over_data` for each array (or ShapeDtypeStruct) of a pytree."""
  return jax.tree.map(lambda x: split_over_data(x.shape, mesh), tree)


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch: int, mesh: Mesh, field: str = 'training.batch_size') -> int:
  """Per-device batch; a clear error when the global batch is < 1 or does not split evenly."""
  devices = mesh.devices.size
  if global_batch < 1:
    raise errors.ConfigError(f'{field}={global_batch} must be at least 1 (and a multiple of the '
                             f'device count, {devices})')
  if global_batch % devices or global_batch % jax.process_count():
    raise errors.ConfigError(
        f'{field}={global_batch} does not divide over {devices} devices '
        f'({jax.process_count()} processes); use a multiple of {devices}, e.g. '
        f'--config.{field}={max(devices, global_batch // devices * devices)}')
  return global_batch // devices


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
  """Per-process numpy batch (pytree) -> global jax.Arrays sharded over 'data'."""
  sharding = data_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def is_main_process() -> bool:
  """Only process 0 writes logs, samples and metrics files."""
  return jax.process_index() == 0
