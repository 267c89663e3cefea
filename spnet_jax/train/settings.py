"""One schema: a config parsed once into frozen, typed settings that the code reads.

`Settings.from_config` reads a ``ml_collections.ConfigDict`` (or the dict of a saved
``config.json``) whose every field is declared in ``configs/default.py``, checks each field
(one `ConfigError` sentence naming it and the fix), and returns immutable settings whose
attributes have the config's names: ``settings.slim.lr``, ``settings.prune.keep_ratios``,
``settings.data.image_size``. The lists of allowed names are the registries
(`spnet_jax.models.REGISTRY`, `spnet_jax.pruning.IMPORTANCE`, `optim.OPTIMIZERS`, ...); this
module only reads them.

A ``config.json`` saved before a field existed is read with that field's value from
``LEGACY_DEFAULTS`` (what those runs did), so older runs still evaluate.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections

from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.data import DataSettings, parse_settings
from spnet_jax.models import Architecture, arch_from_config
from spnet_jax.pruning import PruneSettings, targets
from spnet_jax.train.optim import OPTIMIZERS, SCHEDULES

METHODS = ('spnet', 'snet')
STAGES = ('base', 'prune', 'slim', 'eval')
DTYPES = ('float32', 'bfloat16', 'float64')
# Fields added after runs were made, with the value those runs used.
LEGACY_DEFAULTS = {
    ('base', 'optimizer'): 'sgd', ('slim', 'optimizer'): 'sgd',
    ('slim', 'drop_scaffold'): False, ('slim', 'init_from_base'): False,
    ('eval', 'latency_batch'): 32, ('eval', 'latency_runs'): 10, ('eval', 'latency_warmup'): 2,
    ('eval', 'baseline_workdir'): None,
    ('base', 'mixup_alpha'): 0.0, ('slim', 'mixup_alpha'): 0.0,
    ('base', 'ema_decay'): 0.0, ('slim', 'ema_decay'): 0.0,
    ('model', 'dropout'): None, ('model', 'stochastic_depth'): None,
    ('prune', 'round_to'): 1, ('prune', 'macs_tolerance'): 0.01,
    ('prune', 'latency_targets'): (), ('prune', 'latency_widths'): (),
    ('prune', 'latency_tolerance'): 0.05,
}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _int(name: str, value: Any, least: int, hint: str = '') -> int:
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= least,
           f'{name}={value!r} must be an integer >= {least}{hint}.')
    return value


def _field(section: Any, name: str, where: str) -> Any:
    """``section[name]``; a field missing from a saved config takes its legacy default."""
    if name in section:
        return section[name]
    if (where, name) in LEGACY_DEFAULTS:
        return LEGACY_DEFAULTS[(where, name)]
    raise ConfigError(f'{where}.{name} is missing from the config; start from '
                      'configs/default.py, which declares every field.')


def parse_stages(stages: Any) -> tuple[str, ...]:
    """``'base,prune,slim,eval'`` (or a sequence) -> the stages, in the recipe's order."""
    names = [s.strip() for s in stages.split(',')] if isinstance(stages, str) else list(stages)
    names = [s for s in names if s]
    unknown = [s for s in names if s not in STAGES]
    _check(not unknown and bool(names),
           f'stages={stages!r} names unknown stage(s) {unknown}; use a comma-separated subset '
           f'of {",".join(STAGES)}.')
    return tuple(s for s in STAGES if s in names)


def _widths(field: str, widths: Any, full_width: float) -> tuple[float, ...]:
    _check(isinstance(widths, Sequence) and not isinstance(widths, str) and len(widths) > 0
           and all(_number(w) for w in widths),
           f'{field}={widths!r} must be a non-empty list of width multipliers, e.g. (0.75, 1.0).')
    _check(all(b > a for a, b in zip(widths, widths[1:], strict=False)),
           f'{field}={tuple(widths)} must be strictly ascending; sort them, smallest first.')
    _check(all(0 < w <= full_width + 1e-9 for w in widths),
           f'{field}={tuple(widths)} must lie in (0, model.full_width={full_width}]; raise '
           'model.full_width or drop the larger widths.')
    return tuple(float(w) for w in widths)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The ``model`` section: which architecture (see configs/default.py)."""

    name: str
    num_classes: int
    stem: str
    full_width: float
    dropout: float | None = None
    stochastic_depth: float | None = None

    @classmethod
    def from_config(cls, section: Any) -> ModelSettings:
        regular = {f: _field(section, f, 'model') for f in ('dropout', 'stochastic_depth')}
        for field, value in regular.items():
            _check(value is None or (_number(value) and 0 <= value < 1),
                   f'model.{field}={value!r} must be in [0, 1) (or None: the model\'s default).')
        settings = cls(section.name, section.num_classes, section.stem, section.full_width,
                       **regular)
        settings.arch  # noqa: B018 - the registry checks the name, stem, width and classes
        return settings

    @property
    def arch(self) -> Architecture:
        return arch_from_config(self)


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """A training stage's recipe (``base`` or ``slim``; see configs/default.py)."""

    epochs: float
    num_steps: int
    batch_size: int
    lr: float
    schedule: str
    lr_boundaries: tuple[float, ...]
    lr_decay: float
    warmup_epochs: float
    weight_decay: float
    optimizer: str
    momentum: float
    nesterov: bool
    sparsity: float
    label_smoothing: float
    mixup_alpha: float
    ema_decay: float
    bn_scale_init: float
    widths: tuple[float, ...]

    @classmethod
    def fields_from(cls, name: str, section: Any) -> dict[str, Any]:
        """The common fields of a training section, checked."""
        get = lambda field: _field(section, field, name)
        f = lambda field: f'{name}.{field}={get(field)!r}'
        values = {field.name: get(field.name) for field in dataclasses.fields(TrainingSettings)}
        _check(_number(values['epochs']) and (values['epochs'] > 0 or values['num_steps'] > 0),
               f'{f("epochs")} must be positive (or set {name}.num_steps).')
        _int(f'{name}.num_steps', values['num_steps'], -1)
        devices = jax.device_count()
        batch = values['batch_size']
        _check(isinstance(batch, int) and batch > 0 and batch % devices == 0,
               f'{f("batch_size")} must be a positive multiple of the {devices} devices; set it '
               f'to e.g. {devices * max(1, (batch if _number(batch) else 1) // devices)}.')
        _check(_number(values['lr']) and values['lr'] > 0, f'{f("lr")} must be positive.')
        _check(values['schedule'] in SCHEDULES,
               f'{f("schedule")} is unknown; choose one of {list(SCHEDULES)}.')
        bounds = tuple(values['lr_boundaries'])
        _check(all(_number(b) and b >= 0 for b in bounds)
               and all(b > a for a, b in zip(bounds, bounds[1:], strict=False)),
               f'{f("lr_boundaries")} must be ascending epochs >= 0.')
        _check(_number(values['lr_decay']) and values['lr_decay'] > 0,
               f'{f("lr_decay")} must be > 0.')
        _check(_number(values['warmup_epochs']) and values['warmup_epochs'] >= 0,
               f'{f("warmup_epochs")} must be >= 0.')
        _check(_number(values['weight_decay']) and values['weight_decay'] >= 0,
               f'{f("weight_decay")} must be >= 0.')
        _check(values['optimizer'] in OPTIMIZERS,
               f'{f("optimizer")} is unknown; choose one of {list(OPTIMIZERS)}.')
        _check(_number(values['momentum']) and 0 <= values['momentum'] < 1,
               f'{f("momentum")} must be in [0, 1).')
        _check(isinstance(values['nesterov'], bool), f'{f("nesterov")} must be True or False.')
        _check(_number(values['sparsity']) and values['sparsity'] >= 0,
               f'{f("sparsity")} must be >= 0.')
        _check(_number(values['label_smoothing']) and 0 <= values['label_smoothing'] < 1,
               f'{f("label_smoothing")} must be in [0, 1).')
        _check(_number(values['mixup_alpha']) and values['mixup_alpha'] >= 0,
               f'{f("mixup_alpha")} must be >= 0 (0: no mixup).')
        _check(_number(values['ema_decay']) and 0 <= values['ema_decay'] < 1,
               f'{f("ema_decay")} must be in [0, 1) (0: no weight EMA; the release used '
               '0.9999).')
        _check(_number(values['bn_scale_init']) and values['bn_scale_init'] > 0,
               f'{f("bn_scale_init")} must be positive.')
        values['lr_boundaries'] = tuple(float(b) for b in bounds)
        values['widths'] = tuple(values['widths'])
        for key in ('epochs', 'lr', 'lr_decay', 'warmup_epochs', 'weight_decay', 'momentum',
                    'sparsity', 'label_smoothing', 'mixup_alpha', 'ema_decay',
                    'bn_scale_init'):
            values[key] = float(values[key])
        return values

    @classmethod
    def from_config(cls, name: str, section: Any) -> TrainingSettings:
        return cls(**cls.fields_from(name, section))


@dataclasses.dataclass(frozen=True)
class SlimSettings(TrainingSettings):
    """The ``slim`` section: a training recipe plus the slimmable training's own fields."""

    kd_alpha: float
    kd_temperature: float
    drop_scaffold: bool
    init_from_base: bool

    @classmethod
    def from_config(cls, name: str, section: Any) -> SlimSettings:
        values = TrainingSettings.fields_from(name, section)
        extra = {f: _field(section, f, name) for f in ('kd_alpha', 'kd_temperature',
                                                       'drop_scaffold', 'init_from_base')}
        _check(_number(extra['kd_alpha']) and 0 <= extra['kd_alpha'] <= 1,
               f'slim.kd_alpha={extra["kd_alpha"]!r} must be in [0, 1].')
        _check(_number(extra['kd_temperature']) and extra['kd_temperature'] > 0,
               f'slim.kd_temperature={extra["kd_temperature"]!r} must be positive.')
        for flag in ('drop_scaffold', 'init_from_base'):
            _check(isinstance(extra[flag], bool),
                   f'slim.{flag}={extra[flag]!r} must be True or False.')
        return cls(**values, kd_alpha=float(extra['kd_alpha']),
                   kd_temperature=float(extra['kd_temperature']),
                   drop_scaffold=extra['drop_scaffold'], init_from_base=extra['init_from_base'])


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """The ``eval`` section (see configs/default.py)."""

    batch_size: int
    bn_calibration_batches: int
    eval_bases: bool
    latency_batch: int
    latency_runs: int
    latency_warmup: int
    baseline_workdir: str | None

    @classmethod
    def from_config(cls, section: Any) -> EvalSettings:
        values = {f.name: _field(section, f.name, 'eval') for f in dataclasses.fields(cls)}
        devices = jax.device_count()
        batch = values['batch_size']
        _check(isinstance(batch, int) and batch > 0 and batch % devices == 0,
               f'eval.batch_size={batch!r} must be a positive multiple of the {devices} '
               'devices.')
        _int('eval.bn_calibration_batches', values['bn_calibration_batches'], 0)
        _check(isinstance(values['eval_bases'], bool),
               f'eval.eval_bases={values["eval_bases"]!r} must be True or False.')
        _int('eval.latency_batch', values['latency_batch'], 0, ' (0: no latency measurement)')
        _int('eval.latency_runs', values['latency_runs'], 1)
        _int('eval.latency_warmup', values['latency_warmup'], 0)
        return cls(**values)


@dataclasses.dataclass(frozen=True)
class Settings:
    """A whole run's settings (the sections and top-level fields of configs/default.py)."""

    method: str
    stages: tuple[str, ...]
    seed: int
    compute_dtype: str
    log_every_steps: int
    checkpoint_every_steps: int
    keep_checkpoints: int
    prefetch: int
    distributed: bool
    model: ModelSettings
    data: DataSettings
    base: TrainingSettings
    prune: PruneSettings
    slim: SlimSettings
    eval: EvalSettings
    source: Mapping[str, Any] = dataclasses.field(compare=False, repr=False)

    @property
    def arch(self) -> Architecture:
        return self.model.arch

    def to_json(self) -> dict[str, Any]:
        """The config these settings were read from, as saved in ``config.json``."""
        return json.loads(json.dumps(self.source, default=str))

    @classmethod
    def from_config(cls, config: Any) -> Settings:
        """Reads and checks every field (the first problem is one `ConfigError` sentence)."""
        if isinstance(config, Settings):
            return config
        if isinstance(config, ml_collections.ConfigDict):
            source = json.loads(config.to_json_best_effort())
        else:
            source = json.loads(json.dumps(config, default=str))
        c = ml_collections.ConfigDict(source)
        get = lambda name: _field(c, name, 'config')
        stages = parse_stages(get('stages'))
        method = get('method')
        _check(method in METHODS, f'method={method!r} is unknown; choose one of {list(METHODS)}.')
        if method == 'snet':
            warm = c.slim.get('init_from_base', LEGACY_DEFAULTS[('slim', 'init_from_base')])
            _check('prune' not in stages and ('base' not in stages or warm is True),
                   f"method='snet' trains the S-Net from scratch in the 'slim' stage (or "
                   f"from its full-width base, 'base,slim,eval' with slim.init_from_base=True); "
                   f"set stages to a subset of 'slim,eval' (got {get('stages')!r}).")
        dtype = get('compute_dtype')
        _check(dtype in DTYPES, f'compute_dtype={dtype!r} is unknown; choose one of '
                                f'{list(DTYPES)}.')
        for name in ('log_every_steps', 'checkpoint_every_steps', 'keep_checkpoints'):
            _int(name, get(name), 1)
        _int('prefetch', get('prefetch'), 0)
        _int('seed', get('seed'), 0)
        model = ModelSettings.from_config(c.model)
        data = parse_settings(c.data)
        _check(model.num_classes == data.spec.num_classes,
               f'model.num_classes={model.num_classes} but {data.name} has '
               f'{data.spec.num_classes} classes; set model.num_classes={data.spec.num_classes}.')
        base = TrainingSettings.from_config('base', c.base)
        slim = SlimSettings.from_config('slim', c.slim)
        prune_section = ml_collections.ConfigDict(c.prune.to_dict())
        for name in ('round_to', 'macs_tolerance', 'latency_targets', 'latency_widths',
                     'latency_tolerance'):  # saved before these fields existed
            prune_section[name] = _field(c.prune, name, 'prune')
        prune = PruneSettings.from_config(prune_section)
        settings = cls(method=method, stages=stages, seed=get('seed'), compute_dtype=dtype,
                       log_every_steps=get('log_every_steps'),
                       checkpoint_every_steps=get('checkpoint_every_steps'),
                       keep_checkpoints=get('keep_checkpoints'), prefetch=get('prefetch'),
                       distributed=bool(get('distributed')), model=model, data=data,
                       base=base, prune=prune, slim=slim,
                       eval=EvalSettings.from_config(c.eval), source=source)
        settings._check_across_sections()
        return settings

    def _check_across_sections(self) -> None:
        arch, stages = self.arch, self.stages
        full = self.model.full_width
        if self.method == 'spnet' and {'base', 'prune'} & set(stages):
            _widths('base.widths', self.base.widths, full)
        if self.method == 'spnet' and 'prune' in stages:
            # Only here: bases may be trained side by side, one width per job (stages='base').
            self._check_prune(arch)
        if 'slim' in stages:
            s = self.slim
            if s.drop_scaffold and self.method == 'spnet':
                _check(self.prune.zpm == 'none',
                       'slim.drop_scaffold=True drops the last sub-network, which a ZPM '
                       "network cannot lose (its residual streams are numbered in the full "
                       "network's channels); set prune.zpm='none' or slim.drop_scaffold=False.")
            if s.drop_scaffold and self.method == 'snet':
                _check(len(s.widths) >= 2,
                       'slim.drop_scaffold=True drops the widest S-Net width, but slim.widths '
                       'has only one; add widths or set slim.drop_scaffold=False.')
            if s.init_from_base:
                _check(self.method == 'snet',
                       'slim.init_from_base=True starts an S-Net from a trained base; an '
                       "SP-Net starts from its bases anyway (prune.start='finetune').")
                _check(tuple(self.base.widths) == (full,),
                       f'slim.init_from_base=True starts the S-Net from the base of its full '
                       f'width, but base.widths={tuple(self.base.widths)}; set '
                       f'base.widths=({full},).')
            if self.method == 'snet':
                _widths('slim.widths', s.widths, full)
                _check(abs(s.widths[-1] - full) < 1e-9,
                       f'slim.widths ends at {s.widths[-1]} but model.full_width={full}; the '
                       'last S-Net width is the full network, so make them equal.')

    def _check_prune(self, arch: Architecture) -> None:
        p, widths = self.prune, self.base.widths
        sizes, field = p.sizes, p.sizing_field
        what = {'prune.keep_ratios': 'keep ratio', 'prune.macs_targets': 'MACs target'}.get(
            field, 'latency target')
        # Sub-network k is pruned from base k; a single base may be pruned to several sizes.
        _check(len(sizes) == len(widths) or len(widths) == 1,
               f'{field} has {len(sizes)} entries but base.widths has {len(widths)}; give one '
               f'{what} per base network.')
        _check(len(widths) > 1 or p.macs_targets or all(
            b > a for a, b in zip(p.keep_ratios, p.keep_ratios[1:], strict=False)),
               f'prune.keep_ratios={p.keep_ratios} must be strictly ascending with one base '
               f'(sub-network 0 is the smallest); give them as '
               f'{tuple(sorted(set(p.keep_ratios)))}.')
        if p.zpm != 'none':
            _check(arch.table(zpm=True).zpm,
                   f'prune.zpm={p.zpm!r} but {arch.name} has no residual connections; set '
                   "prune.zpm='none'.")
        if p.start == 'finetune':
            _check(abs(widths[-1] - self.model.full_width) < 1e-9,
                   f"prune.start='finetune' starts from the largest base, but base.widths ends "
                   f'at {widths[-1]} and model.full_width={self.model.full_width}; make them '
                   "equal or use prune.start='reinit'.")
        if p.macs_targets:
            self._check_macs_targets()
        if p.by_latency:
            _check(self.eval.latency_batch > 0,
                   f'{field} are times per batch of eval.latency_batch images, but '
                   'eval.latency_batch=0; set it to the batch to time (e.g. 32).')
            _check(not p.latency_widths or p.latency_widths[-1] < self.model.full_width,
                   f'prune.latency_widths={p.latency_widths} must lie below '
                   f'model.full_width={self.model.full_width} (the last sub-network is the '
                   'full network).')
            _check(not arch.table(zpm=p.zpm != 'none').derived,
                   f'{field} on {arch.name}: its squeeze-excitation channels are sized by the '
                   "release's rule after pruning, which the timed candidates would not have; "
                   'give prune.macs_targets or prune.keep_ratios.')

    def _check_macs_targets(self) -> None:
        """Each MACs target must lie below the MACs of the base it is pruned from."""
        widths = self.base.widths
        which = range(len(widths)) if len(widths) > 1 else [0] * len(self.prune.macs_targets)
        for k, (target, b) in enumerate(zip(self.prune.macs_targets, which, strict=False)):
            arch = self.arch.at_width(widths[b])
            base_macs = subnet_costs(arch, arch.plain_structure(), self.data.image_size,
                                     self.data.spec.channels)[0].macs
            _check(target < base_macs,
                   f'prune.macs_targets[{k}]={target:.4g} is not below the {base_macs:.4g} MACs '
                   f'of the x{widths[b]} base it is pruned from; lower it (a pruned sub-network '
                   'costs less than its base).')
        p = self.prune
        if p.round_to > 1:
            targets.check_round_to(
                self.arch, widths, p.macs_targets, zpm_variant=p.zpm, round_to=p.round_to,
                tolerance=p.macs_tolerance, min_channels_ratio=p.min_channels_ratio,
                image_size=self.data.image_size, in_channels=self.data.spec.channels)
