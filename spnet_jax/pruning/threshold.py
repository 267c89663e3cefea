"""Global-threshold pruning of one network: per-layer channel counts from a keep ratio."""

from __future__ import annotations

import numpy as np

from spnet_jax.core.channels import ChannelTable

HALVED_FLOOR_ROLES = ('end', 'shortcut')


def global_threshold(pool: np.ndarray, keep_ratio: float) -> float:
    """``sorted(pool)[int(T * (1 - keep_ratio))]``, the index computed in float64.

    (In float32, T = 26560 and r = 0.6 would give index 10623 instead of 10624.)
    """
    pool = np.sort(np.asarray(pool, np.float64).ravel())
    index = min(int(len(pool) * (1.0 - float(keep_ratio))), len(pool) - 1)
    return float(pool[index])


def floors(table: ChannelTable, min_channels_ratio: float) -> dict[str, int]:
    """Minimum channels per group: ``int(C * ratio)``, halved for ZPM block ends and
    projection shortcuts, where ``C`` is the group's size in ``table``.

    Pass the table of the network being pruned (the base, not the full network): the release
    floors each layer of a base at its own channel count, so an x0.75 ResNet-50 base floors
    a 512-channel layer at int(384 * 0.1) = 38. `Architecture.floor_table` gives that table.
    A floor is at least 1 (the release's would be 0 below 10 channels, an empty layer).
    """
    out = {}
    for g in table.groups:
        floor = g.size * min_channels_ratio  # rounded as the release: int(C * r / 2)
        out[g.name] = max(1, int(floor / 2 if g.zpm_role in HALVED_FLOOR_ROLES else floor))
    return out


def round_count(count: int, floor: int, size: int, round_to: int) -> int:
    """``count`` rounded to the nearest multiple of ``round_to`` (halves up), never below the
    floor (rounded up to a multiple) and never above ``size``, the group's channels in the
    network being pruned (which need not be a multiple). Non-decreasing in ``count``, so the
    MACs of rounded counts still never decrease as the keep ratio grows."""
    if round_to <= 1:
        return count
    nearest = (count + round_to // 2) // round_to * round_to
    floor_up = -(-max(floor, 1) // round_to) * round_to
    return min(size, max(nearest, floor_up))


def layer_counts(scores: dict[str, np.ndarray], threshold: float,
                 group_floors: dict[str, int], round_to: int) -> dict[str, int]:
    """Channels kept per group: those scoring strictly above the threshold, at least the floor
    (and at most the group's size in the network being pruned); with ``round_to`` > 1, each
    count rounded to a multiple of it (`round_count`): hardware-friendly channel counts."""
    out = {}
    for name, s in scores.items():
        count = min(len(s), max(int(np.sum(s > threshold)), group_floors[name]))
        out[name] = round_count(count, group_floors[name], len(s), round_to)
    return out
