"""EfficientNet multi-base pruning without ZPM (the release's B2 recipe) against what the
release's own code produced (tests/data/release_efficientnet_multibase.json, written by
benchmarks/release_efficientnet_multibase.py from the release's train.py and models on seeded
bases): per layer and sub-network, the channels each conv, squeeze-and-excitation FC and the
classifier run with, the thresholds, and the logits of every sub-network.

The release sets a block's pruned counts only on the base's own model, so in the slimmable
network every conv inside a block keeps the channels of the network built at the keep ratio
as a width; the stem (and the first block's depthwise conv, which shares its list) and the
last conv are pruned."""

import dataclasses
import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spnet_jax.models import get_arch
from spnet_jax.pruning import multibase, prune
from spnet_jax.workdir import convert_torch

ROOT = Path(__file__).resolve().parents[1]
DATA = json.loads((ROOT / 'tests' / 'data' / 'release_efficientnet_multibase.json').read_text())
_spec = importlib.util.spec_from_file_location(
    'release_efficientnet_multibase', ROOT / 'benchmarks' / 'release_efficientnet_multibase.py')
GEN = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(GEN)  # only its numpy weight generator: no torch, no release


def _arch(case):
    return get_arch(f"efficientnet_{case['type']}", num_classes=case['num_classes'],
                    dropout=0.0, stochastic_depth=0.0)


def _base(arch, width, seed):
    """The case's base at ``width``: the generator's weights by release key, converted."""
    a = arch.at_width(width)
    shapes = jax.eval_shape(lambda: a.module(a.plain_structure()).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    keys = [(k, s) for k, s in convert_torch.release_shapes(a, shapes).items()
            if 'running' not in k]
    return convert_torch.convert(GEN.base_weights(keys, seed), a)


@pytest.mark.parametrize('name', sorted(DATA['cases']))
def test_counts_and_logits_equal_the_releases(name):
    case = DATA['cases'][name]
    arch = _arch(case)
    bases = [_base(arch, w, s) for w, s in zip(case['base_widths'], case['base_seeds'],
                                               strict=True)]
    S, variables, info = prune(arch, bases, case['base_widths'], zpm='none', round_to=1,
                               keep_ratios=case['keep_ratios'],
                               min_channels_ratio=case['min_channels_ratio'],
                               image_size=case['image_size'])
    np.testing.assert_allclose(info['thresholds'], case['thresholds'], rtol=1e-7)
    names = convert_torch.module_names(arch)
    owner = {p: g.name for g in arch.table().groups for p in (*g.producers, *g.followers)}
    for layer in case['layers']:
        path = names[layer['name']]
        if path == 'head':
            got = [case['num_classes']] * S.num_subnets
        elif path.endswith('/se_reduce'):
            got = list(S.derived_counts_of(path.replace('se_reduce', 'se'), 0))
        else:
            got = list(S.counts_of(owner[path]))
        assert got == layer['out'], layer['name']
    # Pruning did find other counts inside the blocks: the release leaves them unused.
    assert any(info['pruned_counts'][k][g] != S.count(g, k)
               for k in range(S.num_subnets - 1) for g in S.groups)
    x = np.random.default_rng(case['input_seed']).normal(
        size=(2, 3, case['image_size'], case['image_size'])).astype(np.float32)
    model = arch.module(S)
    apply = jax.jit(lambda v, x, k: model.apply(v, x, subnet=k, train=False),
                    static_argnums=2)
    for k in range(S.num_subnets):
        got = np.asarray(apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), k))
        want = np.asarray(case['logits_eval_asis'][k])
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-4, (name, k)


def test_built_counts_only_with_several_bases_and_without_zpm():
    arch = get_arch('efficientnet_b0', num_classes=10)
    table = arch.table()
    pruned = dataclasses.replace(arch.plain_structure(), counts=(
        tuple(max(1, g.size // 3) for g in table.groups), tuple(g.size for g in table.groups)))
    ratios = (0.5484,)
    assert multibase.release_block_counts(arch, pruned, ratios, (1.0,), False) is pruned
    assert multibase.release_block_counts(arch, pruned, ratios, (0.75, 1.0), True) is pruned
    built = multibase.release_block_counts(arch, pruned, ratios, (0.75, 1.0), False)
    at_ratio = {g.name: g.size for g in arch.table(width=0.5484).groups}
    for g, c, p in zip(built.groups, built.counts[0], pruned.counts[0], strict=True):
        assert c == (p if g in ('stem_conv', 'last_conv') else at_ratio[g]), g
    assert built.counts[-1] == pruned.counts[-1]
    # Other architectures prune every group (their release recipes use ZPM).
    mbv2 = get_arch('mobilenet_v2')
    assert mbv2.multibase_block_groups(False) == ()
