"""The BN-scale L1 sub-gradient, the SGD chain and the learning-rate schedules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from spnet_jax.train import optim


def _tree():
    """A params tree shaped like the model zoo's: shared and switchable BN, conv, head."""
    return {
        'stem_bn': {'scale': jnp.array([0.5, -0.25, 0.0, 2.0]), 'bias': jnp.array([1.0, -1, 0, 2])},
        'layer1_0': {
            'bn1': {'scale_0': jnp.array([0.3, -0.7]), 'scale_1': jnp.array([-1.0, 0, 4]),
                    'bias_0': jnp.array([-2.0, 2]), 'bias_1': jnp.array([1.0, 1, 1])},
            'conv1': {'kernel': jnp.arange(-4.0, 4.0).reshape(1, 1, 2, 4)},
        },
        'head': {'kernel': jnp.ones((4, 3)), 'bias': jnp.array([-1.0, 0.0, 1.0])},
    }


def _section(**kw):
    base = dict(lr=0.1, schedule='constant', lr_boundaries=(), lr_decay=0.1, warmup_epochs=0.0,
                weight_decay=0.0, momentum=0.0, nesterov=False, sparsity=0.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_mask_selects_bn_scales_only():
    mask = optim.bn_scale_mask(_tree())
    selected = sorted(jax.tree_util.keystr(p) for p, m in
                      jax.tree_util.tree_flatten_with_path(mask)[0] if m)
    assert selected == ["['layer1_0']['bn1']['scale_0']", "['layer1_0']['bn1']['scale_1']",
                        "['stem_bn']['scale']"]


def test_sparsity_adds_s_sign_gamma_to_bn_scale_gradients_and_nothing_else():
    params = _tree()
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.125), params)
    s = 1e-2
    tx = optim.bn_scale_sparsity(s)
    out, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(out['stem_bn']['scale'],
                                  np.float32(0.125) + np.float32(s) * np.array([1, -1, 0, 1],
                                                                               np.float32))
    np.testing.assert_array_equal(out['layer1_0']['bn1']['scale_0'],
                                  np.float32(0.125) + np.float32(s) * np.array([1, -1],
                                                                               np.float32))
    np.testing.assert_array_equal(out['layer1_0']['bn1']['scale_1'],
                                  np.float32(0.125) + np.float32(s) * np.array([-1, 0, 1],
                                                                               np.float32))
    # Biases, conv kernels and the classifier are untouched, bit for bit.
    for path in (('stem_bn', 'bias'), ('layer1_0', 'bn1', 'bias_0'), ('layer1_0', 'bn1', 'bias_1'),
                 ('layer1_0', 'conv1', 'kernel'), ('head', 'kernel'), ('head', 'bias')):
        a, b = out, grads
        for key in path:
            a, b = a[key], b[key]
        np.testing.assert_array_equal(a, b)


def test_zero_rate_is_the_identity():
    params = _tree()
    grads = jax.tree.map(lambda x: x * 3.0, params)
    tx = optim.bn_scale_sparsity(0.0)
    out, _ = tx.update(grads, tx.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, out, grads)


def test_optimizer_step_moves_only_bn_scales_by_lr_s_sign_with_zero_gradients():
    params = _tree()
    lr, s = 0.1, 1e-3
    tx, _ = optim.make_optimizer(_section(lr=lr, sparsity=s, momentum=0.9, nesterov=True),
                                 steps_per_epoch=10, num_steps=10)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    # Nesterov's first step applies (1 + momentum) * g.
    expect = -lr * 1.9 * s * np.sign(np.asarray(params['stem_bn']['scale']))
    np.testing.assert_allclose(updates['stem_bn']['scale'], expect, rtol=1e-6)
    np.testing.assert_allclose(updates['layer1_0']['bn1']['scale_1'],
                               -lr * 1.9 * s * np.array([-1, 0, 1]), rtol=1e-6)
    mask = optim.bn_scale_mask(params)
    for m, a, b in zip(jax.tree.leaves(mask), jax.tree.leaves(new), jax.tree.leaves(params),
                       strict=True):
        if not m:
            np.testing.assert_array_equal(a, b)


def test_sgd_chain_matches_pytorch_update_rule():
    """PyTorch SGD(nesterov, weight_decay) with the L1 sub-gradient, two steps, by hand."""
    params = {'bn': {'scale': jnp.array([0.5, -0.2])}, 'conv': {'kernel': jnp.array([1.0, -2.0])}}
    grads = [{'bn': {'scale': jnp.array([0.1, 0.3])}, 'conv': {'kernel': jnp.array([0.2, -0.1])}},
             {'bn': {'scale': jnp.array([-0.2, 0.05])}, 'conv': {'kernel': jnp.array([0.0, 0.4])}}]
    lr, m, wd, s = 0.1, 0.9, 1e-2, 1e-3
    tx, _ = optim.make_optimizer(_section(lr=lr, momentum=m, nesterov=True, weight_decay=wd,
                                          sparsity=s), steps_per_epoch=1, num_steps=10)
    state, p = tx.init(params), params
    ref = {k: {kk: np.asarray(v, np.float64) for kk, v in d.items()} for k, d in params.items()}
    buf = {k: {kk: 0.0 for kk in d} for k, d in params.items()}
    for g in grads:
        updates, state = tx.update(g, state, p)
        p = optax.apply_updates(p, updates)
        for k in ref:
            for kk in ref[k]:
                d = np.asarray(g[k][kk], np.float64)
                if kk == 'scale':
                    d = d + s * np.sign(ref[k][kk])
                d = d + wd * ref[k][kk]
                buf[k][kk] = m * buf[k][kk] + d
                ref[k][kk] = ref[k][kk] - lr * (d + m * buf[k][kk])
    for k in ref:
        for kk in ref[k]:
            np.testing.assert_allclose(p[k][kk], ref[k][kk], rtol=1e-6)


def test_multistep_schedule_with_warmup():
    sched = optim.learning_rate_schedule(
        _section(lr=0.1, schedule='multistep', lr_boundaries=(30, 50), lr_decay=0.2,
                 warmup_epochs=5), steps_per_epoch=10, num_steps=900)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(25)), 0.05, rtol=1e-6)
    np.testing.assert_allclose(float(sched(50)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(sched(299)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(sched(300)), 0.02, rtol=1e-6)
    np.testing.assert_allclose(float(sched(500)), 0.004, rtol=1e-6)


def test_cosine_schedule_with_warmup():
    sched = optim.learning_rate_schedule(
        _section(lr=0.4, schedule='cosine', warmup_epochs=1), steps_per_epoch=10, num_steps=110)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(10)), 0.4, rtol=1e-6)
    np.testing.assert_allclose(float(sched(60)), 0.2, rtol=1e-5)
    assert float(sched(110)) == pytest.approx(0.0, abs=1e-7)


def test_cosine_schedule_without_warmup():
    sched = optim.learning_rate_schedule(
        _section(lr=0.05, schedule='cosine', warmup_epochs=0), steps_per_epoch=10, num_steps=100)
    np.testing.assert_allclose([float(sched(0)), float(sched(50))], [0.05, 0.025], rtol=1e-5)
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-8)
