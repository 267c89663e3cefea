"""The model zoo: static sub-networks, parameter trees, S-Net slices equal plain networks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import jitted_apply, random_variables

from spnet_jax.core import layers
from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.structure import APPENDED, ASCENDING, Structure
from spnet_jax.models import REGISTRY, common, get_arch, mobilenet_v2, resnet
from spnet_jax.pruning import zpm

# (name, S-Net widths, image size, stem): small inputs keep CPU compile times low.
CASES = [
    ('resnet18', (0.5, 1.0), 32, 'small'),
    ('resnet20', (0.5, 1.0), 16, None),
    ('resnet50', (0.25, 0.5), 32, 'imagenet'),
    # ResNet-D at 28 px, small stem: stage 4's average pool covers an odd 7x7 map.
    ('resnetd50', (0.25, 0.5), 28, 'small'),
    ('vgg19', (0.25, 0.5), 32, None),
    ('mobilenet_v1', (0.5, 0.75), 32, None),
    ('mobilenet_v2', (0.5, 1.0), 32, None),
    # EfficientNet: squeeze-and-excitation, 5x5 depthwise convs, swish.
    ('efficientnet_b0', (0.5, 1.0), 32, None),
]


def _arch(name, widths, stem):
    return get_arch(name, num_classes=7, full_width=widths[-1], stem=stem)


def _leaf_count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ResNet-D shares ResNet-50's blocks and EfficientNet has its own tests (test_efficientnet.py):
# their shape checks run with `-m slow`, keeping the default suite within CI's time.
_SLOW_SHAPES = ('resnetd50', 'efficientnet_b0')


@pytest.mark.parametrize('name,widths,size,stem', [
    pytest.param(*c, id=c[0], marks=[pytest.mark.slow] if c[0] in _SLOW_SHAPES else [])
    for c in CASES])
def test_every_subnet_runs_jitted_with_static_shapes(name, widths, size, stem):
    arch = _arch(name, widths, stem)
    structure = arch.snet_structure(widths)
    model = arch.module(structure)
    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    variables = random_variables(model, x)
    plain = arch.plain_structure(widths[-1])
    # Full-width parameters: the same shapes as the plain full network's (S-Net adds BN sets).
    plain_vars = jax.eval_shape(lambda: arch.module(plain).init(jax.random.key(1), x))
    conv_shapes = lambda t: {k: v.shape for k, v in jax.tree_util.tree_leaves_with_path(t)
                             if 'kernel' in jax.tree_util.keystr(k)}
    assert conv_shapes(variables['params']) == conv_shapes(plain_vars['params'])
    outs = []
    for k in range(structure.num_subnets):
        # Train mode: fresh running statistics (0/1) let activations vanish through 13+
        # depthwise layers initialised like torchvision's; batch statistics do not.
        fn = jax.jit(lambda v, x, k=k: model.apply(v, x, subnet=k, train=True,
                                                   mutable=['batch_stats'])[0])
        out = fn(variables, x)
        assert out.shape == (2, 7)
        assert np.isfinite(np.asarray(out)).all()
        outs.append(out)
    assert not np.allclose(outs[0], outs[-1])  # sub-networks really differ
    # The plain network's parameter tree holds exactly the parameters the cost model counts.
    (cost,) = subnet_costs(arch, plain, size)
    assert _leaf_count(plain_vars['params']) == cost.params


def _slice_to(tree, shapes):
    """Prefix-slice every leaf of ``tree`` to the shape of the same leaf in ``shapes``."""
    return jax.tree.map(lambda x, s: x[tuple(slice(0, n) for n in s.shape)], tree, shapes)


# Not EfficientNet: as in the release, its S-Net's last conv keeps the widest width's count at
# every width, so a narrow width is no plain network of that width (test_import_efficientnet
# checks its S-Net against the release's layout).
@pytest.mark.parametrize('name,widths,size,stem', CASES[:-1], ids=[c[0] for c in CASES[:-1]])
def test_snet_subnet_equals_plain_network_with_sliced_weights(name, widths, size, stem):
    arch = _arch(name, widths, stem)
    structure = arch.snet_structure(widths)
    model = arch.module(structure)
    x = jax.random.normal(jax.random.key(0), (4, size, size, 3))
    # Non-trivial statistics and BN affines, different per width.
    variables = random_variables(model, x)
    k = 0
    w = widths[k]
    small = arch.plain_structure(w)
    small_model = arch.module(small)
    small_shapes = jax.eval_shape(lambda: small_model.init(jax.random.key(3), x))
    # Switchable BN: sub-network k's private scale/bias/statistics become the plain network's.
    def pick(tree):
        if isinstance(tree, dict):
            out = {}
            for key, val in tree.items():
                base, _, idx = key.rpartition('_')
                if idx.isdigit() and base in ('scale', 'bias', 'mean', 'var'):
                    if int(idx) == k:
                        out[f'{base}_0' if base in ('mean', 'var') else base] = val
                else:
                    out[key] = pick(val)
            return out
        return tree
    picked = {c: pick(v) for c, v in variables.items()}
    sliced = _slice_to(picked, small_shapes)
    got_fn = jitted_apply(model, variables, subnet=k)
    want_fn = jitted_apply(small_model, sliced)
    for train in (False, True):
        np.testing.assert_allclose(got_fn(x, train), want_fn(x, train), rtol=1e-5, atol=1e-5)


def test_zpm_add_equals_explicit_zero_pad_formula():
    rng = np.random.default_rng(0)
    C = 12
    body_mask = np.sort(rng.choice(C, 5, replace=False))
    short_mask = np.sort(rng.choice(C, 7, replace=False))
    fused = np.union1d(body_mask, short_mask)
    body_order = rng.permutation(5)  # body channels arrive in sorted (importance) order
    body = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    short = rng.normal(size=(2, 3, 3, 7)).astype(np.float32)
    # The release's formula: scatter each branch into a zero stream of width C, add, compact.
    stream = np.zeros((2, 3, 3, C), np.float32)
    stream[..., body_mask[body_order]] = body
    stream[..., short_mask] += short
    want = stream[..., fused]
    # The same as index arrays for ZPMAdd.
    pos = {c: p for p, c in enumerate(fused)}
    body_idx = np.full(len(fused), 5)
    for j, c in enumerate(body_mask[body_order]):
        body_idx[pos[c]] = j
    short_idx = np.full(len(fused), 7)
    for j, c in enumerate(short_mask):
        short_idx[pos[c]] = j
    mod = layers.ZPMAdd(stream_sizes=(len(fused),), body_counts=(5,), short_counts=(7,))
    masks = {'masks': {'fused_0': jnp.asarray(fused), 'body_0': jnp.asarray(body_idx),
                       'short_0': jnp.asarray(short_idx)}}
    got, got_fused = mod.apply(masks, body, short, 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got_fused, fused)


@pytest.mark.parametrize('kernel_size', [1, 3])
def test_placement_folded_into_conv_and_bn_equals_placing_their_output(kernel_size):
    """A junction's last conv + BN given ``out_index`` write the stream layout directly; that
    equals running them unplaced and gathering the output (train and eval, and the
    running statistics each channel accumulates)."""
    rng = np.random.default_rng(1)
    full, n, stream = 10, 6, 9  # 6 of 10 channels kept, placed in a 9-wide stream
    index = np.full(stream, n, np.int32)
    index[rng.choice(stream, n, replace=False)] = rng.permutation(n)
    index = jnp.asarray(index)
    x = jnp.asarray(rng.normal(size=(4, 5, 5, 3)), jnp.float32)
    conv = layers.SlimConv(in_features=3, features=full, kernel_size=kernel_size)
    bn = layers.SlimBatchNorm(counts=(n, full))
    conv_vars = conv.init(jax.random.key(0), x)
    bn_vars = bn.init(jax.random.key(1), jnp.zeros((1, 1, 1, n)), 0, False)
    bn_vars = {'params': {'scale': jnp.asarray(rng.uniform(0.5, 1.5, full), jnp.float32),
                          'bias': jnp.asarray(rng.normal(size=full), jnp.float32)},
               'batch_stats': {**bn_vars['batch_stats'],
                               'mean_0': jnp.asarray(rng.normal(size=n), jnp.float32),
                               'var_0': jnp.asarray(rng.uniform(0.5, 2, n), jnp.float32)}}
    plain = conv.apply(conv_vars, x, n)
    placed = conv.apply(conv_vars, x, n, None, index)
    absent = np.asarray(index) == n
    want = np.where(absent, 0, np.asarray(plain)[..., np.minimum(np.asarray(index), n - 1)])
    np.testing.assert_allclose(placed, want, rtol=1e-5, atol=1e-5)
    for train in (False, True):
        y, new = bn.apply(bn_vars, plain, 0, train, mutable=['batch_stats'])
        y_placed, new_placed = bn.apply(bn_vars, placed, 0, train, index,
                                        mutable=['batch_stats'])
        want = np.where(absent, 0, np.asarray(y)[..., np.minimum(np.asarray(index), n - 1)])
        np.testing.assert_allclose(y_placed, want, rtol=1e-5, atol=1e-5)
        for key in ('mean_0', 'var_0'):
            np.testing.assert_allclose(new_placed['batch_stats'][key], new['batch_stats'][key],
                                       rtol=1e-5, atol=1e-6)
        if train:  # the statistics really moved, so the comparison above means something
            assert not np.allclose(new['batch_stats']['mean_0'], bn_vars['batch_stats']['mean_0'])


def _zpm_structure(arch, table, counts, orders, stream_order=APPENDED):
    """A ZPM structure of two sub-networks (``counts[1]`` full) with the given SCS orders:
    ``(structure, stream sizes, masks)``; streams in ``stream_order`` (as pruning makes them,
    or the layout of earlier runs)."""
    sizes, masks, _ = zpm.zpm_masks(table, counts, orders)
    if stream_order == ASCENDING:
        masks = zpm.release_layout(table, masks)
    structure = Structure(arch.name, 'spnet', table.group_names,
                          tuple(counts[1].values()), tuple(tuple(c.values()) for c in counts),
                          tuple(j.name for j in table.junctions),
                          tuple(map(tuple, sizes)), stream_order=stream_order).validate(table)
    return structure, sizes, masks


@pytest.mark.parametrize('name', ['resnet50', 'resnet18', 'mobilenet_v2'] + [
    pytest.param(n, marks=pytest.mark.slow) for n in _SLOW_SHAPES])
def test_zpm_model_runs_every_subnet(name):
    arch = get_arch(name, num_classes=5, stem='small' if name == 'resnet18' else None,
                    full_width=0.5)
    table = arch.table(zpm=True)
    counts = [{g.name: max(1, g.size // 2) for g in table.groups},
              {g.name: g.size for g in table.groups}]
    # Branches keep their first channels (identity order): unions are then prefixes too.
    orders = {g.name: np.arange(g.size) for g in table.groups}
    structure, sizes, masks = _zpm_structure(arch, table, counts, orders)
    model = arch.module(structure)
    x = jnp.ones((2, 32, 32, 3))
    variables = random_variables(model, x, masks=masks)
    outs = [jitted_apply(model, variables, subnet=k)(x, True) for k in (0, 1)]
    assert all(o.shape == (2, 5) and np.isfinite(o).all() for o in outs)
    assert not np.allclose(outs[0], outs[1])


def _activation_gathers(fn, *args, batch: int) -> int:
    """Gathers in ``fn``'s jaxpr (forward and backward) whose operand is a batch of
    activations (NHWC with the batch dimension), not a weight."""
    count = 0

    def walk(jaxpr):
        nonlocal count
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == 'gather':
                shape = eqn.invars[0].aval.shape
                count += len(shape) == 4 and shape[0] == batch
            for value in eqn.params.values():
                for v in value if isinstance(value, (tuple, list)) else (value,):
                    if hasattr(v, 'eqns'):
                        walk(v)
                    elif hasattr(getattr(v, 'jaxpr', None), 'eqns'):
                        walk(v.jaxpr)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return count


@pytest.mark.parametrize('stream_order', [APPENDED, ASCENDING])
def test_zpm_junctions_move_activations_only_at_stream_entries_and_growth(stream_order):
    """The junction is cheap: a branch's placement lives in its conv's weights. In the
    'appended' stream order (what pruning makes) a shortcut is a prefix of the stream and is
    zero-padded: no activation gather at all. In the earlier 'ascending' order the gathers
    left are a stream's entry (the stem feeding an identity block) and identity shortcuts
    where the stream grows; the full network has just the entry."""
    arch = get_arch('resnet20', num_classes=5, stem='small', full_width=1.0)
    table = arch.table(zpm=True)
    rng = np.random.default_rng(3)
    counts = [{g.name: max(1, g.size // 2) for g in table.groups},
              {g.name: g.size for g in table.groups}]
    orders = {g.name: rng.permutation(g.size) for g in table.groups}  # unions grow
    structure, sizes, masks = _zpm_structure(arch, table, counts, orders, stream_order)
    model = arch.module(structure)
    batch = 7
    x = jnp.ones((batch, 16, 16, 3))
    variables = random_variables(model, x, masks=masks)
    identity = [j.shortcut is None for j in table.junctions]
    for k in (0, 1):
        grows = sum(ident and sizes[k][j] > sizes[k][j - 1]
                    for j, ident in enumerate(identity) if j > 0)
        assert (k == 0) == (grows > 0)  # the pruned sub-network's streams really grow

        def loss(params, k=k):
            out, _ = model.apply({**variables, 'params': params}, x, subnet=k, train=True,
                                 mutable=['batch_stats'])
            return jnp.sum(out)

        # 1 entry per stream that starts at an identity block: the stem (stage 1).
        want = 1 + grows if stream_order == ASCENDING else 0
        assert _activation_gathers(lambda v, k=k: model.apply(v, x, subnet=k), variables,
                                   batch=batch) == want
        # The backward pass adds no gathers (a gather's transpose is a scatter-add).
        assert _activation_gathers(jax.grad(loss), variables['params'], batch=batch) == want


def test_registry_has_the_issue_architectures():
    for name in ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152', 'resnet20',
                 'resnet56', 'vgg19', 'mobilenet_v1', 'mobilenet_v2', 'resnetd50', 'resnetd101',
                 'resnetd152', *(f'efficientnet_b{i}' for i in range(8))):
        assert name in REGISTRY
    # ResNet-101/152 have the standard depth: count the 3x3 convs (one per bottleneck).
    for name, blocks in (('resnet101', 33), ('resnet152', 50), ('resnet56', 27)):
        table = get_arch(name).table()
        assert sum(g.name.endswith('/conv2') or g.name.endswith('/conv1') and name == 'resnet56'
                   for g in table.groups) == blocks


def test_mobilenet_v1_widths_are_the_releases_int_c_times_w():
    """The release builds MobileNetV1 channels as int(c * w): at x1.3 the stem, block 1 and
    the last block have 41 / 83 / 1331 channels (make-divisible would give 40 / 80 / 1328)."""
    sizes = {g.name: g.size for g in get_arch('mobilenet_v1', full_width=1.3).table().groups}
    assert (sizes['stem_conv'], sizes['block1/pw_conv'], sizes['block13/pw_conv']) == (
        41, 83, 1331)
    assert sizes['block6/pw_conv'] == 665  # int(512 * 1.3)
    sizes = {g.name: g.size for g in get_arch('mobilenet_v1', full_width=1.5).table().groups}
    assert (sizes['stem_conv'], sizes['block13/pw_conv']) == (48, 1536)


@pytest.mark.parametrize('name', ['resnet20', 'resnet50', 'resnetd50', 'mobilenet_v2',
                                  'efficientnet_b0'])
def test_block_wiring_follows_the_tables_junctions(name):
    """Each block's precomputed wiring: its junction's sizes and kind of shortcut are the
    table's (a projection, the layer the stream starts from, or the stream before)."""
    arch = get_arch(name, num_classes=5, full_width=0.5 if name != 'resnet20' else 1.0)
    table = arch.table(zpm=True)
    counts = [{g.name: max(1, g.size // 2) for g in table.groups},
              {g.name: g.size for g in table.groups}]
    orders = {g.name: np.random.default_rng(1).permutation(g.size) for g in table.groups}
    structure, _, _ = _zpm_structure(arch, table, counts, orders)
    if name.startswith('resnet'):
        _, blocks = resnet.block_specs(arch.depth, 1.0)
        wiring = dict(zip((b.name for b in blocks), resnet.block_wiring(structure, blocks),
                          strict=True))
    else:
        _, specs, _ = arch.block_specs(1.0)
        wiring = dict(zip((b.name for b in specs), mobilenet_v2.block_wiring(structure, specs),
                          strict=True))
    junctions = {j.name: j for j in table.junctions}
    assert {n for n, w in wiring.items() if w.junction is not None} == set(junctions)
    for j in table.junctions:
        w = wiring[j.name].junction
        assert w.stream_sizes == structure.stream_sizes_of(j.name)
        assert w.body_counts == structure.counts_of(j.body)
        if j.shortcut is None:
            assert w.shortcut == common.IDENTITY
        else:
            assert w.short_counts == structure.counts_of(j.shortcut)
            assert w.shortcut == (common.PROJECTION if j.shortcut.endswith('proj_conv')
                                  else common.ENTRY)
