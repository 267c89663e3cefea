"""The pruning recipe: SP-Net's whole chain on trained base networks, and its settings.

    importance -> global threshold -> per-layer counts (per base) -> multi-base plan
    -> SCS (sort) -> ZPM masks -> the slimmable network's variables

`prune` runs the chain with explicit arguments; `PruneSettings` is the config's ``prune``
section, parsed and checked once, and gives `prune` its arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spnet_jax.core import layers
from spnet_jax.core.errors import ConfigError
from spnet_jax.pruning import derived, latency, multibase, scs, targets
from spnet_jax.pruning.importance import IMPORTANCE
from spnet_jax.pruning.multibase import Plan, plan
from spnet_jax.pruning.zpm import DESCRIPTIONS, NONE, RELEASE, VARIANTS

STARTS = ('finetune', 'reinit')  # fine-tune the largest base's weights, or re-initialise
# ``prune.zpm`` in a ``config.json`` written before the variants existed: a boolean.
LEGACY_ZPM = {True: RELEASE, False: NONE}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class PruneSettings:
    """The ``prune`` section of a config (see configs/default.py for each field's meaning).

    One way of sizing the pruned sub-networks is used, the first given of: latency targets
    (``latency_targets`` in ms, or ``latency_widths``: the measured time of the uniform
    network at each width), MACs targets, keep ratios. Every field is required:
    configs/default.py owns the defaults (a saved config missing a later field gets what
    those runs did from
    `spnet_jax.train.settings.LEGACY_DEFAULTS`).
    """

    keep_ratios: tuple[float, ...]
    macs_targets: tuple[float, ...]
    zpm: str  # one of `zpm.VARIANTS`
    min_channels_ratio: float
    importance: str
    start: str
    round_to: int
    macs_tolerance: float
    latency_targets: tuple[float, ...] = ()
    latency_widths: tuple[float, ...] = ()
    latency_tolerance: float = 0.05

    @classmethod
    def from_config(cls, section: Any) -> PruneSettings:
        """Reads and checks the section (each problem one `ConfigError` sentence)."""
        ratios = tuple(section.keep_ratios or ())
        targets_ = tuple(section.macs_targets or ())
        latency_ms = tuple(section.latency_targets or ())
        latency_widths = tuple(section.latency_widths or ())
        if latency_ms and latency_widths:
            raise ConfigError('give prune.latency_targets (ms) or prune.latency_widths (the '
                              'uniform networks\' measured times), not both.')
        for name, values in (('latency_targets', latency_ms), ('latency_widths', latency_widths)):
            if values and not (all(_number(t) and t > 0 for t in values) and all(
                    b > a for a, b in zip(values, values[1:], strict=False))):
                raise ConfigError(f'prune.{name}={values} must be positive and ascending (one '
                                  'per pruned sub-network, smallest first).')
        latency_tolerance = section.latency_tolerance
        if not (_number(latency_tolerance) and 0 < latency_tolerance < 0.5):
            raise ConfigError(f'prune.latency_tolerance={latency_tolerance!r} must be a fraction '
                              'in (0, 0.5) (0.05: each latency target met within 5%).')
        if latency_ms or latency_widths:  # they replace MACs targets and keep ratios
            targets_, ratios = (), ()
        elif not (ratios or targets_):
            raise ConfigError('set prune.keep_ratios (or prune.macs_targets), one per base width.')
        if ratios and not targets_ and not all(_number(r) and 0 < r <= 1 for r in ratios):
            raise ConfigError(f'prune.keep_ratios={ratios} must each lie in (0, 1] (a fraction '
                              'of BN channels kept).')
        if targets_ and not (all(_number(t) and t > 0 for t in targets_) and all(
                b > a for a, b in zip(targets_, targets_[1:], strict=False))):
            raise ConfigError(f'prune.macs_targets={targets_} must be positive and ascending.')
        variant = LEGACY_ZPM.get(section.zpm, section.zpm) if isinstance(
            section.zpm, bool) else section.zpm
        check_variant(variant, section.zpm)
        ratio = section.min_channels_ratio
        if not (_number(ratio) and 0 <= ratio < 1):
            raise ConfigError(f'prune.min_channels_ratio={ratio!r} must be in [0, 1).')
        if section.importance not in IMPORTANCE:
            raise ConfigError(f'prune.importance={section.importance!r} is unknown; choose one '
                              f'of {sorted(IMPORTANCE)}.')
        if section.start not in STARTS:
            raise ConfigError(f'prune.start={section.start!r} is unknown; choose one of '
                              f'{list(STARTS)}.')
        round_to = section.round_to
        if not (isinstance(round_to, int) and not isinstance(round_to, bool) and round_to >= 1):
            raise ConfigError(f'prune.round_to={round_to!r} must be a whole number >= 1 (1 keeps '
                              'the release\'s exact counts; e.g. 8 rounds each pruned layer to a '
                              'multiple of 8 channels).')
        tolerance = section.macs_tolerance
        if not (_number(tolerance) and 0 < tolerance < 0.5):
            raise ConfigError(f'prune.macs_tolerance={tolerance!r} must be a fraction in (0, 0.5) '
                              '(0.01: each MACs target met within 1%).')
        if (latency_ms or latency_widths) and variant not in latency.MEASURED_VARIANTS:
            latency.check_variant(
                variant, 'prune.latency_targets' if latency_ms else 'prune.latency_widths')
        return cls(tuple(float(r) for r in ratios), tuple(float(t) for t in targets_),
                   variant, float(ratio), section.importance, section.start, round_to,
                   float(tolerance), tuple(float(t) for t in latency_ms),
                   tuple(float(w) for w in latency_widths), float(latency_tolerance))

    @property
    def by_latency(self) -> bool:
        return bool(self.latency_targets or self.latency_widths)

    @property
    def sizes(self) -> tuple[float, ...]:
        """What each pruned sub-network aims at: its latency target (ms, or the width whose
        uniform network's time it is), else its MACs target, else its keep ratio."""
        return (self.latency_targets or self.latency_widths or self.macs_targets
                or self.keep_ratios)

    @property
    def sizing_field(self) -> str:
        """The config field that sizes the pruned sub-networks."""
        for name in ('latency_targets', 'latency_widths', 'macs_targets'):
            if getattr(self, name):
                return f'prune.{name}'
        return 'prune.keep_ratios'

    def arguments(self, *, seed: int, bn_scale_init: float) -> dict[str, Any]:
        """Keyword arguments of `prune` (``seed`` draws the fresh weights of re-init recipes,
        whose BN scales start at ``bn_scale_init``)."""
        return dict(
            keep_ratios=(None if self.macs_targets or self.by_latency else self.keep_ratios),
            macs_targets=self.macs_targets or None, zpm=self.zpm,
            latency_tolerance=self.latency_tolerance,
            min_channels_ratio=self.min_channels_ratio, importance=self.importance,
            round_to=self.round_to, tolerance=self.macs_tolerance,
            reinit_rng=(jax.random.fold_in(jax.random.key(seed), 1000)
                        if self.start == 'reinit' else None),
            bn_scale_init=bn_scale_init)


def check_variant(variant: Any, given: Any = None) -> None:
    """Refuses (one sentence) a ``prune.zpm`` that is not one of `VARIANTS`."""
    if variant not in VARIANTS:
        choices = '; '.join(f'{v!r} ({DESCRIPTIONS[v]})' for v in VARIANTS)
        raise ConfigError(f'prune.zpm={variant if given is None else given!r} is unknown; '
                          f'choose one of {choices}.')


def _shapes(tree) -> dict[str, tuple]:
    return {jax.tree_util.keystr(p): tuple(np.shape(x))
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def check_base_variables(arch, variables: dict, width: float, label: str) -> None:
    """Refuses a base checkpoint whose parameters are not ``arch`` at ``width``: the network
    of that full width, as the base stage trains it (EfficientNet's squeeze-and-excitation
    sizes follow the network's width, not only its channel counts)."""
    base = arch.at_width(width)
    module = base.module(base.plain_structure())
    want = _shapes(jax.eval_shape(lambda: module.init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3))))['params'])
    got = _shapes(variables.get('params', {}))
    if got.keys() != want.keys():
        missing = sorted(set(want) - set(got))[:2]
        raise ConfigError(f'{label} is not a {arch.name} checkpoint (missing {missing}); check '
                          'the base path and model.name.')
    # The stem's input channels depend on the data, not the width: ignore that axis.
    for key, shape in want.items():
        first = f"['{arch.first_conv}']['kernel']"
        if got[key] != shape and not (key == first and got[key][:2] + got[key][3:]
                                      == shape[:2] + shape[3:]):
            raise ConfigError(
                f'{label} does not match {arch.name} at width {width}: {key} has shape '
                f'{got[key]}, expected {shape}; check the base widths and their order.')


def slimmable_variables(arch, the_plan: Plan, largest_base: dict, *, in_channels: int = 3,
                        reinit_rng: jax.Array | None = None, bn_scale_init: float = 1.0) -> dict:
    """The slimmable network's variables: the largest base sorted by SCS (or, with
    ``reinit_rng``, freshly initialised with BN scales ``bn_scale_init``: the release's
    ``init_bn_val``), fresh BN statistics (mean 0, variance 1) for every sub-network, and
    the ZPM masks."""
    module = arch.module(the_plan.structure, bn_scale_init=bn_scale_init)
    x = jnp.zeros((1, 32, 32, in_channels))
    if reinit_rng is not None:  # jitted: eager init of a deep network takes many seconds
        params = jax.jit(module.init)(reinit_rng, x)['params']
    else:
        params = scs.permute(largest_base, arch.table(zpm=the_plan.structure.zpm),
                             the_plan.orders)['params']
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))

    def fresh_statistic(path, s):  # running means 0, variances 1
        kind_k = layers.subnet_of(path[-1].key)
        return (jnp.ones if kind_k and kind_k[0] == layers.VAR else jnp.zeros)(s.shape, s.dtype)

    fresh = jax.tree_util.tree_map_with_path(fresh_statistic,
                                             shapes.get(layers.BATCH_STATS, {}))
    variables = {'params': jax.tree.map(jnp.asarray, params), layers.BATCH_STATS: fresh}
    if the_plan.structure.zpm:
        variables[layers.MASKS] = jax.tree.map(lambda m: jnp.asarray(m, jnp.int32),
                                               the_plan.masks)
    if _shapes(variables['params']) != _shapes(shapes['params']):
        raise ConfigError('the largest base does not have the full network\'s shapes; is the '
                          'last base width the full width?')
    return variables


def prune(arch, base_variables: Sequence[dict], base_widths: Sequence[float], *,
          zpm: str, round_to: int, keep_ratios: Sequence[float] | None = None,
          macs_targets: Sequence[float] | None = None, tolerance: float | None = None,
          image_size: int = 224, in_channels: int = 3, min_channels_ratio: float = 0.1,
          importance: str = 'bn', reinit_rng: jax.Array | None = None,
          bn_scale_init: float = 1.0, latency_targets: Sequence[float] | None = None,
          latency_tolerance: float = 0.05, timer: latency.Timer | None = None) -> tuple:
    """SP-Net pruning of trained bases into one slimmable network.

    The pruning options have no defaults here: a run takes them from its config
    (`PruneSettings.arguments`; configs/default.py declares them), a caller names them.

    Args:
      arch: the architecture at the full width (the largest base's width).
      base_variables: per base, ``{'params', 'batch_stats'}`` of the plain network at that
        width, ascending widths.
      base_widths: the bases' width multipliers, ascending.
      zpm: how residual streams are pruned, one of `VARIANTS` (``prune.zpm``): 'release'
        (the release's zero-padding-match), 'aligned' (ZPM whose branches keep prefixes of
        one shared order per stream), 'none' (one channel set per stream).
      round_to: each pruned layer's channel count a multiple of this (nearest, at least the
        floor, at most the layer's size; MACs targets are met with the rounded counts). 1
        keeps the release's exact counts. 'release' streams (unions of branches) stay
        unrounded; 'aligned' streams are their longest branch, so rounded too.
      keep_ratios: per pruned sub-network, the fraction of BN channels kept (one per base, or
        any number with a single base, ascending). Exclusive with ``macs_targets``.
      macs_targets: per pruned sub-network, MACs per image to reach (within ``tolerance``,
        required with them); the keep ratio is found by bisection and returned in ``info``.
      min_channels_ratio: floor per layer, as a fraction of its channels in the base being
        pruned (halved for ZPM block ends and shortcuts; VGG: of its x1.0 channels).
      importance: a name in `IMPORTANCE`.
      reinit_rng: re-train-from-scratch recipes (VGG, MobileNetV1): fresh weights, with BN
        scales ``bn_scale_init``.
      latency_targets: per pruned sub-network, ms per batch to reach on ``timer``'s device
        (`spnet_jax.pruning.latency`; within ``latency_tolerance``); the keep ratio is found
        by bisection on measured time. Exclusive with ``keep_ratios`` and ``macs_targets``.

    Returns:
      ``(structure, variables, info)``: info has 'keep_ratios', 'thresholds', 'macs' (and
      'pruned_counts' where `multibase.release_block_counts` kept built widths).
    """
    if sum(x is not None for x in (keep_ratios, macs_targets, latency_targets)) != 1:
        raise ConfigError('prune: give exactly one of prune.keep_ratios, prune.macs_targets and '
                          'prune.latency_targets.')
    if latency_targets is not None and timer is None:
        raise ConfigError('prune: latency targets need a latency.Timer to measure with.')
    check_variant(zpm)
    if macs_targets is not None and tolerance is None:
        raise ConfigError('prune: MACs targets need prune.macs_tolerance (e.g. 0.01).')
    if importance not in IMPORTANCE:
        raise ConfigError(f'prune.importance={importance!r} is unknown; choose one of '
                          f'{sorted(IMPORTANCE)}.')
    if not 0 <= min_channels_ratio < 1:
        raise ConfigError(f'prune.min_channels_ratio={min_channels_ratio} must be in [0, 1).')
    if not (isinstance(round_to, int) and round_to >= 1):
        raise ConfigError(f'prune.round_to={round_to!r} must be a whole number >= 1.')
    base_widths = [float(w) for w in base_widths]
    if len(base_variables) != len(base_widths):
        raise ConfigError(f'{len(base_variables)} base checkpoints for base widths '
                          f'{base_widths}: give one checkpoint per width.')
    # Widths ascending, one ratio or target per base, ratios in (0, 1]; MACs targets are
    # checked for reach later. ``which[k]``: the base sub-network k is pruned from.
    n = len(macs_targets or latency_targets or ())
    which = multibase.check_bases(
        base_widths, keep_ratios if keep_ratios is not None else [(i + 1) / n for i in range(n)])
    wider_full = arch.full_width > base_widths[-1] + 1e-9
    retrain_wider = wider_full and reinit_rng is not None
    if abs(arch.full_width - base_widths[-1]) > 1e-9 and not retrain_wider:
        raise ConfigError(
            f'model.full_width={arch.full_width} must equal the largest base width '
            f'{base_widths[-1]} (a wider full network needs prune.start="reinit").')
    for i, (v, w) in enumerate(zip(base_variables, base_widths, strict=True)):
        check_base_variables(arch, v, w, f'base checkpoint {i} (width {w})')
    zpm_on = zpm != NONE
    score_fn = IMPORTANCE[importance]
    base_scores = [score_fn(v, arch.table(width=w, zpm=zpm_on))
                   for v, w in zip(base_variables, base_widths, strict=True)]
    table = arch.table(zpm=zpm_on)
    macs_of = targets.macs_function(arch, table, image_size, in_channels)
    orders = multibase.orders_of(table, base_scores[-1][0], zpm, identity=wider_full)
    if macs_targets is not None and len(base_widths) > 1 and arch.multibase_block_groups(
            zpm_on):
        raise ConfigError(
            f'prune.macs_targets with several bases and prune.zpm="none" on {arch.name}: its '
            'blocks keep the channels of the network built at each keep ratio (as the release '
            'prunes it), which MACs targets cannot aim at; give prune.keep_ratios.')
    if latency_targets is not None:
        latency.check_variant(zpm)
        if table.derived or arch.multibase_block_groups(zpm_on) and len(base_widths) > 1:
            raise ConfigError(f'prune.latency_targets on {arch.name}: some of its channels are '
                              'sized by rules of the release after pruning (squeeze-excitation, '
                              'multi-base blocks), which the measured candidates would not '
                              'have; give prune.macs_targets or prune.keep_ratios.')
        ratios, measured = [], []
        for k, (target, b) in enumerate(zip(latency_targets, which, strict=True)):
            floors = multibase.base_floors(arch, base_widths[b], zpm_on, min_channels_ratio)
            r, m = latency.ratio_for_latency(
                float(target), arch, arch.table(width=base_widths[b], zpm=zpm_on),
                *base_scores[b], floors, round_to=round_to, variant=zpm, timer=timer,
                tolerance=latency_tolerance, k=k)
            ratios.append(r)
            measured.append(m)
        keep_ratios = ratios
    if macs_targets is not None:
        ratios = []
        for k, (target, b) in enumerate(zip(macs_targets, which, strict=True)):
            counts_macs = lambda c: macs_of(c, targets.zpm_stream_sizes(table, c, orders, zpm))
            floors = multibase.base_floors(arch, base_widths[b], zpm_on, min_channels_ratio)
            r, _ = targets.ratio_for_target(float(target), *base_scores[b], floors, counts_macs,
                                            tolerance=tolerance, round_to=round_to,
                                            what=f'sub-network {k} (base {base_widths[b]})')
            ratios.append(r)
        keep_ratios = ratios
    the_plan = plan(arch, base_scores, base_widths, list(keep_ratios), zpm_variant=zpm,
                    min_channels_ratio=min_channels_ratio, orders=orders, round_to=round_to)
    # EfficientNet's squeeze-and-excitation: sized per sub-network by the release's rule.
    the_plan = dataclasses.replace(the_plan, structure=derived.derived_counts(
        arch, the_plan.structure, base_variables, base_widths, the_plan.base_of_subnet,
        the_plan.thresholds, score_fn, min_channels_ratio,
        own_base_order=reinit_rng is not None, pruned=the_plan.pruned))
    variables = slimmable_variables(arch, the_plan, base_variables[-1], in_channels=in_channels,
                                    reinit_rng=reinit_rng, bn_scale_init=bn_scale_init)
    S = the_plan.structure
    macs = [macs_of(dict(zip(S.groups, S.counts[k], strict=True)),
                    dict(zip(S.junctions, S.stream_sizes[k], strict=True)) if S.zpm else {})
            for k in range(S.num_subnets)]
    info = {'keep_ratios': [float(r) for r in keep_ratios],
            'thresholds': list(the_plan.thresholds), 'macs': macs,
            'base_of_subnet': list(the_plan.base_of_subnet), 'base_widths': base_widths}
    if latency_targets is not None:
        info['latency'] = {'targets_ms': [float(t) for t in latency_targets],
                           'measured_ms': [m.ms for m in measured],
                           'met': [latency.met(m, t, latency_tolerance)
                                   for m, t in zip(measured, latency_targets, strict=True)],
                           'tolerance': latency_tolerance,
                           'spread': [m.spread for m in measured],
                           'rounds': [m.rounds for m in measured], **timer.report()}
    if the_plan.pruned is not None:
        # The counts pruning found, per pruned sub-network and group: where the release's
        # multi-base rule kept the built widths instead (its masks still have these sizes).
        info['pruned_counts'] = [dict(zip(S.groups, row, strict=True))
                                 for row in the_plan.pruned.counts[:-1]]
    return S, variables, info
