"""``prune.zpm='aligned'`` (issue 28): ZPM whose streams do not widen.

The branches of a stream share one channel order and each keeps a prefix of it, so a stream is
as wide as its widest branch so far, every junction is a zero-pad and an add, and every read
of a stream a prefix slice. The oracle for the function is the release's junction machinery:
the same counts and orders with the union ('appended') masks and gathers must compute the same
sub-networks, since a union of prefixes of one order is the longest of them.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import check_standalone_subnetworks, fresh_statistics, jitted_apply, random_variables
from test_models import _activation_gathers
from test_pruning import assert_same_function

import spnet_jax
from spnet_jax.core import cost
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import APPENDED, PREFIX
from spnet_jax.models import get_arch
from spnet_jax.pruning import IMPORTANCE, multibase, prune, recipe, zpm


def _bases(name, widths, shape=(32, 32, 3), num_classes=5, **kw):
    out = []
    for i, w in enumerate(widths):
        arch = get_arch(name, num_classes=num_classes, full_width=w, **kw)
        model = arch.module(arch.plain_structure())
        out.append(fresh_statistics(random_variables(model, jnp.zeros((1, *shape)), seed=i)))
    return out


@pytest.fixture(scope='module')
def resnet20():
    """ResNet-20 pruned 'aligned' from one base to keep ratios 0.3 / 0.6 (and the full)."""
    arch = get_arch('resnet20', num_classes=5)
    (base,) = _bases('resnet20', [1.0])
    structure, variables, _ = prune(arch, [base], [1.0], zpm='aligned', round_to=1,
                                    keep_ratios=[0.3, 0.6], image_size=32)
    return arch, base, structure, variables


def _streams_are_the_widest_branch_prefix(arch, structure):
    table = arch.table(zpm=True)
    for k in range(structure.num_subnets):
        count = dict(zip(structure.groups, structure.counts[k], strict=True))
        for stream in table.streams:
            widest = 0
            for j in stream.junctions:
                widest = max(widest, count[j.body], count[j.shortcut] if j.shortcut else 0)
                assert structure.stream_size(j.name, k) == widest, (k, j.name)


def test_aligned_streams_are_as_wide_as_their_widest_branch_and_nested(resnet20):
    arch, _, structure, variables = resnet20
    assert structure.stream_order == PREFIX and structure.zpm_variant == 'aligned'
    _streams_are_the_widest_branch_prefix(arch, structure)
    # Nested: a larger sub-network has at least the channels of a smaller one, everywhere.
    for small, big in zip(structure.counts, structure.counts[1:], strict=False):
        assert all(a <= b for a, b in zip(small, big, strict=True))
    for small, big in zip(structure.stream_sizes, structure.stream_sizes[1:], strict=False):
        assert all(a <= b for a, b in zip(small, big, strict=True))
    # Every junction is a prefix: fused = the first positions, each branch on its first ones.
    for j in arch.table(zpm=True).junctions:
        masks = variables['masks'][j.name]['zpm']
        for k in range(structure.num_subnets):
            size = structure.stream_size(j.name, k)
            np.testing.assert_array_equal(masks[f'fused_{k}'], np.arange(size))
            body = structure.count(j.body, k)
            np.testing.assert_array_equal(masks[f'body_{k}'], np.minimum(np.arange(size), body))
    # Narrower than the release's unions of the same keep ratios.
    release, _, _ = prune(arch, [_bases('resnet20', [1.0])[0]], [1.0], zpm='release',
                          round_to=1, keep_ratios=[0.3, 0.6], image_size=32)
    assert sum(structure.stream_sizes[0]) < sum(release.stream_sizes[0])


@pytest.mark.parametrize('name,widths', [
    ('resnet20', [1.0]),
    pytest.param('mobilenet_v2', [0.25, 0.35], marks=pytest.mark.slow)])  # 25-27 s
def test_aligned_subnetworks_equal_the_same_channels_through_the_release_junctions(name,
                                                                                  widths):
    """Pads and prefix reads compute what the release's gathers compute for the same channels
    (ResNet: projections and the stem's entry; MobileNetV2: multi-base, inverted residuals)."""
    arch = get_arch(name, num_classes=5, full_width=widths[-1])
    bases = _bases(name, widths)
    ratios = [0.3, 0.6] if len(widths) == 1 else [0.5, 0.6]
    structure, variables, _ = prune(arch, bases, widths, zpm='aligned', round_to=1,
                                    keep_ratios=ratios, image_size=32)
    table = arch.table(zpm=True)
    scores, _ = IMPORTANCE['bn'](bases[-1], table)
    orders = multibase.orders_of(table, scores, 'aligned')
    counts = [dict(zip(structure.groups, c, strict=True)) for c in structure.counts]
    sizes, masks, _ = zpm.zpm_masks(table, counts, orders)
    assert tuple(map(tuple, sizes)) == structure.stream_sizes  # union of prefixes = longest
    union = dataclasses.replace(structure, stream_order=APPENDED)
    # The release's layout: consumers of a stream left in original order (no stream orders).
    group_orders = {g.name: orders[g.name] for g in table.groups}
    the_plan = multibase.Plan(union, group_orders, masks, (), (), ())
    gathered = recipe.slimmable_variables(arch, the_plan, bases[-1])
    x = jax.random.normal(jax.random.key(2), (8, 32, 32, 3))
    for k in range(structure.num_subnets):
        assert_same_function(jitted_apply(arch.module(union), gathered, subnet=k),
                             jitted_apply(arch.module(structure), variables, subnet=k), x)


def test_aligned_programs_gather_nothing_and_execute_their_logical_macs(resnet20):
    arch, _, structure, variables = resnet20
    model = arch.module(structure)
    batch = 3
    x = jnp.ones((batch, 32, 32, 3))
    costs = cost.subnet_costs(arch, structure, 32)
    for c in costs:
        k = c.subnet
        jaxpr = jax.make_jaxpr(lambda v, k=k: model.apply(v, x, subnet=k))(variables)
        assert 'gather' not in str(jaxpr), k  # not even of weights

        def loss(params, k=k):
            out, _ = model.apply({**variables, 'params': params}, x, subnet=k, train=True,
                                 mutable=['batch_stats'])
            return jnp.sum(out)

        assert _activation_gathers(jax.grad(loss), variables['params'], batch=batch) == 0
        lowered = jax.jit(lambda v, x, k=k: model.apply(v, x, subnet=k)).lower(variables, x)
        assert cost.executed_macs(lowered.as_text()) == c.macs * batch == c.executed_macs * batch


def test_aligned_subnetworks_export_as_standalone_networks(resnet20):
    arch, _, structure, variables = resnet20
    net = spnet_jax.SlimmableNetwork(arch, structure, variables, image_size=32)
    check_standalone_subnetworks(net, jax.random.normal(jax.random.key(3), (4, 32, 32, 3)))


def test_aligned_macs_targets_are_met_with_rounded_counts_and_streams():
    """ResNet-50, the release's two bases, round_to=8: within 1% of each target, every pruned
    count and every stream a multiple of 8 (or its layer's whole size in its base)."""
    arch = get_arch('resnet50')
    bases = _bases('resnet50', [0.75, 1.0], num_classes=1000)
    targets = [1.1e9, 2.3e9]
    structure, _, info = prune(arch, bases, [0.75, 1.0], zpm='aligned', round_to=8,
                               macs_targets=targets, tolerance=0.01, image_size=224)
    costs = cost.subnet_costs(arch, structure, 224)
    for c, target in zip(costs, targets, strict=False):
        assert abs(c.macs - target) <= 0.01 * target
        assert c.executed_macs == c.macs
    assert info['macs'][:2] == [c.macs for c in costs[:2]]
    for k, base in enumerate((0.75, 1.0)):
        sizes = {g.name: g.size for g in arch.table(width=base, zpm=True).groups}
        for g, c in zip(structure.groups, structure.counts[k], strict=True):
            assert c % 8 == 0 or c == sizes[g], (k, g, c)
        for s in structure.stream_sizes[k]:
            assert s % 8 == 0 or s in sizes.values(), (k, s)
    _streams_are_the_widest_branch_prefix(arch, structure)


# ------------------------------------------------------------------ the options' refusals
def _settings(**prune_fields):
    from configs import fashion_mnist
    from spnet_jax.train.settings import Settings
    config = fashion_mnist.get_config()
    config.data.data_dir = None  # the checks below come before the data's
    source = config.to_dict()
    source['prune']['latency_widths'] = ()  # the MACs targets (the options under test)
    source['prune'].update(prune_fields)
    return Settings.from_config(source)


def test_saved_boolean_zpm_reads_as_release_or_none():
    assert _settings(zpm=True).prune.zpm == 'release'
    assert _settings(zpm=False).prune.zpm == 'none'
    assert _settings(zpm='aligned').prune.zpm == 'aligned'


@pytest.mark.parametrize('fields,sentence', [
    ({'zpm': 'fast'}, r"^prune.zpm='fast' is unknown; choose one of 'release' \(.*\); "
                      r"'aligned' \(.*\); 'none' \(.*\)\.$"),
    # Without ZPM, ResNet-20's stages (16-64 channels, one group each) move MACs by more than
    # 1% per 8 channels.
    ({'zpm': 'none', 'round_to': 8, 'macs_tolerance': 0.01},
     r'^prune.round_to=8 cannot meet prune.macs_targets\[0\]=7.784e\+06 within '
     r'prune.macs_tolerance=0.01: .*; use prune.round_to=[1-7] or less, or a larger '
     r'prune.macs_tolerance\.$'),
    ({'macs_targets': (), 'keep_ratios': (0.6, 0.3)},
     r'^prune.keep_ratios=\(0.6, 0.3\) must be strictly ascending with one base \(sub-network '
     r'0 is the smallest\); give them as \(0.3, 0.6\)\.$'),
])
def test_bad_pruning_options_are_refused_before_any_work(fields, sentence):
    with pytest.raises(ConfigError, match=sentence):
        _settings(**fields)


def test_a_round_to_that_meets_the_targets_passes():
    assert _settings(round_to=4, macs_tolerance=0.03, zpm='aligned').prune.round_to == 4
    assert _settings(round_to=1, macs_tolerance=0.01, zpm='release').prune.round_to == 1


def test_descending_keep_ratios_of_one_base_are_refused_by_prune_too():
    arch = get_arch('resnet20', num_classes=5)
    with pytest.raises(ConfigError, match=r'prune.keep_ratios=\(0.6, 0.3\) must be strictly '
                                          r'ascending with one base'):
        prune(arch, _bases('resnet20', [1.0]), [1.0], zpm='aligned', round_to=1,
              keep_ratios=[0.6, 0.3], image_size=32)
