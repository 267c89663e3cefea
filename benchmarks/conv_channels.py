"""Issue 28: how XLA:CPU's time per MAC of a 3x3 convolution depends on its channel count.

    python benchmarks/conv_channels.py [--batch=256] [--repeats=7]
        [--sizes=28:4,6,8,10,12,14,16,20,24,32/14:8,12,16,20,24,28,32/7:8,16,24,32,40,48,56,64]
        [--out=benchmarks/conv_channels.json]

One 'SAME' 3x3 convolution, stride 1, ``c`` channels in and out, NHWC, on a batch of
``size`` x ``size`` images (ResNet-20's three stages on Fashion-MNIST: 28, 14, 7 px), jitted;
all programs of one size timed interleaved (``repeats`` rounds, medians). Printed: ms per
batch and ms per million MACs.
"""

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--batch', type=int, default=256)
    parser.add_argument('--repeats', type=int, default=7)
    parser.add_argument('--sizes', default='28:4,6,8,10,12,14,16,20,24,32/'
                                           '14:8,12,16,20,24,28,32/7:8,16,24,32,40,48,56,64')
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    rows = []
    for part in args.sizes.split('/'):
        size, channels = part.split(':')
        size = int(size)
        calls = {}
        for c in (int(x) for x in channels.split(',')):
            x = jnp.asarray(np.random.default_rng(0).random((args.batch, size, size, c)),
                            jnp.float32)
            w = jnp.asarray(np.random.default_rng(1).random((3, 3, c, c)), jnp.float32)
            conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
                x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
            program = conv.lower(x, w).compile()
            program(x, w).block_until_ready()
            calls[c] = lambda p=program, x=x, w=w: p(x, w).block_until_ready()
        times = {c: [] for c in calls}
        for r in range(args.repeats):
            order = list(calls)[r % len(calls):] + list(calls)[:r % len(calls)]
            for c in order:
                t = time.perf_counter()
                calls[c]()
                times[c].append(time.perf_counter() - t)
        for c, t in times.items():
            ms = 1e3 * statistics.median(t)
            macs = args.batch * size * size * 9 * c * c
            rows.append({'size': size, 'channels': c, 'ms': ms, 'ms_per_mmac': ms / (macs / 1e6)})
            print(f'{size:>3} px {c:>3} ch: {ms:8.2f} ms  {ms / (macs / 1e6):.3f} ms/MMAC')
    if args.out:
        with open(args.out, 'w') as fh:
            json.dump({'date': time.strftime('%Y-%m-%d %H:%M'), 'jax': jax.__version__,
                       'machine': platform.machine(), 'cpus': os.cpu_count(),
                       'load_average': list(os.getloadavg()), 'batch': args.batch,
                       'repeats': args.repeats, 'rows': rows}, fh, indent=1)


if __name__ == '__main__':
    main()
