"""The release's EfficientNet checkpoints (``.pt``, its ``sp_efficientnet`` state dicts): a
base pruned by `spnet_jax.prune --bases`, a fine-tuned SP-Net and an S-Net imported by
`spnet_jax.import_release`.

The synthetic files are written here in the release's layout with this file's own name
mapping (`release_key`, read off ``models/sp_efficientnet.py``: each block's ``body`` is a
Sequential of conv, BN, SiLU per conv, the squeeze-and-excitation one module with ``fc1`` /
``fc2`` 1x1 convs with bias, and ``classifier.1`` after the dropout), not with
`convert_torch`."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import release_cases
import torch
from flax import traverse_util
from helpers import fresh_statistics, random_variables

import spnet_jax
from spnet_jax.models import get_arch

ROOT = Path(__file__).resolve().parents[1]


def run(module, *args):
    done = subprocess.run([sys.executable, '-m', module, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def release_key(params, path):
    """The release's module name of our module ``path`` ('block3/se_reduce', ...)."""
    blocks = sorted(int(k.removeprefix('block')) for k in params if k.startswith('block'))
    fixed = {'stem_conv': 'features.0.0', 'stem_bn': 'features.0.1', 'head': 'classifier.1',
             'last_conv': f'features.{blocks[-1] + 1}.0',
             'last_bn': f'features.{blocks[-1] + 1}.1'}
    if path in fixed:
        return fixed[path]
    block, part = path.split('/')
    order = (['expand_conv', 'expand_bn', None] if 'expand_conv' in params[block] else []) + [
        'dw_conv', 'dw_bn', None, 'se', 'project_conv', 'project_bn']
    se = {'se_reduce': 'fc1', 'se_expand': 'fc2'}
    at = order.index('se' if part in se else part)
    return f'features.{block.removeprefix("block")}.body.{at}' + (
        f'.{se[part]}' if part in se else '')


def to_release(variables, method, num_subnets):
    """Our variables as a release state dict: OIHW conv kernels, the SE's FCs as (out, in,
    1, 1), the classifier (out, in); SP-Net statistics ``bn.<k>.running_*`` (k < last) and
    plain ``running_*``; S-Net's switchable BN ``bn.<k>.*`` for every width k."""
    params = variables['params']
    state = {}
    flat = lambda tree: traverse_util.flatten_dict(dict(tree), sep='/')
    for path, x in flat(params).items():
        module, _, leaf = path.rpartition('/')
        name, x = release_key(params, module), np.asarray(x)
        if leaf == 'kernel' and x.ndim == 4:
            state[f'{name}.weight'] = x.transpose(3, 2, 0, 1)
        elif leaf == 'kernel':
            state[f'{name}.weight'] = x.T if module == 'head' else x.T[:, :, None, None]
        elif leaf in ('scale', 'bias'):
            state[f"{name}.{'weight' if leaf == 'scale' else 'bias'}"] = x
        else:
            kind, k = leaf.split('_')
            state[f"{name}.bn.{k}.{'weight' if kind == 'scale' else 'bias'}"] = x
    for path, x in flat(variables['batch_stats']).items():
        module, _, leaf = path.rpartition('/')
        stat, k = leaf.split('_')
        name = release_key(params, module)
        if method == 'spnet' and int(k) == num_subnets - 1:
            state[f'{name}.running_{stat}'] = np.asarray(x)
        else:
            state[f'{name}.bn.{k}.running_{stat}'] = np.asarray(x)
    return state


def save_pt(path, state):
    torch.save({'model': {k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                'best_val': 0.3}, path)
    return path


def npz_to_pt(npz, pt):
    with np.load(npz) as f:
        return save_pt(pt, {k: f[k] for k in f.files})


@pytest.mark.parametrize('name', release_cases.case_params())
def test_fine_tuned_spnet_of_the_release_imports_with_its_logits(name, tmp_path):
    """The release's pruned, sorted EfficientNet and its bases as ``.pt`` files: every
    sub-network's logits equal the release's."""
    case = release_cases.read_case(name)
    bases = [(w, npz_to_pt(path, tmp_path / f'base_{w}.pt')) for w, path in case.bases]
    checkpoint = npz_to_pt(case.folder / 'pruned_state_dict.npz', tmp_path / 'best_model.pt')
    out = tmp_path / 'run'
    run('spnet_jax.import_release', f'--config={ROOT / "configs" / release_cases.CONFIG}',
        f'--checkpoint={checkpoint}', f'--workdir={out}',
        '--bases=' + ','.join(f'{w}={p}' for w, p in bases), *case.flags())
    net = spnet_jax.load(out)
    assert net.structure.num_subnets == case.num_subnets
    io = np.load(case.folder / 'io.npz')
    x = io['x'].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    for k in range(case.num_subnets):  # the file's statistics are mean 0, variance 1
        want = io[f'logits_eval_asis_w{k}']
        got = np.asarray(net(x, subnet=k, normalized=True))
        assert np.abs(got - want).max() / np.abs(want).max() < 1e-4, k


SMALL = ['--config.model.name=efficientnet_b1', '--config.model.num_classes=10',
         '--config.data.name=cifar10', '--config.data.image_size=32']


@pytest.mark.slow  # 70-77 s on CI's 2 cores
def test_release_base_prunes_and_an_snet_imports(tmp_path):
    """A B1 base (``.pt``, random weights) prunes into a network whose full sub-network is
    the base's function; a B1 S-Net (x0.25 / x0.5) imports with each width's own BN."""
    images = jnp.asarray(np.random.default_rng(2).normal(size=(2, 32, 32, 3)), jnp.float32)
    arch = get_arch('efficientnet_b1', num_classes=10, full_width=0.5)
    base = random_variables(arch.module(arch.plain_structure()), images, seed=5)
    path = save_pt(tmp_path / 'base.pt', to_release(base, 'spnet', 1))
    run('spnet_jax.prune', f'--config={ROOT / "configs" / "efficientnet_b2.py"}',
        f'--workdir={tmp_path / "pruned"}', f'--bases=0.5={path}', *SMALL,
        '--config.base.widths=0.5,', '--config.model.full_width=0.5',
        '--config.prune.keep_ratios=0.4,')
    net = spnet_jax.load(tmp_path / 'pruned')
    # Pruning starts every sub-network's BN statistics afresh (mean 0, variance 1).
    want = arch.module(arch.plain_structure()).apply(fresh_statistics(base), images)
    np.testing.assert_allclose(net(images, subnet=-1, normalized=True), want, rtol=1e-4,
                               atol=1e-5)

    structure = arch.snet_structure((0.25, 0.5))
    snet = random_variables(arch.module(structure), images, seed=6)
    path = save_pt(tmp_path / 'snet.pt', to_release(snet, 'snet', 2))
    run('spnet_jax.import_release', f'--config={ROOT / "configs" / "efficientnet_b2_snet.py"}',
        f'--checkpoint={path}', f'--workdir={tmp_path / "snet"}', *SMALL,
        '--config.model.full_width=0.5', '--config.slim.widths=0.25,0.5')
    imported = spnet_jax.load(tmp_path / 'snet')
    assert imported.structure == structure
    # The squeeze-and-excitation is slimmed with the width, as the release's S-Net does.
    squeeze = [structure.derived_counts_of(name, 0) for name in structure.derived]
    assert all(a <= b for a, b in squeeze) and any(a < b for a, b in squeeze)
    model = arch.module(structure)
    for k in (0, 1):
        np.testing.assert_allclose(imported(images, subnet=k, normalized=True),
                                   model.apply(snet, images, subnet=k), rtol=1e-5, atol=1e-5)
    assert jax.tree.structure(imported.variables['params']) == jax.tree.structure(snet['params'])
