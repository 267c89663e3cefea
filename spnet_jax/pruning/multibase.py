"""Multi-base pruning: sub-network k's counts from base k; channels and weights from the largest.

`plan` turns bases' importance into a `Structure` (counts, ZPM stream sizes) plus the SCS
orders and ZPM masks; `apply_plan` turns the largest base's variables into the slimmable
network's. Single-base (one-shot) pruning is the case of one base and several keep ratios.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import APPENDED, ASCENDING, Structure
from spnet_jax.pruning import scs, threshold, zpm


@dataclasses.dataclass(frozen=True)
class Plan:
    structure: Structure
    orders: dict[str, np.ndarray]
    masks: dict
    thresholds: tuple[float, ...]
    keep_ratios: tuple[float, ...]
    base_of_subnet: tuple[int, ...]  # which base each pruned sub-network came from


def check_bases(base_widths: Sequence[float], keep_ratios: Sequence[float]) -> list[int]:
    """Validates widths/ratios; returns the base index of each keep ratio."""
    widths = list(base_widths)
    if not widths:
        raise ConfigError('prune: base widths are empty; give at least one base network.')
    if any(b <= a for a, b in zip(widths, widths[1:], strict=False)):
        raise ConfigError(f'base widths {widths} must be strictly ascending (smallest first).')
    for r in keep_ratios:
        if not 0 < r <= 1:
            raise ConfigError(f'keep ratio {r} is outside (0, 1]; it is the fraction of BN '
                              'channels kept.')
    if len(widths) == 1:
        return [0] * len(keep_ratios)
    if len(keep_ratios) != len(widths):
        raise ConfigError(
            f'{len(keep_ratios)} keep ratios (or MACs targets) for {len(widths)} bases: give one '
            'per base (sub-network k is pruned from base k), or use a single base.')
    return list(range(len(widths)))


def base_floors(arch, base_width: float, zpm_on: bool,
                min_channels_ratio: float) -> dict[str, int]:
    """Per group, the fewest channels pruning the base at ``base_width`` may keep."""
    return threshold.floors(arch.floor_table(float(base_width), zpm=zpm_on), min_channels_ratio)


def plan(arch, base_scores: Sequence[tuple[dict, np.ndarray]], base_widths: Sequence[float],
         keep_ratios: Sequence[float], *, zpm_on: bool = True,
         min_channels_ratio: float = 0.1, orders: dict | None = None,
         round_to: int = 1) -> Plan:
    """Counts, orders and masks of the slimmable network.

    ``base_scores[i]`` is ``(scores, pool)`` of base i from an importance function; the last
    base is the largest, whose scores choose the channels (``arch.full_width`` must be its
    width, unless ``orders`` are given: re-train recipes whose full network is wider than
    every base pass the identity, since the weights are re-initialised anyway).
    Sub-network k keeps ``keep_ratios[k]`` of base ``k``'s BN channels (of the only base,
    with one base), each layer at least ``min_channels_ratio`` of its channels in that base
    (`base_floors`), with ``round_to`` > 1 a multiple of it (`threshold.round_count`); the
    last sub-network is the full network, unpruned.
    """
    which = check_bases(base_widths, keep_ratios)
    full_table = arch.table(zpm=zpm_on)
    counts, thresholds = [], []
    for r, b in zip(keep_ratios, which, strict=True):
        scores, pool = base_scores[b]
        t = threshold.global_threshold(pool, r)
        floors = base_floors(arch, base_widths[b], zpm_on, min_channels_ratio)
        counts.append(threshold.layer_counts(scores, t, floors, round_to))
        thresholds.append(t)
    counts.append({g.name: g.size for g in full_table.groups})
    if orders is None:
        orders = scs.sort_orders(base_scores[-1][0])
    stream_sizes, masks, _ = zpm.zpm_masks(full_table, counts, orders)
    structure = Structure(
        arch=arch.name, method='spnet', groups=full_table.group_names,
        full=tuple(g.size for g in full_table.groups),
        counts=tuple(tuple(c[g] for g in full_table.group_names) for c in counts),
        junctions=tuple(j.name for j in full_table.junctions),
        stream_sizes=tuple(tuple(s) for s in stream_sizes) if full_table.zpm else (),
        stream_order=APPENDED if full_table.zpm else ASCENDING,
    ).validate(full_table)
    return Plan(structure, orders, masks, tuple(thresholds), tuple(keep_ratios), tuple(which))
