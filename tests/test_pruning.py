"""Pruning as pure functions: thresholds, counts, floors, multi-base, SCS, ZPM, targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import fresh_statistics, jitted_apply, random_variables

from spnet_jax.core.channels import ChannelGroup, ChannelTable, Junction, Stream
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.models import get_arch
from spnet_jax.pruning import IMPORTANCE, plan, prune, scs, threshold, zpm
from spnet_jax.pruning.multibase import base_floors


def test_global_threshold_is_the_release_formula():
    pool = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 1.0])
    # sorted: 0.1 .. 1.0; keep 0.35 -> index int(10 * 0.65) = 6 -> 0.7
    assert threshold.global_threshold(pool, 0.35) == pytest.approx(0.7)
    assert threshold.global_threshold(pool, 1.0) == pytest.approx(0.1)
    # The index is computed in float64: int(26560 * (1 - 0.6)) = 10624 (float32 gives 10623).
    big = np.arange(26560, dtype=np.float32)
    assert threshold.global_threshold(big, 0.6) == 10624


def _table():
    return ChannelTable('toy', (
        ChannelGroup('a', 10, ('a',), ('a_bn',), ('a_bn',), (('b', 2),)),
        ChannelGroup('b', 40, ('b',), ('b_bn',), ('b_bn',), zpm_role='end'),
        ChannelGroup('c', 40, ('c',), ('c_bn',), ('c_bn',), zpm_role='entry'),
    ))


def test_counts_are_strictly_above_threshold_with_floors():
    table = _table()
    floors = threshold.floors(table, 0.1)
    # 10% of the table's channels (the base being pruned); halved for block ends and shortcuts.
    assert floors == {'a': 1, 'b': 2, 'c': 4}
    scores = {'a': np.linspace(0, 1, 10), 'b': np.zeros(40), 'c': np.full(40, 0.5)}
    counts = threshold.layer_counts(scores, 0.5, floors, 1)
    # a: 0.555.. 0.666 0.777 0.888 1.0 > 0.5 -> 5 (0.5 itself is not above); b, c: floors.
    assert counts == {'a': 5, 'b': 2, 'c': 4}


def test_floors_come_from_the_base_being_pruned():
    """SPEC section 3: an x0.75 ResNet-50 base floors layer4's 512-channel convs at
    int(384 * 0.1) = 38 and its ZPM block ends (2048) at int(1536 * 0.1 / 2) = 76; VGG floors
    at its x1.0 counts whatever the base (int(512 * 0.1) = 51)."""
    resnet = get_arch('resnet50')
    floors = base_floors(resnet, 0.75, True, 0.1)
    assert floors['layer4_2/conv1'] == 38 and floors['layer4_2/conv3'] == 76
    assert floors['layer4_0/proj_conv'] == 76 and floors['stem_conv'] == 4
    assert base_floors(resnet, 1.0, True, 0.1)['layer4_2/conv1'] == 51
    vgg = get_arch('vgg19', full_width=0.5)
    assert base_floors(vgg, 0.25, False, 0.1)['conv15'] == 51
    assert base_floors(vgg, 0.25, False, 0.1)['conv0'] == 6


def test_zpm_masks_match_a_hand_worked_stream():
    table = ChannelTable('toy', (
        ChannelGroup('e0', 6, ('e0',), ('e0_bn',), ('e0_bn',), zpm_role='end'),
        ChannelGroup('p0', 6, ('p0',), ('p0_bn',), ('p0_bn',), zpm_role='shortcut'),
        ChannelGroup('e1', 6, ('e1',), ('e1_bn',), ('e1_bn',), zpm_role='end'),
    ), (Stream('s', 6, (Junction('j0', 'e0', 'p0'), Junction('j1', 'e1', None))),))
    orders = {'e0': np.array([5, 0, 3, 1, 2, 4]), 'p0': np.array([1, 2, 0, 3, 4, 5]),
              'e1': np.array([4, 3, 2, 1, 0, 5])}
    counts = [{'e0': 2, 'p0': 1, 'e1': 2}]
    # 'appended' (what pruning makes): the shortcut's channels first, then the body's new ones.
    sizes, masks, fused = zpm.zpm_masks(table, counts, orders)
    np.testing.assert_array_equal(fused[0]['j0'], [1, 5, 0])  # p0's {1}, then e0's 5, 0
    np.testing.assert_array_equal(masks['j0']['zpm']['body_0'], [2, 0, 1])
    np.testing.assert_array_equal(masks['j0']['zpm']['short_0'], [0, 1, 1])
    # j1: j0's stream in its order, then e1's new channels 4, 3: the identity is a prefix.
    np.testing.assert_array_equal(fused[0]['j1'], [1, 5, 0, 4, 3])
    np.testing.assert_array_equal(masks['j1']['zpm']['body_0'], [2, 2, 2, 0, 1])
    np.testing.assert_array_equal(masks['j1']['zpm']['short_0'], [0, 1, 2, 3, 3])
    assert sizes == [[3, 5]]
    # The release's layout (runs made before 2026-12-01, `Structure.stream_order`
    # 'ascending'): the union in original channel order.
    old = zpm.release_layout(table, masks)
    # j0: body keeps {5, 0}, shortcut keeps {1}: fused {0, 1, 5}.
    np.testing.assert_array_equal(old['j0']['zpm']['fused_0'], [0, 1, 5])
    # body channel 0 is original 5 -> position 2; body channel 1 is original 0 -> position 0.
    np.testing.assert_array_equal(old['j0']['zpm']['body_0'], [1, 2, 0])  # 2 = none
    np.testing.assert_array_equal(old['j0']['zpm']['short_0'], [1, 0, 1])  # 1 = none
    # j1: body keeps {4, 3}; identity shortcut is j0's stream {0, 1, 5}: fused {0,1,3,4,5}.
    np.testing.assert_array_equal(old['j1']['zpm']['fused_0'], [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(old['j1']['zpm']['body_0'], [2, 2, 1, 0, 2])
    np.testing.assert_array_equal(old['j1']['zpm']['short_0'], [0, 1, 3, 3, 2])
    # Masks already in that layout are left as they are.
    again = zpm.release_layout(table, old)
    assert jax.tree.all(jax.tree.map(np.array_equal, again, old))


@pytest.mark.parametrize('name,widths,ratios,shape', [
    ('resnet20', [1.0], [0.3, 0.6], (32, 32, 3)),
    # ~2 min on 2 cores: the default run keeps ResNet-20's streams, -m slow adds these.
    pytest.param('mobilenet_v2', [1.0, 1.3], [0.5, 0.6], (32, 32, 3), marks=pytest.mark.slow)])
def test_stream_orders_compute_the_same_network(name, widths, ratios, shape):
    """A network pruned now (streams 'appended': shortcuts zero-padded) computes what the same
    network in the earlier layout ('ascending' masks, shortcuts gathered) computes."""
    import dataclasses

    from spnet_jax.core.structure import APPENDED, ASCENDING
    arch = get_arch(name, num_classes=5, full_width=widths[-1])
    bases = _bases(name, widths)
    structure, variables, _ = prune(arch, bases, widths, keep_ratios=ratios,
                                    image_size=shape[0], in_channels=shape[2], zpm='release',
                                    round_to=1)
    assert structure.stream_order == APPENDED
    scores = IMPORTANCE['bn'](bases[-1], arch.table(width=widths[-1], zpm=True))[0]
    counts = [dict(zip(structure.groups, c, strict=True)) for c in structure.counts]
    _, masks, _ = zpm.zpm_masks(arch.table(zpm=True), counts, scs.sort_orders(scores))
    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(a, b), masks,
                                     jax.tree.map(np.asarray, variables['masks'])))
    old_masks = zpm.release_layout(arch.table(zpm=True), variables['masks'])
    old = dataclasses.replace(structure, stream_order=ASCENDING)
    # Batch 8: training-mode BN over fewer values amplifies float reordering (the stream's
    # channel order changes the matmuls' summation order) beyond the helper's tolerance.
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, *shape)), jnp.float32)
    grew = False
    for k in range(structure.num_subnets):
        assert_same_function(
            _apply(arch.module(structure), variables, subnet=k),
            _apply(arch.module(old), {**variables, 'masks': old_masks}, subnet=k), x)
        size = dict(zip(structure.junctions, structure.stream_sizes[k], strict=True))
        for stream in arch.table(zpm=True).streams:
            sizes = [size[j.name] for j in stream.junctions]
            grew |= any(b > a for a, b in zip(sizes, sizes[1:], strict=False))
    assert grew  # some identity shortcut's stream grew: it was padded, not added as it is


def _random_variables(model, x, seed=0):
    return random_variables(model, x, seed)

def assert_same_function(apply_a, apply_b, x):
    """Equal logits in eval mode (tight) and train mode (batch statistics: float reordering
    is amplified where few values are normalised, so relative to the logits' scale)."""
    for train in (False, True):
        want, got = apply_a(x, train), apply_b(x, train)
        tol = (1e-4 if train else 1e-5) * float(np.abs(want).max()) + 1e-6
        np.testing.assert_allclose(got, want, rtol=0, atol=tol)


def _apply(model, variables, **kw):
    return jitted_apply(model, variables, **kw)


@pytest.mark.parametrize('name', ['resnet20', 'mobilenet_v2', 'vgg19'])
def test_scs_preserves_the_full_network(name):
    arch = get_arch(name, num_classes=5, full_width=0.25 if name != 'resnet20' else 1.0)
    table = arch.table(zpm=False)
    structure = arch.plain_structure()
    model = arch.module(structure)
    x = jax.random.normal(jax.random.key(9), (8, 64, 64, 3))
    variables = _random_variables(model, x)
    rng = np.random.default_rng(0)
    orders = {g.name: rng.permutation(g.size) for g in table.groups}
    permuted = scs.permute(variables, table, orders)
    assert_same_function(_apply(model, variables), _apply(model, permuted), x)
    # The weights really moved (and the inputs were not modified in place).
    moved = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(permuted['params']),
                                                   jax.tree.leaves(variables['params']))]
    assert sum(moved) >= len(moved) // 2


def _bases(arch_name, widths, num_classes=5, seed=0, **kw):
    """Random plain base networks (all-distinct BN scales, fresh statistics)."""
    out = []
    for i, w in enumerate(widths):
        a = get_arch(arch_name, num_classes=num_classes, full_width=w, **kw)
        m = a.module(a.plain_structure())
        v = fresh_statistics(_random_variables(m, jnp.zeros((1, 32, 32, 3)), seed + 10 * i))
        out.append(v)
    return out


@pytest.mark.parametrize('name,variant', [
    ('resnet18', 'release'), ('resnet50', 'release'), ('mobilenet_v2', 'release'),
    ('resnet20', 'none'), ('resnet50', 'aligned'), ('mobilenet_v2', 'aligned')])
def test_pruned_full_network_equals_its_base(name, variant):
    """SCS + ZPM (the stream restored to original order at full width) change nothing."""
    arch = get_arch(name, num_classes=5, stem='small' if name == 'resnet18' else None,
                    full_width=0.5 if name in ('resnet50', 'mobilenet_v2') else 1.0)
    (base,) = _bases(name, [arch.full_width], stem=arch.stem)
    structure, variables, _ = prune(arch, [base], [arch.full_width], keep_ratios=[0.4],
                                    image_size=32, zpm=variant, round_to=1)
    x = jax.random.normal(jax.random.key(3), (8, 64, 64, 3))
    plain = arch.module(arch.plain_structure())
    model = arch.module(structure)
    assert_same_function(_apply(plain, base), _apply(model, variables, subnet=-1), x)


def _gathered_subnet(arch, base, structure, orders, k):
    """Sub-network k the way a mask-and-gather implementation computes it: each layer keeps
    the (ascending) original indices of its top channels, gathered from unsorted weights."""
    table = arch.table()
    kept = {g.name: np.sort(orders[g.name][:structure.count(g.name, k)]) for g in table.groups}
    params = jax.tree.map(np.asarray, base['params'])
    flat = {}
    from flax import traverse_util
    flat = dict(traverse_util.flatten_dict(params, sep='/'))
    for g in table.groups:
        for p in (*g.producers, *g.followers):
            flat[f'{p}/kernel'] = flat[f'{p}/kernel'][..., kept[g.name]]
        for bn in g.bns:
            for leaf in ('scale', 'bias'):
                flat[f'{bn}/{leaf}'] = flat[f'{bn}/{leaf}'][kept[g.name]]
        for p, axis in g.consumers:
            flat[f'{p}/kernel'] = np.take(flat[f'{p}/kernel'], kept[g.name], axis=axis)
    single = Structure(structure.arch, 'spnet', structure.groups, structure.counts[k],
                       (structure.counts[k],))
    model = arch.module(single)
    stats = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    stats = jax.tree_util.tree_map_with_path(
        lambda p, s: (jnp.ones if 'var' in jax.tree_util.keystr(p) else jnp.zeros)(s.shape),
        stats['batch_stats'])
    return model, {'params': traverse_util.unflatten_dict(flat, sep='/'), 'batch_stats': stats}


@pytest.mark.parametrize('name', ['vgg19', 'mobilenet_v1'])
def test_prefix_slices_equal_gathered_unsorted_network(name):
    arch = get_arch(name, num_classes=5, full_width=0.25)
    (base,) = _bases(name, [0.25])
    scores = IMPORTANCE['bn'](base, arch.table())
    the_plan = plan(arch, [scores], [0.25], [0.3, 0.6], zpm_variant='none',
                    min_channels_ratio=0.1, round_to=1)
    structure, variables, _ = prune(arch, [base], [0.25], keep_ratios=[0.3, 0.6],
                                    image_size=32, zpm='none', round_to=1)
    assert structure == the_plan.structure
    model = arch.module(structure)
    x = jax.random.normal(jax.random.key(4), (8, 32, 32, 3))
    for k in (0, 1):
        ref_model, ref_vars = _gathered_subnet(arch, base, structure, the_plan.orders, k)
        assert_same_function(_apply(ref_model, ref_vars), _apply(model, variables, subnet=k), x)


def test_multibase_counts_from_each_base_channels_from_the_largest():
    arch = get_arch('vgg19', num_classes=5, full_width=0.5)
    bases = _bases('vgg19', [0.25, 0.5])
    s0 = IMPORTANCE['bn'](bases[0], get_arch('vgg19', full_width=0.25).table())
    s1 = IMPORTANCE['bn'](bases[1], arch.table())
    the_plan = plan(arch, [s0, s1], [0.25, 0.5], [0.7, 0.4], zpm_variant='none',
                    min_channels_ratio=0.1, round_to=1)
    # Floors are int(C * 0.1) of VGG's x1.0 layer list whatever the base (the release's cfg
    # is not width-scaled), capped by each base's own channels.
    floors = threshold.floors(get_arch('vgg19').table(), 0.1)
    want0 = threshold.layer_counts(s0[0], threshold.global_threshold(s0[1], 0.7), floors, 1)
    want1 = threshold.layer_counts(s1[0], threshold.global_threshold(s1[1], 0.4), floors, 1)
    S = the_plan.structure
    assert S.counts[0] == tuple(want0[g] for g in S.groups)
    assert S.counts[1] == tuple(want1[g] for g in S.groups)
    assert S.counts[2] == S.full
    for g in S.groups:  # sorted by the largest base's importance, descending
        np.testing.assert_array_equal(the_plan.orders[g], np.argsort(-s1[0][g], kind='stable'))
    # The slimmable network starts from the largest base: sorted BN scales.
    _, variables, _ = prune(arch, bases, [0.25, 0.5], keep_ratios=[0.7, 0.4], image_size=32,
                            zpm='none', round_to=1)
    got = np.asarray(variables['params']['bn0']['scale'])
    np.testing.assert_allclose(got, np.sort(np.asarray(bases[1]['params']['bn0']['scale']))[::-1])


def test_macs_targets_resnet50_two_bases():
    arch = get_arch('resnet50')
    bases = _bases('resnet50', [0.75, 1.0], num_classes=1000)
    structure, _, info = prune(arch, bases, [0.75, 1.0], macs_targets=[1.1e9, 2.3e9],
                               image_size=224, zpm='release', round_to=1, tolerance=0.01)
    from spnet_jax.core.cost import subnet_costs
    costs = subnet_costs(arch, structure, 224)
    for cost, target in zip(costs, [1.1e9, 2.3e9]):
        assert abs(cost.macs - target) <= 0.01 * target
    assert info['macs'][:2] == [c.macs for c in costs[:2]]
    assert all(0 < r < 1 for r in info['keep_ratios'])
    with pytest.raises(ConfigError, match='out of reach.*to'):
        prune(arch, bases, [0.75, 1.0], macs_targets=[3.5e9, 2.3e9], image_size=224, zpm='release',
              round_to=1, tolerance=0.01)


@pytest.mark.parametrize('kwargs,match', [
    ({'keep_ratios': [0.0, 0.5]}, r'keep ratio 0.0 is outside \(0, 1\]'),
    ({'keep_ratios': [0.5, 1.5]}, r'keep ratio 1.5 is outside'),
    ({'keep_ratios': [0.5]}, '1 keep ratios .* for 2 bases'),
    ({'keep_ratios': [0.5, 0.5], 'macs_targets': [1e6, 2e6]}, 'exactly one of'),
    ({'keep_ratios': [0.5, 0.5], 'importance': 'magic'}, 'prune.importance'),
    ({'keep_ratios': [0.5, 0.5], 'zpm': True}, r"prune.zpm=True is unknown; choose one of "
     r"'release' \(.*\); 'aligned' \(.*\); 'none'"),
    ({'keep_ratios': [0.5, 0.5], 'zpm': 'union'}, 'prune.zpm=.union. is unknown'),
])
def test_bad_prune_inputs_get_one_sentence(kwargs, match):
    arch = get_arch('vgg19', num_classes=5, full_width=0.5)
    bases = _bases('vgg19', [0.25, 0.5])
    with pytest.raises(ConfigError, match=match):
        prune(arch, bases, [0.25, 0.5], image_size=32, **{'zpm': 'none', 'round_to': 1,
                                                           **kwargs})


def test_bases_of_the_wrong_width_or_order_are_refused():
    arch = get_arch('vgg19', num_classes=5, full_width=0.5)
    bases = _bases('vgg19', [0.25, 0.5])
    with pytest.raises(ConfigError, match='strictly ascending'):
        prune(arch, bases[::-1], [0.5, 0.25], keep_ratios=[0.5, 0.5], zpm='none', round_to=1)
    with pytest.raises(ConfigError, match='does not match vgg19 at width 0.25'):
        prune(arch, [bases[1], bases[1]], [0.25, 0.5], keep_ratios=[0.5, 0.5], zpm='none',
              round_to=1)
    other = _bases('mobilenet_v1', [0.5])[0]
    with pytest.raises(ConfigError, match='not a vgg19 checkpoint'):
        prune(arch, [bases[0], other], [0.25, 0.5], keep_ratios=[0.5, 0.5], zpm='none', round_to=1)


def test_reinit_starts_bn_scales_at_the_recipes_init_bn_val():
    """Re-train recipes (VGG, MobileNetV1) start from fresh weights whose BN scales are the
    release's init_bn_val (0.5 in their finetune ymls), through the prune stage's path."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from configs import vgg19_cifar10
    from spnet_jax.train.settings import Settings
    from spnet_jax.train.stages import prune_bases

    config = vgg19_cifar10.get_config()
    config.model.full_width, config.base.widths = 0.5, (0.25, 0.5)
    config.prune.keep_ratios = (0.5, 0.6)
    settings = Settings.from_config(config)
    assert settings.prune.start == 'reinit' and settings.slim.bn_scale_init == 0.5
    bases = _bases('vgg19', [0.25, 0.5], num_classes=10)
    _, variables, _ = prune_bases(settings, bases, 32, 3)
    scales = [np.asarray(v['scale']) for k, v in variables['params'].items() if k.startswith('bn')]
    assert len(scales) == 16 and all(np.all(s == 0.5) for s in scales)
    # The weights are fresh, not the largest base's.
    assert not np.allclose(variables['params']['conv0']['kernel'],
                           bases[1]['params']['conv0']['kernel'])


def test_round_count_is_the_nearest_multiple_within_floor_and_size():
    r = threshold.round_count
    assert [r(c, 1, 64, 8) for c in (1, 3, 4, 11, 12, 13, 60, 64)] == [8, 8, 8, 8, 16, 16, 64,
                                                                        64]
    assert r(35, 35, 64, 8) == 40  # nearest (32) is below the floor: the floor rounded up
    assert r(21, 3, 22, 8) == 22 and r(24, 3, 26, 16) == 26  # never above the layer's size
    assert r(20, 3, 20, 16) == 16  # a whole layer too: the nearest multiple
    assert r(37, 5, 64, 1) == 37  # 1: the release's exact count
    # Non-decreasing in the count (the MACs bisection relies on it), for any floor and size.
    for n in (4, 8, 16):
        for floor in (1, 5, 9):
            for size in (10, 24, 37):
                got = [r(c, floor, size, n) for c in range(floor, size + 1)]
                assert got == sorted(got) and all(floor <= g <= size for g in got)
                assert all(g % n == 0 or g == size for g in got)


@pytest.mark.parametrize('variant', ['none', 'release', 'aligned'])
def test_round_to_gives_multiples_and_keeps_floors_scs_and_masks(variant):
    """Multi-base ResNet-20 with ``round_to=8``: every pruned count a multiple of 8 (or the
    layer's whole size in its base), at least its floor, sub-networks still nested prefixes,
    and the network still the largest base when all channels are kept."""
    arch = get_arch('resnet20', num_classes=5)
    widths = [0.5, 1.0]
    bases = _bases('resnet20', widths)
    structure, variables, _ = prune(arch, bases, widths, keep_ratios=[0.45, 0.35],
                                    image_size=32, zpm=variant, round_to=8)
    exact, _, _ = prune(arch, bases, widths, keep_ratios=[0.45, 0.35], image_size=32,
                        zpm=variant, round_to=1)
    assert structure.counts != exact.counts  # the option did something
    zpm_on = variant != 'none'
    base_tables = [arch.table(width=w, zpm=zpm_on) for w in widths]
    for k in range(2):
        floors = base_floors(arch, widths[k], zpm_on, 0.1)
        sizes = {g.name: g.size for g in base_tables[k].groups}
        for g, c in zip(structure.groups, structure.counts[k], strict=True):
            assert c % 8 == 0 or c == sizes[g], (k, g, c)
            assert floors[g] <= c <= sizes[g], (k, g, c)
    for g_small, g_big in zip(structure.counts[0], structure.counts[1], strict=True):
        assert g_small <= g_big
    # ZPM streams cover each branch: 'release' streams are unions of the rounded branches
    # (not rounded themselves), 'aligned' streams the longest branch, so rounded too.
    if zpm_on:
        for k in range(2):
            streams = dict(zip(structure.junctions, structure.stream_sizes[k], strict=True))
            counts = dict(zip(structure.groups, structure.counts[k], strict=True))
            for j in arch.table(zpm=True).junctions:
                assert streams[j.name] >= counts[j.body]
                if variant == 'aligned':
                    assert streams[j.name] % 8 == 0 or streams[j.name] in sizes.values()


def test_macs_targets_are_met_with_rounded_counts():
    arch = get_arch('resnet50')
    bases = _bases('resnet50', [0.75, 1.0], num_classes=1000)
    structure, _, info = prune(arch, bases, [0.75, 1.0], macs_targets=[1.1e9, 2.3e9],
                               image_size=224, round_to=16, zpm='release', tolerance=0.01)
    from spnet_jax.core.cost import subnet_costs
    costs = subnet_costs(arch, structure, 224)
    for cost, target in zip(costs, [1.1e9, 2.3e9], strict=False):
        assert abs(cost.macs - target) <= 0.01 * target
    full = dict(zip(structure.groups, structure.full, strict=True))
    for k, base in enumerate((0.75, 1.0)):
        sizes = {g.name: g.size for g in arch.table(width=base, zpm=True).groups}
        for g, c in zip(structure.groups, structure.counts[k], strict=True):
            assert c % 16 == 0 or c == sizes[g] <= full[g], (k, g, c)
    assert info['macs'][:2] == [c.macs for c in costs[:2]]


@pytest.mark.parametrize('value', [0, 0.7, '1%'])
def test_bad_macs_tolerance_is_one_sentence(value):
    import ml_collections

    from configs import default
    from spnet_jax.pruning.recipe import PruneSettings
    config = default.get_config()
    config.prune = ml_collections.ConfigDict({**config.prune.to_dict(), 'macs_tolerance': value})
    with pytest.raises(ConfigError, match='prune.macs_tolerance=.* must be a fraction in'):
        PruneSettings.from_config(config.prune)


def test_a_coarse_round_to_names_both_ways_out():
    arch = get_arch('resnet20', num_classes=5)
    bases = _bases('resnet20', [1.0])
    targets = [7.78e6 * 32 * 32 / (28 * 28), 1.747e7 * 32 * 32 / (28 * 28)]
    with pytest.raises(ConfigError, match=r'prune.round_to \(now 8\).*prune.macs_tolerance'):
        prune(arch, bases, [1.0], macs_targets=targets, image_size=32, zpm='none', round_to=8,
              tolerance=0.001)


@pytest.mark.parametrize('value', [0, 2.5, True, '8'])
def test_bad_round_to_is_one_sentence(value):
    import ml_collections

    from configs import default
    from spnet_jax.pruning.recipe import PruneSettings
    config = default.get_config()
    config.prune = ml_collections.ConfigDict({**config.prune.to_dict(), 'round_to': value})
    with pytest.raises(ConfigError, match=r'prune.round_to=.* must be a whole number >= 1'):
        PruneSettings.from_config(config.prune)
