"""Serve a stream of Fashion-MNIST requests from one switchable artifact under a latency budget
that changes, switching widths at run time (issue 31).

    python -m spnet_jax.export --workdir=workdir/fashion_mnist --switchable --out=/tmp/fm_all
    python examples/serve_under_budget.py --export=/tmp/fm_all [--requests=120] [--batch=32]

Each request is a batch of test images. The budget starts at the full network's time measured
at export (x1.1), so the widest width serves; a third of the way in a second process starts
loading every core (a busy machine), and two thirds in the budget is halved. The server picks
the width with `spnet_jax.workdir.export.choose` from the latencies in ``export.json``, scaled
by how much slower the machine runs now than at export (an exponential average of
measured / expected time over the last requests), and reports per phase: the widths it used,
the top-1 it reached and how many requests met the budget.
"""

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spnet_jax.core.errors import ConfigError  # noqa: E402
from spnet_jax.data.fashion_mnist import load_split  # noqa: E402
from spnet_jax.workdir.export import ARTIFACT, INFO, choose  # noqa: E402


def burn(stop):  # a second process loading a core
    x = 1.0
    while not stop.is_set():
        for _ in range(100_000):
            x = x * 1.0000001 % 3.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--export', required=True, help='a --switchable export folder')
    parser.add_argument('--data_dir', default='/usr/share/datasets/fashion-mnist')
    parser.add_argument('--requests', type=int, default=120)
    parser.add_argument('--batch', type=int, default=32)
    args = parser.parse_args()
    info = json.load(open(os.path.join(args.export, INFO)))
    if str(args.batch) not in info['subnets'][0]['latency_ms']:
        raise SystemExit(f'the export timed batches {info["latency_batches"]}; pass one of them '
                         'as --batch (or re-export with --serving_batch).')
    exported = jax.export.deserialize(bytearray(open(os.path.join(args.export, ARTIFACT),
                                                     'rb').read()))
    images, labels = load_split(args.data_dir, 'test')
    images = images.reshape(-1, 28, 28, 1).astype(np.uint8)
    full_ms = info['subnets'][-1]['latency_ms'][str(args.batch)]
    for k in range(info['num_subnets']):  # compile once (every width shares the program)
        exported.call(jnp.asarray(images[:args.batch]), jnp.int32(k)).block_until_ready()
    slowdown, stop, burners = 1.0, multiprocessing.Event(), []
    phases = {}
    for r in range(args.requests):
        phase = ('quiet, full budget' if r < args.requests // 3 else
                 'busy, full budget' if r < 2 * args.requests // 3 else 'busy, half budget')
        if phase.startswith('busy') and not burners:
            burners = [multiprocessing.Process(target=burn, args=(stop,), daemon=True)
                       for _ in range(os.cpu_count() or 1)]
            for p in burners:
                p.start()
        budget = 1.1 * full_ms * (0.5 if phase.endswith('half budget') else 1.0)
        try:  # the widest width whose expected time on this machine, now, fits
            k = choose(info, budget / slowdown, args.batch)
        except ConfigError:
            k = 0  # none fits: the fastest, and the request misses its budget
        start = (r * args.batch) % (len(images) - args.batch)
        x = jnp.asarray(images[start:start + args.batch])
        t = time.perf_counter()
        logits = np.asarray(exported.call(x, jnp.int32(k)))
        ms = 1e3 * (time.perf_counter() - t)
        expected = info['subnets'][k]['latency_ms'][str(args.batch)]
        slowdown = 0.7 * slowdown + 0.3 * ms / expected
        row = phases.setdefault(phase, {'widths': [], 'correct': 0, 'seen': 0, 'met': 0,
                                        'ms': []})
        row['widths'].append(k)
        row['correct'] += int((logits.argmax(-1) == labels[start:start + args.batch]).sum())
        row['seen'] += args.batch
        row['met'] += ms <= budget
        row['ms'].append(ms)
    stop.set()
    for p in burners:
        p.join()
    for phase, row in phases.items():
        used = {k: row['widths'].count(k) for k in sorted(set(row['widths']))}
        print(f'{phase:<20} widths used {used}; top-1 {100 * row["correct"] / row["seen"]:.2f}%; '
              f'budget met {row["met"]}/{len(row["widths"])}; median '
              f'{statistics.median(row["ms"]):.1f} ms')


if __name__ == '__main__':
    main()
