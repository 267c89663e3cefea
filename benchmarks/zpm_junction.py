"""What a ZPM junction costs at inference: SP-ResNet-50 at 224 px, per sub-network.

    python benchmarks/zpm_junction.py [--batch=8] [--repeats=3] [--out=benchmarks/zpm_junction.json]

The release's recipe (bases 0.75 / 1.0, keep ratios 0.5484 / 0.526, random bases) pruned
twice: with ZPM, and without ZPM aimed (MACs targets) at the ZPM sub-networks' MACs. Eval-mode
forward latency of each sub-network, median of ``repeats``, all programs interleaved in one
process so load changes on a shared machine hit them alike:

* ``folded``: this project's junction: each branch's last conv and BN write the stream
  layout (their output columns / vectors gathered, zeros where the branch has no channel),
  the identity shortcut is added as it is where the stream does not grow;
* ``gather``: the junction before 2026-11-29: both branches moved into the stream by
  activation gathers (`ZPMAdd.placement` returning None);
* ``no_zpm``: the residual stream as one channel set, same MACs.

Also prints the stream sizes of every junction (a pruned sub-network's stream is the union
of its branches' channels, so it is wider than each branch).
"""

import argparse
import json
import platform
import statistics
import time

import jax
import numpy as np
from latency import release_recipe

from spnet_jax.core import layers
from spnet_jax.core.cost import subnet_costs
from spnet_jax.pruning import prune


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--out', default='benchmarks/zpm_junction.json')
    args = parser.parse_args()
    arch, bases, zpm_s, zpm_v = release_recipe()
    costs = subnet_costs(arch, zpm_s, 224)
    plain_s, plain_v, _ = prune(arch, bases, [0.75, 1.0], zpm='none',
                                macs_targets=[c.macs for c in costs[:-1]], round_to=1,
                                tolerance=0.01)
    plain_costs = subnet_costs(arch, plain_s, 224)
    x = jax.random.normal(jax.random.key(0), (args.batch, 224, 224, 3))
    folded = layers.ZPMAdd.placement
    fns = {}
    for k in range(zpm_s.num_subnets):
        for variant, s, v in (('folded', zpm_s, zpm_v), ('gather', zpm_s, zpm_v),
                              ('no_zpm', plain_s, plain_v)):
            if variant == 'gather':
                layers.ZPMAdd.placement = lambda self, subnet: (None, None)
            fn = jax.jit(lambda x, s=s, v=v, k=k: arch.module(s).apply(v, x, subnet=k))
            jax.block_until_ready(fn(x))  # compiled here, with this placement
            layers.ZPMAdd.placement = folded
            fns[(variant, k)] = fn
        np.testing.assert_allclose(fns[('folded', k)](x), fns[('gather', k)](x), rtol=1e-3,
                                   atol=1e-3)
    times = {key: [] for key in fns}
    for _ in range(args.repeats):
        for key, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(x))
            times[key].append(time.perf_counter() - t)
    rows = []
    for k in range(zpm_s.num_subnets):
        ms = {v: statistics.median(times[(v, k)]) * 1e3 for v in ('folded', 'gather', 'no_zpm')}
        rows.append({'subnet': k, 'macs': costs[k].macs, 'no_zpm_macs': plain_costs[k].macs,
                     **{f'{v}_ms': t for v, t in ms.items()}})
    print(f'batch {args.batch}, eval forward, median of {args.repeats}')
    print(f'{"subnet":>6} {"MACs":>7} {"folded ms":>10} {"gather ms":>10} {"no ZPM ms":>10} '
          f'{"folded/no":>9} {"gather/no":>9}')
    for r in rows:
        print(f'{r["subnet"]:>6} {r["macs"] / 1e9:>6.2f}G {r["folded_ms"]:>10.0f} '
              f'{r["gather_ms"]:>10.0f} {r["no_zpm_ms"]:>10.0f} '
              f'{r["folded_ms"] / r["no_zpm_ms"]:>9.2f} {r["gather_ms"] / r["no_zpm_ms"]:>9.2f}')
    streams = {name: [zpm_s.stream_sizes[k][j] for k in range(zpm_s.num_subnets)]
               for j, name in enumerate(zpm_s.junctions)}
    for name, sizes in streams.items():
        print(f'{name:>9} stream sizes {sizes}')
    with open(args.out, 'w') as f:
        json.dump({'batch': args.batch, 'repeats': args.repeats, 'rows': rows,
                   'stream_sizes': streams, 'backend': jax.default_backend(),
                   'machine': platform.machine(), 'date': time.strftime('%Y-%m-%d'),
                   'jax': jax.__version__}, f, indent=1)


if __name__ == '__main__':
    main()
