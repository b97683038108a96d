"""Device meshes and shardings: batch split over a 'data' axis, state replicated."""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MODES = ('jit', 'pmap')


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over every device of every process (or ``devices``), axis 'data'.

  Axis types are Auto: `jax.make_mesh` defaults to Explicit axes, which break slicing and
  shard_map inputs.
  """
  devices = np.asarray(jax.devices() if devices is None else devices)
  return Mesh(devices.reshape(-1), ('data',), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec('data'))
