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
from spnet_jax.core.structure import APPENDED, ASCENDING, PREFIX, Structure
from spnet_jax.pruning import scs, threshold, zpm


@dataclasses.dataclass(frozen=True)
class Plan:
    structure: Structure
    orders: dict[str, np.ndarray]
    masks: dict
    thresholds: tuple[float, ...]
    keep_ratios: tuple[float, ...]
    base_of_subnet: tuple[int, ...]  # which base each pruned sub-network came from
    # The counts pruning found, where `release_block_counts` replaced some in ``structure``
    # (None: ``structure``'s own); the release's bookkeeping (its masks) still uses them.
    pruned: Structure | None = None


def check_bases(base_widths: Sequence[float], keep_ratios: Sequence[float]) -> list[int]:
    """Validates widths/ratios; returns the base index of each keep ratio.

    With one base the ratios must ascend: sub-network k is pruned to ``keep_ratios[k]`` and
    sub-networks are numbered smallest first. (With several, sub-network k comes from base k,
    so the ratios need not ascend: the release's ResNet-50 keeps 0.5484 of its x0.75 base and
    0.526 of its x1.0 one.)"""
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
        if any(b <= a for a, b in zip(keep_ratios, keep_ratios[1:], strict=False)):
            raise ConfigError(
                f'prune.keep_ratios={tuple(keep_ratios)} must be strictly ascending with one '
                'base (sub-network 0 is the smallest); give them as '
                f'{tuple(sorted(set(keep_ratios)))}.')
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


def orders_of(table, largest_scores: dict[str, np.ndarray], zpm_variant: str,
              identity: bool = False) -> dict[str, np.ndarray]:
    """SCS's orders for ``table`` (the full network's, with or without ZPM): each group's
    channels by the largest base's importance, descending; with ``zpm_variant`` 'aligned'
    each stream's members share its joint order (`zpm.aligned_orders`). ``identity``: every
    order the identity (re-train recipes whose full network is wider than every base: which
    channels is immaterial, the weights are re-initialised)."""
    if identity:
        orders = {g.name: np.arange(g.size) for g in table.groups}
        orders.update({s.name: np.arange(s.size) for s in table.streams
                       if zpm_variant == zpm.ALIGNED})
        return orders
    orders = scs.sort_orders(largest_scores)
    if zpm_variant == zpm.ALIGNED:
        orders = zpm.aligned_orders(table, largest_scores, orders)
    return orders


def release_block_counts(arch, structure: Structure, keep_ratios: Sequence[float],
                         base_widths: Sequence[float], zpm_on: bool) -> Structure:
    """``structure`` with the release's multi-base rule applied: with several bases, each
    group of ``arch.multibase_block_groups(zpm_on)`` keeps in sub-network k the channels of
    the network *built at keep ratio k as a width* (``arch.table(width=keep_ratios[k])``,
    e.g. EfficientNet's ``make_divisible(make_divisible(c * wc) * r)``), not its pruned
    count. The release's pruning sets those counts only on the base's own model, never on the
    slimmable network, which was built with ``width_mult_list`` = the keep ratios plus the
    full width. Unchanged with one base (the base is the slimmable network) or without such
    groups. A built count above the full network's (a keep ratio above a full width below
    1, where the release's network would not run) is the full count."""
    groups = arch.multibase_block_groups(zpm_on)
    if len(base_widths) < 2 or not groups:
        return structure
    rows = []
    for k, row in enumerate(structure.counts[:-1]):
        built = {g.name: g.size for g in arch.table(width=float(keep_ratios[k]),
                                                    zpm=zpm_on).groups}
        rows.append(tuple(min(built[g], f) if g in groups else c
                          for g, c, f in zip(structure.groups, row, structure.full,
                                             strict=True)))
    return dataclasses.replace(structure, counts=(*rows, structure.counts[-1]))


def plan(arch, base_scores: Sequence[tuple[dict, np.ndarray]], base_widths: Sequence[float],
         keep_ratios: Sequence[float], *, zpm_variant: str, min_channels_ratio: float,
         round_to: int, orders: dict | None = None) -> Plan:
    """Counts, orders and masks of the slimmable network.

    ``base_scores[i]`` is ``(scores, pool)`` of base i from an importance function (on the
    base's table for ``zpm_variant``); the last base is the largest, whose scores choose the
    channels (`orders_of`; ``arch.full_width`` must be its width, unless ``orders`` are
    given). Sub-network k keeps ``keep_ratios[k]`` of base ``k``'s BN channels (of the only
    base, with one base), each layer at least ``min_channels_ratio`` of its channels in that
    base (`base_floors`), with ``round_to`` > 1 a multiple of it (`threshold.round_count`);
    the last sub-network is the full network, unpruned. ``zpm_variant`` is one of
    `zpm.VARIANTS` (``prune.zpm``).
    """
    which = check_bases(base_widths, keep_ratios)
    zpm_on = zpm_variant != zpm.NONE
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
        orders = orders_of(full_table, base_scores[-1][0], zpm_variant)
    stream_sizes, masks, _ = zpm.stream_masks(zpm_variant, full_table, counts, orders)
    order = {zpm.ALIGNED: PREFIX, zpm.RELEASE: APPENDED}.get(zpm_variant, ASCENDING)
    structure = Structure(
        arch=arch.name, method='spnet', groups=full_table.group_names,
        full=tuple(g.size for g in full_table.groups),
        counts=tuple(tuple(c[g] for g in full_table.group_names) for c in counts),
        junctions=tuple(j.name for j in full_table.junctions),
        stream_sizes=tuple(tuple(s) for s in stream_sizes) if full_table.zpm else (),
        stream_order=order,
    ).validate(full_table)
    built = release_block_counts(arch, structure, keep_ratios, base_widths, zpm_on)
    if built is not structure:
        built = built.validate(full_table)
    return Plan(built, orders, masks, tuple(thresholds), tuple(keep_ratios), tuple(which),
                pruned=structure if built is not structure else None)
