"""Channel importance: a score per channel of every group, and the pool the threshold reads.

An importance function takes a network's variables and its `ChannelTable` and returns
``(scores, pool)``: ``scores[group]`` ranks that group's channels (higher = more important),
and ``pool`` is the 1-D vector of all values the global threshold is taken over.
Register new criteria in `IMPORTANCE`; nothing else in pruning needs to change.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flax import traverse_util

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelTable

Importance = Callable[[dict, ChannelTable], tuple[dict[str, np.ndarray], np.ndarray]]


def flat_params(variables: dict) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in
            traverse_util.flatten_dict(variables['params'], sep='/').items()}


def bn_scale(variables: dict, bn: str) -> np.ndarray:
    """The scale of the BN at path ``bn``; for S-Net's private affines, the full network's
    (the last)."""
    module = variables['params']
    for key in bn.split('/'):
        module = module[key]
    return np.asarray(layers.bn_affine(module, layers.SCALE))


def bn_importance(variables: dict, table: ChannelTable):
    """Network slimming: ``|gamma|`` of the BN after each conv.

    A group scored by several BNs takes the largest |gamma| per channel (the models score a
    residual stream without ZPM by the BN of the layer that starts it, as the release does).
    The pool holds |gamma| of every BN in the network, depthwise BNs included, as the
    release's global threshold does.
    """
    scores, pool = {}, []
    for g in table.groups:
        gammas = [np.abs(bn_scale(variables, bn)) for bn in g.bns]
        pool.extend(gammas)
        scored = [np.abs(bn_scale(variables, bn)) for bn in g.scored_by]
        scores[g.name] = np.max(np.stack(scored), axis=0)
    return scores, np.concatenate(pool)


def l1_importance(variables: dict, table: ChannelTable):
    """L1 norm of each output filter of the producing conv(s) (sum |W| over kernel and inputs)."""
    params = flat_params(variables)
    scores = {}
    for g in table.groups:
        # Conv producers only: an SE's expanding FC gates the group, it does not compute it.
        norms = [np.abs(params[f'{p}/kernel']).sum(axis=(0, 1, 2)) for p in g.producers
                 if np.ndim(params[f'{p}/kernel']) == 4]
        scores[g.name] = np.max(np.stack(norms), axis=0)
    return scores, np.concatenate(list(scores.values()))


IMPORTANCE: dict[str, Importance] = {'bn': bn_importance, 'l1': l1_importance}
