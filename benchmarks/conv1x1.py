"""1x1 convolutions on XLA:CPU: `lax.conv_general_dilated` vs the same thing as a matmul.

    python benchmarks/conv1x1.py [--out=benchmarks/conv1x1.json]

Forward + backward (input and weight gradients) of ResNet-50's 1x1 conv shapes at batch 16,
both formulations jitted in the same process, median of 5 runs after compilation, and the
largest relative difference of the weight gradients. `spnet_jax.core.layers.SlimConv` uses the
matmul form for every 1x1 conv (strided ones subsample first).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

SHAPES = [(16, 56, 256, 64, 1), (16, 56, 64, 256, 1), (16, 28, 512, 128, 1),
          (16, 56, 256, 512, 2), (16, 14, 1024, 256, 1)]  # (batch, size, c_in, c_out, stride)


def conv(x, w, s):
    return jax.lax.conv_general_dilated(x, w, (s, s), ((0, 0), (0, 0)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def matmul(x, w, s):
    return jnp.einsum('nhwc,co->nhwo', x[:, ::s, ::s], w[0, 0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--out', default='benchmarks/conv1x1.json')
    args = parser.parse_args()
    rows = []
    print(f'{"shape (n, hw, cin, cout, stride)":<34} {"conv ms":>8} {"matmul ms":>9} '
          f'{"speed-up":>8} {"rel diff":>8}')
    for n, h, cin, cout, s in SHAPES:
        x = jax.random.normal(jax.random.key(0), (n, h, h, cin))
        w = jax.random.normal(jax.random.key(1), (1, 1, cin, cout))
        out = {}
        for name, f in (('conv', conv), ('matmul', matmul)):
            g = jax.jit(jax.grad(lambda w, x, f=f, s=s: jnp.sum(f(x, w, s) ** 2), argnums=(0, 1)))
            grads = jax.block_until_ready(g(w, x))
            times = []
            for _ in range(5):
                t = time.perf_counter()
                jax.block_until_ready(g(w, x))
                times.append(time.perf_counter() - t)
            out[name] = (float(np.median(times)), np.asarray(grads[0]))
        diff = float(np.abs(out['conv'][1] - out['matmul'][1]).max()
                     / np.abs(out['conv'][1]).max())
        row = {'shape': [n, h, cin, cout, s], 'conv_s': out['conv'][0],
               'matmul_s': out['matmul'][0], 'speedup': out['conv'][0] / out['matmul'][0],
               'weight_grad_rel_diff': diff}
        rows.append(row)
        print(f'{str((n, h, cin, cout, s)):<34} {row["conv_s"] * 1e3:>8.1f} '
              f'{row["matmul_s"] * 1e3:>9.1f} {row["speedup"]:>7.2f}x {diff:>8.1e}')
    with open(args.out, 'w') as f:
        json.dump({'backend': jax.default_backend(), 'jax': jax.__version__, 'rows': rows}, f,
                  indent=1)


if __name__ == '__main__':
    main()
