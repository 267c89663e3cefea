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


def check_workdir(config: Settings, workdir: str, stages: Sequence[str] | None = None) -> None:
    """The workdir is writable and holds what the first requested stage needs (``stages``:
    default the config's); a baseline for the report is a finished run."""
    stages = config.stages if stages is None else stages
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
    baseline = config.eval.baseline_workdir
    if 'eval' in stages and baseline is not None and not os.path.isdir(baseline):
        raise ConfigError(f'eval.baseline_workdir={baseline!r} is not a directory; give the '
                          'workdir of a finished baseline run (e.g. configs/*_snet.py).')
