"""Zero-padding-match: masks of block ends and shortcuts, fused along each residual stream.

For every junction and sub-network k, with branch channels given in their sorted order:

* a branch's mask is the set of original channels it keeps (``order[:count]``), or for an
  identity shortcut, the previous junction's fused mask;
* the fused mask is the union of the two, the shortcut's channels first in their order and
  then the body's channels the shortcut lacks, in the body's order
  (`Structure.stream_order` ``'appended'``): an identity or entry shortcut then occupies a
  prefix of the stream, which the models place by a zero-pad instead of a gather
  (`release_layout` gives the release's layout, the union in original channel order);
* ``body_k[p]`` / ``short_k[p]`` say which branch channel lands at fused position p (or the
  branch's channel count: none), which `spnet_jax.core.layers.ZPMAdd` reads.
"""

from __future__ import annotations

import numpy as np

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelTable


def _positions(branch_channels: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """For each fused position, the index in ``branch_channels`` holding that channel (or
    ``len(branch_channels)``: none)."""
    index = {int(c): i for i, c in enumerate(branch_channels)}
    return np.asarray([index.get(int(c), len(branch_channels)) for c in fused], np.int32)


def release_layout(table: ChannelTable, masks: dict) -> dict:
    """``masks`` (a ``masks`` collection of ``table``'s network) in the release's layout:
    each junction's fused mask ascending, its ``body_k`` / ``short_k`` permuted with it, and
    an identity shortcut's positions renumbered into the previous stream's new order. The
    same network in `Structure.stream_order` 'ascending'; for comparing with the release's
    fused masks, and the identity on masks that are ascending already."""
    out: dict = {}
    for stream in table.streams:
        ranks: dict[int, np.ndarray] = {}  # sub-network -> previous stream's new positions
        for j in stream.junctions:
            old = masks[j.name][layers.JUNCTION]
            new = {}
            for key in old:
                kind, k = layers.subnet_of(key)
                if kind != layers.FUSED:
                    continue
                fused = np.asarray(old[key])
                perm = np.argsort(fused, kind='stable')
                short = np.asarray(old[layers.subnet_variable(layers.SHORT, k)])
                if j.shortcut is None:  # positions in the previous stream, renumbered
                    rank = ranks[k]
                    short = np.where(short < len(rank), rank[np.minimum(short, len(rank) - 1)],
                                     short)
                new[layers.subnet_variable(layers.FUSED, k)] = fused[perm]
                new[layers.subnet_variable(layers.BODY, k)] = np.asarray(
                    old[layers.subnet_variable(layers.BODY, k)])[perm]
                new[layers.subnet_variable(layers.SHORT, k)] = short[perm].astype(np.int32)
                ranks[k] = np.argsort(perm, kind='stable')
            out[j.name] = {layers.JUNCTION: new}
    return out


def zpm_masks(table: ChannelTable, counts: list[dict[str, int]],
              orders: dict[str, np.ndarray]) -> tuple[list[list[int]], dict, list[dict]]:
    """Returns (stream_sizes[k][j], the ``masks`` collection, fused masks[k][junction]).

    ``counts[k]`` maps group -> channels in sub-network k; ``orders`` are the SCS orders.
    """
    masks: dict = {}
    sizes = [[] for _ in counts]
    fused_all = [{} for _ in counts]
    for stream in table.streams:
        for k, c in enumerate(counts):
            prev = None
            for j in stream.junctions:
                body = orders[j.body][:c[j.body]]
                short = orders[j.shortcut][:c[j.shortcut]] if j.shortcut else prev
                # The shortcut's channels, then the body's others.
                fused = np.concatenate([short, body[~np.isin(body, short)]]).astype(np.int32)
                entry = masks.setdefault(j.name, {}).setdefault(layers.JUNCTION, {})
                entry[layers.subnet_variable(layers.FUSED, k)] = fused
                entry[layers.subnet_variable(layers.BODY, k)] = _positions(body, fused)
                entry[layers.subnet_variable(layers.SHORT, k)] = _positions(short, fused)
                sizes[k].append(len(fused))
                fused_all[k][j.name] = fused
                prev = fused
    # Junction order in the sizes must follow table.junctions (streams in order): it does.
    return sizes, masks, fused_all
