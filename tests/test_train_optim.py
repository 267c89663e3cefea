"""The BN-scale L1 sub-gradient, the SGD chain and the learning-rate schedules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from spnet_jax.core.channels import ChannelGroup, ChannelTable
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.models import get_arch
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


def _table(*bns):
    """A channel table whose groups' BatchNorms are ``bns`` (one group each)."""
    return ChannelTable('toy', tuple(ChannelGroup(bn, 1, (), (bn,), (bn,)) for bn in bns))


# The BatchNorms of `_tree`, as its network's channel table lists them.
TABLE = _table('stem_bn', 'layer1_0/bn1')


def _section(**kw):
    base = dict(lr=0.1, schedule='constant', lr_boundaries=(), lr_decay=0.1, warmup_epochs=0.0,
                weight_decay=0.0, optimizer='sgd', momentum=0.0, nesterov=False, sparsity=0.0)
    base.update(kw)
    return ml_collections.ConfigDict(base)


def test_mask_selects_bn_scales_only():
    mask = optim.bn_scale_mask(_tree(), TABLE)
    selected = sorted(jax.tree_util.keystr(p) for p, m in
                      jax.tree_util.tree_flatten_with_path(mask)[0] if m)
    assert selected == ["['layer1_0']['bn1']['scale_0']", "['layer1_0']['bn1']['scale_1']",
                        "['stem_bn']['scale']"]


def test_sparsity_adds_s_sign_gamma_to_bn_scale_gradients_and_nothing_else():
    params = _tree()
    grads = jax.tree.map(lambda x: jnp.full_like(x, 0.125), params)
    s = 1e-2
    tx = optim.bn_scale_sparsity(s, lambda p: optim.bn_scale_mask(p, TABLE))
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
    tx = optim.bn_scale_sparsity(0.0, lambda p: optim.bn_scale_mask(p, TABLE))
    out, _ = tx.update(grads, tx.init(params), params)
    jax.tree.map(np.testing.assert_array_equal, out, grads)


def test_optimizer_step_moves_only_bn_scales_by_lr_s_sign_with_zero_gradients():
    params = _tree()
    lr, s = 0.1, 1e-3
    tx, _ = optim.make_optimizer(_section(lr=lr, sparsity=s, momentum=0.9, nesterov=True),
                                 steps_per_epoch=10, num_steps=10, table=TABLE)
    zero = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    # Nesterov's first step applies (1 + momentum) * g.
    expect = -lr * 1.9 * s * np.sign(np.asarray(params['stem_bn']['scale']))
    np.testing.assert_allclose(updates['stem_bn']['scale'], expect, rtol=1e-6)
    np.testing.assert_allclose(updates['layer1_0']['bn1']['scale_1'],
                               -lr * 1.9 * s * np.array([-1, 0, 1]), rtol=1e-6)
    mask = optim.bn_scale_mask(params, TABLE)
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
                                          sparsity=s), steps_per_epoch=1, num_steps=10,
                                 table=_table('bn'))
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
    """The release's warm-up ramps to lr by iteration ``step + 1``; MultiStepLR then decays
    from the first step of each boundary epoch."""
    sched = optim.learning_rate_schedule(
        _section(lr=0.1, schedule='multistep', lr_boundaries=(30, 50), lr_decay=0.2,
                 warmup_epochs=5), steps_per_epoch=10, num_steps=900)
    np.testing.assert_allclose([float(sched(s)) for s in (0, 24, 49)], [0.002, 0.05, 0.1],
                               rtol=1e-6)
    np.testing.assert_allclose(float(sched(50)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(sched(299)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(sched(300)), 0.02, rtol=1e-6)
    np.testing.assert_allclose(float(sched(500)), 0.004, rtol=1e-6)


def _release_lr(section, iters_per_epoch, num_epochs, epoch, batch_idx):
    """The release's per-iteration lr (its train loop, before the optimizer step)."""
    current_iter = epoch * iters_per_epoch + batch_idx + 1
    warmup = section.warmup_epochs
    if warmup > 0 and epoch < warmup:
        return current_iter * section.lr / (warmup * iters_per_epoch)
    return section.lr * (1 + np.cos(np.pi * (current_iter - warmup * iters_per_epoch) / (
        (num_epochs - warmup) * iters_per_epoch))) / 2


@pytest.mark.parametrize('warmup_epochs', [0, 1, 5])
def test_cosine_schedule_is_the_releases_at_every_step(warmup_epochs):
    section = _section(lr=0.4, schedule='cosine', warmup_epochs=warmup_epochs)
    iters, epochs = 7, 20
    sched = optim.learning_rate_schedule(section, steps_per_epoch=iters,
                                         num_steps=iters * epochs)
    got = jax.vmap(sched)(jnp.arange(iters * epochs))
    want = [_release_lr(section, iters, epochs, e, b) for e in range(epochs)
            for b in range(iters)]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    assert float(got[0]) > 0  # the first step already uses iteration 1
    assert float(got[-1]) == pytest.approx(0.0, abs=1e-7)  # the last step's lr is 0


def test_cosine_schedule_with_warmup():
    sched = optim.learning_rate_schedule(
        _section(lr=0.4, schedule='cosine', warmup_epochs=1), steps_per_epoch=10, num_steps=110)
    np.testing.assert_allclose([float(sched(0)), float(sched(9))], [0.04, 0.4], rtol=1e-6)
    np.testing.assert_allclose(float(sched(10)), 0.2 * (1 + np.cos(np.pi / 100)), rtol=1e-6)
    np.testing.assert_allclose(float(sched(59)), 0.2, rtol=1e-5)
    assert float(sched(109)) == pytest.approx(0.0, abs=1e-7)


def test_cosine_schedule_without_warmup():
    sched = optim.learning_rate_schedule(
        _section(lr=0.05, schedule='cosine', warmup_epochs=0), steps_per_epoch=10, num_steps=100)
    np.testing.assert_allclose([float(sched(0)), float(sched(49))],
                               [0.025 * (1 + np.cos(np.pi / 100)), 0.025], rtol=1e-6)
    assert float(sched(99)) == pytest.approx(0.0, abs=1e-8)


def test_first_lr_of_the_mobilenet_v2_fine_tuning_is_the_releases():
    """lr 0.08, cosine, 150 epochs of one step: the release's first step uses
    0.08 * (1 + cos(pi / 150)) / 2 (reference widths.json, ``train_step.lr_used_f64``)."""
    sched = optim.learning_rate_schedule(_section(lr=0.08, schedule='cosine'),
                                         steps_per_epoch=1, num_steps=150)
    np.testing.assert_allclose(float(sched(0)), 0.07999122733899382, rtol=1e-7)


def test_constant_schedule_with_warmup():
    sched = optim.learning_rate_schedule(_section(lr=0.3, warmup_epochs=2), steps_per_epoch=2,
                                         num_steps=10)
    np.testing.assert_allclose([float(sched(s)) for s in range(6)],
                               [0.075, 0.15, 0.225, 0.3, 0.3, 0.3], rtol=1e-6)


def _params(name, **kw):
    arch = get_arch(name, **kw)
    model = arch.module(arch.plain_structure())
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    return shapes['params']


def _decayed(params, optimizer):
    mask = optim.weight_decay_mask(params, optimizer)
    return {'/'.join(k) for k, m in traverse_util.flatten_dict(mask).items() if m}


def test_weight_decay_groups_of_mobilenet_v2():
    params = _params('mobilenet_v2', full_width=0.35)
    every = {'/'.join(k) for k in traverse_util.flatten_dict(params)}
    assert _decayed(params, 'sgd') == every
    no_bias = _decayed(params, 'sgd_no_bias_decay')
    for path in ('stem_conv/kernel', 'block1/project_conv/kernel', 'block2/expand_conv/kernel',
                 'last_conv/kernel', 'head/kernel'):
        assert path in no_bias, path
    for path in ('block2/dw_conv/kernel', 'block1/dw_conv/kernel', 'head/bias', 'stem_bn/scale',
                 'stem_bn/bias', 'block2/project_bn/scale', 'last_bn/bias'):
        assert path not in no_bias, path
    # Exactly the non-depthwise convs (1 stem, 16 expand, 17 project, 1 last) and the head.
    assert len(no_bias) == 36 and all(p.endswith('kernel') and 'dw_conv' not in p
                                      for p in no_bias)
    dw = _decayed(params, 'sgd_dw')
    assert dw == every - {p for p in every if 'dw_conv/kernel' in p}
    assert {'stem_bn/scale', 'head/bias', 'block2/dw_bn/bias'} <= dw


def test_weight_decay_groups_of_resnet():
    params = _params('resnet18', num_classes=10, stem='small', full_width=0.25)
    no_bias = _decayed(params, 'sgd_no_bias_decay')
    every = {'/'.join(k) for k in traverse_util.flatten_dict(params)}
    kernels = {p for p in every if p.endswith('kernel')}
    assert no_bias == kernels and {'stem_conv/kernel', 'layer2_0/conv1/kernel',
                                   'head/kernel'} <= kernels
    assert _decayed(params, 'sgd_dw') == every  # no depthwise convs


def test_no_bias_decay_step_decays_only_conv_and_classifier_kernels():
    """Zero gradients: the update is PyTorch's -lr * (1 + momentum) * wd * p on the decayed
    leaves (Nesterov's first step) and exactly zero elsewhere."""
    params = _tree()
    params['block2'] = {'dw_conv': {'kernel': jnp.arange(1.0, 5.0).reshape(1, 1, 1, 4)}}
    lr, wd = 0.1, 1e-2
    tx, _ = optim.make_optimizer(_section(lr=lr, weight_decay=wd, momentum=0.9, nesterov=True,
                                          optimizer='sgd_no_bias_decay'),
                                 steps_per_epoch=1, num_steps=10, table=TABLE)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    flat, p = traverse_util.flatten_dict(updates, sep='/'), traverse_util.flatten_dict(
        params, sep='/')
    for path in ('layer1_0/conv1/kernel', 'head/kernel'):
        np.testing.assert_allclose(flat[path], -lr * 1.9 * wd * np.asarray(p[path]), rtol=1e-6)
    for path in set(flat) - {'layer1_0/conv1/kernel', 'head/kernel'}:
        np.testing.assert_array_equal(flat[path], 0.0, err_msg=path)


def test_unknown_optimizer_is_a_config_error():
    with pytest.raises(ConfigError, match='optimizer'):
        optim.make_optimizer(_section(optimizer='adam'), steps_per_epoch=1, num_steps=1,
                             table=TABLE)


ZOO = [('resnet50', dict(full_width=0.25)), ('resnet20', dict(stem='small')),
       ('mobilenet_v2', dict(full_width=1.0)), ('mobilenet_v1', dict(full_width=0.25)),
       ('vgg19', dict(full_width=0.125))]


@pytest.mark.parametrize('name,kw,method', [
    (name, kw, method) for name, kw in ZOO for method in ('spnet', 'snet', 'zpm')
    if method != 'zpm' or name.startswith(('resnet', 'mobilenet_v2'))])
def test_table_mask_selects_every_bn_scale_of_the_model_zoo(name, kw, method):
    """The sparsity mask comes from the channel table (each group's BNs); it selects every
    BatchNorm scale of the network (shared or private), and nothing else."""
    arch = get_arch(name, num_classes=10, **kw)
    structure = (arch.snet_structure((arch.full_width / 2, arch.full_width))
                 if method == 'snet' else arch.plain_structure())
    table = arch.table(zpm=method == 'zpm')
    if method == 'zpm':  # one sub-network: the full network, its ZPM junctions unpruned
        sizes = tuple(s.size for s in table.streams for _ in s.junctions)
        structure = Structure(arch.name, 'spnet', table.group_names,
                              tuple(g.size for g in table.groups),
                              (tuple(g.size for g in table.groups),),
                              tuple(j.name for j in table.junctions), (sizes,))
    model = arch.module(structure)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                               jnp.zeros((1, 32, 32, 3))))['params']
    flat = traverse_util.flatten_dict(optim.bn_scale_mask(params, table))
    selected = {k for k, m in flat.items() if m}
    scales = {k for k in flat if k[-1] == 'scale' or k[-1].startswith('scale_')}
    assert selected == scales and scales
    if method == 'snet':
        assert all(k[-1] in ('scale_0', 'scale_1') for k in selected)


def test_a_table_of_another_network_is_refused():
    with pytest.raises(ValueError, match='no_bn'):
        optim.bn_scale_mask(_tree(), _table('stem_bn', 'no_bn'))
