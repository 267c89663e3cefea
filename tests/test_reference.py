"""Parity with the original PyTorch release on its reference outputs (../shared/reference;
the small BN-only cases are bundled in tests/data/reference), through the prune
command and `spnet_jax.load` (what a user runs), not only the internal functions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import release_cases
from helpers import needs_reference, reference_case

import spnet_jax
from spnet_jax.core import cost
from spnet_jax.models import get_arch
from spnet_jax.pruning import zpm
from spnet_jax.workdir import convert_torch

ROOT = Path(__file__).resolve().parents[1]
MBV2 = 'mobilenet_v2_multibase_zpm'


def _list(value):
    return json.loads(value) if isinstance(value, str) else value


def run_prune(workdir, config, bases, *overrides):
    cmd = [sys.executable, '-m', 'spnet_jax.prune', f'--config={ROOT / "configs" / config}',
           f'--workdir={workdir}', '--bases=' + ','.join(f'{w}={p}' for w, p in bases),
           *overrides]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def release_checkpoint(arch, bn_file, path, seed=0):
    """A release-layout .npz base: the reference BN scales/biases, random conv weights."""
    names = {ours: theirs for theirs, ours in convert_torch.module_names(arch).items()}
    model = arch.module(arch.plain_structure())
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    rng = np.random.default_rng(seed)
    state = {}
    for p, s in jax.tree_util.tree_flatten_with_path(shapes['params'])[0]:
        keys = [k.key for k in p]
        module, leaf = '/'.join(keys[:-1]), keys[-1]
        x = rng.normal(0, 0.05, s.shape).astype(np.float32)
        if leaf == 'kernel':
            x = x.transpose(3, 2, 0, 1) if x.ndim == 4 else x.T
            state[f'{names[module]}.weight'] = x
        elif leaf == 'scale':
            state[f'{names[module]}.weight'] = x
        else:
            state[f'{names[module]}.bias'] = x
    with np.load(bn_file) as bn:
        for key in bn.files:
            assert state[key].shape == bn[key].shape, key
            state[key] = bn[key]
    np.savez(path, **state)
    return path


def check_structure_and_masks(net, case_dir: Path, bn_file: Path, pruned_counts=None):
    """Counts, sort orders, ZPM masks and fused masks equal the release's, layer by layer.
    ``pruned_counts``: prune_info's, per sub-network the counts pruning found where the
    network keeps others (EfficientNet multi-base without ZPM), which the masks have."""
    entries = json.loads((case_dir / 'structure.json').read_text())
    arch, S = net.arch, net.structure
    table = arch.table(zpm=S.zpm)
    owner = {p: g.name for g in table.groups for p in (*g.producers, *g.followers)}
    names = convert_torch.module_names(arch)
    params = net.variables['params']
    # The release keeps each stream's channels ascending; this project's streams list the
    # shortcut's first (`Structure.stream_order`): the same masks, compared in its layout.
    masks = zpm.release_layout(table, net.variables.get('masks', {}))
    with np.load(bn_file) as bn:
        gammas = {k: bn[k] for k in bn.files}
    checked = 0
    for e in entries:
        if e['type'] != 'SConv2d':
            continue
        path = names[e['name']]
        group = owner[path]
        assert list(S.counts_of(group)) == _list(e['out_channels_list']), e['name']
        # Sort order: the saved (sorted) BN scale is the release's gamma[end_sort_idx].
        bn_path = path.replace('conv', 'bn')
        module, _, bn_leaf = bn_path.rpartition('/')
        release_bn = [k for k, v in names.items() if v == bn_path][0]
        saved = np.asarray((params[module] if module else params)[bn_leaf]['scale'])
        order = np.asarray(_list(e['end_sort_idx']))
        np.testing.assert_array_equal(saved, gammas[f'{release_bn}.weight'][order])
        block = path.split('/')[0]
        if not S.zpm and e.get('fused_masks_index_lists'):
            # Without ZPM the release still keeps a block end's own mask and its union with
            # the stream's (they size the next squeeze-and-excitation); the conv runs at the
            # stream's count.
            checked += 1
            continue
        for k, want in enumerate(_list(e.get('masks_index_lists', []))):
            kept = (pruned_counts[k][group] if pruned_counts else S.counts_of(group)[k])
            assert sorted(order[:kept].tolist()) == want
        for k, want in enumerate(_list(e.get('fused_masks_index_lists', []))):
            junction = masks[block]['zpm']
            fused = np.asarray(junction[f'fused_{k}'])
            assert fused.tolist() == want, (e['name'], k)
            # The body lands exactly on its own mask's channels.
            body = np.asarray(junction[f'body_{k}'])
            assert sorted(fused[body < S.counts_of(group)[k]].tolist()) == _list(
                e['masks_index_lists'])[k]
        checked += 1
    return checked


@needs_reference('resnet50_singlebase_zpm')
def test_resnet50_single_base_zpm(tmp_path):
    case = reference_case('resnet50_singlebase_zpm')
    arch = get_arch('resnet50')
    base = release_checkpoint(arch, case / 'base_1.0_bn.npz', tmp_path / 'base.npz')
    out = run_prune(tmp_path / 'run', 'resnet50.py', [(1.0, base)], '--config.base.widths=1.0,',
                    '--config.prune.keep_ratios=0.35,0.6')
    net = spnet_jax.load(str(tmp_path / 'run'))
    assert check_structure_and_masks(net, case, case / 'base_1.0_bn.npz') == 53
    info = json.loads((tmp_path / 'run' / 'pruned' / 'prune_info.json').read_text())
    want = [c['thresholds'] for c in json.loads((case / 'case.json').read_text())['prune_calls']]
    np.testing.assert_allclose(info['thresholds'], want[0], rtol=1e-7)
    # conv+classifier MACs and BN-inclusive params per sub-network, as the release counts.
    widths = json.loads((case / 'widths.json').read_text())['per_width']
    for sub, w in zip(net.subnets, widths):
        assert sub['macs'] == w['own_count']['conv_fc_macs_per_image']
        assert sub['params'] == w['own_count']['params_incl_bn_affine']
    assert 'sub-networks' in out and 'MACs' in out


@needs_reference('resnet50_multibase_zpm_floor')
def test_resnet50_multibase_zpm_floors_are_relative_to_each_base(tmp_path):
    """The release floors each layer at int(C * 0.1) (ZPM ends/shortcuts: half) of its channels
    in the base being pruned: 10 layers of sub-network 0 (x0.75 base) sit at that floor."""
    case = reference_case('resnet50_multibase_zpm_floor')
    bases = [(w, release_checkpoint(get_arch('resnet50', full_width=w),
                                    case / f'base_{w}_bn.npz', tmp_path / f'base_{w}.npz'))
             for w in (0.75, 1.0)]
    run_prune(tmp_path / 'run', 'resnet50.py', bases, '--config.prune.keep_ratios=0.25,0.3',
              '--config.data.image_size=64')
    net = spnet_jax.load(str(tmp_path / 'run'))
    assert check_structure_and_masks(net, case, case / 'base_1.0_bn.npz') == 53
    info = json.loads((tmp_path / 'run' / 'pruned' / 'prune_info.json').read_text())
    want = [c['thresholds'][0] for c in json.loads((case / 'case.json').read_text())['prune_calls']]
    np.testing.assert_allclose(info['thresholds'], want, rtol=1e-7)
    # The case is one where the floor decides. Sub-network 0 (x0.75 base): in 7 layers fewer
    # channels than int(C * 0.1) (half for ZPM ends and shortcuts) of the base pass the
    # threshold, and floors of the full network's C would have changed 10 layers' counts.
    names = convert_torch.module_names(get_arch('resnet50', full_width=0.75))
    with np.load(case / 'base_0.75_bn.npz') as bn:
        gammas = {ours: np.abs(bn[f'{key}.weight'])
                  for key, ours in names.items() if f'{key}.weight' in bn.files}
    full = {g.name: g.size for g in get_arch('resnet50').table(zpm=True).groups}
    binding, full_floor_differs = [], 0
    for g in get_arch('resnet50', full_width=0.75).table(zpm=True).groups:
        halve = g.zpm_role in ('end', 'shortcut')
        floor_of = lambda c, halve=halve: int(c * 0.1 / 2) if halve else int(c * 0.1)
        above = int(np.sum(gammas[g.scored_by[0]] > info['thresholds'][0]))
        if above < floor_of(g.size):
            binding.append(g.name)
            assert net.structure.count(g.name, 0) == floor_of(g.size), g.name
        full_floor_differs += max(above, floor_of(full[g.name])) != max(above, floor_of(g.size))
    assert len(binding) == 7 and full_floor_differs == 10, (binding, full_floor_differs)
    widths = json.loads((case / 'widths.json').read_text())['per_width']
    for sub, w in zip(net.subnets, widths):
        assert sub['macs'] == w['own_count']['conv_fc_macs_per_image']


@needs_reference('vgg19_cifar_singlebase')
def test_vgg19_cifar_single_base(tmp_path):
    case = reference_case('vgg19_cifar_singlebase')
    arch = get_arch('vgg19', num_classes=10)
    base = release_checkpoint(arch, case / 'base_1.0_bn.npz', tmp_path / 'base.npz')
    run_prune(tmp_path / 'run', 'vgg19_cifar10.py', [(1.0, base)], '--config.base.widths=1.0,',
              '--config.model.full_width=1.0', '--config.prune.keep_ratios=0.25,0.5',
              '--config.prune.start=finetune')
    net = spnet_jax.load(str(tmp_path / 'run'))
    assert check_structure_and_masks(net, case, case / 'base_1.0_bn.npz') == 16
    widths = json.loads((case / 'widths.json').read_text())['per_width']
    for sub, w in zip(net.subnets, widths):
        assert sub['macs'] == w['own_count']['conv_fc_macs_per_image']


@pytest.fixture(scope='module')
def mobilenet_v2_net(tmp_path_factory):
    case = reference_case(MBV2)
    work = tmp_path_factory.mktemp('mbv2')
    run_prune(work, 'mobilenet_v2.py', [(1.0, case / 'base_1.0.npz'),
                                        (1.3, case / 'base_1.3.npz')])
    return spnet_jax.load(str(work))


@needs_reference(MBV2)
def test_mobilenet_v2_multibase_structure_and_weights(mobilenet_v2_net):
    case = reference_case(MBV2)
    net = mobilenet_v2_net
    assert check_structure_and_masks(net, case, case / 'base_1.3.npz') == 52
    widths = json.loads((case / 'widths.json').read_text())['per_width']
    for sub, w in zip(net.subnets, widths, strict=True):
        assert sub['macs'] == w['own_count']['conv_fc_macs_per_image']
        assert sub['params'] == w['own_count']['params_incl_bn_affine']
    # Every permuted weight equals the release's pruned, sorted network.
    want = convert_torch.convert(dict(np.load(case / 'pruned_state_dict.npz')), net.arch,
                                 num_subnets=3)
    got = jax.tree.map(np.asarray, net.variables)
    for collection in ('params', 'batch_stats'):
        jax.tree.map(np.testing.assert_array_equal, got[collection], want[collection])


@pytest.mark.parametrize('mode', ['eval_asis', 'eval_randstats', 'train_mode'])
@needs_reference(MBV2)
def test_mobilenet_v2_logits_of_every_subnet(mobilenet_v2_net, mode):
    case = reference_case(MBV2)
    net = mobilenet_v2_net
    io = np.load(case / 'io.npz')
    x = io['x'].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    variables = net.variables
    if mode == 'eval_randstats':
        stats = convert_torch.convert(dict(np.load(case / 'randstats.npz')), net.arch,
                                      num_subnets=3)['batch_stats']
        variables = {**variables, 'batch_stats': jax.tree.map(jnp.asarray, stats)}
    for k in range(net.structure.num_subnets):
        want = io[f'logits_{mode}_w{k}']
        if mode == 'eval_asis':
            got = net(x, subnet=k, normalized=True)
        else:
            apply = jax.jit(lambda v, x, k=k: net.model.apply(
                v, x, subnet=k, train=mode == 'train_mode', mutable=['batch_stats'])[0])
            got = apply(variables, jnp.asarray(x))
        rel = np.abs(np.asarray(got) - want).max() / np.abs(want).max()
        assert rel < 1e-4, (mode, k, rel)


# --------------------------------------------------------------- EfficientNet, every case
@pytest.fixture(scope='module', params=release_cases.case_params())
def efficientnet_case(request, tmp_path_factory):
    """``(case, net, info)``: the case's bases pruned by the prune command with the release's
    EfficientNet recipe set to the case's settings, loaded as a user loads it."""
    case = release_cases.read_case(request.param)
    work = tmp_path_factory.mktemp(request.param)
    run_prune(work, release_cases.CONFIG, case.bases, *case.flags())
    info = json.loads((work / 'pruned' / 'prune_info.json').read_text())
    return case, spnet_jax.load(str(work)), info


def _squeeze_inputs(entries):
    """Per block (the release's index), the channels the release sizes its squeeze-and-
    excitation from in each pruned sub-network: after a residual block the size of that
    block's fused mask, else the pruned count of the conv before the block."""
    convs = [e for e in entries if e['type'] == 'SConv2d' and int(e['groups_list'][-1]) == 1]
    out = {}
    for before, conv in zip(convs, convs[1:]):
        block = conv['name'].split('.')[1]
        if '.body.' not in conv['name'] or before['name'].split('.')[1] == block:
            continue  # the last conv, or a conv inside the block
        fused = _list(before.get('fused_masks_index_lists', []))
        counts = _list(before['out_channels_list'])[:-1]
        out[int(block)] = [len(f) for f in fused] if fused else counts
    return out


def test_efficientnet_counts_orders_and_weights_equal_the_release(efficientnet_case):
    case, net, info = efficientnet_case
    entries = json.loads((case.folder / 'structure.json').read_text())
    assert check_structure_and_masks(net, case.folder, case.base_file(case.base_widths[-1]),
                                     info.get('pruned_counts')) \
        == sum(e['type'] == 'SConv2d' for e in entries)
    calls = json.loads((case.folder / 'case.json').read_text())['prune_calls']
    np.testing.assert_allclose(info['thresholds'], [t for c in calls for t in c['thresholds']],
                               rtol=1e-7)
    # The squeeze-and-excitation of each block: a quarter (at least 1) of its input as the
    # release's pruning counts it, a residual stream's fused mask included.
    S = net.structure
    for block, inputs in _squeeze_inputs(entries).items():
        got = S.derived_counts_of(f'block{block}/se', 0)[:-1]
        assert list(got) == [max(1, n // 4) for n in inputs], block
    want = convert_torch.convert(dict(np.load(case.folder / 'pruned_state_dict.npz')),
                                 net.arch, num_subnets=case.num_subnets)
    got = jax.tree.map(np.asarray, net.variables)
    for collection in ('params', 'batch_stats'):
        jax.tree.map(np.testing.assert_array_equal, got[collection], want[collection])


def test_efficientnet_costs_equal_the_releases_runtime_shapes(efficientnet_case):
    """Conv, BN and classifier MACs and parameters per sub-network, layer by layer, as the
    release ran them (its runtime shapes leave out the squeeze-and-excitation's FCs)."""
    case, net, _ = efficientnet_case
    names = convert_torch.module_names(net.arch)
    widths = json.loads((case.folder / 'widths.json').read_text())['per_width']
    for k, w in enumerate(widths):
        ours = {c.path: c for c in cost.layer_costs(net.arch, net.structure, k, case.image_size)}
        for name, shape in w['runtime_shapes'].items():
            layer = ours[names[name]]
            assert layer.params == shape['params'], (k, name)
            assert layer.macs == shape.get('macs_per_image', 0), (k, name)
        kept = sum(c.params for p, c in ours.items() if '/se_' not in p)
        assert kept == w['own_count']['params_incl_bn_affine']


@pytest.mark.parametrize('mode', ['eval_asis', 'eval_asis_f64', 'eval_randstats', 'train_mode'])
def test_efficientnet_logits_of_every_subnet(efficientnet_case, mode):
    case, net, _ = efficientnet_case
    io = np.load(case.folder / 'io.npz')
    x = jnp.asarray(io['x'].transpose(0, 2, 3, 1))  # NCHW -> NHWC
    variables = net.variables
    if mode == 'eval_randstats':
        stats = convert_torch.convert(dict(np.load(case.folder / 'randstats.npz')), net.arch,
                                      num_subnets=case.num_subnets)['batch_stats']
        variables = {**variables, 'batch_stats': jax.tree.map(jnp.asarray, stats)}
    for k in range(net.structure.num_subnets):
        want = io[f'logits_{mode}_w{k}']
        apply = jax.jit(lambda v, x, k=k: net.model.apply(
            v, x, subnet=k, train=mode == 'train_mode', mutable=['batch_stats'])[0])
        got = np.asarray(apply(variables, x))
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-4, (mode, k, rel)
