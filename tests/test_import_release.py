"""`python -m spnet_jax.import_release`: the release's own checkpoints (a fine-tuned SP-Net,
an S-Net, a MobileNetV1 after `eliminate_width`) into workdirs that `spnet_jax.load`,
`spnet_jax.evaluate` and `spnet_jax.export` take; every bad input refused before any write.

The release-layout files of the synthetic cases are written here from our models' shapes
with this file's own name mapping (`release_module`), not with `convert_torch`."""

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from helpers import needs_fashion_mnist, needs_reference, random_variables, reference_case

import spnet_jax
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.models import get_arch
from spnet_jax.pruning import prune
from spnet_jax.train import release_import as import_release
from spnet_jax.train import validate
from spnet_jax.train.stages import saved_settings
from spnet_jax.workdir import checkpoint, convert_torch

ROOT = Path(__file__).resolve().parents[1]
MBV2 = reference_case('mobilenet_v2_multibase_zpm')
needs_mbv2 = needs_reference('mobilenet_v2_multibase_zpm')


def run_import(workdir, config, checkpoint, bases=None, *overrides, expect=0):
    cmd = [sys.executable, '-m', 'spnet_jax.import_release', f'--config={ROOT / config}',
           f'--checkpoint={checkpoint}', f'--workdir={workdir}', *overrides]
    if bases:
        cmd.append('--bases=' + ','.join(f'{w}={p}' for w, p in bases))
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == expect, done.stderr[-3000:]
    return done


def flat(tree):
    return traverse_util.flatten_dict(dict(tree), sep='/')


def assert_trees_equal(got, want):
    got, want = flat(got), flat(want)
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))[:4]
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=k)


# --------------------------------------------------------------- the release's layout
def release_module(arch_name, path):
    """The release's module name of our module ``path`` (MobileNetV1 and CIFAR ResNet-20)."""
    if path == 'head':
        return 'classifier.0'
    if path in ('stem_conv', 'stem_bn'):
        return f'features.0.{0 if path == "stem_conv" else 1}'
    block, part = path.split('/')
    if arch_name == 'mobilenet_v1':  # features.<i>.body: dw conv, BN, ReLU, pw conv, BN, ReLU
        at = {'dw_conv': 0, 'dw_bn': 1, 'pw_conv': 3, 'pw_bn': 4}[part]
        return f'features.{int(block.removeprefix("block"))}.body.{at}'
    assert arch_name == 'resnet20'  # layer<s>_<i> is the release's block 3(s-1)+i+1
    stage, index = map(int, block.removeprefix('layer').split('_'))
    b = 3 * (stage - 1) + index + 1
    if part.startswith('proj'):
        return f'features.{b}.shortcut.{0 if part == "proj_conv" else 1}'
    return f'features.{b}.body.{3 * (int(part[-1]) - 1) + (0 if "conv" in part else 1)}'


def to_release(arch_name, variables, method, num_subnets):
    """Our variables as the release's state dict: OIHW kernels, (out, in) classifier, BN
    weight/bias; SP-Net statistics ``bn.<k>.running_*`` (k < last) and plain ``running_*``
    (the last); S-Net's switchable BN ``bn.<k>.{weight,bias,running_*}`` for every k."""
    state = {}
    for path, x in flat(variables['params']).items():
        module, _, leaf = path.rpartition('/')
        name, x = release_module(arch_name, module), np.asarray(x)
        if leaf == 'kernel':
            state[f'{name}.weight'] = x.transpose(3, 2, 0, 1) if x.ndim == 4 else x.T
        elif leaf in ('scale', 'bias'):
            state[f"{name}.{'weight' if leaf == 'scale' else 'bias'}"] = x
        else:
            kind, k = leaf.split('_')
            state[f"{name}.bn.{k}.{'weight' if kind == 'scale' else 'bias'}"] = x
    for path, x in flat(variables['batch_stats']).items():
        module, _, leaf = path.rpartition('/')
        stat, k = leaf.split('_')
        name = release_module(arch_name, module)
        if method == 'spnet' and int(k) == num_subnets - 1:
            state[f'{name}.running_{stat}'] = np.asarray(x)
            state[f'{name}.num_batches_tracked'] = np.asarray(7)
        else:
            state[f'{name}.bn.{k}.running_{stat}'] = np.asarray(x)
            state[f'{name}.bn.{k}.num_batches_tracked'] = np.asarray(7)
    return state


def save_pt(path, state):
    """As the release saves it: ``torch.save({'model': state_dict, ...})``."""
    torch.save({'model': {k: torch.from_numpy(np.array(v)) for k, v in
                          state.items()}, 'best_val': 0.3}, path)
    return path


# --------------------------------------------------------------- 1. the reference SP-Net
@needs_mbv2
def test_fine_tuned_spnet_of_the_release_imports_with_its_logits(tmp_path):
    """The release's pruned, sorted MobileNetV2 (ZPM, multi-base) as a fine-tuned checkpoint:
    every sub-network's logits equal the release's."""
    out = tmp_path / 'run'
    done = run_import(out, 'configs/mobilenet_v2.py', MBV2 / 'pruned_state_dict.npz',
                      [(1.0, MBV2 / 'base_1.0.npz'), (1.3, MBV2 / 'base_1.3.npz')])
    assert sorted(os.listdir(out)) == ['slim'] and 'slim: 3 sub-networks' in done.stdout
    net = spnet_jax.load(out)
    assert net.path == str(out / 'slim') and net.structure.zpm
    io = np.load(MBV2 / 'io.npz')
    x = io['x'].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    for k in range(3):  # eval mode; the file's statistics are mean 0, variance 1
        want = io[f'logits_eval_asis_w{k}']
        got = np.asarray(net(x, subnet=k, normalized=True))
        rel = np.abs(got - want).max() / np.abs(want).max()
        assert rel < 1e-4, (k, rel)


@needs_mbv2
def test_float64_checkpoint_after_a_training_step_imports_every_array(tmp_path):
    """The release's network after one fine-tuning step (float64, other statistics per
    sub-network): stored as float32, every array as `convert_torch.convert` reads it."""
    out = tmp_path / 'run'
    run_import(out, 'configs/mobilenet_v2.py', MBV2 / 'train_step_f64_after.npz',
               [(1.0, MBV2 / 'base_1.0.npz'), (1.3, MBV2 / 'base_1.3.npz')])
    net = spnet_jax.load(out)
    want = convert_torch.convert(dict(np.load(MBV2 / 'train_step_f64_after.npz')), net.arch,
                                 num_subnets=3)
    for collection in ('params', 'batch_stats'):
        assert {x.dtype for x in jax.tree.leaves(net.variables[collection])} == {
            np.dtype('float32')}
        assert_trees_equal(net.variables[collection], want[collection])


# --------------------------------------------------------------- 2. an S-Net
SNET_CONFIG = 'configs/tiny.py:snet'  # ResNet-20 x0.25 / x0.5, 1-channel 28 px, 10 classes


@pytest.fixture(scope='module')
def snet(tmp_path_factory):
    """A release S-Net checkpoint (.pt) of random weights, imported with the command."""
    folder = tmp_path_factory.mktemp('snet')
    arch = get_arch('resnet20', num_classes=10, full_width=0.5, stem='small')
    structure = arch.snet_structure((0.25, 0.5))
    variables = random_variables(arch.module(structure), jnp.zeros((1, 28, 28, 1)), seed=3)
    path = save_pt(folder / 'snet.pt', to_release('resnet20', variables, 'snet', 2))
    done = run_import(folder / 'run', SNET_CONFIG, path)
    return {'arch': arch, 'structure': structure, 'variables': variables, 'path': path,
            'workdir': folder / 'run', 'stdout': done.stdout}


def test_snet_imports_each_widths_own_batch_norm(snet):
    net = spnet_jax.load(snet['workdir'])
    assert net.structure == snet['structure'] and net.path == str(snet['workdir'] / 'slim')
    assert 'S-Net resnet20' in snet['stdout']
    for collection in ('params', 'batch_stats'):
        assert_trees_equal(net.variables[collection], snet['variables'][collection])
    # Width k runs on bn.<k>: the widths' BN values differ, so a swap would show.
    state = torch.load(snet['path'])['model']
    scale = net.variables['params']['layer1_0']['bn1']
    np.testing.assert_array_equal(scale['scale_0'], state['features.1.body.1.bn.0.weight'])
    np.testing.assert_array_equal(scale['scale_1'], state['features.1.body.1.bn.1.weight'])
    assert np.abs(scale['scale_0'] - scale['scale_1'][:scale['scale_0'].shape[0]]).min() > 0
    images = np.asarray(jax.random.normal(jax.random.key(4), (3, 28, 28, 1)))
    model = snet['arch'].module(snet['structure'])
    for k in (0, 1):
        np.testing.assert_allclose(net(images, subnet=k, normalized=True),
                                   model.apply(snet['variables'], images, subnet=k),
                                   rtol=1e-5, atol=1e-5)


@needs_fashion_mnist
def test_imported_snet_evaluates_and_exports(snet, tmp_path):
    """`spnet_jax.evaluate` and `spnet_jax.export` take the imported workdir as they take a
    trained one."""
    from spnet_jax.workdir import export

    workdir = tmp_path / 'run'
    shutil.copytree(snet['workdir'], workdir)
    done = subprocess.run(
        [sys.executable, '-m', 'spnet_jax.evaluate', f'--workdir={workdir}', '--latency_batch=0'],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 0, done.stderr[-3000:]
    net = spnet_jax.load(workdir)
    assert all(0 <= s['top1'] <= 1 for s in net.subnets)  # the report is the imported one's
    info = export.export_subnet(workdir, 0, tmp_path / 'small', platforms=('cpu',))
    assert info['subnet'] == 0 and info['method'] == 'snet'
    exported = jax.export.deserialize((tmp_path / 'small' / export.ARTIFACT).read_bytes())
    # Both take the dataset's uint8 pixels and normalise them as in training.
    assert info['input_dtype'] == 'uint8' and info['normalization'] == {
        'mean': [0.2860], 'std': [0.3530]}
    pixels = np.random.default_rng(5).integers(0, 256, (2, 28, 28, 1), np.uint8)
    np.testing.assert_allclose(exported.call(pixels), net(pixels, subnet=0), rtol=1e-5,
                               atol=1e-5)


# --------------------------------------------------------------- 3. MobileNetV1, eliminated
V1_CONFIG = 'configs/mobilenet_v1.py'
V1_OVERRIDES = ('--config.data.name=cifar10', '--config.model.num_classes=10',
                '--config.model.full_width=0.75',
                '--config.base.widths=0.25,0.5', '--config.prune.keep_ratios=0.3,0.9',
                '--config.data.image_size=32')


def _v1_config():
    config = importlib.import_module('configs.mobilenet_v1').get_config()
    config.data.name, config.model.num_classes, config.model.full_width = 'cifar10', 10, 0.75
    config.base.widths, config.prune.keep_ratios = (0.25, 0.5), (0.3, 0.9)
    return config


@pytest.fixture(scope='module')
def v1(tmp_path_factory):
    """A small re-trained SP-MobileNetV1 (bases x0.25, x0.5; full x0.75, the scaffold) as
    release files: the bases, the fine-tuned network, and that network after the release's
    `eliminate_width` (its last sub-network dropped)."""
    folder = tmp_path_factory.mktemp('v1')
    config = _v1_config()
    arch = get_arch('mobilenet_v1', num_classes=10, full_width=0.75)
    x = jnp.zeros((1, 32, 32, 3))
    bases, paths = [], []
    for i, w in enumerate(config.base.widths):
        base = random_variables(arch.module(arch.plain_structure(w)), x, seed=10 + i)
        bases.append(base)
        paths.append((w, folder / f'base_{w}.npz'))
        np.savez(paths[-1][1], **to_release('mobilenet_v1', base, 'spnet', 1))
    p = config.prune
    structure, _, _ = prune(arch, bases, config.base.widths, keep_ratios=p.keep_ratios,
                            image_size=32, zpm='none', min_channels_ratio=p.min_channels_ratio,
                            reinit_rng=jax.random.key(0), round_to=1)
    assert structure.num_subnets == 3
    assert all(a <= b for a, b in zip(structure.counts[0], structure.counts[1], strict=True))
    variables = random_variables(arch.module(structure), x, seed=12)
    full = to_release('mobilenet_v1', variables, 'spnet', 3)
    np.savez(folder / 'finetuned.npz', **full)
    # eliminate_width in the release's terms: every tensor cut to sub-network 1's prefix,
    # bn.1's statistics become the plain running_*, bn.0 stays.
    kept = Structure(arch=structure.arch, method='spnet', groups=structure.groups,
                     full=structure.counts[1], counts=structure.counts[:2])
    shapes = jax.eval_shape(lambda: arch.module(kept).init(jax.random.key(0), x))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    eliminated = {}
    for key, value in to_release('mobilenet_v1', zeros, 'spnet', 2).items():
        source = full[key.replace('running_', 'bn.1.running_')] if (
            key.endswith(('.running_mean', '.running_var')) and '.bn.' not in key) else full[key]
        eliminated[key] = source[tuple(slice(0, n) for n in value.shape)]
    np.savez(folder / 'eliminated.npz', **eliminated)
    return {'arch': arch, 'structure': structure, 'variables': variables, 'kept': kept,
            'bases': paths, 'folder': folder}


@pytest.mark.slow  # two imports of MobileNetV1 with its scaffold: ~2 min on 2 cores
def test_mobilenet_v1_after_eliminate_width_imports_as_the_published_network(v1):
    folder = v1['folder']
    run_import(folder / 'full', V1_CONFIG, folder / 'finetuned.npz', v1['bases'],
               *V1_OVERRIDES, '--config.slim.drop_scaffold=True')
    done = run_import(folder / 'eliminated', V1_CONFIG, folder / 'eliminated.npz',
                      v1['bases'], *V1_OVERRIDES)
    assert 'published: 2 sub-networks' in done.stdout
    assert sorted(os.listdir(folder / 'eliminated')) == ['published']  # no scaffold: no slim
    assert sorted(os.listdir(folder / 'full')) == ['published', 'slim']
    eliminated, published = (spnet_jax.load(folder / name) for name in ('eliminated', 'full'))
    assert eliminated.path.endswith('eliminated/published') and eliminated.structure == v1['kept']
    assert published.path.endswith('full/published') and published.structure == v1['kept']
    for collection in ('params', 'batch_stats'):  # keep_first equals the release's cut
        assert_trees_equal(eliminated.variables[collection], published.variables[collection])
    slim = spnet_jax.load(folder / 'full' / 'slim')
    assert slim.structure == v1['structure']
    assert_trees_equal(slim.variables['params'], v1['variables']['params'])
    images = np.asarray(jax.random.normal(jax.random.key(6), (3, 32, 32, 3)))
    for k in (0, 1):
        np.testing.assert_allclose(eliminated(images, subnet=k, normalized=True),
                                   slim(images, subnet=k, normalized=True),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match='out of range'):
        eliminated(images, subnet=2, normalized=True)
    # `spnet_jax.evaluate` reads that run's config and network from published/ (no slim/).
    config = saved_settings(str(folder / 'eliminated'))
    assert (config.model.name, config.model.full_width) == ('mobilenet_v1', 0.75)
    assert checkpoint.final_network_dir(str(folder / 'eliminated')).endswith('published')
    validate.check_workdir(config, str(folder / 'eliminated'), ('eval',))


# --------------------------------------------------------------- 4. refusals
def _refused(tmp_path, *args, **kw):
    """The library call refuses with one sentence and writes nothing."""
    out = tmp_path / 'out'
    with pytest.raises(ConfigError) as e:
        import_release.import_release(*args, workdir=str(out), **kw)
    message = str(e.value)
    assert '\n' not in message and message.endswith('.'), message
    assert not out.exists()
    return message


def test_refusals_name_the_problem_and_write_nothing(v1, snet, tmp_path):
    config = _v1_config()
    bases = ','.join(f'{w}={p}' for w, p in v1['bases'])
    finetuned = str(v1['folder'] / 'finetuned.npz')
    snet_config = importlib.import_module('configs.tiny').get_config('snet')
    # Inputs missing or of the wrong kind.
    assert 'needs --bases=WIDTH=PATH' in _refused(tmp_path, config, finetuned)
    assert _refused(tmp_path, snet_config, str(snet['path']), bases=bases).startswith(
        '--bases is only for an SP-Net')
    assert _refused(tmp_path, config, str(tmp_path / 'nope.pt'), bases=bases) == (
        f'--checkpoint={tmp_path / "nope.pt"} does not exist.')
    assert 'does not exist' in _refused(tmp_path, config, finetuned,
                                        bases=bases.replace('base_0.5', 'missing'))
    assert 'differ from config base.widths' in _refused(
        tmp_path, config, finetuned, bases=bases.replace('0.25=', '0.3='))
    (tmp_path / 'junk.pt').write_text('not a checkpoint')
    junk = _refused(tmp_path, config, str(tmp_path / 'junk.pt'), bases=bases)
    assert junk.startswith(f'--checkpoint={tmp_path / "junk.pt"} ') and 'readable' in junk, junk
    # A checkpoint of another architecture, or another number of sub-networks.
    assert _refused(tmp_path, snet_config, finetuned).startswith(
        f'--checkpoint={finetuned} is not a resnet20 checkpoint: its key ')
    assert 'holds 1 sub-network(s) but the mobilenet_v1 SP-Net of 3 sub-networks' in _refused(
        tmp_path, config, str(v1['bases'][0][1]), bases=bases)
    wider = importlib.import_module('configs.tiny').get_config('snet')
    wider.slim.widths = (0.125, 0.25, 0.5)
    assert 'holds 2 sub-network(s) but the S-Net of resnet20 at slim.widths=(0.125, 0.25, ' \
        '0.5) has 3' in _refused(tmp_path, wider, str(snet['path']))
    # The same number, other counts: the first differing key, in the release's names.
    config.prune.keep_ratios = (0.3, 0.5)
    message = _refused(tmp_path, config, finetuned, bases=bases)
    assert message.startswith(f'--checkpoint={finetuned} does not fit the network (features.')
    assert 'another pruning' in message
    # A workdir that already holds a network is left as it is.
    out = tmp_path / 'taken'
    (out / 'slim').mkdir(parents=True)
    (out / 'slim' / 'mine').write_text('x')
    with pytest.raises(ConfigError, match=r'already holds a network'):
        import_release.import_release(snet_config, str(snet['path']), str(out))
    assert os.listdir(out / 'slim') == ['mine']


@pytest.mark.parametrize('case,message', [
    ('no_checkpoint', '--checkpoint=/nonexistent.pt does not exist.'),
    ('no_bases', "an SP-Net (config method='spnet') needs --bases=WIDTH=PATH"),
])
def test_command_exits_2_with_one_line_before_writing(case, message, v1, tmp_path):
    out = tmp_path / 'out'
    bases = '--bases=' + ','.join(f'{w}={p}' for w, p in v1['bases'])
    args = {'no_checkpoint': ['--checkpoint=/nonexistent.pt', bases],
            'no_bases': [f'--checkpoint={v1["folder"] / "finetuned.npz"}']}[case]
    cmd = [sys.executable, '-m', 'spnet_jax.import_release', f'--config={ROOT / V1_CONFIG}',
           f'--workdir={out}', *V1_OVERRIDES, *args]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'error: {message}'), done.stderr
    assert not out.exists()
