"""Checks a whole config before any work starts; each problem is one `ConfigError` sentence.

The checks read the config, the model registry, the dataset registry and the data folder
(via `spnet_jax.data`), and the workdir (which stages' inputs already exist). Nothing is
trained, compiled or written before they pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax

from spnet_jax import data as data_lib
from spnet_jax.errors import ConfigError
from spnet_jax.models import get_arch
from spnet_jax.structure import Structure
from spnet_jax.train import checkpoint
from spnet_jax.train.optim import OPTIMIZERS, SCHEDULES

METHODS = ('spnet', 'snet')
STAGES = ('base', 'prune', 'slim', 'eval')
DTYPES = ('float32', 'bfloat16', 'float64')
STARTS = ('finetune', 'reinit')
IMPORTANCES = ('bn', 'l1')


def parse_stages(stages: Any) -> tuple[str, ...]:
    """``'base,prune,slim,eval'`` (or a sequence) -> the stages, in the recipe's order."""
    names = [s.strip() for s in stages.split(',')] if isinstance(stages, str) else list(stages)
    names = [s for s in names if s]
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise ConfigError(f'stages={stages!r} names unknown stage(s) {unknown}; use a comma-'
                          f'separated subset of {",".join(STAGES)}.')
    return tuple(s for s in STAGES if s in names)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ascending_widths(field: str, widths: Sequence[Any], full_width: float) -> None:
    _check(isinstance(widths, Sequence) and not isinstance(widths, str) and len(widths) > 0
           and all(_number(w) for w in widths),
           f'{field}={widths!r} must be a non-empty list of width multipliers, e.g. (0.75, 1.0).')
    _check(all(b > a for a, b in zip(widths, widths[1:], strict=False)),
           f'{field}={tuple(widths)} must be strictly ascending; sort them, smallest first.')
    _check(all(0 < w <= full_width + 1e-9 for w in widths),
           f'{field}={tuple(widths)} must lie in (0, model.full_width={full_width}]; raise '
           'model.full_width or drop the larger widths.')


def check_section(name: str, section: Any, num_devices: int) -> None:
    """A training section (``config.base`` or ``config.slim``)."""
    f = lambda field: f'{name}.{field}={section[field]!r}'
    _check(_number(section.epochs) and (section.epochs > 0 or section.num_steps > 0),
           f'{f("epochs")} must be positive (or set {name}.num_steps).')
    _check(isinstance(section.batch_size, int) and section.batch_size > 0
           and section.batch_size % num_devices == 0,
           f'{f("batch_size")} must be a positive multiple of the {num_devices} devices; '
           f'set it to e.g. {num_devices * max(1, section.batch_size // max(num_devices, 1))}.')
    _check(_number(section.lr) and section.lr > 0, f'{f("lr")} must be positive.')
    _check(section.schedule in SCHEDULES, f'{f("schedule")} is unknown; choose one of '
                                          f'{list(SCHEDULES)}.')
    bounds = tuple(section.lr_boundaries)
    _check(all(_number(b) and b >= 0 for b in bounds)
           and all(b > a for a, b in zip(bounds, bounds[1:], strict=False)),
           f'{f("lr_boundaries")} must be ascending epochs >= 0.')
    _check(_number(section.lr_decay) and section.lr_decay > 0, f'{f("lr_decay")} must be > 0.')
    _check(_number(section.warmup_epochs) and section.warmup_epochs >= 0,
           f'{f("warmup_epochs")} must be >= 0.')
    _check(_number(section.weight_decay) and section.weight_decay >= 0,
           f'{f("weight_decay")} must be >= 0.')
    _check(section.optimizer in OPTIMIZERS, f'{f("optimizer")} is unknown; choose one of '
                                            f'{list(OPTIMIZERS)}.')
    _check(_number(section.momentum) and 0 <= section.momentum < 1,
           f'{f("momentum")} must be in [0, 1).')
    _check(_number(section.sparsity) and section.sparsity >= 0, f'{f("sparsity")} must be >= 0.')
    _check(_number(section.label_smoothing) and 0 <= section.label_smoothing < 1,
           f'{f("label_smoothing")} must be in [0, 1).')
    _check(_number(section.bn_scale_init) and section.bn_scale_init > 0,
           f'{f("bn_scale_init")} must be positive.')


def check_config(config: Any) -> tuple[str, ...]:
    """Validates every field the run will use; returns the stages to run."""
    stages = parse_stages(config.stages)
    _check(config.method in METHODS,
           f'method={config.method!r} is unknown; choose one of {list(METHODS)}.')
    if config.method == 'snet':
        _check('base' not in stages and 'prune' not in stages,
               f"method='snet' trains the S-Net from scratch in the 'slim' stage; set "
               f"stages to a subset of 'slim,eval' (got {config.stages!r}).")
    _check(config.compute_dtype in DTYPES,
           f'compute_dtype={config.compute_dtype!r} is unknown; choose one of {list(DTYPES)}.')
    for field in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
        _check(isinstance(config[field], int) and config[field] >= 1,
               f'{field}={config[field]!r} must be a positive integer.')
    m = config.model
    arch = get_arch(m.name, num_classes=m.num_classes, full_width=m.full_width, stem=m.stem)
    data = data_lib.validate_config(config.data)
    _check(m.num_classes == data.spec.num_classes,
           f'model.num_classes={m.num_classes} but {data.name} has {data.spec.num_classes} '
           f'classes; set model.num_classes={data.spec.num_classes}.')
    devices = jax.device_count()
    if config.method == 'spnet' and {'base', 'prune'} & set(stages):
        _ascending_widths('base.widths', tuple(config.base.widths), m.full_width)
    if config.method == 'spnet' and 'prune' in stages:
        # Only here: bases may be trained side by side, one width per job (stages='base').
        check_prune(config, arch)
    if 'base' in stages:
        check_section('base', config.base, devices)
    if 'slim' in stages:
        check_section('slim', config.slim, devices)
        s = config.slim
        _check(_number(s.kd_alpha) and 0 <= s.kd_alpha <= 1,
               f'slim.kd_alpha={s.kd_alpha!r} must be in [0, 1].')
        _check(_number(s.kd_temperature) and s.kd_temperature > 0,
               f'slim.kd_temperature={s.kd_temperature!r} must be positive.')
        _check(isinstance(s.drop_scaffold, bool),
               f'slim.drop_scaffold={s.drop_scaffold!r} must be True or False.')
        if s.drop_scaffold and config.method == 'spnet':
            _check(not config.prune.zpm,
                   'slim.drop_scaffold=True drops the last sub-network, which a ZPM network '
                   "cannot lose (its residual streams are numbered in the full network's "
                   'channels); set prune.zpm=False or slim.drop_scaffold=False.')
        if s.drop_scaffold and config.method == 'snet':
            _check(len(tuple(s.widths)) >= 2,
                   'slim.drop_scaffold=True drops the widest S-Net width, but slim.widths has '
                   'only one; add widths or set slim.drop_scaffold=False.')
        if config.method == 'snet':
            _ascending_widths('slim.widths', tuple(s.widths), m.full_width)
            _check(abs(s.widths[-1] - m.full_width) < 1e-9,
                   f'slim.widths ends at {s.widths[-1]} but model.full_width={m.full_width}; '
                   'the last S-Net width is the full network, so make them equal.')
    e = config.eval
    _check(isinstance(e.batch_size, int) and e.batch_size > 0 and e.batch_size % devices == 0,
           f'eval.batch_size={e.batch_size!r} must be a positive multiple of the {devices} '
           'devices.')
    _check(isinstance(e.bn_calibration_batches, int) and e.bn_calibration_batches >= 0,
           f'eval.bn_calibration_batches={e.bn_calibration_batches!r} must be an int >= 0.')
    return stages


def prune_sizes(prune: Any) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``(keep_ratios, macs_targets)`` for `spnet_jax.pruning.prune`, exactly one not None.

    ``prune.macs_targets``, when set, replaces the config's keep ratios (so
    ``--config.prune.macs_targets=1.1e9,2.3e9`` alone switches a recipe to MACs targets).
    """
    targets = tuple(prune.get('macs_targets') or ())
    if targets:
        return None, targets
    return tuple(prune.get('keep_ratios') or ()), None


def check_prune(config: Any, arch) -> None:
    p, widths = config.prune, tuple(config.base.widths)
    ratios, targets = prune_sizes(p)
    _check(bool(ratios or targets),
           'set prune.keep_ratios (or prune.macs_targets), one per base width.')
    # Sub-network k is pruned from base k; a single base may be pruned to several sizes.
    if ratios:
        _check(len(ratios) == len(widths) or len(widths) == 1,
               f'prune.keep_ratios has {len(ratios)} entries but base.widths has {len(widths)}; '
               'give one keep ratio per base network.')
        _check(all(_number(r) and 0 < r <= 1 for r in ratios),
               f'prune.keep_ratios={ratios} must each lie in (0, 1] (a fraction of BN channels '
               'kept).')
    else:
        _check(len(targets) == len(widths) or len(widths) == 1,
               f'prune.macs_targets has {len(targets)} entries but base.widths has '
               f'{len(widths)}; give one MACs target per base network.')
        _check(all(_number(t) and t > 0 for t in targets)
               and all(b > a for a, b in zip(targets, targets[1:], strict=False)),
               f'prune.macs_targets={targets} must be positive and ascending.')
        check_macs_targets(config, targets, widths)
    _check(isinstance(p.zpm, bool), f'prune.zpm={p.zpm!r} must be True or False.')
    if p.zpm:
        _check(arch.table(zpm=True).zpm,
               f'prune.zpm=True but {arch.name} has no residual connections; set prune.zpm=False.')
    _check(_number(p.min_channels_ratio) and 0 <= p.min_channels_ratio < 1,
           f'prune.min_channels_ratio={p.min_channels_ratio!r} must be in [0, 1).')
    _check(p.importance in IMPORTANCES,
           f'prune.importance={p.importance!r} is unknown; choose one of {list(IMPORTANCES)}.')
    _check(p.start in STARTS,
           f'prune.start={p.start!r} is unknown; choose one of {list(STARTS)}.')
    if p.start == 'finetune':
        _check(abs(widths[-1] - config.model.full_width) < 1e-9,
               f"prune.start='finetune' starts from the largest base, but base.widths ends at "
               f'{widths[-1]} and model.full_width={config.model.full_width}; make them equal '
               "or use prune.start='reinit'.")


def check_macs_targets(config: Any, targets: Sequence[float], widths: Sequence[float]) -> None:
    """Each MACs target must lie below the MACs of the base it is pruned from."""
    from spnet_jax.cost import subnet_costs

    m, data = config.model, data_lib.validate_config(config.data)
    which = range(len(widths)) if len(widths) > 1 else [0] * len(targets)
    for k, (target, b) in enumerate(zip(targets, which, strict=False)):
        arch = get_arch(m.name, num_classes=m.num_classes, full_width=widths[b], stem=m.stem)
        base_macs = subnet_costs(arch, arch.plain_structure(), data.image_size,
                                 data.spec.channels)[0].macs
        _check(target < base_macs,
               f'prune.macs_targets[{k}]={target:.4g} is not below the {base_macs:.4g} MACs of '
               f'the x{widths[b]} base it is pruned from; lower it (a pruned sub-network costs '
               'less than its base).')


def _check_existing_structures(config: Any, workdir: str) -> None:
    """Stage folders already in the workdir must hold the networks this config describes."""
    m = config.model
    arch = get_arch(m.name, num_classes=m.num_classes, full_width=m.full_width, stem=m.stem)
    for width in config.base.widths:
        directory = checkpoint.base_dir(workdir, width)
        path = os.path.join(directory, checkpoint.STRUCTURE)
        if config.method != 'spnet' or not os.path.exists(path):
            continue
        saved = Structure.load(path)
        want = arch.plain_structure(width)
        if saved != want:
            what = (f'a {saved.arch}' if saved.arch != want.arch else
                    f'{saved.arch} with other channel counts (e.g. another width)')
            raise ConfigError(
                f'base.widths has {width}, but {directory} holds {what}, not {want.arch} at '
                f'x{width}; make base.widths and model.* match the base checkpoints, or use a '
                'fresh --workdir.')
    for stage in ('pruned', 'slim'):
        path = os.path.join(checkpoint.stage_dir(workdir, stage), checkpoint.STRUCTURE)
        if not os.path.exists(path):
            continue
        saved = Structure.load(path)
        table = arch.table(zpm=saved.zpm)
        _check(saved.arch == arch.name and saved.groups == table.group_names
               and saved.full == tuple(g.size for g in table.groups),
               f'{os.path.dirname(path)} holds a {saved.arch} network that is not '
               f'model.name={m.name!r} at model.full_width={m.full_width}; set model.* to the '
               'run that made it, or use a fresh --workdir.')


def check_workdir(config: Any, workdir: str, stages: Sequence[str]) -> None:
    """The workdir is writable and holds what the first requested stage needs."""
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f'.write_test_{os.getpid()}')
        with open(probe, 'w') as fh:
            fh.write('ok')
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f'--workdir={workdir} is not writable ({e.strerror}); pick a folder '
                          'you can write to.') from None
    _check_existing_structures(config, workdir)
    needs = {
        'prune': [checkpoint.base_dir(workdir, w) for w in config.base.widths],
        'slim': [checkpoint.stage_dir(workdir, 'pruned')] if config.method == 'spnet' else [],
        'eval': [checkpoint.final_network_dir(workdir)],
    }
    producer = {'prune': 'base', 'slim': 'prune', 'eval': 'slim'}
    for stage in stages:
        if stage not in needs or producer[stage] in stages:
            continue
        if stage == 'slim' and config.method == 'snet':
            continue
        missing = [d for d in needs[stage] if not checkpoint.is_done(d)]
        if missing:
            raise ConfigError(
                f"stage '{stage}' needs the finished '{producer[stage]}' stage, but "
                f'{missing[0]} has no finished network; add {producer[stage]} to config.stages '
                'or point --workdir at a run that has it.')
