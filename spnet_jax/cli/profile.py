r"""Print MACs ("FLOPs" in the papers' convention: multiply-accumulates) and parameters of
every sub-network.

    python -m spnet_jax.profile --config=configs/resnet50_snet.py          # S-Net widths
    python -m spnet_jax.profile --config=configs/resnet50.py               # the base networks
    python -m spnet_jax.profile --workdir=/ckpt/run                        # a saved network
    python -m spnet_jax.profile --config=configs/vgg19_snet.py --json      # machine-readable

MACs count convolutions and the classifier per image at ``data.image_size``; params count
conv kernels, the BN scale/bias and the classifier of that sub-network (see spnet_jax.core.cost).

    python -m spnet_jax.profile --workdir=/ckpt/run --latency_batch=256 --latency_runs=10

``--latency_batch=N`` also times each sub-network as it deploys (the standalone network
`spnet_jax.export` writes; random weights: time does not depend on them), eval forward of a
batch of N on this process's first device, interleaved round by round with the full network
(`spnet_jax.pruning.latency.Timer`: at least ``--latency_runs`` rounds, more until the
interquartile range of the per-round ratios is within 3% of their median, at most 4x as many);
the median, its spread and the device are printed beside the MACs.
"""

from __future__ import annotations

import json
from typing import Any

from absl import flags
from ml_collections import config_flags

from spnet_jax.cli import entry
from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.pruning import latency, subnets
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
    widths = settings.slim.widths if settings.method == 'snet' else settings.base.widths
    arch = settings.arch.at_width(widths[-1])
    networks = [arch.plain_structure(w) for w in widths]  # each deploys as a plain network
    if settings.method == 'snet':
        rows = _rows(subnet_costs(arch, arch.snet_structure(widths), size, in_channels), widths)
        title = f'{name} S-Net at {size}px'
    else:
        rows = []
        for i, w in enumerate(widths):
            base = settings.arch.at_width(w)
            (cost,) = subnet_costs(base, base.plain_structure(), size, in_channels)
            rows.append({**_rows([cost], (w,))[0], 'subnet': i})
        title = f'{name} base networks (before pruning) at {size}px'
    return title, rows, (arch, networks, (size, size, in_channels))


def profile_workdir(path: str) -> tuple[str, list[dict], tuple]:
    net = load(path)
    rows = [{**s, 'width': None} for s in net.subnets]
    networks = [subnets.standalone_structure(net.structure, k)
                for k in range(net.structure.num_subnets)]
    shape = (net.image_size, net.image_size, net.arch.input_channels(net.variables['params']))
    return (f'{net.arch.name} ({net.structure.method}, zpm={net.structure.zpm_variant}) at '
            f'{net.image_size}px from {path}', rows, (net.arch, networks, shape))


def add_latency(rows: list[dict], arch, networks, input_shape, batch: int,
                runs: int) -> list[dict]:
    """``rows`` with each sub-network's measured time (`latency.Timer`, anchored on the
    full network of ``arch``): ``latency_ms``, ``latency_spread``, ``latency_batch``,
    ``latency_device``."""
    import jax

    timer = latency.Timer(arch, input_shape, batch, min_rounds=runs, max_rounds=4 * runs)
    device = jax.local_devices()[0].device_kind
    out = []
    for row, structure in zip(rows, networks, strict=True):
        m = timer.measure(structure)
        out.append({**row, 'latency_ms': m.ms, 'latency_spread': m.spread,
                    'latency_rounds': m.rounds, 'latency_batch': batch,
                    'latency_device': device})
    return out


def _rows(costs, widths) -> list[dict]:
    return [{'subnet': c.subnet, 'width': w, 'macs': c.macs, 'params': c.params,
             'channels': c.channels, 'executed_macs': c.executed_macs}
            for c, w in zip(costs, widths, strict=True)]


def table(title: str, rows: list[dict]) -> str:
    full = rows[-1]
    timed = 'latency_rounds' in full  # measured here (add_latency), not the report's
    lines = [title, f'{"subnet":>6} {"width":>6} {"MACs":>12} {"x full":>7} {"params":>10} '
                    f'{"channels":>9}' + (f' {"ms/batch":>9} {"x full":>7} {"spread":>7}'
                                          if timed else '')]
    for r in rows:
        width = '' if r['width'] is None else f'{r["width"]:.4g}'
        lines.append(f'{r["subnet"]:>6} {width:>6} {r["macs"] / 1e6:>11.1f}M '
                     f'{r["macs"] / full["macs"]:>7.3f} {r["params"] / 1e6:>9.3f}M '
                     f'{r["channels"]:>9}' + (
                         f' {r["latency_ms"]:>9.3f} {r["latency_ms"] / full["latency_ms"]:>7.3f}'
                         f' {100 * r["latency_spread"]:>6.1f}%' if timed else ''))
    lines.append('MACs = multiply-accumulates per image (the papers\' "FLOPs").')
    if timed:
        lines.append(f'ms/batch: median eval forward of a batch of {full["latency_batch"]} on '
                     f'{full["latency_device"]}, each sub-network deployed alone, timed '
                     'interleaved with the full network; spread: interquartile range of the '
                     'per-round ratios over their median.')
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
    if FLAGS.latency_batch < 0 or FLAGS.latency_runs < 2:
        raise ConfigError(f'--latency_batch={FLAGS.latency_batch} must be >= 0 (0: no timing) '
                          f'and --latency_runs={FLAGS.latency_runs} >= 2 (timed rounds).')
    if FLAGS.workdir:
        title, rows, networks = profile_workdir(FLAGS.workdir)
    elif config is not None:
        title, rows, networks = profile_config(config)
    else:
        raise ConfigError('give --config=configs/<model>.py or --workdir=DIR.')
    if FLAGS.latency_batch:
        rows = add_latency(rows, *networks, FLAGS.latency_batch, FLAGS.latency_runs)
    print(json.dumps(rows) if FLAGS.json else table(title, rows))


def define_flags() -> None:
    config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).', lock_config=True)
    flags.DEFINE_string('workdir', None, 'Profile the network saved in this workdir instead.')
    flags.DEFINE_bool('json', False, 'Print a JSON list, one object per sub-network.')
    flags.DEFINE_integer('latency_batch', 0, 'Also time each sub-network on a batch of this '
                         'many images on this backend (0: no timing).')
    flags.DEFINE_integer('latency_runs', 10, 'Timed rounds at least (more until stable).')
