"""Issues 16 and 28: what a sub-network executes and how long it takes, per ``prune.zpm``
variant, junction policy and channel rounding, against S-Net at equal MACs. Eval-mode
forward, CPU, jitted.

    python benchmarks/junction_choice.py [--repeats=7] [--out=benchmarks/junction_choice.json]
        [--only=resnet20_fmnist|resnet50_release] [--batch=N]
        [--variants=fold,place,aligned,no_zpm]

Two networks, random bases (latency does not depend on the values):

* Fashion-MNIST ResNet-20 as the quickstart prunes it (one x1.0 base, MACs targets = S-Net
  x0.5 / x0.75), batch 256, 28x28x1;
* ResNet-50 with the release's two bases (0.75, 1.0), MACs targets = S-Net x0.5 / x0.75,
  batch 8, 224 px.

Variants: ``fold`` (``prune.zpm='release'``, each ZPM branch conv writes the whole stream's
width, ``fold_slack=inf``), ``place`` (the same network, each branch computing its own
channels, placed into the stream by an activation gather wherever the stream is wider,
``fold_slack=0``), ``aligned`` (``prune.zpm='aligned'``: branches keep prefixes of one order
per stream, junctions zero-pad), ``no_zpm`` (``prune.zpm='none'``: one channel set per
stream), each with ``round_to`` 1 and 4 (ResNet-20) or 8 (ResNet-50), MACs targets within
3%, and S-Net at the matching widths.
``bytes_accessed`` is XLA's cost analysis of the compiled program (memory traffic, which the
narrow layers of these sub-networks are bound by on CPU); ``--repeats=0`` records it without
timing anything, so it can run on a busy machine.
All programs run interleaved in one process (``repeats`` rounds, median), so load changes hit
them alike. ``executed`` is `spnet_jax.core.cost.executed_macs` over the sub-network's MACs.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from latency import random_variables  # noqa: E402

from configs.fashion_mnist import SNET_MACS, SNET_WIDTHS  # noqa: E402
from spnet_jax.core import cost  # noqa: E402
from spnet_jax.models import get_arch  # noqa: E402
from spnet_jax.pruning import prune  # noqa: E402

# variant -> (prune.zpm, the model's fold_slack)
VARIANTS = {'fold': ('release', float('inf')), 'place': ('release', 0.0),
            'aligned': ('aligned', float('inf')), 'no_zpm': ('none', 0.0)}


def networks():
    """(name, arch, bases, base widths, MACs targets, S-Net widths, input shape, batch, the
    round_to values: ResNet-20's 16-64-channel layers are too narrow for 8)."""
    r20 = get_arch('resnet20', num_classes=10)
    yield ('resnet20_fmnist', r20, [random_variables(r20, r20.plain_structure(), (28, 28, 1), 0)],
           [1.0], [float(m) for m in SNET_MACS[1:3]], SNET_WIDTHS[1:], (28, 28, 1), 256, (1, 4))
    r50 = {w: get_arch('resnet50', full_width=w) for w in (0.75, 1.0)}
    bases = [random_variables(r50[w], r50[w].plain_structure(), (32, 32, 3), i)
             for i, w in enumerate((0.75, 1.0))]
    snet = r50[1.0].snet_structure((0.5, 0.75, 1.0))
    macs = [c.macs for c in cost.subnet_costs(r50[1.0], snet, 224)]
    yield ('resnet50_release', r50[1.0], bases, [0.75, 1.0], macs[:2], (0.5, 0.75, 1.0),
           (224, 224, 3), 8, (1, 8))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed rounds; 0 records only what XLA says the programs do')
    parser.add_argument('--out', default='benchmarks/junction_choice.json')
    parser.add_argument('--only', default=None, help='one network name')
    parser.add_argument('--batch', type=int, default=None,
                        help="every network's batch (default: 256 for ResNet-20, 8 for ResNet-50)")
    parser.add_argument('--variants', default=','.join(VARIANTS),
                        help=f'comma-separated subset of {",".join(VARIANTS)}')
    args = parser.parse_args()
    chosen = [v for v in args.variants.split(',') if v]
    rows = []
    for name, arch, bases, widths, targets, snet_widths, shape, batch, rounds in networks():
        if args.only and name != args.only:
            continue
        batch = args.batch or batch
        x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, *shape)), jnp.float32)
        programs = {}  # (variant, subnet) -> (model, subnet, variables, macs, stream sizes)
        snet = arch.snet_structure(snet_widths)
        for c in cost.subnet_costs(arch, snet, shape[0], shape[2]):
            programs[('snet', c.subnet)] = (arch.module(snet), c.subnet,
                                            random_variables(arch, snet, shape, 0), c.macs, None)
        for round_to in rounds:
            pruned = {}  # prune.zpm -> (structure, variables)
            for variant in chosen:
                zpm, slack = VARIANTS[variant]
                if zpm not in pruned:
                    pruned[zpm] = prune(arch, bases, widths, macs_targets=targets,
                                        image_size=shape[0], in_channels=shape[2], zpm=zpm,
                                        round_to=round_to, tolerance=0.03)[:2]
                S, v = pruned[zpm]
                for c in cost.subnet_costs(arch, S, shape[0], shape[2]):
                    programs[(f'{variant}_r{round_to}', c.subnet)] = (
                        arch.module(S, fold_slack=slack), c.subnet, v, c.macs,
                        list(S.stream_sizes[c.subnet]) if S.zpm else None)
        timed = {}
        for key, (model, k, v, macs, streams) in programs.items():
            fn = jax.jit(lambda v, x, m=model, k=k: m.apply(v, x, subnet=k))
            lowered = fn.lower(v, x)
            executed = cost.executed_macs(lowered.as_text())
            t = time.perf_counter()
            compiled = lowered.compile()
            jax.block_until_ready(compiled(v, x))
            analysis = compiled.cost_analysis()  # a list of one dict on some jax versions
            analysis = analysis[0] if isinstance(analysis, list) else analysis
            timed[key] = {'fn': compiled, 'v': v, 'macs': macs,
                          'executed': executed / (macs * batch),
                          'bytes': analysis.get('bytes accessed'), 'streams': streams,
                          'compile_s': time.perf_counter() - t, 'times': []}
        for _ in range(args.repeats):  # interleaved rounds
            for entry in timed.values():
                t = time.perf_counter()
                jax.block_until_ready(entry['fn'](entry['v'], x))
                entry['times'].append(time.perf_counter() - t)
        median = {key: statistics.median(e['times']) if e['times'] else None
                  for key, e in timed.items()}
        for (variant, k), e in timed.items():
            snet = median.get(('snet', k))
            rows.append({'network': name, 'batch': batch, 'variant': variant, 'subnet': k,
                         'macs': e['macs'], 'executed_over_macs': round(e['executed'], 4),
                         'ms': 1e3 * median[(variant, k)] if e['times'] else None,
                         'over_snet': (round(median[(variant, k)] / snet, 3)
                                       if e['times'] and snet else None),
                         'bytes_accessed': e['bytes'], 'stream_sizes': e['streams'],
                         'compile_s': round(e['compile_s'], 2)})
            print(json.dumps(rows[-1]), flush=True)
    payload = {'rows': rows, 'date': time.strftime('%Y-%m-%d'), 'machine': platform.machine(),
               'backend': jax.default_backend(), 'cpus': os.cpu_count(), 'jax': jax.__version__,
               'repeats': args.repeats, 'load_average_at_end': os.getloadavg()}
    with open(args.out, 'w') as fh:
        json.dump(payload, fh, indent=1)


if __name__ == '__main__':
    main()
