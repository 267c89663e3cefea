"""Export of one sub-network as a standalone network and a `jax.export` artifact: the same
logits as the slimmable sub-network, the same parameter count, one-sentence errors."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import check_standalone_subnetworks, random_variables

import spnet_jax
from spnet_jax.core.errors import ConfigError
from spnet_jax.models import get_arch
from spnet_jax.pruning import prune
from spnet_jax.workdir import export
from spnet_jax.workdir.checkpoint import load_network, save_network

ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 32


def _config(full_width):
    return ml_collections.ConfigDict({'model': {'full_width': full_width},
                                      'data': {'image_size': IMAGE_SIZE}})


def _private_statistics(variables, seed):
    """Distinct running statistics for every sub-network, so taking another sub-network's
    (or the full one's prefix) shows in the logits."""
    rng = np.random.default_rng(seed)

    def value(path, s):
        if 'var' in jax.tree_util.keystr(path):
            return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, 0.2, s.shape), jnp.float32)

    return {**variables,
            'batch_stats': jax.tree_util.tree_map_with_path(value, variables['batch_stats'])}


@pytest.fixture(scope='module')
def zpm_resnet(tmp_path_factory):
    """A workdir with a pruned ZPM ResNet-20 of three sub-networks (keep 0.4, 0.7, full)."""
    workdir = tmp_path_factory.mktemp('zpm_resnet')
    arch = get_arch('resnet20', num_classes=7)
    x = jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3))
    base = random_variables(arch.module(arch.plain_structure()), x, seed=1)
    structure, variables, _ = prune(arch, [base], [1.0], keep_ratios=[0.4, 0.7],
                                    image_size=IMAGE_SIZE, zpm='release', round_to=1)
    save_network(str(workdir / 'pruned'), structure, _private_statistics(variables, 2),
                 _config(1.0))
    return workdir


@pytest.fixture(scope='module')
def snet_vgg(tmp_path_factory):
    """A workdir with an S-Net VGG-19 at widths 0.125 and 0.25 (private BN per width)."""
    workdir = tmp_path_factory.mktemp('snet_vgg')
    arch = get_arch('vgg19', num_classes=7, full_width=0.25)
    structure = arch.snet_structure((0.125, 0.25))
    variables = random_variables(arch.module(structure),
                                 jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)), seed=3)
    save_network(str(workdir / 'slim'), structure, variables, _config(0.25))
    return workdir


@pytest.fixture(scope='module')
def exports(zpm_resnet, snet_vgg, tmp_path_factory):
    """Folder of each export used below: ResNet through the API, VGG through the CLI."""
    out = tmp_path_factory.mktemp('exports')
    folders = {}
    for k in (0, 1):
        folders['zpm_resnet', k] = out / f'resnet_{k}'
        info = export.export_subnet(str(zpm_resnet), k, folders['zpm_resnet', k])
        assert info['subnet'] == k
    done = subprocess.run(
        [sys.executable, '-m', 'spnet_jax.export', f'--workdir={snet_vgg}', '--all',
         f'--out={out / "vgg"}'], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'vgg19 sub-network 1' in done.stdout
    for k in (0, 1):
        folders['snet_vgg', k] = out / 'vgg' / f'subnet_{k}'
    return folders


IMAGES = jax.random.normal(jax.random.key(5), (6, IMAGE_SIZE, IMAGE_SIZE, 3))


@pytest.fixture(scope='module')
def slimmable(zpm_resnet, snet_vgg):
    """``(net, logits(k))`` per network: the slimmable sub-network's logits on IMAGES."""
    out = {}
    for name, workdir in (('zpm_resnet', zpm_resnet), ('snet_vgg', snet_vgg)):
        net, cache = spnet_jax.load(str(workdir)), {}
        logits = lambda k, net=net, cache=cache: cache.setdefault(
            k, np.asarray(net(IMAGES, subnet=k, normalized=True)))
        out[name] = (net, logits)
    return out


CASES = [('zpm_resnet', 0), ('zpm_resnet', 1), ('snet_vgg', 0), ('snet_vgg', 1)]


@pytest.mark.parametrize('name,k', CASES)
def test_standalone_network_equals_the_subnetwork(name, k, exports, slimmable):
    net, logits = slimmable[name]
    structure, variables, _ = load_network(str(exports[name, k]))
    # A plain network: one sub-network whose channel counts are sub-network k's.
    assert structure.num_subnets == 1 and structure.method == 'spnet'
    assert structure.full == structure.counts[0] == net.structure.counts[k]
    model = net.arch.module(structure)
    standalone = jax.jit(lambda v, x: model.apply(v, x, subnet=0, train=False))(
        variables, IMAGES)
    np.testing.assert_allclose(standalone, logits(k), rtol=1e-5, atol=1e-5)
    # The comparison means something: sub-networks differ from each other.
    assert np.abs(logits(1 - k) - logits(k)).max() > 1e-2
    # Parameters: exactly the sub-network's (BN scale/bias once).
    count = sum(leaf.size for leaf in jax.tree.leaves(variables['params']))
    assert count == net.subnets[k]['params']
    info = json.loads((exports[name, k] / 'export.json').read_text())
    assert info['subnet'] == k and info['arch'] == net.arch.name
    assert info['params'] == net.subnets[k]['params'] and info['macs'] == net.subnets[k]['macs']
    assert info['input_shape'] == ['batch', IMAGE_SIZE, IMAGE_SIZE, 3]
    assert info['num_classes'] == 7
    assert info['platforms'] == ['cpu', 'cuda', 'tpu']  # runs wherever it is deployed


@pytest.mark.parametrize('k', [0, 1])
def test_zpm_stream_readers_read_the_compact_stream_densely(k, exports, slimmable):
    net, _ = slimmable['zpm_resnet']
    S = net.structure
    structure, variables, _ = load_network(str(exports['zpm_resnet', k]))
    masks = variables['masks']
    # Pruned sub-networks have streams wider than their block's output, so the readers' input rows
    # are the stream's size (not the block end's count).
    wider = [j for j in S.junctions
             if S.stream_size(j, k) > S.count(f'{j}/conv2', k)]
    assert wider
    for j in S.junctions:
        size = S.stream_size(j, k)
        np.testing.assert_array_equal(masks[j]['zpm']['fused_0'], np.arange(size))
        np.testing.assert_array_equal(masks[j]['zpm']['body_0'],
                                      net.variables['masks'][j]['zpm'][f'body_{k}'])
    # layer2_0 reads stage 1's last stream; its kernels are gathered by k's fused index.
    fused = np.asarray(net.variables['masks']['layer1_2']['zpm'][f'fused_{k}'])
    for conv in ('conv1', 'proj_conv'):
        got = variables['params']['layer2_0'][conv]['kernel']
        full = np.asarray(net.variables['params']['layer2_0'][conv]['kernel'])
        n_out = S.count(f'layer2_0/{conv}', k)
        np.testing.assert_array_equal(got, full[:, :, fused, :n_out])


def _run_artifact(path: Path, inputs: dict, tmp_path: Path) -> dict:
    """Runs the artifact in a fresh interpreter that cannot import spnet_jax or Flax."""
    np.savez(tmp_path / 'inputs.npz', **inputs)
    script = textwrap.dedent(f"""
        import sys
        sys.modules['spnet_jax'] = sys.modules['flax'] = None  # any import of them fails
        import jax, numpy as np
        exported = jax.export.deserialize(open({str(path)!r}, 'rb').read())
        inputs = np.load({str(tmp_path / 'inputs.npz')!r})
        np.savez({str(tmp_path / 'outputs.npz')!r},
                 **{{k: np.asarray(exported.call(inputs[k])) for k in inputs.files}})
        print(exported.in_avals[0].shape)
    """)
    done = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f'(batch, {IMAGE_SIZE}, {IMAGE_SIZE}, 3)'
    with np.load(tmp_path / 'outputs.npz') as out:
        return {k: out[k] for k in out.files}


@pytest.mark.parametrize('name,k', [('zpm_resnet', 0), ('snet_vgg', 1)])
def test_jax_export_artifact_runs_without_this_package(name, k, exports, slimmable, tmp_path):
    _, logits = slimmable[name]
    x = np.asarray(IMAGES)
    # The batch is symbolic: any size runs, here 1 and 5.
    outputs = _run_artifact(exports[name, k] / export.ARTIFACT,
                            {'one': x[:1], 'five': x[1:]}, tmp_path)
    assert outputs['one'].shape == (1, 7) and outputs['five'].shape == (5, 7)
    got = np.concatenate([outputs['one'], outputs['five']])
    np.testing.assert_allclose(got, logits(k), rtol=1e-5, atol=1e-5)


def test_spnet_jax_load_runs_the_standalone_network(exports, slimmable):
    net, logits = slimmable['zpm_resnet']
    standalone = spnet_jax.load(str(exports['zpm_resnet', 0]))
    np.testing.assert_allclose(standalone(IMAGES, normalized=True), logits(0), rtol=1e-5,
                               atol=1e-5)
    assert standalone.subnets[0]['params'] == net.subnets[0]['params']


def test_overwrite_replaces_an_earlier_export_only(zpm_resnet, tmp_path):
    out = tmp_path / 'out'
    first = export.export_subnet(str(zpm_resnet), -1, out)
    assert first['subnet'] == 2 and (out / export.ARTIFACT).exists()
    with pytest.raises(ConfigError, match=r'is not empty; choose a new folder or pass '
                                          r'--overwrite'):
        export.export_subnet(str(zpm_resnet), 0, out)
    again = export.export_subnet(str(zpm_resnet), 0, out, overwrite=True)
    assert again['subnet'] == 0 and again['params'] < first['params']
    (out / 'notes.txt').write_text('mine')
    with pytest.raises(ConfigError, match='holds files that no export wrote'):
        export.export_subnet(str(zpm_resnet), 0, out, overwrite=True)
    assert (out / 'notes.txt').read_text() == 'mine'


def test_subnet_by_width_label_and_image_size(snet_vgg, tmp_path):
    info = export.export_subnet(str(snet_vgg), 0.125, tmp_path / 'out', image_size=64)
    assert info['subnet'] == 0 and info['width'] == 0.125 and info['method'] == 'snet'
    assert info['input_shape'] == ['batch', 64, 64, 3]
    exported = jax.export.deserialize((tmp_path / 'out' / export.ARTIFACT).read_bytes())
    assert exported.call(np.zeros((2, 64, 64, 3), np.float32)).shape == (2, 7)


def test_errors_are_one_sentence(zpm_resnet, tmp_path):
    with pytest.raises(ConfigError, match='holds no spnet_jax network'):
        export.export_subnet(str(tmp_path), 0, tmp_path / 'out')
    with pytest.raises(ConfigError, match='is not a directory'):
        export.export_subnet(str(tmp_path / 'missing'), 0, tmp_path / 'out')
    with pytest.raises(ConfigError, match=r'subnet=3 is out of range: this network has 3 '
                                          r'sub-networks'):
        export.export_subnet(str(zpm_resnet), 3, tmp_path / 'out')
    with pytest.raises(ConfigError, match='holds the network being exported'):
        export.export_subnet(str(zpm_resnet), 0, zpm_resnet, overwrite=True)
    with pytest.raises(ConfigError, match=r'names no jax.export platform \(gpu\); choose '
                                          r'from cpu,cuda,rocm,tpu'):
        export.export_subnet(str(zpm_resnet), 0, tmp_path / 'out', platforms=('cuda', 'gpu'))
    with pytest.raises(ConfigError, match='--image_size=0 must be a positive number'):
        export.export_subnet(str(zpm_resnet), 0, tmp_path / 'out', image_size=0)
    assert not (tmp_path / 'out').exists()  # nothing written on error


@pytest.mark.parametrize('args,message', [
    (['--subnet=7'], 'error: subnet=7 is out of range'),
    (['--subnet=big'], "error: --subnet='big' is neither an index nor a width"),
    ([], 'error: give --subnet=K'),
])
def test_cli_errors_exit_2_with_one_line(args, message, zpm_resnet, tmp_path):
    done = subprocess.run(
        [sys.executable, '-m', 'spnet_jax.export', f'--workdir={zpm_resnet}',
         f'--out={tmp_path / "out"}', *args], cwd=ROOT, capture_output=True, text=True,
        timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr[-2000:]
    assert 'Traceback' not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize('name,width,variant', [('mobilenet_v2', 0.35, 'release'),
                                                ('resnet20', 1.0, 'none'),
                                                ('mobilenet_v2', 0.35, 'aligned')])
def test_standalone_equals_subnetwork_other_layouts(name, width, variant):
    """MobileNetV2's ZPM streams (release and aligned) and ResNet's one-group (non-ZPM) stages
    export too."""
    arch = get_arch(name, num_classes=7, full_width=width)
    x = jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3))
    base = random_variables(arch.module(arch.plain_structure()), x, seed=4)
    structure, variables, _ = prune(arch, [base], [width], keep_ratios=[0.4], image_size=32,
                                    zpm=variant, round_to=1)
    net = spnet_jax.SlimmableNetwork(arch, structure, _private_statistics(variables, 5),
                                     image_size=IMAGE_SIZE)
    check_standalone_subnetworks(net, IMAGES)


# --------------------------------------------------------------- keep_first (subnets.py)
def _nested_structure(arch, num_subnets, seed):
    """A random SP-Net structure of ``arch`` (no ZPM) with nested counts: each group's
    sub-networks keep a sorted random number of channels, the last all of them."""
    from spnet_jax.core.structure import Structure

    table = arch.table()
    rng = np.random.default_rng(seed)
    per_group = [sorted(rng.integers(1, g.size + 1, num_subnets - 1).tolist()) + [g.size]
                 for g in table.groups]
    return Structure(arch=arch.name, method='spnet', groups=table.group_names,
                     full=tuple(g.size for g in table.groups),
                     counts=tuple(tuple(c[k] for c in per_group) for k in range(num_subnets))
                     ).validate(table)


@pytest.mark.parametrize('name,width,method,count', [
    ('mobilenet_v1', 0.25, 'spnet', 3),  # the release's case: MobileNetV1 without its x1.5
    ('vgg19', 0.125, 'spnet', 1),
    ('resnet20', 0.5, 'snet', 2),        # S-Net: private affines of the kept widths stay
])
def test_keep_first_keeps_the_first_subnetworks_exactly(name, width, method, count):
    from spnet_jax.pruning.subnets import keep_first

    arch = get_arch(name, num_classes=7, full_width=width)
    if method == 'snet':
        structure = arch.snet_structure((0.25, 0.375, 0.5))
    else:
        structure = _nested_structure(arch, 4, seed=1)
    model = arch.module(structure)
    variables = random_variables(model, jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3)), seed=2)
    kept, kept_variables = keep_first(arch.table(), structure, variables, count)
    assert kept.counts == structure.counts[:count] and kept.full == structure.counts[count - 1]
    assert kept.method == method and kept.num_subnets == count
    assert kept.widths == (None if structure.widths is None else structure.widths[:count])
    kept_model = arch.module(kept)
    want = jax.eval_shape(lambda: kept_model.init(jax.random.key(0), IMAGES[:1]))
    assert export._shapes(kept_variables) == export._shapes(want)  # fits the new model
    for k in range(count):
        before = jax.jit(lambda v, x, k=k: model.apply(v, x, subnet=k))(variables, IMAGES)
        after = jax.jit(lambda v, x, k=k: kept_model.apply(v, x, subnet=k))(kept_variables,
                                                                             IMAGES)
        np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_keep_first_refusals():
    from spnet_jax.pruning.subnets import keep_first, keep_first_structure

    arch = get_arch('resnet20', num_classes=7, full_width=0.5)
    structure = _nested_structure(arch, 3, seed=3)
    for count in (0, 3, -1):
        with pytest.raises(ConfigError, match=rf'^keeping the first {count} sub-networks of a '
                                              r'network of 3: the count must be between 1 and '
                                              r'2 \(at least one is dropped\)\.$'):
            keep_first_structure(structure, count)
    zpm = dataclasses.replace(structure, junctions=('layer1_0',), stream_sizes=((1,),) * 3)
    with pytest.raises(ConfigError, match=r'^cannot drop sub-networks of a ZPM resnet20: its '
                                          r'residual streams are numbered'):
        keep_first(arch.table(zpm=True), zpm, {'params': {}}, 2)
    counts = [list(c) for c in structure.counts]
    counts[0][0], counts[1][0] = structure.full[0], 1  # sub-network 0 wider than 1 there
    crossed = dataclasses.replace(structure, counts=tuple(tuple(c) for c in counts))
    with pytest.raises(ConfigError, match=rf'^cannot make sub-network 1 the full network: '
                                          rf'sub-network 0 has {structure.full[0]} channels in '
                                          rf"layer '{structure.groups[0]}', more than its 1; "
                                          r'its counts are not nested\.$'):
        keep_first_structure(crossed, 2)
