"""Latency targets: prune each sub-network to a measured time on the backend that prunes.

MACs mispredict time (on this project's 2-core CPU two sub-networks of equal MACs took 0.8-2.4x
each other's time; narrow layers, channel counts off the vector width and memory traffic cost
what MACs do not count). With ``prune.latency_targets`` (milliseconds per batch of
``eval.latency_batch`` images) the keep ratio of each pruned sub-network is found by bisection
on **measured** time instead of computed MACs:

* a candidate is the network pruning would deploy at that keep ratio (counts, rounded to
  ``prune.round_to``, and its aligned streams), built with random weights (time does not
  depend on the values), its eval forward jitted and timed on one device;
* every timing is taken **against an anchor** (the full network), interleaved round by
  round: a candidate's time is the median over rounds of its time over the anchor's in the
  same round, times the anchor's own median from the start. A machine whose speed drifts
  (30% within minutes on a shared CPU) moves both alike, so the ratio stays;
* rounds continue until the ratio is stable: at least ``min_rounds``, then until the
  interquartile range of the per-round ratios is within ``stable`` of their median, at most
  ``max_rounds``; the spread reached is recorded for the report;
* identical candidates are timed once (bisection on the keep ratio revisits the same counts).

`Timer` measures; `ratio_for_latency` searches; `reachable_range` gives the fastest (every
layer at its floor) and slowest (the base itself) structures' times, which bound what targets
can ask for. Only the streams of ``prune.zpm='aligned'`` and ``'none'`` are measured: the
release's ZPM places each channel by a gather whose cost depends on which channels survive,
known only once every sub-network is pruned.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import ASCENDING, PREFIX, Structure
from spnet_jax.pruning import targets, threshold, zpm

MEASURED_VARIANTS = (zpm.ALIGNED, zpm.NONE)


@dataclasses.dataclass(frozen=True)
class Measurement:
    ms: float  # per batch, the anchor's median times the median per-round ratio
    spread: float  # interquartile range over median of the per-round ratios (anchor: times)
    rounds: int


def spread(values: Sequence[float]) -> float:
    """Interquartile range over the median (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q1, median, q3 = statistics.quantiles(values, n=4, method='inclusive')
    return (q3 - q1) / statistics.median(values)


def network_structure(arch, table, counts: dict[str, int], streams: dict[str, int],
                      variant: str) -> Structure:
    """The one network a sub-network with ``counts`` (and ZPM ``streams``) deploys: its
    channels are the whole network (as `spnet_jax.pruning.subnets.standalone_structure`)."""
    names = table.group_names
    row = tuple(int(counts[g]) for g in names)
    zpm_on = variant != zpm.NONE
    return Structure(
        arch=arch.name, method='spnet', groups=names, full=row, counts=(row,),
        junctions=tuple(j.name for j in table.junctions) if zpm_on else (),
        stream_sizes=((tuple(int(streams[j.name]) for j in table.junctions),) if zpm_on
                      else ()),
        stream_order=PREFIX if variant == zpm.ALIGNED else ASCENDING)


def _key(structure: Structure) -> str:
    return json.dumps([structure.arch, structure.counts, structure.stream_sizes,
                       structure.stream_order])


class Timer:
    """Times eval forwards of single networks of ``arch`` on one device against an anchor.

    ``build(structure) -> call`` (default `Timer.compiled`) gives a function that runs one
    forward pass of a batch to completion; tests pass a stand-in. ``clock`` as
    `time.perf_counter`.
    """

    def __init__(self, arch, input_shape: Sequence[int], batch: int, *, min_rounds: int = 5,
                 max_rounds: int = 40, stable: float = 0.03, warmup: int = 2,
                 build: Callable[[Structure], Callable[[], Any]] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.arch, self.input_shape, self.batch = arch, tuple(input_shape), int(batch)
        self.min_rounds, self.max_rounds, self.stable, self.warmup = (
            min_rounds, max_rounds, stable, warmup)
        self._build = build or self.compiled
        self._clock = clock
        self._calls: dict[str, Callable[[], Any]] = {}
        self._cache: dict[str, Measurement] = {}
        self.anchor = arch.plain_structure()
        self.anchor_ms: Measurement | None = None
        self.log: list[dict[str, Any]] = []  # every timed candidate, in order
        self.seconds = 0.0  # spent building and timing

    # ------------------------------------------------------------------ building
    def compiled(self, structure: Structure) -> Callable[[], Any]:
        """A compiled eval forward of ``structure`` (random weights, passed as arguments so
        XLA folds nothing away) on a fixed random batch, on the first local device."""
        import jax
        import jax.numpy as jnp

        model = self.arch.module(structure)
        images = jnp.asarray(np.random.default_rng(0).normal(
            size=(self.batch, *self.input_shape)), jnp.float32)
        variables = jax.jit(lambda r: model.init(r, images[:1], train=False))(
            jax.random.key(0))
        forward = jax.jit(lambda v, x: model.apply(v, x, subnet=0, train=False))
        program = forward.lower(variables, images).compile()
        return lambda: program(variables, images).block_until_ready()

    def _call(self, structure: Structure) -> Callable[[], Any]:
        key = _key(structure)
        if key not in self._calls:
            call = self._build(structure)
            for _ in range(self.warmup):
                call()
            self._calls[key] = call
        return self._calls[key]

    def _stable(self, values: list[float]) -> bool:
        return len(values) >= self.min_rounds and spread(values) <= self.stable

    # ------------------------------------------------------------------ timing
    def _anchor(self) -> Measurement:
        if self.anchor_ms is None:
            call, times = self._call(self.anchor), []
            while len(times) < self.max_rounds and not self._stable(times):
                t = self._clock()
                call()
                times.append(1e3 * (self._clock() - t))
            self.anchor_ms = Measurement(statistics.median(times), spread(times), len(times))
        return self.anchor_ms

    def measure(self, structure: Structure) -> Measurement:
        """``structure``'s time per batch (one network: ``counts`` has one row)."""
        key = _key(structure)
        if key in self._cache:
            return self._cache[key]
        start = time.time()
        anchor = self._anchor()
        if key == _key(self.anchor):
            result = anchor
        else:
            call, ref, ratios = self._call(structure), self._call(self.anchor), []
            while len(ratios) < self.max_rounds and not self._stable(ratios):
                order = (call, ref) if len(ratios) % 2 == 0 else (ref, call)
                took = {}
                for f in order:
                    t = self._clock()
                    f()
                    took[f is call] = self._clock() - t
                ratios.append(took[True] / took[False])
            result = Measurement(anchor.ms * statistics.median(ratios), spread(ratios),
                                 len(ratios))
        self._cache[key] = result
        self.seconds += time.time() - start
        self.log.append({'channels': int(sum(structure.counts[0])), 'ms': result.ms,
                         'spread': result.spread, 'rounds': result.rounds})
        return result

    def report(self) -> dict[str, Any]:
        """What the pruning's ``info['latency']`` keeps of the measurements."""
        import jax

        anchor = self.anchor_ms
        return {'batch': self.batch, 'device': jax.local_devices()[0].device_kind,
                'backend': jax.default_backend(),
                'anchor_ms': None if anchor is None else anchor.ms,
                'anchor_spread': None if anchor is None else anchor.spread,
                'stable': self.stable, 'min_rounds': self.min_rounds,
                'max_rounds': self.max_rounds, 'candidates': len(self._cache),
                'seconds': self.seconds,
                'max_spread': max((m['spread'] for m in self.log), default=0.0)}


# ------------------------------------------------------------------ searching
def _structure_at(arch, table, scores, pool, floors, round_to, variant, ratio) -> Structure:
    counts = threshold.layer_counts(scores, threshold.global_threshold(pool, ratio), floors,
                                    round_to)
    streams = _streams(table, counts, variant)
    return network_structure(arch, table, counts, streams, variant)


def _streams(table, counts: dict[str, int], variant: str) -> dict[str, int]:
    """Stream sizes of ``counts`` (`targets.zpm_stream_sizes`): aligned streams are their
    longest branch so far, which depends on the counts only, so any order does."""
    if variant == zpm.NONE:
        return {}
    orders = {g.name: np.arange(g.size) for g in table.groups}
    return targets.zpm_stream_sizes(table, counts, orders, variant)


def width_targets(timer: Timer, arch, widths: Sequence[float]) -> tuple[list[float], list[float]]:
    """``prune.latency_widths`` as targets: ``(targets, measured)``, where ``measured`` is the
    time of the uniform network (S-Net's sub-network) at each width and ``targets`` the same
    made non-decreasing (each the largest measured so far).

    Narrow uniform widths can take the same time within the timing's noise (on the 2-core CPU,
    batch 256: ResNet-20 x0.25 60.8-67.3 ms against x0.5 62.0-68.2 ms in two runs), and a
    measured x0.25 slower than x0.5 would give the smaller sub-network the larger budget: its
    target is raised to the larger one's instead (the caller says so)."""
    measured = [timer.measure(arch.plain_structure(w)).ms for w in widths]
    targets_ms = [max(measured[:k + 1]) for k in range(len(measured))]
    return targets_ms, measured


def check_variant(variant: str, field: str = 'prune.latency_targets') -> None:
    if variant not in MEASURED_VARIANTS:
        raise ConfigError(
            f'{field} need prune.zpm=\'aligned\' or \'none\' (got {variant!r}): '
            "the release's ZPM places channels by gathers whose cost depends on which channels "
            "every sub-network keeps; set prune.zpm='aligned'.")


def reachable_range(arch, table, floors: dict[str, int], round_to: int, variant: str,
                    timer: Timer) -> tuple[Measurement, Measurement]:
    """The times of the fastest structure pruning can give (every layer at its floor,
    rounded) and of the unpruned network of ``table`` (the base)."""
    low = {g.name: threshold.round_count(floors[g.name], floors[g.name], g.size, round_to)
           for g in table.groups}
    high = {g.name: g.size for g in table.groups}
    return tuple(timer.measure(network_structure(arch, table, c, _streams(table, c, variant),
                                                 variant)) for c in (low, high))


def range_error(target: float, k: int, low: Measurement, high: Measurement, timer: Timer,
                tolerance: float) -> ConfigError | None:
    """The one sentence refusing ``target`` (ms) when no structure reaches it, else None."""
    if low.ms * (1 - tolerance) <= target <= high.ms * (1 + tolerance):
        return None
    import jax

    where = 'below' if target < low.ms else 'above'
    return ConfigError(
        f'prune.latency_targets[{k}]={target:g} ms is {where} what pruning can reach on this '
        f'{jax.default_backend()} backend ({jax.local_devices()[0].device_kind}) at a batch of '
        f'{timer.batch} (eval.latency_batch): {low.ms:.3g} ms with every layer at its floor '
        f'(prune.min_channels_ratio) to {high.ms:.3g} ms unpruned; choose targets in that '
        'range.')


def ratio_for_latency(target: float, arch, table, scores: dict, pool: np.ndarray,
                      floors: dict, *, round_to: int, variant: str, timer: Timer,
                      tolerance: float, k: int = 0) -> tuple[float, Measurement]:
    """The keep ratio of the slowest sub-network whose measured time is under ``target`` ms
    (a budget), and that time: bisection over the positions of the pooled scores (each
    position one threshold, so at most log2 of the pool's size candidates, fewer where
    rounding makes neighbours equal). When that structure misses the target by more than
    ``tolerance`` and the next slower one (over the target) is within it, the slower one is
    taken; when both miss it (coarse channel steps, e.g. ``round_to`` on a narrow network),
    the faster: never slower than the target (`met` tells). Raises `ConfigError` (one
    sentence with the reachable range in ms) when the target is out of reach."""
    check_variant(variant)
    low, high = reachable_range(arch, table, floors, round_to, variant, timer)
    error = range_error(target, k, low, high, timer, tolerance)
    if error is not None:
        raise error
    n = len(np.ravel(pool))

    def ratio(i: int) -> float:  # the keep ratio whose threshold is sorted(pool)[i]
        return 1.0 - (i + 0.5) / n

    def at(i: int) -> Measurement:
        return timer.measure(_structure_at(arch, table, scores, pool, floors, round_to,
                                           variant, ratio(i)))

    # Position i keeps the channels scoring above sorted(pool)[i]: larger i, fewer channels.
    lo_i, hi_i = 0, n - 1  # lo_i: most kept (slowest), hi_i: fewest (fastest)
    lo_m, hi_m = at(lo_i), at(hi_i)
    while hi_i - lo_i > 1:
        mid = (lo_i + hi_i) // 2
        m = at(mid)
        if m.ms >= target:
            lo_i, lo_m = mid, m
        else:
            hi_i, hi_m = mid, m
    # The target is a budget: the faster neighbour (the slowest structure under the target)
    # when it is within the tolerance, so that a re-measurement's noise has the tolerance's
    # room on the slow side; the slower one only when it alone is within the tolerance; the
    # faster one again when channel steps are too coarse for either (`met` says so).
    if not met(hi_m, target, tolerance) and met(lo_m, target, tolerance):
        return ratio(lo_i), lo_m
    return ratio(hi_i), hi_m


def met(measured: Measurement, target: float, tolerance: float) -> bool:
    return abs(measured.ms - target) <= tolerance * target
