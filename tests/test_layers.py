"""The names of per-sub-network variables: `layers` is their one owner."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spnet_jax.core import layers


def test_subnet_variable_and_subnet_of_are_inverses():
    for kind in layers.SUBNET_KINDS:
        for k in (0, 3, 12):
            name = layers.subnet_variable(kind, k)
            assert layers.subnet_of(name) == (kind, k)
    assert layers.subnet_variable(layers.MEAN, 2) == 'mean_2'
    assert layers.subnet_variable(layers.FUSED, np.int64(1)) == 'fused_1'


@pytest.mark.parametrize('name', ['scale', 'bias', 'kernel', 'layer1_0', 'block12', 'stage_2',
                                  'mean', 'mean_', 'mean_x', 'mean_01', 'scale_-1'])
def test_other_names_are_no_subnets_variables(name):
    assert layers.subnet_of(name) is None


def test_bad_kinds_and_indices_are_refused():
    with pytest.raises(ValueError, match='kernel'):
        layers.subnet_variable('kernel', 0)
    with pytest.raises(ValueError, match='>= 0'):
        layers.subnet_variable(layers.VAR, -1)


def test_bn_scales_and_affines():
    assert layers.is_bn_scale('scale') and layers.is_bn_scale('scale_3')
    assert not any(map(layers.is_bn_scale, ('bias', 'bias_0', 'kernel', 'scales', 'mean_0')))
    shared = {'scale': np.arange(4.0), 'bias': np.zeros(4)}
    np.testing.assert_array_equal(layers.bn_affine(shared, layers.SCALE), np.arange(4.0))
    private = {f'{kind}_{k}': np.full(k + 1, k) for kind in ('scale', 'bias') for k in range(11)}
    # The full network's is the last (numerically, not by string order: 10 after 9).
    np.testing.assert_array_equal(layers.bn_affine(private, layers.SCALE), np.full(11, 10))
    np.testing.assert_array_equal(layers.bn_affine(private, layers.BIAS, 2), np.full(3, 2))
    with pytest.raises(ValueError):
        layers.bn_affine(shared, layers.MEAN)


@pytest.mark.parametrize('shared', [True, False])
def test_the_layers_name_their_variables_by_the_protocol(shared):
    bn = layers.SlimBatchNorm(counts=(2, 3), shared=shared)
    x = jnp.ones((2, 3))
    shapes = jax.eval_shape(lambda: bn.init(jax.random.key(0), x, 1, True))
    stats = [layers.subnet_variable(s, k) for s in layers.STATISTICS for k in (0, 1)]
    assert sorted(shapes[layers.BATCH_STATS]) == sorted(stats)
    affine = ([layers.SCALE, layers.BIAS] if shared else
              [layers.subnet_variable(a, k) for a in (layers.SCALE, layers.BIAS) for k in (0, 1)])
    assert sorted(shapes['params']) == sorted(affine)
    _, moments = bn.apply(jax.tree.map(jnp.zeros_like, shapes), x, 1, True,
                          mutable=[layers.BATCH_STATS, layers.BATCH_MOMENTS])
    assert sorted(moments[layers.BATCH_MOMENTS]) == ['mean_1', 'var_1']
    add = layers.ZPMAdd(stream_sizes=(3, 4), body_counts=(2, 4), short_counts=(3, 4))
    masks = jax.eval_shape(lambda: add.init(jax.random.key(0), jnp.ones((1, 2)),
                                            jnp.ones((1, 3)), 0))[layers.MASKS]
    assert sorted(masks) == sorted(layers.subnet_variable(m, k) for k in (0, 1)
                                   for m in (layers.FUSED, layers.BODY, layers.SHORT))
