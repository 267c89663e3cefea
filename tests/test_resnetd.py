"""ResNet-D (the release's ``sp_resnetd``): deep stem, average-pool shortcuts, its costs, and
the tools that take any architecture (pruning with ZPM, export, the release's .pt layout)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import check_standalone_subnetworks, random_variables

import spnet_jax
from spnet_jax.core.cost import subnet_costs
from spnet_jax.models import get_arch, resnet
from spnet_jax.pruning import prune
from spnet_jax.workdir import convert_torch


def test_resnetd50_costs_by_independent_arithmetic():
    """ResNet-50 (25,557,032 params, 4,089,184,256 MACs at 224 px) with its 7x7x3x64 stem
    replaced by 3x3 convs 3->32 (stride 2), 32->32 and 32->64, all at 112x112, plus two more
    BNs; the average-pool shortcut's 1x1 conv runs at the same output size as the strided
    one it replaces. Bag of Tricks (He et al. 2019, table 5) gives ResNet-50-D 4.3 GFLOPs."""
    (full,) = subnet_costs(get_arch('resnetd50'), get_arch('resnetd50').plain_structure(), 224)
    stem_7x7 = 7 * 7 * 3 * 64
    deep = 3 * 3 * 3 * 32 + 3 * 3 * 32 * 32 + 3 * 3 * 32 * 64
    assert full.params == 25_557_032 - stem_7x7 + deep + 2 * (2 * 32)
    assert full.macs == 4_089_184_256 + (deep - stem_7x7) * 112 * 112
    assert round(full.macs / 1e9, 1) == 4.3


@pytest.mark.parametrize('name,params', [('resnetd101', 44.57e6), ('resnetd152', 60.21e6)])
def test_deeper_resnetd_params_match_the_published_counts(name, params):
    """timm's resnet101d / resnet152d (the same ResNet-C stem + ResNet-D shortcut)."""
    arch = get_arch(name)
    (full,) = subnet_costs(arch, arch.plain_structure(), 224)
    assert abs(full.params - params) < 0.001 * params


def test_average_pool_shortcut_is_ceil_mode_without_padding_counted():
    x = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
    got = np.asarray(resnet.avg_pool_down(jnp.asarray(x), 2))
    assert got.shape == (2, 3, 3, 3)
    for i in range(3):
        for j in range(3):
            window = x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]  # the last window is partial
            np.testing.assert_allclose(got[:, i, j], window.mean(axis=(1, 2)), rtol=1e-6)


def test_strided_shortcut_pools_then_runs_a_stride_1_conv():
    """The shortcut of a strided block: average pooling, then a 1x1 conv of stride 1; the
    deep stem's convs are 3x3 and the first reads the image."""
    arch = get_arch('resnetd50', num_classes=5, full_width=0.25)
    layers_ = {c.path: c for c in subnet_costs(arch, arch.plain_structure(), 64)[0].layers}
    proj = layers_['layer2_0/proj_conv']
    assert proj.strides == 1 and proj.in_shape[:2] == proj.out_shape[:2] == (8, 8)
    assert layers_['layer1_0/proj_conv'].in_shape[:2] == (16, 16)  # stage 1: no pooling
    assert [layers_[f'{s}_conv'].kernel_size for s in ('stem1', 'stem2', 'stem')] == [3] * 3
    assert layers_['stem1_conv'].in_shape == (64, 64, 3) and arch.first_conv == 'stem1_conv'
    # The stem groups are pruned like inner convs: groups of their own in the table.
    assert {'stem1_conv', 'stem2_conv', 'stem_conv'} <= set(arch.table(zpm=True).group_names)


@pytest.fixture(scope='module')
def pruned():
    arch = get_arch('resnetd50', num_classes=7, full_width=0.25, stem='small')
    x = jnp.zeros((1, 16, 16, 3))
    base = random_variables(arch.module(arch.plain_structure()), x, seed=2)
    structure, variables, _ = prune(arch, [base], [0.25], keep_ratios=[0.5], image_size=16,
                                    zpm='release', round_to=1)
    return arch, structure, variables


@pytest.mark.slow  # 30-45 s; ResNet's and MobileNet's exports are checked in the default run
def test_pruned_resnetd_with_zpm_exports_the_same_function(pruned):
    arch, structure, variables = pruned
    assert structure.zpm and structure.count('stem1_conv', 0) < structure.full_of('stem1_conv')
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(3, 16, 16, 3)), jnp.float32)
    net = spnet_jax.SlimmableNetwork(arch, structure, variables, image_size=16)
    check_standalone_subnetworks(net, images)
    costs = subnet_costs(arch, structure, 16)
    assert costs[0].macs < costs[1].macs


def test_release_layout_names_the_deep_stem_and_the_pooled_shortcut():
    """The release's ResNet modules: ``features.0`` the stem Sequential (conv, bn, relu per
    conv), ``features.<b>.shortcut`` the projection; a strided ResNet-D shortcut starts with
    its (weightless) pool, so its conv is ``shortcut.1``. (Assumed from the release's ResNet
    layout: no ResNet-D checkpoint of the release was available to check against.)"""
    arch = get_arch('resnetd50', num_classes=5, full_width=0.25)
    shapes = jax.eval_shape(lambda: arch.module(arch.plain_structure()).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    keys = convert_torch.release_shapes(arch, shapes)
    assert keys['features.0.0.weight'] == (8, 3, 3, 3)  # 32 * 0.25 channels, OIHW
    assert keys['features.0.3.weight'] == (8, 8, 3, 3)
    assert keys['features.0.6.weight'] == (16, 8, 3, 3)
    assert keys['features.0.7.running_var'] == (16,)
    assert keys['features.1.shortcut.0.weight'] == (64, 16, 1, 1)  # stride 1: no pool
    assert keys['features.4.shortcut.1.weight'] == (128, 64, 1, 1)  # layer2_0, pooled
    assert 'features.4.shortcut.0.weight' not in keys
    rng = np.random.default_rng(1)
    state = {k: rng.normal(size=s).astype(np.float32) for k, s in keys.items()}
    variables = convert_torch.convert(state, arch)
    np.testing.assert_array_equal(variables['params']['stem2_conv']['kernel'],
                                  state['features.0.3.weight'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables['params']['layer2_0']['proj_bn']['scale'],
                                  state['features.4.shortcut.2.weight'])
