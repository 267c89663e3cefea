"""Checkpoint integrity: a fingerprint of every saved array, checked when it is read back.

Orbax writes each step atomically, but that does not protect against what happens to the
files later (a disk that truncates or flips bytes, a half-copied workdir). `save_args` in
`spnet_jax.workdir.checkpoint` saves `fingerprints` of the items as one more item
(``integrity``); `restore_checked` restores a step and compares, raising `Damaged`; a damaged
step folder is moved aside by `quarantine`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from spnet_jax.core import sharding

ITEM = 'integrity'  # the checkpoint item holding the fingerprints (JSON)


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    """A uint32 of all of ``x``'s bits: a sum of each element's bits times an odd weight that
    depends on its position, so any flipped bit (or moved element) changes it."""
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()
    weights = (jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761)) | jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


_fingerprints_jit = jax.jit(lambda tree: jax.tree.map(_leaf_fingerprint, tree))


def fingerprints(items: dict[str, Any]) -> dict[str, dict[str, int]]:
    """``{item: {leaf path: uint32}}`` of a checkpoint's items (computed where they live)."""
    values = sharding.to_host(_fingerprints_jit(items))
    return {name: {jax.tree_util.keystr(p): int(v)
                   for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
            for name, tree in values.items()}


class Damaged(Exception):
    """A checkpoint that cannot be read back as it was written (message: what is wrong)."""


def _verify(restored: dict[str, Any], saved: Any) -> None:
    """Raises `Damaged` naming the first array whose fingerprint differs from the saved one."""
    if saved is None:
        return  # written before checkpoints carried fingerprints
    want = saved['fingerprints']
    got = fingerprints({k: restored[k] for k in want if k in restored})
    for item, leaves in got.items():
        for path, value in leaves.items():
            if want[item].get(path) != value:
                raise Damaged(f'{item}{path} does not read back as it was written')


def restore_checked(mngr: ocp.CheckpointManager, step: int,
                    abstract_items: dict[str, Any]) -> dict[str, Any]:
    """Restores ``step`` into ``abstract_items`` and verifies it; `Damaged` if it cannot."""
    args = {k: ocp.args.StandardRestore(v) for k, v in abstract_items.items()}
    if os.path.isdir(os.path.join(mngr.directory, str(step), ITEM)):  # older ones have none
        args[ITEM] = ocp.args.JsonRestore()
    try:
        restored = mngr.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # noqa: BLE001 - TensorStore raises bare Exceptions on bad bytes
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        # TensorStore appends the repr of a bound method ("See full TensorStore details").
        first = first.split(' See full TensorStore details')[0].rstrip('.')[:200]
        raise Damaged(f'it does not read back ({first})') from None
    restored = {k: restored[k] for k in args}
    _verify(restored, restored.pop(ITEM, None))
    return restored


def quarantine(step_folder: str, damaged_folder: str) -> str:
    """Moves a damaged step folder into ``damaged_folder`` (process 0); returns where."""
    target = os.path.join(damaged_folder, os.path.basename(step_folder))
    if os.path.exists(target):
        target = f'{target}-{int(time.time())}'
    if jax.process_index() == 0:
        os.makedirs(damaged_folder, exist_ok=True)
        os.replace(step_folder, target)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(f'quarantine {step_folder}')
    return target
