r"""Issue 30's 5%: prune to S-Net's measured time, then re-measure in another process.

    python benchmarks/latency_targets.py --base=/tmp/fm/base_1.0 --prunes=2 \
        --out=benchmarks/latency_targets.json

``--base`` is a trained base of the recipe (``main.py --config=configs/fashion_mnist.py
--workdir=/tmp/fm --config.stages=base`` writes ``/tmp/fm/base_1.0``). Each of ``--prunes``
runs is ``python -m spnet_jax.prune`` with the recipe as it is (``prune.latency_widths``: each
pruned sub-network aims at the measured time of S-Net's sub-network at that width), in a
process of its own. This process then times every pruned sub-network (the standalone network
its export deploys) and S-Net's sub-networks at the same widths, all interleaved
(`study_latency.measure`: ``--repeats`` rounds, medians), and writes each sub-network's time
over S-Net's at its width, next to what the pruning process measured, and each sub-network's
time over S-Net's at equal MACs (S-Net's widths ``SNET_WIDTHS`` of the recipe, timed too,
joined by straight lines), and over S-Net's uniform network of equal MACs itself (the width,
found by bisection, whose MACs come nearest; timed in the same rounds). Run it on a quiet
machine: the CPU's speed is shared with whatever else runs. ``--reuse`` times the prunes
already in ``--scratch`` again.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))


def prune(config: str, base: str, workdir: str, extra: list[str]) -> dict:
    """One pruning run in its own process; returns its ``prune_info.json`` and wall time."""
    start = time.time()
    cmd = [sys.executable, '-m', 'spnet_jax.prune', f'--config={config}',
           f'--workdir={workdir}', f'--bases=1.0={base}', *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f'pruning failed:\n{done.stderr[-3000:]}')
    with open(os.path.join(workdir, 'pruned', 'prune_info.json')) as fh:
        info = json.load(fh)
    return {'workdir': workdir, 'wall_seconds': time.time() - start,
            'load_average_after': list(os.getloadavg()), 'latency': info['latency'],
            'command': ' '.join(cmd[1:])}


def earlier(workdir: str) -> dict:
    """A prune already in ``workdir`` (``--reuse``), as `prune` returns it (no wall time)."""
    path = os.path.join(workdir, 'pruned', 'prune_info.json')
    if not os.path.exists(path):
        raise SystemExit(f'--reuse: {path} does not exist; run without --reuse to prune.')
    with open(path) as fh:
        info = json.load(fh)
    return {'workdir': workdir, 'wall_seconds': None, 'reused': True,
            'latency': info['latency']}


def uniform_at_macs(arch, arch_spec: dict, target: int, shape: tuple,
                    steps: int = 40) -> tuple[float, dict]:
    """``(width, network)``: S-Net's uniform network (`plain_structure`) whose MACs are
    nearest ``target``, by bisection on the width (MACs grow with it, in steps as channel
    counts round)."""
    from study_latency import network_cost

    def at(width):
        network = {'arch': arch_spec,
                   'structure': json.loads(arch.plain_structure(width).to_json())}
        return network, network_cost(network, shape).macs

    lo, hi = 0.01, 1.0
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        network, macs = at(mid)
        if best is None or abs(macs - target) < abs(best[2] - target):
            best = (mid, network, macs)
        if macs == target:
            break
        lo, hi = (mid, hi) if macs < target else (lo, mid)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--base', required=True, help='a trained base_1.0 stage folder')
    parser.add_argument('--config', default='configs/fashion_mnist.py')
    parser.add_argument('--prunes', type=int, default=2, help='pruning runs, one process each')
    parser.add_argument('--repeats', type=int, default=30, help='interleaved timing rounds')
    parser.add_argument('--scratch', default='/tmp/latency_targets')
    parser.add_argument('--out', default=os.path.join(ROOT, 'benchmarks', 'latency_targets.json'))
    parser.add_argument('--reuse', action='store_true',
                        help='time the prunes already in --scratch again instead of pruning')
    parser.add_argument('extra', nargs='*', help='more flags for spnet_jax.prune')
    args = parser.parse_args()

    runs = []
    for i in range(args.prunes):
        workdir = os.path.join(args.scratch, f'prune{i}')
        if args.reuse:
            runs.append(earlier(workdir))
            continue
        if os.path.exists(workdir):
            raise SystemExit(f'--scratch: {workdir} exists; give an empty --scratch folder '
                             '(or --reuse to time its prunes again).')
        runs.append(prune(args.config, args.base, workdir, args.extra))
        lat = runs[-1]['latency']
        print(f'prune {i}: targets {lat["targets_ms"]} ms, measured {lat["measured_ms"]} ms, '
              f'{runs[-1]["wall_seconds"]:.0f} s', flush=True)

    # This process did not prune: every network is timed afresh, interleaved with S-Net's.
    from study_latency import deployed, measure, network_cost, network_key, top1_at

    from spnet_jax.models import arch_from_spec
    from spnet_jax.train.settings import Settings

    spec = importlib.util.spec_from_file_location('recipe', os.path.join(ROOT, args.config))
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    networks, subnet_keys = {}, []
    widths = runs[0]['latency']['widths']
    for run in runs:
        pruned = os.path.join(run['workdir'], 'pruned')
        with open(os.path.join(pruned, 'architecture.json')) as fh:
            arch_spec = json.load(fh)
        with open(os.path.join(pruned, 'structure.json')) as fh:
            structure = json.load(fh)
        keys = []
        for network in deployed(arch_spec, structure):
            key = network_key(network)
            networks[key] = network
            keys.append(key)
        subnet_keys.append(keys)
    arch = arch_from_spec(arch_spec)
    # S-Net at the recipe's widths too (``SNET_WIDTHS``): its time at each sub-network's MACs.
    snet_widths = sorted({*widths, *getattr(recipe, 'SNET_WIDTHS', ()), 1.0})
    snet_keys = {}
    for w in snet_widths:
        network = {'arch': arch_spec,
                   'structure': json.loads(arch.plain_structure(w).to_json())}
        networks[network_key(network)] = network
        snet_keys[w] = network_key(network)
    batch = runs[0]['latency']['batch']
    data = Settings.from_config(recipe.get_config()).data
    shape = (data.image_size, data.image_size, data.spec.channels)
    # And S-Net's network of equal MACs itself: for every pruned sub-network, the uniform
    # width whose MACs come closest to its own (no straight line between widths assumed).
    equal_keys = {}
    for keys in subnet_keys:
        for key in keys:
            target = network_cost(networks[key], shape).macs
            if target in equal_keys:
                continue
            width, network = uniform_at_macs(arch, arch_spec, target, shape)
            networks[network_key(network)] = network
            equal_keys[target] = (width, network_key(network))
    timed = measure(networks, shape, batches=(batch,), repeats=args.repeats)
    ms = {k: v['ms'][str(batch)] for k, v in timed['networks'].items()}
    macs = {k: v['macs'] for k, v in timed['networks'].items()}
    curve = [(macs[k], ms[k]) for k in snet_keys.values()]
    for run, keys in zip(runs, subnet_keys, strict=True):
        run['re_measured_ms'] = [ms[k] for k in keys[:len(widths)]]
        run['snet_ms'] = [ms[snet_keys[w]] for w in widths]
        run['ratio_to_snet'] = [a / b for a, b in zip(run['re_measured_ms'], run['snet_ms'],
                                                       strict=True)]
        run['macs'] = [macs[k] for k in keys]
        # Issue 28's measure: each sub-network (the full one too) over S-Net at equal MACs.
        # (`top1_at` joins any (x, y) points by straight lines: here (MACs, ms); outside
        # S-Net's widths the nearest one's time, 'faster' there meaning fewer MACs.)
        at = [top1_at(curve, macs[k]) for k in keys]
        run['ratio_at_equal_macs'] = [ms[k] / t for k, (t, _) in zip(keys, at, strict=True)]
        run['snet_equal_macs'] = [
            {'width': equal_keys[macs[k]][0], 'macs': macs[equal_keys[macs[k]][1]],
             'ms': ms[equal_keys[macs[k]][1]], 'ratio': ms[k] / ms[equal_keys[macs[k]][1]]}
            for k in keys]
        run['equal_macs_outside'] = [
            {'faster': f'fewer MACs than S-Net x{snet_widths[0]:g}',
             'slower': f'more MACs than S-Net x{snet_widths[-1]:g}'}.get(w, '') for _, w in at]
        print(f'{run["workdir"]}: re-measured / S-Net at x{widths}: '
              + ' / '.join(f'{r:.3f}' for r in run['ratio_to_snet'])
              + '; over S-Net at equal MACs (every sub-network): '
              + ' / '.join(f'{r:.3f}' for r in run['ratio_at_equal_macs'])
              + '; over the uniform network of equal MACs: '
              + ' / '.join(f'{e["ratio"]:.3f} (x{e["width"]:.3f})'
                           for e in run['snet_equal_macs']), flush=True)
    result = {'command': ' '.join(sys.argv), 'date': timed['date'], 'device': timed['device'],
              'cpus': timed['cpus'], 'widths': widths, 'batch': batch,
              'snet_ms': {str(w): ms[k] for w, k in snet_keys.items()},
              'snet_macs': {str(w): macs[k] for w, k in snet_keys.items()}, 'runs': runs,
              'timing': {k: v for k, v in timed.items() if k != 'networks'},
              'networks': timed['networks']}
    with open(args.out, 'w') as fh:
        json.dump(result, fh, indent=1)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
