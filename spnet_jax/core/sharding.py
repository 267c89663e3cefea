"""Device placement: one `Mesh` over all devices, the batch split on its 'data' axis.

Parameters and optimizer state are replicated (every network in the SP-Net papers fits one
accelerator); batches are split along their first axis. Each process hands in only its own
rows of the global batch (`jax.make_array_from_process_local_data`), so the same code runs on
one CPU, eight fake CPU devices, a GPU server or a multi-host TPU slice.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of a batch -> global arrays split over the mesh's 'data' axis."""
    sharding = batch_sharded(mesh)
    count = jax.process_count()

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(
            sharding, x, (x.shape[0] * count, *x.shape[1:]))

    return {k: put(v) for k, v in local_batch.items()}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Puts a host (or single-device) tree on every device of the mesh."""
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    # Every process holds the same host values; each supplies its own devices' copies.
    def put(x):
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """A tree of replicated arrays as numpy arrays on this host (any process count)."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            x = x.addressable_data(0)  # replicated: this process's copy is the whole value
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)
