"""Global-threshold pruning of one network: per-layer channel counts from a keep ratio."""

from __future__ import annotations

import numpy as np

from spnet_jax.channels import ChannelTable

HALVED_FLOOR_ROLES = ('end', 'shortcut')


def global_threshold(pool: np.ndarray, keep_ratio: float) -> float:
    """``sorted(pool)[int(T * (1 - keep_ratio))]``, the index computed in float64.

    (In float32, T = 26560 and r = 0.6 would give index 10623 instead of 10624.)
    """
    pool = np.sort(np.asarray(pool, np.float64).ravel())
    index = min(int(len(pool) * (1.0 - float(keep_ratio))), len(pool) - 1)
    return float(pool[index])


def floors(table_full: ChannelTable, min_channels_ratio: float) -> dict[str, int]:
    """Minimum channels per group: ``int(C_full * ratio)``, halved for ZPM block ends and
    projection shortcuts, where ``C_full`` is the group's size in the full network."""
    out = {}
    for g in table_full.groups:
        ratio = min_channels_ratio / 2 if g.zpm_role in HALVED_FLOOR_ROLES else min_channels_ratio
        out[g.name] = max(1, int(g.size * ratio))
    return out


def layer_counts(scores: dict[str, np.ndarray], threshold: float,
                 group_floors: dict[str, int]) -> dict[str, int]:
    """Channels kept per group: those scoring strictly above the threshold, at least the floor
    (and at most the group's size in the network being pruned)."""
    return {name: min(len(s), max(int(np.sum(s > threshold)), group_floors[name]))
            for name, s in scores.items()}
