"""Wall time of SP-Net pruning for ResNet-50 (two bases 0.75 / 1.0, ZPM, SCS) on this host.

    python benchmarks/prune_time.py [--repeats=3] [--out=benchmarks/prune_time.json]

Bases are random (pruning time does not depend on the values). Reports keep-ratio pruning
(the release's 0.5484 / 0.526) and MACs-targeted pruning (1.1G / 2.3G, bisection), each the
median of several runs after one warm-up, and the process's peak resident memory.
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

from spnet_jax.models import get_arch
from spnet_jax.pruning import prune


def random_base(width: float, seed: int) -> dict:
    arch = get_arch('resnet50', full_width=width)
    model = arch.module(arch.plain_structure())
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.uniform(0.01, 1.0, s.shape).astype(np.float32), shapes)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up: first traces
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--out', default='benchmarks/prune_time.json')
    args = parser.parse_args()
    arch = get_arch('resnet50')
    bases = [random_base(0.75, 0), random_base(1.0, 1)]
    rows = {
        'keep_ratios': timed(lambda: prune(arch, bases, [0.75, 1.0],
                                           keep_ratios=[0.5484, 0.526], zpm='release',
                                           round_to=1), args.repeats),
        'macs_targets': timed(lambda: prune(arch, bases, [0.75, 1.0],
                                            macs_targets=[1.1e9, 2.3e9], zpm='release',
                                            round_to=1, tolerance=0.01), args.repeats),
    }
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {'model': 'resnet50', 'bases': [0.75, 1.0], 'zpm': True, 'seconds': rows,
              'peak_rss_mib': round(peak_mib), 'machine': platform.processor() or
              platform.machine(), 'cpus': jax.local_device_count(), 'jax': jax.__version__}
    print(f'{"pruning":<14} {"median s":>9}')
    for k, v in rows.items():
        print(f'{k:<14} {v:>9.2f}')
    print(f'peak RSS {peak_mib:.0f} MiB')
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
