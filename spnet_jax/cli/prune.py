r"""Prune trained base networks into a slimmable SP-Net (multi-base, SCS, ZPM).

    python -m spnet_jax.prune --config=configs/resnet50.py --workdir=OUT \
        --bases=0.75=/ckpt/base_0.75,1.0=/path/resnet50_1.0.pt

Each base PATH is an Orbax stage folder written by `main.py` (``<workdir>/base_<w>``) or a
release checkpoint (``.pt``/``.pth``, read with torch; or ``.npz`` of the same keys). The
slimmable network (Orbax checkpoint, ``structure.json``, ``config.json``,
``prune_info.json``) goes to ``OUT/pruned``, the folder `main.py --workdir=OUT` fine-tunes
from, and `spnet_jax.load(OUT)` runs. Keep ratios or MACs targets come from the config's
``prune`` section (``--config.prune.macs_targets=1.1e9,2.3e9`` to target MACs).
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from spnet_jax.cli import entry
from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.train.release_import import read_base
from spnet_jax.train.settings import Settings
from spnet_jax.train.stages import prune_bases
from spnet_jax.workdir import checkpoint, lock
from spnet_jax.workdir.loading import parse_bases

FLAGS = flags.FLAGS


def settings_for(config, stage: str) -> Settings:
    """The config's settings checked as for running ``stage`` (e.g. 'prune': the keep ratios
    or MACs targets against the base widths)."""
    config = config.copy_and_resolve_references()
    config.stages = stage
    return Settings.from_config(config)


def summary(arch, structure, info: dict, image_size: int, in_channels: int) -> str:
    costs = subnet_costs(arch, structure, image_size, in_channels)
    lines = ['subnet  keep_ratio  base   channels  min/mean/max per layer   MACs        params']
    for c in costs:
        counts = structure.counts[c.subnet]
        frac = [n / f for n, f in zip(counts, structure.full, strict=True)]
        if c.subnet < len(info['keep_ratios']):
            ratio = f"{info['keep_ratios'][c.subnet]:.4f}"
            base = info['base_widths'][info['base_of_subnet'][c.subnet]]
        else:
            ratio, base = 'full', info['base_widths'][-1]
        lines.append(f'{c.subnet:<7} {ratio:<11} {base:<6} {c.channels:<9} '
                     f'{min(frac):.2f}/{sum(frac) / len(frac):.2f}/{max(frac):.2f}'
                     f'{"":<11} {c.macs / 1e6:>9.1f}M {c.params / 1e6:>7.2f}M')
    return '\n'.join(lines)


def main(argv) -> None:
    del argv  # entry.run refuses positional arguments
    config = entry.load_config()
    if config is None or not FLAGS.workdir:
        raise ConfigError('give --config=configs/<model>.py and --workdir=OUT.')
    settings = settings_for(config, 'prune')
    bases = parse_bases(FLAGS.bases, settings.base.widths)
    arch = settings.arch
    variables = [read_base(path, arch, w) for w, path in bases]
    image_size, in_channels = settings.data.image_size, arch.input_channels(
        variables[-1]['params'])
    structure, pruned, info = prune_bases(settings, variables, image_size, in_channels)
    directory = os.path.join(FLAGS.workdir, 'pruned')
    with lock.workdir_lock(FLAGS.workdir):
        checkpoint.save_pruned(directory, structure, pruned, info, settings.to_json(), arch)
    print(f'Pruned {arch.name} into {structure.num_subnets} sub-networks '
          f'(prune.zpm={structure.zpm_variant!r}) -> {directory}')
    print(summary(arch, structure, info, image_size, in_channels))


def define_flags() -> None:
    config_flags.DEFINE_config_file('config', None, 'Model/prune config file.', lock_config=True)
    flags.DEFINE_string('workdir', None, 'Output folder (the network goes to OUT/pruned).')
    flags.DEFINE_string('bases', None, 'Comma-separated WIDTH=PATH, one per base, ascending.')
