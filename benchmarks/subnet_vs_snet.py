"""Issue 28's check: each sub-network of a pruned (or trained) SP-Net network against the S-Net
sub-network of the same index (the S-Net width whose MACs its MACs target names), as deployed,
timed interleaved in one process.

    python benchmarks/subnet_vs_snet.py --workdir=W [--workdir=W2 ...] \\
        [--snet_widths=0.5,0.75,1.0] [--batches=256,32] [--repeats=30] \\
        [--out=benchmarks/subnet_vs_snet.json]

``W`` is a workdir (its ``slim/``, else ``pruned/`` network: the structure is what matters,
latency does not depend on the weights) or a ``pruned`` / ``slim`` folder itself. Every
network is built with random weights, its eval forward compiled per batch, and all of them
timed in rounds (`study_latency.measure`: each round visits every program once, starting one
further along; medians; the spread is the interquartile range over the median). Printed per
sub-network: MACs over S-Net's, time over S-Net's at each batch, and the MACs its compiled
program executes over its logical MACs (`spnet_jax.core.cost.executed_macs` of the lowered
program: 1.00 means no zero columns, no padding computed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import study_latency as sl  # noqa: E402


def network_folder(path: str) -> str:
    for sub in ('slim', 'pruned'):
        if os.path.exists(os.path.join(path, sub, 'structure.json')):
            return os.path.join(path, sub)
    if os.path.exists(os.path.join(path, 'structure.json')):
        return path
    raise SystemExit(f'{path} holds no slim/ or pruned/ network (structure.json).')


def executed_ratio(network: dict, input_shape) -> float:
    """Executed over logical MACs of the deployed network's compiled forward (batch 1)."""
    import jax
    import jax.numpy as jnp

    from spnet_jax.core.cost import executed_macs, subnet_costs
    from spnet_jax.core.structure import Structure
    from spnet_jax.models import arch_from_spec

    arch = arch_from_spec(network['arch'])
    structure = Structure.from_json(json.dumps(network['structure']))
    model = arch.module(structure)
    x = jnp.zeros((1, *input_shape))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    text = jax.jit(lambda v, x: model.apply(v, x, subnet=0, train=False)).lower(
        variables, x).as_text()
    return executed_macs(text) / subnet_costs(arch, structure, input_shape[0],
                                              input_shape[2])[0].macs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--workdir', action='append', required=True)
    parser.add_argument('--snet_widths', default='0.5,0.75,1.0')
    parser.add_argument('--batches', default='256,32')
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    from spnet_jax.models import arch_from_spec

    widths = tuple(float(w) for w in args.snet_widths.split(','))
    batches = tuple(int(b) for b in args.batches.split(','))
    networks, runs, shape = {}, {}, None
    for path in args.workdir:
        folder = network_folder(path)
        arch = json.load(open(os.path.join(folder, 'architecture.json')))
        structure = json.load(open(os.path.join(folder, 'structure.json')))
        config = json.load(open(os.path.join(folder, 'config.json')))
        size = config['data']['image_size']
        channels = 1 if config['data']['name'] == 'fashion_mnist' else 3
        shape = (size, size, channels)
        keys = []
        for net in sl.deployed(arch, structure):
            key = sl.network_key(net)
            networks[key] = net
            keys.append(key)
        runs[path] = keys
        snet_arch = arch_from_spec(arch)
        snet = json.loads(snet_arch.snet_structure(widths).to_json())
        runs['snet'] = []
        for net in sl.deployed(arch, snet):
            key = sl.network_key(net)
            networks[key] = net
            runs['snet'].append(key)
    result = sl.measure(networks, shape, batches, repeats=args.repeats)
    nets = result['networks']
    rows = []
    for path in args.workdir:
        for k, key in enumerate(runs[path]):
            ref = nets[runs['snet'][k]]
            row = {'workdir': path, 'subnet': k, 'snet_width': widths[k],
                   'macs_ratio': nets[key]['macs'] / ref['macs'],
                   'executed_over_logical': executed_ratio(networks[key], shape),
                   'ms': nets[key]['ms'], 'snet_ms': ref['ms'],
                   'spread': nets[key]['spread'], 'snet_spread': ref['spread']}
            row['time_ratio'] = {b: nets[key]['ms'][b] / ref['ms'][b] for b in nets[key]['ms']}
            rows.append(row)
            print(f'{path} sub-network {k} (S-Net x{widths[k]}): MACs {row["macs_ratio"]:.3f}x, '
                  f'executes {row["executed_over_logical"]:.3f}x its MACs; time '
                  + ', '.join(f'{row["time_ratio"][str(b)]:.3f}x at batch {b} '
                              f'({row["ms"][str(b)]:.2f} / {row["snet_ms"][str(b)]:.2f} ms, '
                              f'spread {100 * row["spread"][str(b)]:.0f}% / '
                              f'{100 * row["snet_spread"][str(b)]:.0f}%)' for b in batches))
    print(f'load average before / after: {result["load_average_before"]} / '
          f'{result["load_average_after"]}')
    if args.out:
        with open(args.out, 'w') as fh:
            json.dump({**{k: v for k, v in result.items() if k != 'networks'}, 'rows': rows,
                       'command': ' '.join(sys.argv)}, fh, indent=1)


if __name__ == '__main__':
    main()
