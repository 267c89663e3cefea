"""FLOPs targeting: find the keep ratio that gives a sub-network a MACs target.

The release hand-tuned keep ratios (e.g. 0.5484) so that each SP-Net sub-network matched an
S-Net width's FLOPs. Here a bisection on the keep ratio does it: MACs never decrease as the
ratio grows (the threshold falls, counts and ZPM unions grow), so the smallest ratio whose
MACs reach the target brackets it from above and the largest below it from below; the closer
of the two is taken and must be within the tolerance.

MACs of a candidate are computed from the channel table and the conv geometry of one
abstract trace (`spnet_jax.core.cost`), so a bisection step costs microseconds, not a trace.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spnet_jax.core import cost
from spnet_jax.core.channels import ChannelTable
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.pruning import multibase, threshold, zpm


def macs_function(arch, table: ChannelTable, image_size: int,
                  in_channels: int = 3) -> Callable[[dict, dict], int]:
    """``f(counts, stream_sizes) -> MACs`` per image for any structure of ``table``.

    ``counts`` maps group -> channels, ``stream_sizes`` junction -> channels.
    """
    full = arch.plain_structure() if not table.zpm else None
    if full is None:  # trace the ZPM architecture at full width (all streams full)
        full = Structure(arch.name, 'spnet', table.group_names,
                         tuple(g.size for g in table.groups),
                         (tuple(g.size for g in table.groups),),
                         tuple(j.name for j in table.junctions),
                         (tuple(table.junction_stream()[j.name].size
                                for j in table.junctions),))
    layers = cost.layer_costs(arch, full, 0, image_size, in_channels)
    out_of, in_of, depthwise = {}, {}, set()
    for g in table.groups:
        for p in g.producers:
            out_of[p] = ('group', g.name)
        for p in g.followers:
            out_of[p] = ('group', g.name)
            depthwise.add(p)
        for p, _ in g.consumers:
            in_of[p] = ('group', g.name)
    for j in table.junctions:
        for p, _ in j.consumers:
            in_of[p] = ('stream', j.name)
    terms = []  # (in source, out source, factor)
    for layer in layers:
        if layer.kind == 'bn':
            continue
        if layer.kind == 'dense':  # the classifier, squeeze-and-excitation FCs
            terms.append((in_of.get(layer.path, ('const', layer.in_shape[0])),
                          out_of.get(layer.path, ('const', layer.out_shape[0])), 1))
            continue
        h, w, _ = layer.out_shape
        k = layer.kernel_size
        if layer.path in depthwise:
            terms.append((('const', 1), out_of[layer.path], h * w * k * k))
        else:
            source = in_of.get(layer.path, ('const', layer.in_shape[-1]))
            terms.append((source, out_of[layer.path], h * w * k * k))

    def value(src, counts, streams):
        kind, name = src
        return name if kind == 'const' else (counts[name] if kind == 'group' else streams[name])

    def macs(counts: dict, stream_sizes: dict) -> int:
        return sum(value(i, counts, stream_sizes) * value(o, counts, stream_sizes) * f
                   for i, o, f in terms)

    return macs


def ratio_for_target(target: float, scores: dict, pool: np.ndarray, group_floors: dict,
                     subnet_macs: Callable[[dict], int], *, tolerance: float, round_to: int,
                     what: str = 'sub-network') -> tuple[float, int]:
    """The keep ratio whose pruned counts' MACs are closest to ``target`` (within tolerance).

    ``subnet_macs(counts)`` gives MACs of the counts (ZPM unions included by the caller);
    the counts are rounded to multiples of ``round_to`` before they are costed, so the target
    is met with the counts the network will have.
    Returns (ratio, MACs). Raises ConfigError with the reachable range if out of reach.
    """
    def at(r):
        return subnet_macs(threshold.layer_counts(scores, threshold.global_threshold(pool, r),
                                                  group_floors, round_to))

    lo_r, hi_r = 1e-6, 1.0
    lo_m, hi_m = at(lo_r), at(hi_r)
    if not lo_m * (1 - tolerance) <= target <= hi_m * (1 + tolerance):
        raise ConfigError(
            f'MACs target {target:.4g} for {what} is out of reach: pruning that base gives '
            f'{lo_m:.4g} to {hi_m:.4g} MACs; choose a target in that range or another base.')
    for _ in range(60):
        if hi_r - lo_r < 1e-7:
            break
        mid = (lo_r + hi_r) / 2
        m = at(mid)
        if m >= target:
            hi_r, hi_m = mid, m
        else:
            lo_r, lo_m = mid, m
    r, m = (hi_r, hi_m) if abs(hi_m - target) <= abs(lo_m - target) else (lo_r, lo_m)
    if abs(m - target) > tolerance * target:
        hint = (f'; a smaller prune.round_to (now {round_to}) makes finer steps, or allow a '
                f'larger prune.macs_tolerance (now {tolerance:g})' if round_to > 1 else '')
        raise ConfigError(
            f'MACs target {target:.4g} for {what} cannot be met within {tolerance:.0%}: the '
            f'nearest keep ratios give {lo_m:.4g} and {hi_m:.4g} MACs{hint}.')
    return r, m


def zpm_stream_sizes(table: ChannelTable, counts: dict, orders: dict,
                     zpm_variant: str) -> dict[str, int]:
    """Junction -> stream size of one sub-network's ``counts`` (`zpm.stream_masks`)."""
    sizes, _, _ = zpm.stream_masks(zpm_variant, table, [counts], orders)
    return {j.name: s for j, s in zip(table.junctions, sizes[0], strict=True)}


def check_round_to(arch, base_widths, macs_targets, *, zpm_variant: str, round_to: int,
                   tolerance: float, min_channels_ratio: float, image_size: int,
                   in_channels: int, draws: int = 3) -> None:
    """Refuses, before any base is trained, a ``prune.round_to`` whose channel steps are too
    coarse to meet ``macs_targets`` within ``tolerance`` (one `ConfigError` sentence naming
    the field and the largest ``round_to`` that works).

    The trained bases' importance is not known yet, so the bisection runs on stand-in
    importance (uniform random, ``draws`` seeds): what makes a target unreachable is the
    MACs step of ``round_to`` channels in the network's layers, which hardly depends on the
    scores. Refused only when every draw misses; the prune stage still checks the real
    counts (`ratio_for_target`).
    """
    zpm_on = zpm_variant != zpm.NONE
    table = arch.table(zpm=zpm_on)
    macs_of = macs_function(arch, table, image_size, in_channels)
    which = range(len(base_widths)) if len(base_widths) > 1 else [0] * len(macs_targets)

    def reachable(step: int) -> int | None:
        """The first target index no draw meets with ``step``, or None."""
        for k, (target, b) in enumerate(zip(macs_targets, which, strict=False)):
            base_table = arch.table(width=base_widths[b], zpm=zpm_on)
            floors = multibase.base_floors(arch, base_widths[b], zpm_on, min_channels_ratio)
            met = False
            for seed in range(draws):
                rng = np.random.default_rng(seed)
                scores = {g.name: rng.random(g.size) for g in base_table.groups}
                pool = np.concatenate([scores[g.name] for g in base_table.groups
                                       for _ in g.bns])
                largest = {g.name: rng.random(g.size) for g in table.groups}
                orders = multibase.orders_of(table, largest, zpm_variant)
                counts_macs = lambda c, o=orders: macs_of(c, zpm_stream_sizes(table, c, o,
                                                                              zpm_variant))
                try:
                    ratio_for_target(float(target), scores, pool, floors, counts_macs,
                                     tolerance=tolerance, round_to=step)
                    met = True
                    break
                except ConfigError:
                    pass
            if not met:
                return k
        return None

    missed = reachable(round_to)
    if missed is None or reachable(1) == missed:  # exact counts miss it too: not round_to's
        return
    works = next((s for s in range(round_to - 1, 0, -1) if reachable(s) is None), 1)
    raise ConfigError(
        f'prune.round_to={round_to} cannot meet prune.macs_targets[{missed}]='
        f'{macs_targets[missed]:.4g} within prune.macs_tolerance={tolerance:g}: steps of '
        f'{round_to} channels move {arch.name}\'s MACs by more than that; use '
        f'prune.round_to={works} or less, or a larger prune.macs_tolerance.')
