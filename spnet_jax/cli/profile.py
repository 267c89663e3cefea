r"""Print MACs ("FLOPs" in the papers' convention: multiply-accumulates) and parameters of
every sub-network.

    python -m spnet_jax.profile --config=configs/resnet50_snet.py          # S-Net widths
    python -m spnet_jax.profile --config=configs/resnet50.py               # the base networks
    python -m spnet_jax.profile --workdir=/ckpt/run                        # a saved network
    python -m spnet_jax.profile --config=configs/vgg19_snet.py --json      # machine-readable

MACs count convolutions and the classifier per image at ``data.image_size``; params count
conv kernels, the BN scale/bias and the classifier of that sub-network (see spnet_jax.core.cost).
"""

from __future__ import annotations

import json
from typing import Any

from absl import flags
from ml_collections import config_flags

from spnet_jax.cli import entry
from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.train.settings import Settings
from spnet_jax.workdir.loading import load

FLAGS = flags.FLAGS
READS_ONLY = True  # never writes into the workdir it reads (entry keeps error.log out of it)


def profile_config(config: Any) -> tuple[str, list[dict]]:
    """Rows for a config: its S-Net widths (method 'snet') or its base networks (SP-Net,
    before pruning: each base is a plain network of its width)."""
    settings = Settings.from_config(config)
    name, size = settings.model.name, settings.data.image_size
    in_channels = settings.data.spec.channels
    if settings.method == 'snet':
        widths = settings.slim.widths
        arch = settings.arch.at_width(widths[-1])
        rows = _rows(subnet_costs(arch, arch.snet_structure(widths), size, in_channels), widths)
        return f'{name} S-Net at {size}px', rows
    rows = []
    for i, w in enumerate(settings.base.widths):
        arch = settings.arch.at_width(w)
        (cost,) = subnet_costs(arch, arch.plain_structure(), size, in_channels)
        rows.append({**_rows([cost], (w,))[0], 'subnet': i})
    return f'{name} base networks (before pruning) at {size}px', rows


def profile_workdir(path: str) -> tuple[str, list[dict]]:
    net = load(path)
    rows = [{**s, 'width': None} for s in net.subnets]
    return f'{net.arch.name} ({net.structure.method}, zpm={net.structure.zpm_variant}) at ' \
           f'{net.image_size}px from {path}', rows


def _rows(costs, widths) -> list[dict]:
    return [{'subnet': c.subnet, 'width': w, 'macs': c.macs, 'params': c.params,
             'channels': c.channels, 'executed_macs': c.executed_macs}
            for c, w in zip(costs, widths, strict=True)]


def table(title: str, rows: list[dict]) -> str:
    full = rows[-1]
    lines = [title, f'{"subnet":>6} {"width":>6} {"MACs":>12} {"x full":>7} {"params":>10} '
                    f'{"channels":>9}']
    for r in rows:
        width = '' if r['width'] is None else f'{r["width"]:.4g}'
        lines.append(f'{r["subnet"]:>6} {width:>6} {r["macs"] / 1e6:>11.1f}M '
                     f'{r["macs"] / full["macs"]:>7.3f} {r["params"] / 1e6:>9.3f}M '
                     f'{r["channels"]:>9}')
    lines.append('MACs = multiply-accumulates per image (the papers\' "FLOPs").')
    extra = [(r['subnet'], r['executed_macs'] / r['macs']) for r in rows
             if r.get('executed_macs', r['macs']) > r['macs']]
    if extra:
        lines.append('Executed: ' + ', '.join(f'sub-network {k} computes {x:.2f}x its MACs'
                                              for k, x in extra)
                     + ' (ZPM junction convs write their stream\'s width, zero columns '
                     'included; see README, "Fold or place").')
    return '\n'.join(lines)


def main(argv) -> None:
    del argv  # entry.run refuses positional arguments
    config = entry.load_config()
    if FLAGS.workdir and config is not None:
        raise ConfigError('give either --config (its S-Net widths or base networks) or '
                          '--workdir (a saved network), not both: a saved network is profiled '
                          'as it was trained, whatever a config says.')
    if FLAGS.workdir:
        title, rows = profile_workdir(FLAGS.workdir)
    elif config is not None:
        title, rows = profile_config(config)
    else:
        raise ConfigError('give --config=configs/<model>.py or --workdir=DIR.')
    print(json.dumps(rows) if FLAGS.json else table(title, rows))


def define_flags() -> None:
    config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
    flags.DEFINE_string('workdir', None, 'Profile the network saved in this workdir instead.')
    flags.DEFINE_bool('json', False, 'Print a JSON list, one object per sub-network.')
