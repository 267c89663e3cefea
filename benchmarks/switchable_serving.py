"""Issue 31: serving every width from one switchable artifact, against one standalone
artifact per width and TFLite, on this CPU.

    python benchmarks/switchable_serving.py --workdir=W [--batches=1,256] [--repeats=15]
        [--out=benchmarks/switchable_serving.json]

Exports ``W`` three ways into a temporary folder (`spnet_jax.export`'s ``--switchable
--tflite`` and ``--all``), then times, interleaved in one process (each round every program
once, starting one further along; medians): the switchable artifact at each width, each
standalone artifact, and each TFLite flatbuffer (the export's are batch 1; for the other
batches a flatbuffer of that static batch is converted here). Also the bytes a server holds
for all widths: the switchable artifact against the N standalone artifacts, and the N
flatbuffers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spnet_jax.workdir import export  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--batches', default='1,256')
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(',')]
    tmp = tempfile.mkdtemp()
    info = export.export_switchable(args.workdir, os.path.join(tmp, 'switch'), tflite=True,
                                    serving_batch=max(batches), timing_rounds=3)
    export.export_all(args.workdir, os.path.join(tmp, 'each'))
    n = info['num_subnets']
    load = lambda p: jax.export.deserialize(bytearray(open(p, 'rb').read()))
    switch = load(os.path.join(tmp, 'switch', export.ARTIFACT))
    each = [load(os.path.join(tmp, 'each', f'subnet_{k}', export.ARTIFACT)) for k in range(n)]
    shape = info['input_shape'][1:]
    dtype = np.uint8 if info['input_dtype'] == 'uint8' else np.float32
    calls = {}
    for b in batches:
        images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (b, *shape)).astype(dtype))
        for k in range(n):
            calls[f'switchable k={k} b={b}'] = (
                lambda x=images, k=k: switch.call(x, jnp.int32(k)).block_until_ready())
            calls[f'standalone k={k} b={b}'] = (
                lambda x=images, e=each[k]: e.call(x).block_until_ready())
    import tensorflow as tf

    from spnet_jax.workdir import tf_export

    net = export._as_network(args.workdir)
    spec = net.input_spec
    normalization = None if spec['mean'] is None else (spec['mean'], spec['std'])
    for b in batches:
        folder = os.path.join(tmp, 'switch') if b == 1 else os.path.join(tmp, f'tflite_b{b}')
        if b != 1:
            tf_export.write_tflite(net.arch, [export.standalone(net, k) for k in range(n)],
                                   shape, normalization, folder, batch=b)
        for k in range(n):
            it = tf.lite.Interpreter(model_path=os.path.join(folder, 'tflite',
                                                             f'subnet_{k}.tflite'))
            it.allocate_tensors()
            inp = it.get_input_details()[0]
            it.set_tensor(inp['index'], np.random.default_rng(0).integers(
                0, 255, (b, *shape)).astype(inp['dtype']))
            calls[f'tflite k={k} b={b}'] = it.invoke
    for call in calls.values():  # compile / warm up
        call()
        call()
    names = list(calls)
    times = {name: [] for name in names}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            calls[name]()
            times[name].append(1e3 * (time.perf_counter() - t))
    ms = {name: statistics.median(t) for name, t in times.items()}
    for name in names:
        print(f'{name:<24} {ms[name]:9.3f} ms')
    size = lambda *p: os.path.getsize(os.path.join(tmp, *p))
    memory = {'switchable_artifact_bytes': size('switch', export.ARTIFACT),
              'standalone_artifacts_bytes': sum(size('each', f'subnet_{k}', export.ARTIFACT)
                                                for k in range(n)),
              'tflite_bytes': sum(info['tflite']['bytes'])}
    print(json.dumps(memory))
    if args.out:
        with open(args.out, 'w') as fh:
            json.dump({'date': time.strftime('%Y-%m-%d %H:%M'), 'command': ' '.join(sys.argv),
                       'machine': platform.machine(), 'cpus': os.cpu_count(),
                       'jax': jax.__version__, 'tensorflow': tf.__version__,
                       'load_average': list(os.getloadavg()), 'repeats': args.repeats,
                       'ms': ms, 'memory': memory, 'subnets': info['subnets']}, fh, indent=1)


if __name__ == '__main__':
    main()
