"""Importing a network trained by the original PyTorch release as a finished run of a workdir.

`import_release` writes ``<workdir>/slim`` (or ``published``) from a release checkpoint, so
`spnet_jax.load`, `evaluate_workdir` and export take it as a trained run. The command is
``python -m spnet_jax.import_release`` (`spnet_jax.cli.import_release`, whose docstring
details what is read from where).

* SP-Net (``method='spnet'``): the bases are pruned exactly as the prune stage does, by the
  config's ``prune`` settings; only the resulting channel counts and ZPM masks are used. The
  weights (the release's sorted layout) and the BN statistics (``bn.<k>.running_*`` of
  sub-network k, plain ``running_*`` the full network's) come from the checkpoint. A
  MobileNetV1 checkpoint written after the release's ``eliminate_width`` (one sub-network
  fewer) is recognised by its shapes and goes to ``published/``.
* S-Net (``method='snet'``): the switchable BNs' ``bn.<k>.*`` become width k's private BN.

Every bad input stops with one `ConfigError` sentence before anything is written.
"""

from __future__ import annotations

import os
import re
from typing import Any

import jax
import jax.numpy as jnp

from spnet_jax.core import layers
from spnet_jax.core.errors import ConfigError
from spnet_jax.pruning import check_base_variables
from spnet_jax.pruning.subnets import keep_first, keep_first_structure
from spnet_jax.train.settings import Settings
from spnet_jax.train.stages import prune_bases
from spnet_jax.workdir import checkpoint, convert_torch, lock
from spnet_jax.workdir.loading import parse_bases as parse_base_paths

SLIM, PUBLISHED = 'slim', checkpoint.PUBLISHED
_PRIVATE_KEY = re.compile(r'^(?P<mod>.+)\.bn\.(?P<k>\d+)\.[a-z_]+$')


# --------------------------------------------------------------- checks of the inputs
def check_workdir(workdir: str) -> None:
    """A new folder, or one without an imported or trained network, that can be written."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f'--workdir={workdir} is a file; give a folder to import into.')
    for stage in (SLIM, PUBLISHED):
        if os.path.exists(os.path.join(workdir, stage)):
            raise ConfigError(f'--workdir={workdir} already holds a network '
                              f'({os.path.join(workdir, stage)}); import into a new folder.')
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f'--workdir={workdir} cannot be created ({existing} is not a '
                          'writable folder); pick a folder you can write to.')


def read_checkpoint(path: str | None) -> dict:
    """The release checkpoint's state dict (numpy arrays, no ``num_batches_tracked``)."""
    if not path:
        raise ConfigError('give --checkpoint=PATH, the release checkpoint (.pt/.pth, or .npz '
                          'of its state dict) to import.')
    if not os.path.exists(path):
        raise ConfigError(f'--checkpoint={path} does not exist.')
    if os.path.isdir(path):
        raise ConfigError(f'--checkpoint={path} is a folder; give the release\'s checkpoint '
                          'file (.pt/.pth, or .npz of its state dict).')
    state = convert_torch.read_state_dict(path, name=f'--checkpoint={path}')
    state = {k: v for k, v in state.items() if not k.endswith('.num_batches_tracked')}
    if not state:
        raise ConfigError(f'--checkpoint={path} holds no weights; give the release\'s '
                          'checkpoint of the trained network.')
    return state


# What a base path may be, for the sentences that refuse another.
BASE_PATH = (f'{convert_torch.RELEASE_FILE}, or a finished Orbax stage folder of main.py '
             '(<workdir>/base_<w>)')


def read_base(path: str, arch, width: float) -> dict[str, Any]:
    """A base network's ``{'params', 'batch_stats'}`` (``arch`` at ``width``), as the prune
    and import commands read ``--bases``: from a finished stage folder of `main.py`
    (``<workdir>/base_<w>``) or a release checkpoint file (``.pt``/``.pth``, or ``.npz`` of
    the same keys). Anything else (a missing path, another folder, a stage that has not
    finished, an empty, damaged or foreign file, another network) is one `ConfigError`
    sentence naming the path, before anything is written."""
    name = f'--bases: base checkpoint {path} (width {width})'
    if not os.path.exists(path):
        raise ConfigError(f'{name} does not exist.')
    if os.path.isdir(path):
        variables = _read_base_folder(path, name, width)
    else:
        state = convert_torch.read_state_dict(path, name=name, expected=BASE_PATH)
        try:
            variables = convert_torch.convert(state, arch.at_width(width))
        except ConfigError as e:  # a key of another network: name the file it came from
            detail = str(e).split(';')[0].rstrip('.?')
            raise ConfigError(f'{name} is not a {arch.name} network ({detail}); check the '
                              'path and model.name.') from None
    check_base_variables(arch, variables, width, name)
    return variables


def _read_base_folder(path: str, name: str, width: float) -> dict[str, Any]:
    if not os.path.exists(os.path.join(path, checkpoint.STRUCTURE)):
        inside = checkpoint.base_dir(path, width)
        if os.path.exists(os.path.join(inside, checkpoint.STRUCTURE)):
            raise ConfigError(f'{name} is a workdir, not a stage folder; give its base '
                              f'network\'s folder, {inside}.')
        raise ConfigError(f'{name} is a folder but no stage folder of main.py (it has no '
                          f'{checkpoint.STRUCTURE}); give {BASE_PATH}.')
    if not checkpoint.is_done(path):
        raise ConfigError(f'{name} is a stage whose training has not finished (it has no '
                          f'{checkpoint.DONE}); rerun the main.py command that trains it, or '
                          'give a finished one.')
    _, variables, _ = checkpoint.load_network(path)
    return {k: variables[k] for k in ('params', layers.BATCH_STATS) if k in variables}


def parse_bases(config: Settings, text: str | None) -> list[tuple[float, str]]:
    """``--bases`` for an SP-Net (required), refused for an S-Net."""
    if config.method == 'snet':
        if text:
            raise ConfigError("--bases is only for an SP-Net: an S-Net (config method='snet') "
                              'takes its channel counts from slim.widths; drop --bases.')
        return []
    if not text:
        raise ConfigError(
            "an SP-Net (config method='spnet') needs --bases=WIDTH=PATH,..., the base "
            'checkpoints it was pruned from (they give each sub-network\'s channel counts), '
            f'one per base.widths={tuple(config.base.widths)}.')
    return parse_base_paths(text, config.base.widths)


# --------------------------------------------------------------- the structure to fill
def candidates(config: Settings, arch, bases: list[tuple[float, str]]) -> tuple[list, dict]:
    """``([(structure, stage)], masks)``: the networks the checkpoint may hold, preferred
    first, with the stage folder each goes to, and the ZPM masks (SP-Net) of the first."""
    if config.method == 'snet':
        return [(arch.snet_structure(config.slim.widths), SLIM)], {}
    variables = [read_base(path, arch, w) for w, path in bases]
    structure, pruned, _ = prune_bases(config, variables, config.data.image_size,
                                       arch.input_channels(variables[-1]['params']))
    out = [(structure, SLIM)]
    if not structure.zpm and structure.num_subnets > 1:
        try:  # the release's eliminate_width: the last (scaffold) sub-network dropped
            out.append((keep_first_structure(structure, structure.num_subnets - 1), PUBLISHED))
        except ConfigError:
            pass  # counts that are not nested: no such checkpoint can exist
    return out, pruned.get(layers.MASKS, {})


def expected_shapes(arch, structure, in_channels: int) -> dict:
    """``jax.eval_shape`` of the variables of ``arch``'s model for ``structure``."""
    model = arch.module(structure)
    x = jax.ShapeDtypeStruct((1, 32, 32, in_channels), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


def _subnets_in(state: dict, method: str) -> int:
    """How many sub-networks the checkpoint's BNs hold entries for."""
    ks = {int(m['k']) for key in state if (m := _PRIVATE_KEY.match(key))}
    if method == 'snet':
        return max(ks) + 1 if ks else 1
    return max(ks) + 2 if ks else 1


def _what(config, structure) -> str:
    if config.method == 'snet':
        return f'the S-Net of {config.model.name} at slim.widths={config.slim.widths}'
    return (f'the {config.model.name} SP-Net of {structure.num_subnets} sub-networks that '
            'this config prunes from --bases')


def match(config, arch, state: dict, options: list, in_channels: int, path: str):
    """``(structure, stage)`` of the candidate whose release keys and shapes are exactly the
    checkpoint's; else a `ConfigError` naming the first key that differs."""
    names = convert_torch.module_names(arch)
    for key in state:
        m = _PRIVATE_KEY.match(key)
        module = m['mod'] if m else key.rpartition('.')[0]
        if module not in names:
            raise ConfigError(f'--checkpoint={path} is not a {arch.name} checkpoint: its key '
                              f'{key!r} is no part of {arch.name}; check model.name in '
                              '--config.')
    have = _subnets_in(state, config.method)
    counts = [s.num_subnets for s, _ in options]
    if have not in counts:
        raise ConfigError(
            f'--checkpoint={path} holds {have} sub-network(s) but {_what(config, options[0][0])}'
            f' has {counts[0]}; give the checkpoint of this network, or the config that '
            'trained it.')
    structure, stage = options[counts.index(have)]
    want = convert_torch.release_shapes(arch, expected_shapes(arch, structure, in_channels),
                                        structure.num_subnets, method=config.method)
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in got if k in want and got[k] != want[k]]
    if missing or extra or wrong:
        what = _what(config, structure)
        if wrong:
            k = wrong[0]
            detail = f'{k} has shape {got[k]}, but {what} has {want[k]}'
        elif missing:
            detail = f'it lacks {missing[0]}, which {what} has'
        else:
            detail = f'it has {extra[0]}, which {what} lacks'
        hint = ('the checkpoint comes from another pruning: check prune.*, base.widths and '
                '--bases' if config.method == 'spnet' else
                'check model.* and slim.widths against the run that wrote it')
        raise ConfigError(f'--checkpoint={path} does not fit the network ({detail}); {hint}.')
    return structure, stage


# --------------------------------------------------------------- the import
def import_release(config: Any, checkpoint_path: str, workdir: str,
                   bases: str | None = None) -> dict[str, Any]:
    """Imports a release checkpoint into ``workdir`` (see the module's docstring) with the
    settings of ``config`` (a ConfigDict or `Settings`); ``bases``: ``WIDTH=PATH,...``, the
    base checkpoints of an SP-Net. Every check runs before the first write.

    Returns ``{'stages': {stage folder name: structure written there}, 'arch': the
    architecture, 'in_channels': image channels}``.
    """
    config = Settings.from_config(config)
    check_workdir(workdir)
    base_list = parse_bases(config, bases)
    state = read_checkpoint(checkpoint_path)
    arch = config.arch
    release = {ours: theirs for theirs, ours in convert_torch.module_names(arch).items()}
    stem_key = f'{release[arch.first_conv]}.weight'
    in_channels = int(state[stem_key].shape[1]) if stem_key in state else 3
    options, masks = candidates(config, arch, base_list)
    structure, stage = match(config, arch, state, options, in_channels, checkpoint_path)
    variables = convert_torch.convert(state, arch, num_subnets=structure.num_subnets)
    if masks:
        variables[layers.MASKS] = masks
    variables = jax.tree.map(jnp.asarray, variables)
    checkpoint.check_variables(variables, expected_shapes(arch, structure, in_channels),
                               f'--checkpoint={checkpoint_path}')
    table = arch.table(zpm=structure.zpm)
    networks = {stage: (structure, variables)}
    if stage == SLIM and config.slim.drop_scaffold:
        networks[PUBLISHED] = keep_first(table, structure, variables,
                                         structure.num_subnets - 1)
    # Everything is checked: write.
    source = {'kind': 'imported', 'checkpoint': os.path.abspath(checkpoint_path),
              'bases': {str(w): os.path.abspath(p) for w, p in base_list}}
    with lock.workdir_lock(workdir):
        for name, (s, v) in networks.items():
            checkpoint.save_network(os.path.join(workdir, name), s, v, config.to_json(),
                                    arch=arch, done=source)
    return {'stages': {name: s for name, (s, _) in networks.items()}, 'arch': arch,
            'in_channels': in_channels}
