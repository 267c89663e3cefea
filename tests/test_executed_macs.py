"""Issue 16: the work a sub-network's program executes against its logical MACs.

`cost.executed_macs` counts the convolutions and matrix products of the lowered program; the
cost model's `SubnetCost.executed_macs` predicts them from the layers' real output widths.
They must agree exactly for every sub-network of the release's ResNet-50 and MobileNetV2
recipes and of the Fashion-MNIST recipe, slimmable and exported; networks without ZPM, and ZPM
networks whose junctions place their branches (``fold_slack=0``), execute their logical
MACs (within 3%); with the default folded junctions the excess is exactly the zero columns of
the branch convs that write the stream's width.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_variables

import spnet_jax
from spnet_jax.core import cost
from spnet_jax.models import get_arch
from spnet_jax.pruning import prune
from spnet_jax.workdir import export


def _bases(name, widths, shape, num_classes):
    out = []
    for i, w in enumerate(widths):
        arch = get_arch(name, num_classes=num_classes, full_width=w)
        model = arch.module(arch.plain_structure())
        out.append(random_variables(model, jnp.zeros((1, *shape)), seed=i))
    return out


def _recipe(name):
    """(arch, structure, variables, image shape) as the recipe prunes (random bases)."""
    if name == 'resnet50':  # configs/resnet50.py: bases 0.75 / 1.0, keep 0.5484 / 0.526
        widths, ratios, shape, classes = [0.75, 1.0], [0.5484, 0.526], (224, 224, 3), 1000
    elif name == 'mobilenet_v2':  # configs/mobilenet_v2.py: bases 1.0 / 1.3
        widths, ratios, shape, classes = [1.0, 1.3], [0.6725, 0.6357], (224, 224, 3), 1000
    else:  # configs/fashion_mnist.py: one x1.0 base, S-Net x0.5 / x0.75 MACs
        from configs.fashion_mnist import SNET_MACS
        widths, shape, classes = [1.0], (28, 28, 1), 10
    arch = get_arch(name, num_classes=classes, full_width=widths[-1])
    bases = _bases(name, widths, shape, classes)
    if name == 'resnet20':
        structure, variables, _ = prune(arch, bases, widths, image_size=28, in_channels=1,
                                        macs_targets=[float(m) for m in SNET_MACS[1:3]],
                                        zpm='release', round_to=1, tolerance=0.01)
    else:
        structure, variables, _ = prune(arch, bases, widths, keep_ratios=ratios,
                                        image_size=224, zpm='release', round_to=1)
    return arch, structure, variables, shape


RECIPES = ('resnet50', 'mobilenet_v2', 'resnet20')


@pytest.fixture(scope='module', params=RECIPES)
def recipe(request):
    return _recipe(request.param)


# ResNet-50's exports and training steps (76 s of lowering on CI's 2 cores) run with `-m slow`;
# its forward programs, and every MobileNetV2 and Fashion-MNIST case, run by default.
RECIPES_RESNET50_SLOW = pytest.mark.parametrize(
    'recipe', [pytest.param('resnet50', marks=pytest.mark.slow), 'mobilenet_v2', 'resnet20'],
    indirect=True)


def _program_macs(model, variables, shape, k):
    x = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
    fn = jax.jit(lambda v, x: model.apply(v, x, subnet=k))
    return cost.executed_macs(fn.lower(variables, x).as_text())


def test_programs_execute_what_the_cost_model_predicts(recipe):
    arch, structure, variables, shape = recipe
    model = arch.module(structure)
    costs = cost.subnet_costs(arch, structure, shape[0], shape[2])
    excess = []
    for c in costs:
        assert _program_macs(model, variables, shape, c.subnet) == c.executed_macs, c.subnet
        excess.append(c.executed_macs / c.macs)
    assert excess[-1] == 1.0  # the full network: every stream is its branches' width
    if structure.zpm and arch.name != 'mobilenet_v2':
        assert max(excess[:-1]) > 1.03  # folded junctions: the zero columns are counted
    # Placing instead of folding: logical MACs, for every sub-network.
    placed = arch.module(structure, fold_slack=0.0)
    for c in costs:
        got = _program_macs(placed, variables, shape, c.subnet)
        assert c.macs <= got <= 1.03 * c.macs, (c.subnet, got / c.macs)


@RECIPES_RESNET50_SLOW
def test_exported_subnetworks_execute_what_the_cost_model_predicts(recipe):
    arch, structure, variables, shape = recipe
    net = spnet_jax.SlimmableNetwork(arch, structure, variables, image_size=shape[0])
    for k in range(structure.num_subnets - 1):
        alone, alone_vars = export.standalone(net, k)
        (c,) = cost.subnet_costs(arch, alone, shape[0], shape[2])
        assert _program_macs(arch.module(alone), alone_vars, shape, 0) == c.executed_macs
        got = _program_macs(arch.module(alone, fold_slack=0.0), alone_vars, shape, 0)
        assert c.macs <= got <= 1.03 * c.macs


@pytest.mark.parametrize('name', ['resnet20', 'mobilenet_v2'])
def test_networks_without_zpm_execute_their_macs(name):
    classes, shape = (10, (28, 28, 1)) if name == 'resnet20' else (1000, (64, 64, 3))
    arch = get_arch(name, num_classes=classes)
    for structure in (arch.snet_structure((0.5, 1.0)), arch.plain_structure()):
        model = arch.module(structure)
        variables = jax.eval_shape(lambda m=model: m.init(jax.random.key(0),
                                                          jnp.zeros((1, *shape))))
        for c in cost.subnet_costs(arch, structure, shape[0], shape[2]):
            assert _program_macs(model, variables, shape, c.subnet) == c.macs == \
                c.executed_macs


@pytest.mark.parametrize('name', ['resnet20', pytest.param('mobilenet_v2', marks=pytest.mark.slow)])
def test_placing_and_folding_compute_the_same_function(name):
    """The junction policy changes where zeros are computed, never the result: logits and
    BN batch statistics of every sub-network agree (eval and training mode)."""
    shape, classes = ((28, 28, 1), 10) if name == 'resnet20' else ((32, 32, 3), 10)
    widths = [1.0] if name == 'resnet20' else [1.0, 1.3]
    ratios = [0.3, 0.6] if name == 'resnet20' else [0.5, 0.6]
    arch = get_arch(name, num_classes=classes, full_width=widths[-1])
    structure, variables, _ = prune(arch, _bases(name, widths, shape, classes), widths,
                                    keep_ratios=ratios, image_size=shape[0],
                                    in_channels=shape[2], zpm='release', round_to=1)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, *shape)), jnp.float32)
    results = {}
    for slack in (float('inf'), 0.0):
        model = arch.module(structure, fold_slack=slack)
        for k in range(structure.num_subnets):
            logits = jax.jit(lambda v, x, m=model, k=k: m.apply(v, x, subnet=k))(variables, x)
            trained, moved = jax.jit(lambda v, x, m=model, k=k: m.apply(
                v, x, subnet=k, train=True, mutable=['batch_stats']))(variables, x)
            results.setdefault(k, []).append((logits, trained, moved))
    for k, ((a, ta, ma), (b, tb, mb)) in results.items():
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f'sub-network {k}')
        # Training mode normalises by a batch of 4's statistics, layer after layer: float32
        # rounding of differently shaped matmuls grows to ~1e-4 through MobileNetV2's 17
        # blocks (a wrong placement would differ by O(1)).
        np.testing.assert_allclose(ta, tb, rtol=1e-3, atol=1e-3, err_msg=f'sub-network {k}')
        jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-3, atol=1e-4),
                     ma, mb)
    # Not vacuous: some pruned sub-network has a junction whose stream is wider than its body.
    assert any(s > c for k in range(structure.num_subnets - 1)
               for s, c in zip(structure.stream_sizes[k], _bodies(arch, structure, k),
                               strict=True))


def _bodies(arch, structure, k):
    counts = dict(zip(structure.groups, structure.counts[k], strict=True))
    return [counts[j.body] for j in arch.table(zpm=True).junctions]


def test_loaded_networks_and_the_profiler_say_what_a_subnetwork_executes(recipe):
    from spnet_jax.cli.profile import table
    arch, structure, variables, shape = recipe
    net = spnet_jax.SlimmableNetwork(arch, structure, variables, image_size=shape[0])
    costs = cost.subnet_costs(arch, structure, shape[0], shape[2])
    rows = net.subnets
    assert [r['executed_macs'] for r in rows] == [c.executed_macs for c in costs]
    text = table('t', rows)
    over = [c for c in costs if c.executed_macs > c.macs]
    for c in over:
        assert f'sub-network {c.subnet} computes {c.executed_macs / c.macs:.2f}x' in text
    assert ('Executed:' in text) == bool(over)


def _training_macs(model, variables, shape, k):
    """Executed MACs of one sub-network's gradient (training mode, batch 2), per image."""
    def loss(params, x):
        out, _ = model.apply({**variables, 'params': params}, x, subnet=k, train=True,
                             mutable=['batch_stats'])
        return jnp.sum(out)

    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    return cost.executed_macs(jax.jit(jax.grad(loss)).lower(variables['params'], x).as_text()) / 2


@RECIPES_RESNET50_SLOW
def test_training_steps_execute_three_times_the_forward(recipe):
    """Forward, input gradients and weight gradients: 3x the forward's MACs (the first conv's
    input gradient is not computed). Placing junctions: 3x the logical MACs within 3%;
    folding: 3x what the forward executes, so the backward adds no union-width work of its
    own beyond the forward's."""
    arch, structure, variables, shape = recipe
    for slack in (0.0, float('inf')):
        model = arch.module(structure, fold_slack=slack)
        for c in cost.subnet_costs(arch, structure, shape[0], shape[2]):
            first = next(layer.macs for layer in c.layers if layer.kind == 'conv')
            want = 3 * (c.macs if slack == 0.0 else c.executed_macs) - first
            got = _training_macs(model, variables, shape, c.subnet)
            assert 0.97 * want <= got <= 1.03 * want, (slack, c.subnet, got / want)
