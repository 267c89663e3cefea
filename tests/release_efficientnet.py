"""What the release's own EfficientNet pruning produced on seeded bases (tests/data/
release_efficientnet_{multibase,singlebase}.json, written by
benchmarks/release_efficientnet_multibase.py), and the check of this project's pruning
against one such case: per layer and sub-network, the channels each conv, squeeze-and-
excitation FC and the classifier reads and writes, the thresholds, and the logits of every
sub-network (eval mode, fresh BN statistics) within 1e-4 of the largest; where the file has
them, also train mode's logits and BN statistics moves (`check_train_mode`)."""

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from spnet_jax.core import cost, layers
from spnet_jax.models import get_arch
from spnet_jax.pruning import prune
from spnet_jax.workdir import convert_torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    'release_efficientnet_multibase', ROOT / 'benchmarks' / 'release_efficientnet_multibase.py')
GEN = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(GEN)  # only its numpy weight generator: no torch, no release


def load(kind: str) -> dict:
    """``kind``: 'multibase' or 'singlebase'."""
    return json.loads(GEN.OUT[kind].read_text())


def arch_of(case):
    return get_arch(f"efficientnet_{case['type']}", num_classes=case['num_classes'],
                    dropout=0.0, stochastic_depth=0.0)


def base_of(arch, width, seed):
    """The case's base at ``width``: the generator's weights by release key, converted."""
    a = arch.at_width(width)
    shapes = jax.eval_shape(lambda: a.module(a.plain_structure()).init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    keys = [(k, s) for k, s in convert_torch.release_shapes(a, shapes).items()
            if 'running' not in k]
    return convert_torch.convert(GEN.base_weights(keys, seed), a)


def check_case(name: str, case: dict) -> tuple:
    """Prunes the case's bases as the release did and compares; returns ``(structure, info,
    max relative logit difference per sub-network)``."""
    arch = arch_of(case)
    if 'bn_eps' in case:
        assert arch.bn_options()['bn_epsilon'] == case['bn_eps'], name
        assert np.isclose(1.0 - arch.bn_options()['bn_momentum'], case['bn_momentum']), name
    bases = [base_of(arch, w, s) for w, s in zip(case['base_widths'], case['base_seeds'],
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
        assert got == layer['out'], (name, layer['name'], got, layer['out'])
    # Each layer's input and output channels as our forward runs them (`cost.layer_costs`).
    for k in range(S.num_subnets):
        ran = {c.path: (c.in_shape[-1], c.out_shape[-1])
               for c in cost.layer_costs(arch, S, k, case['image_size'])}
        for layer in case['layers']:
            got = ran[names[layer['name']]]
            assert got == (layer['in'][k], layer['out'][k]), (name, k, layer['name'], got)
    x = np.random.default_rng(case['input_seed']).normal(
        size=(2, 3, case['image_size'], case['image_size'])).astype(np.float32)
    model = arch.module(S)
    apply = jax.jit(lambda v, x, k: model.apply(v, x, subnet=k, train=False),
                    static_argnums=2)
    diffs = []
    for k in range(S.num_subnets):
        got = np.asarray(apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), k))
        want = np.asarray(case['logits_eval_asis'][k])
        diffs.append(float(np.abs(got - want).max() / np.abs(want).max()))
    assert max(diffs) < 1e-4, (name, diffs)
    if 'logits_train_mode' in case:
        diffs += check_train_mode(name, case, arch, S, model, variables, x, names)
    return S, info, diffs


def check_train_mode(name, case, arch, S, model, variables, x, names) -> list[float]:
    """Train mode from the as-pruned state: each sub-network's logits (batch statistics),
    and how far its forward moved each BN's running statistics (summed over the channels,
    which fresh statistics make layout-free; B5-B7's momentum 0.01 shows here)."""
    step = jax.jit(lambda v, x, k: model.apply(v, x, subnet=k, train=True,
                                               mutable=['batch_stats']), static_argnums=2)
    bn_paths = {theirs: ours for theirs, ours in names.items()
                if theirs in case['bn_moves_train_mode']}
    assert len(bn_paths) == len(case['bn_moves_train_mode']), name
    diffs = []
    for k in range(S.num_subnets):
        got, new = step(variables, jnp.asarray(x.transpose(0, 2, 3, 1)), k)
        want = np.asarray(case['logits_train_mode'][k])
        diffs.append(float(np.abs(np.asarray(got) - want).max() / np.abs(want).max()))
        stats = new['batch_stats']
        got_moves, want_moves = [], []
        for theirs, path in bn_paths.items():
            bn = _at(stats, path)
            mean = np.asarray(bn[layers.subnet_variable(layers.MEAN, k)], np.float64)
            var = np.asarray(bn[layers.subnet_variable(layers.VAR, k)], np.float64)
            got_moves.append([mean.sum(), (var - 1).sum()])
            want_moves.append(case['bn_moves_train_mode'][theirs][k])
        got_moves, want_moves = np.asarray(got_moves), np.asarray(want_moves)
        scale = np.abs(want_moves).max(axis=0)
        assert (np.abs(got_moves - want_moves) <= 1e-4 * scale).all(), (name, k)
    assert max(diffs) < 1e-4, (name, 'train mode', diffs)
    return diffs


def _at(tree, path: str):
    for key in path.split('/'):
        tree = tree[key]
    return tree
