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

import json
import os
import sys

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

from spnet_jax import convert_torch, pruning
from spnet_jax.cost import subnet_costs
from spnet_jax.errors import ConfigError, loaded_config
from spnet_jax.models import get_arch

FLAGS = flags.FLAGS


def parse_bases(text: str | None) -> list[tuple[float, str]]:
    if not text:
        raise ConfigError('--bases is empty; give WIDTH=PATH pairs, e.g. '
                          '--bases=0.75=/ckpt/base_0.75,1.0=/ckpt/base_1.0.')
    out = []
    for item in text.split(','):
        width, sep, path = item.partition('=')
        try:
            w = float(width)
        except ValueError:
            w = None
        if not sep or w is None or not path:
            raise ConfigError(f'--bases entry {item!r} is not WIDTH=PATH (e.g. 1.0=/ckpt/b).')
        if not os.path.exists(path):
            raise ConfigError(f'--bases: base checkpoint {path} (width {width}) does not exist.')
        out.append((w, path))
    return out


def read_base(path: str, arch, width: float) -> dict:
    """A base network's ``{'params', 'batch_stats'}`` from an Orbax stage folder or a release
    checkpoint file."""
    if os.path.isdir(path):
        from spnet_jax.train import checkpoint

        _, variables, _ = checkpoint.load_network(path)
        return {k: variables[k] for k in ('params', 'batch_stats') if k in variables}
    base_arch = get_arch(arch.name, num_classes=arch.num_classes, full_width=width,
                         stem=arch.stem)
    return convert_torch.convert(convert_torch.read_state_dict(path), base_arch)


def prune_to(config, arch, bases: list[dict], widths: list[float], directory: str,
             image_size: int, in_channels: int) -> tuple:
    """Prunes ``bases`` by ``config.prune`` and saves the network to ``directory``."""
    from spnet_jax.train import checkpoint
    from spnet_jax.train.validate import prune_sizes

    p = config.prune
    keep_ratios, macs_targets = prune_sizes(p)  # MACs targets, when set, replace the ratios
    structure, variables, info = pruning.prune(
        arch, bases, widths, keep_ratios=keep_ratios, macs_targets=macs_targets,
        image_size=image_size, in_channels=in_channels, zpm=p.zpm,
        min_channels_ratio=p.min_channels_ratio, importance=p.importance,
        reinit_rng=(jax.random.fold_in(jax.random.key(config.seed), 1000)
                    if p.start == 'reinit' else None),
        bn_scale_init=config.slim.bn_scale_init)
    os.makedirs(directory, exist_ok=True)
    checkpoint.write_json(os.path.join(directory, 'prune_info.json'),
                          json.loads(json.dumps(info, default=lambda o: np.asarray(o).tolist())))
    checkpoint.save_network(directory, structure, variables, config)
    return structure, variables, info


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


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # Orbax narrates every write at INFO
    try:
        config = loaded_config(FLAGS)
        if config is None or not FLAGS.workdir:
            raise ConfigError('give --config=configs/<model>.py and --workdir=OUT.')
        bases = parse_bases(FLAGS.bases)
        widths = [w for w, _ in bases]
        expected = [float(w) for w in config.base.widths]
        if widths != expected:
            raise ConfigError(f'--bases widths {widths} differ from config base.widths '
                              f'{expected}; give one checkpoint per configured base width, '
                              'in the same order.')
        m = config.model
        arch = get_arch(m.name, num_classes=m.num_classes, full_width=m.full_width, stem=m.stem)
        variables = [read_base(path, arch, w) for w, path in bases]
        image_size = config.data.image_size
        in_channels = arch.input_channels(variables[-1]['params'])
        structure, _, info = prune_to(config, arch, variables, widths,
                                      os.path.join(FLAGS.workdir, 'pruned'), image_size,
                                      in_channels)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    print(f'Pruned {arch.name} into {structure.num_subnets} sub-networks '
          f'(ZPM {"on" if structure.zpm else "off"}) -> {FLAGS.workdir}/pruned')
    print(summary(arch, structure, info, image_size, in_channels))


def define_flags() -> None:
    """Command-line flags, defined only when run as a program (several tools share names)."""
    config_flags.DEFINE_config_file('config', None, 'Model/prune config file.', lock_config=True)
    flags.DEFINE_string('workdir', None, 'Output folder (the network goes to OUT/pruned).')
    flags.DEFINE_string('bases', None, 'Comma-separated WIDTH=PATH, one per base, ascending.')


if __name__ == '__main__':
    define_flags()
    app.run(main)
