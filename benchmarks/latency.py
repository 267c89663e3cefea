"""Sub-network inference latency of SP-ResNet-50 at 224 px: what static slicing buys.

    python benchmarks/latency.py [--batches=8,32] [--repeats=5] [--out=benchmarks/latency.json]

For each sub-network of the release's ResNet-50 recipe (bases 0.75 / 1.0, keep ratios
0.5484 / 0.526, ZPM, SCS; random bases: latency does not depend on the values), eval-mode
forward latency (median of ``repeats`` after compilation), as a ratio to the full network,
next to its MACs ratio. Beside each, the same sub-network computed the way mask-based JAX
pruning libraries do it: the full-width network with the pruned channels' weights multiplied
by a 0/1 mask inside the jitted function, which costs the full network whatever the mask.
"""

import argparse
import json
import platform
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from spnet_jax.core.cost import subnet_costs
from spnet_jax.models import get_arch
from spnet_jax.pruning import prune


def random_base(width: float, seed: int) -> dict:
    arch = get_arch('resnet50', full_width=width)
    return random_variables(arch, arch.plain_structure(), (32, 32, 3), seed)


def random_variables(arch, structure, shape, seed: int) -> dict:
    """Variables of ``arch``'s network of ``structure`` for inputs of ``shape`` (H, W, C):
    He-normal kernels, BN scales and variances in [0.1, 1], zeros elsewhere."""
    model = arch.module(structure)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
    rng = np.random.default_rng(seed)

    def value(path, s):
        name = jax.tree_util.keystr(path)
        if 'kernel' in name:
            return rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape).astype(np.float32)
        if 'scale' in name or 'var' in name:
            return rng.uniform(0.1, 1.0, s.shape).astype(np.float32)
        return np.zeros(s.shape, np.float32)

    return jax.tree_util.tree_map_with_path(value, shapes)


def release_recipe():
    """``(arch, bases, structure, variables)``: SP-ResNet-50 as the release prunes it (random
    bases 0.75 / 1.0, keep ratios 0.5484 / 0.526, ZPM, SCS)."""
    arch = get_arch('resnet50')
    bases = [random_base(0.75, 0), random_base(1.0, 1)]
    structure, variables, _ = prune(arch, bases, [0.75, 1.0], keep_ratios=[0.5484, 0.526],
                                    zpm='release', round_to=1)
    return arch, bases, structure, variables


def median_seconds(fn, x, repeats: int) -> tuple[float, float]:
    t = time.perf_counter()
    jax.block_until_ready(fn(x))
    compile_s = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t)
    return statistics.median(times), compile_s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--batches', default='8,32')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out', default='benchmarks/latency.json')
    args = parser.parse_args()
    arch, bases, structure, variables = release_recipe()
    model = arch.module(structure)
    costs = subnet_costs(arch, structure, 224)
    # Mask-based: the plain full network, kernels times 0/1 masks over kept channels.
    plain = arch.module(arch.plain_structure())
    plain_vars = {'params': variables['params'],
                  'batch_stats': jax.tree.map(lambda s: s, bases[-1]['batch_stats'])}
    table = arch.table(zpm=True)

    def masks_for(k):
        out = jax.tree.map(lambda p: np.ones(p.shape, np.float32), variables['params'])
        for g in table.groups:
            keep = np.zeros(g.size, np.float32)
            keep[:structure.count(g.name, k)] = 1  # sorted: kept channels are a prefix
            for p in g.producers:
                node = out
                for part in p.split('/'):
                    node = node[part]
                node['kernel'] = node['kernel'] * keep
        return jax.tree.map(jnp.asarray, out)

    rows = []
    for batch in [int(b) for b in args.batches.split(',')]:
        x = jax.random.normal(jax.random.key(0), (batch, 224, 224, 3))
        full_s = None
        for k in reversed(range(structure.num_subnets)):
            fn = jax.jit(lambda x, k=k: model.apply(variables, x, subnet=k))
            sliced, compile_s = median_seconds(fn, x, args.repeats)
            m = masks_for(k)
            masked_fn = jax.jit(lambda x, m=m: plain.apply(
                {**plain_vars, 'params': jax.tree.map(jnp.multiply, plain_vars['params'], m)},
                x))
            masked, _ = median_seconds(masked_fn, x, args.repeats)
            full_s = full_s or sliced
            rows.append({'batch': batch, 'subnet': k, 'macs': costs[k].macs,
                         'macs_ratio': costs[k].macs / costs[-1].macs,
                         'sliced_s': sliced, 'sliced_ratio': sliced / full_s,
                         'masked_s': masked, 'masked_ratio': masked / full_s,
                         'compile_s': compile_s})
    rows.sort(key=lambda r: (r['batch'], r['subnet']))
    print(f'{"batch":>5} {"subnet":>6} {"MACs":>8} {"MACs x":>7} {"sliced ms":>10} '
          f'{"x full":>7} {"masked ms":>10} {"x full":>7}')
    for r in rows:
        print(f'{r["batch"]:>5} {r["subnet"]:>6} {r["macs"] / 1e9:>7.2f}G {r["macs_ratio"]:>7.3f} '
              f'{r["sliced_s"] * 1e3:>10.1f} {r["sliced_ratio"]:>7.3f} '
              f'{r["masked_s"] * 1e3:>10.1f} {r["masked_ratio"]:>7.3f}')
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f'peak RSS {peak:.0f} MiB')
    with open(args.out, 'w') as f:
        json.dump({'rows': rows, 'peak_rss_mib': round(peak), 'backend': jax.default_backend(),
                   'devices': str(jax.devices()), 'machine': platform.machine(),
                   'jax': jax.__version__}, f, indent=1)


if __name__ == '__main__':
    main()
