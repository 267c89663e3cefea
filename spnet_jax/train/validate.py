"""Checks of what a run meets on disk, before any work starts; each problem is one
`ConfigError` sentence.

The config itself is checked when it is parsed (`spnet_jax.train.settings.Settings`); here:
the workdir (writable; its stage folders hold this config's networks; the first requested
stage's inputs are there) and the data folder (via `spnet_jax.data`). Nothing is trained,
compiled or written before they pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from spnet_jax import data as data_lib
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.train.settings import Settings
from spnet_jax.workdir import checkpoint


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def check_config(config: Any) -> Settings:
    """The config's settings, every field checked, and its data folder."""
    settings = Settings.from_config(config)
    data_lib.validate_config(settings.data)
    return settings


def _check_existing_structures(config: Settings, workdir: str) -> None:
    """Stage folders already in the workdir must hold the networks this config describes."""
    m, arch = config.model, config.arch
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


# What each stage's result depends on, as dotted config fields (a trailing '.' is the whole
# section): a stage folder made with other values is never resumed or skipped as if it were
# this config's. Where the data is (data.data_dir, manual_dir) is not part of a recipe.
RECIPES = {
    'base': ('method', 'seed', 'compute_dtype', 'model.', 'data.', 'base.'),
    'pruned': ('method', 'seed', 'model.', 'data.image_size', 'base.widths', 'prune.',
               'slim.bn_scale_init'),
    'slim': ('method', 'seed', 'compute_dtype', 'model.', 'data.', 'prune.', 'slim.'),
}
NOT_RECIPE = ('data.data_dir', 'data.manual_dir', 'base.widths@base', 'slim.drop_scaffold')


def _flat(tree: Any, prefix: str = '') -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = tuple(value) if isinstance(value, list) else value
    return out


def check_same_recipe(config: Settings, directory: str, stage: str) -> None:
    """A stage folder (finished or not) whose config.json differs from ``config`` in a field
    its result depends on is refused, naming the field and both values."""
    path = os.path.join(directory, checkpoint.CONFIG)
    if not os.path.exists(path):
        return
    saved, now = _flat(checkpoint.read_json(path)), _flat(config.to_json())
    for field in sorted(now):
        if field in NOT_RECIPE or f'{field}@{stage}' in NOT_RECIPE or field not in saved:
            continue  # not part of this stage's recipe, or a field added since that run
        if not any(field == r or (r.endswith('.') and field.startswith(r))
                   for r in RECIPES[stage]):
            continue
        if saved[field] != now[field]:
            raise ConfigError(
                f'{directory} was made with {field}={saved[field]!r}, but the config now says '
                f'{field}={now[field]!r}; rerun with the value it was made with, or use a fresh '
                '--workdir for the new recipe.')


def check_workdir(config: Settings, workdir: str, stages: Sequence[str] | None = None) -> None:
    """Before anything is written: stage folders already in the workdir hold this config's
    networks and recipes, the requested stages' inputs are there, a baseline for the report
    is a folder, and the workdir is writable (``stages``: default the config's)."""
    stages = config.stages if stages is None else stages
    _check_existing_structures(config, workdir)
    if 'base' in stages and config.method == 'spnet':
        for width in config.base.widths:
            check_same_recipe(config, checkpoint.base_dir(workdir, width), 'base')
    if 'prune' in stages:
        check_same_recipe(config, checkpoint.stage_dir(workdir, 'pruned'), 'pruned')
    if 'slim' in stages:
        check_same_recipe(config, checkpoint.stage_dir(workdir, 'slim'), 'slim')
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, f'.write_test_{os.getpid()}')
        with open(probe, 'w') as fh:
            fh.write('ok')
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f'--workdir={workdir} is not writable ({e.strerror}); pick a folder '
                          'you can write to.') from None
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
    baseline = config.eval.baseline_workdir
    if 'eval' in stages and baseline is not None and not os.path.isdir(baseline):
        raise ConfigError(f'eval.baseline_workdir={baseline!r} is not a directory; give the '
                          'workdir of a finished baseline run (e.g. configs/*_snet.py).')
