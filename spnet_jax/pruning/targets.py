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
from spnet_jax.pruning import threshold, zpm


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
                     subnet_macs: Callable[[dict], int], *, tolerance: float = 0.01,
                     what: str = 'sub-network', round_to: int = 1) -> tuple[float, int]:
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


def zpm_stream_sizes(table: ChannelTable, counts: dict, orders: dict) -> dict[str, int]:
    sizes, _, _ = zpm.zpm_masks(table, [counts], orders)
    return {j.name: s for j, s in zip(table.junctions, sizes[0], strict=True)}
