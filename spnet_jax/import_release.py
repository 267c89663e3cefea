r"""Import a network trained by the original PyTorch release into a workdir.

    # a fine-tuned SP-Net: the bases it was pruned from give its channel counts (and ZPM masks)
    python -m spnet_jax.import_release --config=configs/mobilenet_v2.py \
        --checkpoint=finetuned.pt --bases=1.0=base_1.0.pt,1.3=base_1.3.pt --workdir=OUT
    # an S-Net: its channel counts come from the config's slim.widths
    python -m spnet_jax.import_release --config=configs/resnet50_snet.py \
        --checkpoint=snet.pt --workdir=OUT

``--checkpoint`` is the release's ``torch.save({'model': state_dict, ...})`` (``.pt``/``.pth``,
read with torch) or an ``.npz`` of the same keys. The network goes to ``OUT/slim`` as a
finished stage (``structure.json``, ``config.json``, an Orbax checkpoint, ``done.json``), so
``spnet_jax.load(OUT)``, ``python -m spnet_jax.evaluate --workdir=OUT`` and
``python -m spnet_jax.export --workdir=OUT`` take it as a trained run.

* SP-Net (``method='spnet'``): the bases (``--bases=WIDTH=PATH,...``, release files or Orbax
  stage folders, one per ``base.widths``) are pruned exactly as ``python -m spnet_jax.prune``
  does, by the config's ``prune`` settings; only the resulting channel counts and ZPM masks
  are used (re-train recipes prune with fresh weights). The weights, all in the release's
  sorted layout, and the BN statistics (``bn.<k>.running_*`` of sub-network k, plain
  ``running_*`` the full network's) come from ``--checkpoint``. A MobileNetV1 checkpoint
  written after the release's ``eliminate_width`` (the x1.5 training scaffold dropped: one
  sub-network fewer) is recognised by its shapes and goes to ``OUT/published`` (the workdir's
  network after its scaffold was dropped, which `spnet_jax.load` prefers), not ``OUT/slim``.
  With ``--config.slim.drop_scaffold=True`` a full checkpoint goes to ``OUT/slim`` and, with
  its last sub-network dropped, to ``OUT/published`` as well.
* S-Net (``method='snet'``): the switchable BNs' ``bn.<k>.*`` become width k's private BN.

Every bad input (paths, a checkpoint of another architecture, width or number of
sub-networks, ``--bases`` missing for an SP-Net or given for an S-Net, a workdir that already
holds a network) stops with one sentence and exit status 2 before anything is written.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from spnet_jax.errors import ConfigError, loaded_config

FLAGS = flags.FLAGS
SLIM, PUBLISHED = 'slim', 'published'
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
    from spnet_jax import convert_torch

    if not path:
        raise ConfigError('give --checkpoint=PATH, the release checkpoint (.pt/.pth, or .npz '
                          'of its state dict) to import.')
    if not os.path.exists(path):
        raise ConfigError(f'--checkpoint={path} does not exist.')
    if os.path.isdir(path):
        raise ConfigError(f'--checkpoint={path} is a folder; give the release\'s checkpoint '
                          'file (.pt/.pth, or .npz of its state dict).')
    try:
        state = convert_torch.read_state_dict(path)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, pickle and torch errors alike
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise ConfigError(f'--checkpoint={path} could not be read ({first}); give the '
                          'release\'s torch.save file or an .npz of its state dict.') from None
    state = {k: v for k, v in state.items() if not k.endswith('.num_batches_tracked')}
    if not state:
        raise ConfigError(f'--checkpoint={path} holds no weights; give the release\'s '
                          'checkpoint of the trained network.')
    return state


def parse_bases(config, text: str | None) -> list[tuple[float, str]]:
    """``--bases`` for an SP-Net (required), refused for an S-Net."""
    from spnet_jax import prune

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
    bases = prune.parse_bases(text)
    widths, expected = [w for w, _ in bases], [float(w) for w in config.base.widths]
    if widths != expected:
        raise ConfigError(f'--bases widths {widths} differ from config base.widths {expected}; '
                          'give one checkpoint per configured base width, in the same order.')
    return bases


# --------------------------------------------------------------- the structure to fill
def candidates(config, arch, bases: list[tuple[float, str]]) -> tuple[list, dict]:
    """``([(structure, stage)], masks)``: the networks the checkpoint may hold, preferred
    first, with the stage folder each goes to, and the ZPM masks (SP-Net) of the first."""
    from spnet_jax import pruning
    from spnet_jax.subnets import keep_first_structure

    if config.method == 'snet':
        return [(arch.snet_structure(tuple(config.slim.widths)), SLIM)], {}
    import jax

    from spnet_jax import prune
    from spnet_jax.train.validate import prune_sizes

    variables = [prune.read_base(path, arch, w) for w, path in bases]
    p = config.prune
    keep_ratios, macs_targets = prune_sizes(p)
    structure, pruned, _ = pruning.prune(
        arch, variables, [w for w, _ in bases], keep_ratios=keep_ratios,
        macs_targets=macs_targets, image_size=config.data.image_size,
        in_channels=arch.input_channels(variables[-1]['params']), zpm=p.zpm,
        min_channels_ratio=p.min_channels_ratio, importance=p.importance,
        reinit_rng=(jax.random.fold_in(jax.random.key(config.seed), 1000)
                    if p.start == 'reinit' else None))
    out = [(structure, SLIM)]
    if not structure.zpm and structure.num_subnets > 1:
        try:  # the release's eliminate_width: the last (scaffold) sub-network dropped
            out.append((keep_first_structure(structure, structure.num_subnets - 1), PUBLISHED))
        except ConfigError:
            pass  # counts that are not nested: no such checkpoint can exist
    return out, pruned.get('masks', {})


def expected_shapes(arch, structure, in_channels: int) -> dict:
    """``jax.eval_shape`` of the variables of ``arch``'s model for ``structure``."""
    import jax
    import jax.numpy as jnp

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
        return (f'the S-Net of {config.model.name} at slim.widths='
                f'{tuple(config.slim.widths)}')
    return (f'the {config.model.name} SP-Net of {structure.num_subnets} sub-networks that '
            'this config prunes from --bases')


def match(config, arch, state: dict, options: list, in_channels: int, path: str):
    """``(structure, stage)`` of the candidate whose release keys and shapes are exactly the
    checkpoint's; else a `ConfigError` naming the first key that differs."""
    from spnet_jax import convert_torch

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
def import_release(config, checkpoint_path: str, workdir: str,
                   bases: str | None = None) -> dict[str, Any]:
    """Imports a release checkpoint into ``workdir`` (see the module's docstring). Every
    check runs before the first write.

    Returns ``{'stages': {stage folder name: structure written there}, 'arch': the
    architecture, 'in_channels': image channels}``.
    """
    import jax

    from spnet_jax import convert_torch
    from spnet_jax.models import get_arch
    from spnet_jax.subnets import keep_first
    from spnet_jax.train import checkpoint

    if config.method not in ('spnet', 'snet'):
        raise ConfigError(f"method={config.method!r} is unknown; choose one of "
                          "['spnet', 'snet'].")
    check_workdir(workdir)
    base_list = parse_bases(config, bases)
    state = read_checkpoint(checkpoint_path)
    m = config.model
    arch = get_arch(m.name, num_classes=m.num_classes, full_width=m.full_width, stem=m.stem)
    release = {ours: theirs for theirs, ours in convert_torch.module_names(arch).items()}
    stem_key = f'{release[arch.first_conv]}.weight'
    in_channels = int(state[stem_key].shape[1]) if stem_key in state else 3
    options, masks = candidates(config, arch, base_list)
    structure, stage = match(config, arch, state, options, in_channels, checkpoint_path)
    variables = convert_torch.convert(state, arch, num_subnets=structure.num_subnets)
    if masks:
        variables['masks'] = masks
    variables = jax.tree.map(jax.numpy.asarray, variables)
    checkpoint.check_variables(variables, expected_shapes(arch, structure, in_channels),
                               f'--checkpoint={checkpoint_path}')
    table = arch.table(zpm=structure.zpm)
    networks = {stage: (structure, variables)}
    if stage == SLIM and config.slim.get('drop_scaffold', False):
        networks[PUBLISHED] = keep_first(table, structure, variables,
                                         structure.num_subnets - 1)
    # Everything is checked: write.
    source = {'kind': 'imported', 'checkpoint': os.path.abspath(checkpoint_path),
              'bases': {str(w): os.path.abspath(p) for w, p in base_list}}
    for name, (s, v) in networks.items():
        directory = os.path.join(workdir, name)
        checkpoint.save_network(directory, s, v, config)
        checkpoint.mark_done(directory, {'step': 0, **source})
    return {'stages': {name: s for name, (s, _) in networks.items()}, 'arch': arch,
            'in_channels': in_channels}


def summary(arch, written: dict, image_size: int, in_channels: int = 3) -> str:
    from spnet_jax.cost import subnet_costs

    lines = []
    for name, structure in written.items():
        lines.append(f'{name}: {structure.num_subnets} sub-networks')
        lines.append('  subnet  width   channels        MACs    params')
        for c in subnet_costs(arch, structure, image_size, in_channels):
            w = '-' if structure.widths is None else f'{structure.widths[c.subnet]:g}'
            lines.append(f'  {c.subnet:<7} {w:<7} {c.channels:<9} {c.macs / 1e6:>9.1f}M '
                         f'{c.params / 1e6:>7.3f}M')
    return '\n'.join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments {argv[1:]}')
    logging.set_verbosity(logging.WARNING)  # Orbax narrates every write at INFO
    try:
        config = loaded_config(FLAGS)
        if config is None or not FLAGS.workdir:
            raise ConfigError('give --config=configs/<model>.py, --checkpoint=PATH and '
                              '--workdir=OUT.')
        done = import_release(config, FLAGS.checkpoint, FLAGS.workdir, FLAGS.bases)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    kind = 'S-Net' if config.method == 'snet' else 'SP-Net'
    print(f'Imported the release\'s {kind} {done["arch"].name} from {FLAGS.checkpoint} -> '
          + ', '.join(os.path.join(FLAGS.workdir, name) for name in done['stages']))
    print(summary(done['arch'], done['stages'], config.data.image_size, done['in_channels']))


def define_flags() -> None:
    """Command-line flags, defined only when run as a program (several tools share names)."""
    config_flags.DEFINE_config_file('config', None, 'Model config file of the network.',
                                    lock_config=True)
    flags.DEFINE_string('checkpoint', None, "The release's checkpoint (.pt/.pth, or .npz of "
                        'its state dict).')
    flags.DEFINE_string('bases', None, 'SP-Net only: comma-separated WIDTH=PATH, the base '
                        'checkpoints it was pruned from, ascending.')
    flags.DEFINE_string('workdir', None, 'Output folder (the network goes to OUT/slim).')


if __name__ == '__main__':
    define_flags()
    app.run(main)
