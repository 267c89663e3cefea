"""EfficientNet-B0..B7 (the release's ``sp_efficientnet``): published costs, the squeeze-and-
excitation's place in the channel table, pruning and export, stochastic depth and dropout."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import SHARED_REFERENCE, check_standalone_subnetworks, random_variables

import spnet_jax
from spnet_jax.core import cost, sharding
from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.models import get_arch, mobilenet_v2
from spnet_jax.pruning import prune
from spnet_jax.train import loop, optim
from spnet_jax.train import state as state_lib
from spnet_jax.workdir import convert_torch, export

# torchvision's published figures (EfficientNet_B*_Weights.IMAGENET1K_V1: num_params, GFLOPS
# -- multiply-adds -- at its evaluation crop).
TORCHVISION = {
    'b0': (224, 5_288_548, 0.39), 'b1': (240, 7_794_184, 0.69),
    'b2': (288, 9_109_994, 1.09), 'b3': (300, 12_233_232, 1.83),
    'b4': (380, 19_341_616, 4.39), 'b5': (456, 30_389_784, 10.27),
    'b6': (528, 43_040_704, 19.07), 'b7': (600, 66_347_960, 37.75),
}


@pytest.mark.parametrize('variant', sorted(TORCHVISION))
def test_costs_equal_torchvisions_published_figures(variant):
    size, params, gmacs = TORCHVISION[variant]
    arch = get_arch(f'efficientnet_{variant}')
    (full,) = subnet_costs(arch, arch.plain_structure(), size)
    assert full.params == params
    assert round(full.macs / 1e9, 2) == gmacs


def test_b2_at_its_native_resolution_is_the_papers_1_0_billion():
    """Tan & Le (2019), table 2: B2 at 260 px, 1.0B FLOPs (multiply-adds)."""
    arch = get_arch('efficientnet_b2')
    assert arch.resolution == 260
    (full,) = subnet_costs(arch, arch.plain_structure(), 260)
    assert round(full.macs / 1e9, 2) == 0.99


def test_b0_costs_by_independent_arithmetic():
    """B0 from the paper's table 1 written out: stem 3x3/2 to 32, MBConv stages (expansion,
    kernel, stride, channels, repeats), SE to a quarter of the block's input channels with
    biased FCs, head 1x1 to 1280, classifier; every conv and BN counted at 224 px."""
    stages = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    params = 3 * 3 * 3 * 32 + 2 * 32
    macs = 3 * 3 * 3 * 32 * 112 * 112
    c_in, size = 32, 112
    for t, k, s, c_out, n in stages:
        for r in range(n):
            stride = s if r == 0 else 1
            hidden, out_size, se = c_in * t, size // stride, c_in // 4
            if t != 1:
                params += c_in * hidden + 2 * hidden
                macs += c_in * hidden * size * size
            params += k * k * hidden + 2 * hidden
            macs += k * k * hidden * out_size * out_size
            params += hidden * se + se + se * hidden + hidden
            macs += 2 * hidden * se
            params += hidden * c_out + 2 * c_out
            macs += hidden * c_out * out_size * out_size
            c_in, size = c_out, out_size
    params += 320 * 1280 + 2 * 1280 + 1280 * 1000 + 1000
    macs += 320 * 1280 * 7 * 7 + 1280 * 1000
    arch = get_arch('efficientnet_b0')
    (full,) = subnet_costs(arch, arch.plain_structure(), 224)
    assert (full.params, full.macs) == (params, macs)


def test_squeeze_and_excitation_is_coupled_to_its_blocks_depthwise_group():
    """The reducing FC reads the depthwise output (input axis 0), the expanding FC writes
    its gates (a producer); the first block, without expansion, couples to the stem."""
    arch = get_arch('efficientnet_b0')
    groups = {g.name: g for g in arch.table().groups}
    g = groups['block2/expand_conv']
    assert ('block2/se_reduce', 0) in g.consumers and ('block2/project_conv', 2) in g.consumers
    assert 'block2/se_expand' in g.producers and 'block2/dw_conv' in g.followers
    stem = groups['stem_conv']
    assert ('block1/se_reduce', 0) in stem.consumers and 'block1/se_expand' in stem.producers
    # The squeezed channels are not a pruned group but a derived one: not scored nor sorted,
    # sized per sub-network by the release's rule (`spnet_jax.pruning.derived`).
    assert not any('se_' in name for name in groups)
    squeeze = {g.name: g for g in arch.table().derived}['block2/se']
    assert squeeze.producers == ('block2/se_reduce',) and squeeze.consumers == (
        ('block2/se_expand', 0),) and squeeze.size == 16 // 4 and not squeeze.bns


def test_blocks_without_expansion_on_a_stream_prune_with_it():
    """B1-B7 repeat the first stage (expansion 1): block 2's depthwise conv, its BN and its
    SE run on the residual stream's channels, so without ZPM they join the stream's group;
    ZPM (which the release does not use for EfficientNet) is refused for them."""
    arch = get_arch('efficientnet_b1')
    groups = {g.name: g for g in arch.table().groups}
    stream = groups['stream1']
    assert 'block2/dw_conv' in stream.followers and 'block2/dw_bn' in stream.bns
    assert ('block2/se_reduce', 0) in stream.consumers and 'block2/se_expand' in stream.producers
    assert ('block2/project_conv', 2) in stream.consumers
    assert stream.producers[:2] == ('block1/project_conv', 'block2/project_conv')
    with pytest.raises(ConfigError, match='is not supported for efficientnet_b1'):
        arch.table(zpm=True)
    arch.table(zpm=False)  # and B0, whose first stage is one block, takes ZPM
    get_arch('efficientnet_b0').table(zpm=True)


@pytest.mark.slow  # ~35 s; the default run has B0's export and B1's table and fuzz tests
def test_pruned_b1_exports_the_same_function():
    arch = get_arch('efficientnet_b1', num_classes=5, full_width=0.25)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(3, 32, 32, 3)), jnp.float32)
    base = random_variables(arch.module(arch.plain_structure()), x, seed=4)
    structure, variables, _ = prune(arch, [base], [0.25], keep_ratios=[0.5], image_size=32,
                                    zpm='none', round_to=1)
    assert structure.count('stream1', 0) < structure.full_of('stream1')
    net = spnet_jax.SlimmableNetwork(arch, structure, variables, image_size=32)
    check_standalone_subnetworks(net, x)


def test_residual_blocks_are_the_stages_repeats_at_every_width():
    """At small widths two stages' channels can round to the same count; the blocks with a
    shortcut stay those of the full network, so every base has the same channel table."""
    arch = get_arch('efficientnet_b0')
    for width in (0.1, 0.25, 0.5, 1.0):
        _, specs, _ = arch.block_specs(width)
        assert [b.residual for b in specs] == [b.residual for b in arch.block_specs(1.0)[1]]
    assert get_arch('efficientnet_b0', full_width=0.1).table().group_names == \
        get_arch('efficientnet_b0', full_width=1.0).table().group_names


def test_stochastic_depth_grows_linearly_to_the_configured_rate():
    arch = get_arch('efficientnet_b3', stochastic_depth=0.3)
    _, specs, _ = arch.block_specs(1.0)
    rates = [b.drop_path for b in specs]
    assert rates[0] == 0.0 and rates == sorted(rates) and rates[-1] < 0.3
    assert np.allclose(np.diff(rates), 0.3 / len(specs))


def test_drop_path_drops_whole_examples_and_keeps_the_expectation():
    x = jnp.ones((4000, 2, 2, 3))
    y = np.asarray(mobilenet_v2.drop_path(x, 0.25, jax.random.key(0)))
    per_example = y.reshape(4000, -1)
    assert np.all((per_example == 0).all(1) | np.isclose(per_example, 1 / 0.75).all(1))
    assert abs((per_example[:, 0] == 0).mean() - 0.25) < 0.03
    assert abs(y.mean() - 1.0) < 0.05


@pytest.fixture(scope='module')
def small():
    arch = get_arch('efficientnet_b0', num_classes=5, full_width=0.25)
    model = arch.module(arch.plain_structure())
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 32, 32, 3)), jnp.float32)
    return arch, model, random_variables(model, x, seed=1), x


def test_dropout_and_stochastic_depth_act_only_in_training_with_a_dropout_rng(small):
    _, model, variables, x = small
    run = lambda **kw: np.asarray(model.apply(variables, x, mutable=['batch_stats'], **kw)[0])
    plain = run(train=True)
    np.testing.assert_array_equal(plain, run(train=True))  # no rng: deterministic
    a = run(train=True, rngs={'dropout': jax.random.key(1)})
    b = run(train=True, rngs={'dropout': jax.random.key(2)})
    assert not np.allclose(a, plain) and not np.allclose(a, b)
    np.testing.assert_array_equal(
        a, run(train=True, rngs={'dropout': jax.random.key(1)}))
    evaluation = np.asarray(model.apply(variables, x, train=False,
                                        rngs={'dropout': jax.random.key(1)}))
    np.testing.assert_array_equal(evaluation, np.asarray(model.apply(variables, x)))


@pytest.mark.parametrize('zpm', ['none', pytest.param('release', marks=pytest.mark.slow)])
def test_pruned_efficientnet_exports_the_same_function(small, zpm):
    """The release prunes EfficientNet without ZPM; with it the SE gates follow the
    streams' layout too."""
    arch, _, base, x = small
    structure, variables, _ = prune(arch, [base], [0.25], keep_ratios=[0.5], image_size=32,
                                    zpm=zpm, round_to=1)
    assert structure.count('block2/expand_conv', 0) < structure.full_of('block2/expand_conv')
    net = spnet_jax.SlimmableNetwork(arch, structure, variables, image_size=32)
    check_standalone_subnetworks(net, x)
    _, single = export.standalone(net, 0)
    kernel = single['params']['block2']['se_expand']['kernel']
    assert kernel.shape[1] == structure.count('block2/expand_conv', 0)
    reduce = single['params']['block3']['se_reduce']
    assert reduce['kernel'].shape[1] == reduce['bias'].shape[0] == \
        structure.derived_counts_of('block3/se', 0)[0]
    costs = subnet_costs(arch, structure, 32)
    assert costs[0].macs < costs[1].macs


@pytest.mark.slow  # ~70 s of compiling on 2 cores; the mixup step is in test_train_step
def test_one_slimmable_step_with_the_recipes_regularisation():
    """One jitted step of an EfficientNet S-Net with mixup, label smoothing, stochastic depth
    and dropout: a function of (seed, step) (`test_train_step` checks that another seed
    draws differently), and every part of the block (the SE's FCs too) learns."""
    arch = get_arch('efficientnet_b0', num_classes=4, full_width=0.25)
    structure = arch.snet_structure((0.5, 1.0))
    model = arch.module(structure)
    section = ml_collections.ConfigDict(dict(
        lr=0.1, schedule='constant', lr_boundaries=(), lr_decay=0.1, warmup_epochs=0.0,
        weight_decay=4e-5, optimizer='sgd_no_bias_decay', momentum=0.9, nesterov=True,
        sparsity=0.0))
    tx, schedule = optim.make_optimizer(section, steps_per_epoch=10, num_steps=10,
                                        table=arch.table())
    variables = jax.jit(lambda r: state_lib.init_variables(model, r, (32, 32, 3)))(
        jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {'image': rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
             'label': rng.integers(0, 4, size=8).astype(np.int32)}
    mesh = sharding.make_mesh()
    step = loop.jit_train_step(model, 2, tx, schedule, mesh, label_smoothing=0.1,
                               distillation=(0.9, 1.0), mixup_alpha=0.2, seed=0)
    results = []
    for _ in range(2):
        state = jax.jit(lambda v: state_lib.create_state(v, tx))(variables)
        state, metrics = step(state, sharding.global_batch(batch, mesh))
        results.append((jax.device_get(state.params), jax.device_get(metrics)))
    (params, metrics), (_, again) = results
    assert metrics['params_finite'] == 1.0 and metrics['loss'] == again['loss']
    assert all(metrics[f'loss/subnet_{k}'] > 0 for k in range(2))
    before = variables['params']
    for name in ('se_reduce', 'se_expand', 'dw_conv', 'project_conv'):
        assert not np.allclose(params['block2'][name]['kernel'], before['block2'][name]['kernel'])


TYPES = SHARED_REFERENCE / 'efficientnet_types.json'
needs_types = pytest.mark.skipif(not TYPES.is_file(), reason='needs the release\'s '
                                 'efficientnet_types.json (../shared/reference)')


def _types():
    return json.loads(TYPES.read_text())['networks'] if TYPES.is_file() else {}


@needs_types
@pytest.mark.parametrize('key', sorted(_types()) or ['b0@1.0'])
def test_every_type_builds_the_releases_network(key):
    """B0-B7 at x0.75 and x1.0 as the release's bases (224 px): every conv's and linear's
    channels, groups and kernel under its release name, its MACs, and the network's params,
    MACs and BatchNorm eps / momentum."""
    want = _types()[key]
    arch = get_arch(f'efficientnet_{want["type"]}', full_width=want['width'])
    structure = arch.plain_structure()
    model = arch.module(structure)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
    release = convert_torch.release_shapes(arch, shapes)
    ours = {c.path: c for c in cost.layer_costs(arch, structure, 0, 224)}
    names = convert_torch.module_names(arch)
    for layer in want['layers']:
        shape = (layer['out'], layer['in_per_group'], *(layer['kernel'] or ()))
        assert release[f'{layer["name"]}.weight'] == shape, layer['name']
        assert (f'{layer["name"]}.bias' in release) == layer['bias'], layer['name']
        assert ours[names[layer['name']]].macs == layer['macs'], layer['name']
    assert len(want['layers']) == sum(c.kind != 'bn' for c in ours.values())
    assert sum(c.params for c in ours.values()) == want['params']
    assert sum(c.macs for c in ours.values()) == want['macs']
    assert (model.bn_epsilon, 1 - model.bn_momentum) == pytest.approx(
        (want['bn_eps'][0], want['bn_momentum'][0]))


def test_x075_widths_round_twice_as_the_release():
    """B2 x0.75: the stem 32 * 1.1 -> 32 (nearest 8), then x0.75 -> 24; its third stage
    40 * 1.1 -> 48, x0.75 -> 40 (once, 40 * 1.1 * 0.75 = 33 would round to 32); the last
    conv 4x its input up to width 1.0 (x0.75: 4 * 264)."""
    stem, specs, last = get_arch('efficientnet_b2', full_width=0.75).block_specs(0.75)
    assert stem == 24 and specs[5].out == 40 and specs[-1].out == 264 and last == 4 * 264
    _, specs, last = get_arch('efficientnet_b0', full_width=1.3).block_specs(1.3)
    assert specs[-1].out == 416 and last == 2160  # make_divisible(4 * 416 * 1.3 = 2163.2)


