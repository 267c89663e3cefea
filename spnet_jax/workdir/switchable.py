"""The switchable forward: every sub-network of a slimmable network in one function, the
sub-network a run-time int32 scalar (`spnet_jax.workdir.export` serialises it with
`jax.export`, `spnet_jax.workdir.tf_export` converts it to a TF SavedModel)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from spnet_jax.core.structure import Structure


def switchable_function(arch, structure: Structure, variables: dict[str, Any],
                        normalization: tuple[Sequence[float], Sequence[float]] | None = None):
    """``f(images, subnet) -> logits`` of every sub-network, ``subnet`` an int32 scalar
    traced at run time: a ``lax.switch`` over the widths' eval forwards, each reading its
    prefix slices of the same constants; NaN logits for ``subnet`` out of range. With
    ``normalization``, uint8 pixels in (normalised inside)."""
    model = arch.module(structure)
    consts = jax.tree.map(jnp.asarray, variables)
    n = structure.num_subnets

    def forward(images, subnet):
        if normalization is not None:
            mean, std = (jnp.asarray(v, jnp.float32) for v in normalization)
            images = (images.astype(jnp.float32) / 255.0 - mean) / std
        branches = [lambda x, k=k: model.apply(consts, x, subnet=k, train=False)
                    for k in range(n)]
        logits = jax.lax.switch(jnp.clip(subnet, 0, n - 1), branches, images)
        return jnp.where((subnet >= 0) & (subnet < n), logits, jnp.nan)

    return forward
