"""Shared test helpers: random variables without running (and compiling) a model's init;
the Fashion-MNIST files' marker."""

import glob
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

FASHION_MNIST = '/usr/share/datasets/fashion-mnist'
needs_fashion_mnist = pytest.mark.skipif(
    not all(os.path.exists(os.path.join(FASHION_MNIST, f'{split}-images-idx3-ubyte.gz'))
            for split in ('train', 't10k')),
    reason='needs the Debian dataset-fashion-mnist package')


# The release's reference outputs: ../shared/reference beside the clone (CI has it, with the
# large MobileNetV2 weights); the small BN-only cases are also bundled in tests/data/reference.
SHARED_REFERENCE = Path(__file__).resolve().parents[2] / 'shared' / 'reference'
BUNDLED_REFERENCE = Path(__file__).resolve().parent / 'data' / 'reference'


def reference_case(name: str) -> Path:
    """The folder of reference case ``name``: ../shared's, else the bundled copy (may not
    exist: mark the test with `needs_reference`)."""
    shared = SHARED_REFERENCE / name
    return shared if shared.is_dir() else BUNDLED_REFERENCE / name


def needs_reference(name: str):
    return pytest.mark.skipif(
        not reference_case(name).is_dir(),
        reason=f'needs the release reference case {name} (../shared/reference, beside the clone)')


def host_devices_flags(count: int) -> str:
    """XLA_FLAGS for a subprocess with ``count`` host devices that compiles as this process
    does (conftest's optimization flags kept), so their results can be compared bit for bit."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={count}"


def random_variables(model, x, seed=0, masks=None, **init_kwargs):
    """Variables of ``model`` with random, well-scaled values: He-normal kernels, distinct
    BN scales in [0.1, 1], small biases and means, variances in [0.5, 1.5].

    Shapes come from `jax.eval_shape`, so nothing is compiled. ZPM index arrays are taken
    from ``masks`` (required when the model has junctions).
    """
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, **init_kwargs))
    rng = np.random.default_rng(seed)

    def value(path, s):
        name = jax.tree_util.keystr(path)
        if 'kernel' in name:
            fan_in = int(np.prod(s.shape[:-1]))
            return jnp.asarray(rng.normal(0, np.sqrt(2 / fan_in), s.shape), jnp.float32)
        if 'scale' in name:
            return jnp.asarray(rng.uniform(0.1, 1.0, s.shape), jnp.float32)
        if 'var' in name:
            return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.1, s.shape), jnp.float32)

    variables = {c: jax.tree_util.tree_map_with_path(value, t)
                 for c, t in shapes.items() if c != 'masks'}
    if 'masks' in shapes:
        assert masks is not None, 'a ZPM model needs masks'
        variables['masks'] = jax.tree.map(jnp.asarray, masks)
    return variables


def fresh_statistics(variables):
    """The same variables with every running mean 0 and variance 1 (as after pruning)."""
    stats = jax.tree_util.tree_map_with_path(
        lambda p, s: (jnp.ones_like(s) if 'var' in jax.tree_util.keystr(p)
                      else jnp.zeros_like(s)), variables['batch_stats'])
    return {**variables, 'batch_stats': stats}


def check_standalone_subnetworks(net, images) -> None:
    """Every sub-network of the `SlimmableNetwork` ``net`` exported as a standalone network
    (`spnet_jax.workdir.export.standalone`) computes the same logits on ``images`` and holds
    exactly the parameters the cost model counts for it."""
    from spnet_jax.workdir import export

    for k in range(net.structure.num_subnets):
        single, single_variables = export.standalone(net, k)
        model = net.arch.module(single)
        got = jax.jit(lambda v, x, model=model: model.apply(v, x, subnet=0))(
            single_variables, images)
        np.testing.assert_allclose(got, net(images, subnet=k, normalized=True), rtol=1e-5,
                                   atol=1e-5)
        count = sum(leaf.size for leaf in jax.tree.leaves(single_variables['params']))
        assert count == net.subnets[k]['params']


def jitted_apply(model, variables, **kw):
    """``f(x, train) -> logits``, jitted per mode."""
    fns = {train: jax.jit(lambda v, x, train=train: model.apply(
        v, x, train=train, mutable=['batch_stats'], **kw)[0]) for train in (False, True)}
    return lambda x, train: fns[train](variables, x)


# Damage done to a saved checkpoint, as a disk or a half-finished copy does it.
def _largest_data_file(step_dir, item='variables'):
    files = glob.glob(os.path.join(step_dir, item, '**', 'd', '*'), recursive=True)
    return max(files, key=os.path.getsize)


def truncate(step_dir):
    path = _largest_data_file(step_dir)
    with open(path, 'r+b') as fh:
        fh.truncate(os.path.getsize(path) // 2)


def flip_bytes(step_dir):
    """Silent corruption: a few bytes in the middle of the largest array file flipped."""
    path = _largest_data_file(step_dir)
    with open(path, 'rb') as fh:
        data = bytearray(fh.read())
    for i in range(len(data) // 2, len(data) // 2 + 64, 8):
        data[i] ^= 0x5A
    with open(path, 'wb') as fh:
        fh.write(bytes(data))
