"""Slimmable channel sorting: permute weights so every sub-network is a prefix slice.

Each group's channels are put in descending importance. Permuting a group moves, together:
its producers' kernels (output axis; and biases, where an FC has one), its BNs (scale, bias
and the statistics of the full network), its depthwise followers' kernels, and every
consumer's input axis. On the full
network this changes nothing in the function. Consumers of a ZPM stream are not touched
(the release's ZPM: the stream stays in original channel order and they gather it by the
fused index), unless ``orders`` has an order under the stream's name (aligned ZPM, whose
stream members share that order): then they are permuted by it and read prefixes.
"""

from __future__ import annotations

import numpy as np
from flax import traverse_util

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelTable


def sort_orders(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``order[j]`` = the original channel at sorted position j (descending, stable)."""
    return {g: np.argsort(-np.asarray(s), kind='stable') for g, s in scores.items()}


def _take(x, order, axis):
    return np.take(np.asarray(x), order, axis=axis)


def permute(variables: dict, table: ChannelTable, orders: dict[str, np.ndarray]) -> dict:
    """New variables with every group permuted by ``orders`` (inputs are not modified)."""
    params = traverse_util.flatten_dict(variables['params'], sep='/')
    stats = traverse_util.flatten_dict(variables.get(layers.BATCH_STATS, {}), sep='/')
    params, stats = dict(params), dict(stats)
    for g in table.groups:
        order = orders[g.name]
        for p in (*g.producers, *g.followers):
            params[f'{p}/kernel'] = _take(params[f'{p}/kernel'], order, -1)
            if f'{p}/bias' in params:  # an FC producer (squeeze-and-excitation's expand)
                params[f'{p}/bias'] = _take(params[f'{p}/bias'], order, 0)
        for bn in g.bns:
            for tree in (params, stats):
                for key in [k for k in tree if k.startswith(f'{bn}/')]:
                    if np.shape(tree[key]) == (g.size,):
                        tree[key] = _take(tree[key], order, 0)
        for path, axis in g.consumers:
            params[f'{path}/kernel'] = _take(params[f'{path}/kernel'], order, axis)
    for stream in table.streams:
        if stream.name in orders:
            for j in stream.junctions:
                for path, axis in j.consumers:
                    params[f'{path}/kernel'] = _take(params[f'{path}/kernel'],
                                                     orders[stream.name], axis)
    out = dict(variables)
    out['params'] = traverse_util.unflatten_dict(params, sep='/')
    if layers.BATCH_STATS in variables:
        out[layers.BATCH_STATS] = traverse_util.unflatten_dict(stats, sep='/')
    return out
