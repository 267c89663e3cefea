"""`spnet_jax.load`: which network a workdir, stage folder or checkpoint names; the accuracy
evaluation recorded; logits on 8 devices equal 1 device's; one-sentence errors."""

import functools
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import host_devices_flags, random_variables

import spnet_jax
from spnet_jax.core.errors import ConfigError
from spnet_jax.models import get_arch
from spnet_jax.workdir import checkpoint, loading

SIZE, CHANNELS, CLASSES = 16, 1, 10
IMAGES = np.asarray(jax.random.normal(jax.random.key(1), (5, SIZE, SIZE, CHANNELS)))


def _config(full_width):
    return ml_collections.ConfigDict({'model': {'full_width': full_width},
                                      'data': {'image_size': SIZE, 'name': 'fashion_mnist'}})


def _save_steps(directory, structure, variables_per_step, config):
    """A stage as training leaves it: checkpoints at several steps, no done.json yet."""
    checkpoint.write_stage_files(directory, structure, config)
    mngr = checkpoint.manager(directory, max_to_keep=None)
    for step, variables in variables_per_step.items():
        mngr.save(step, args=checkpoint.save_args({'variables': variables}))
    mngr.wait_until_finished()
    mngr.close()


@functools.partial(jax.jit, static_argnums=(0, 2))
def _apply(model, variables, k, images):
    return model.apply(variables, images, subnet=k)


def _logits(arch, structure, variables, k, images=IMAGES):
    return np.asarray(_apply(arch.module(structure), variables, k, images))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A workdir as main.py leaves it: a base (evaluated), a pruned network, and a slimmable
    network (S-Net structure, widths 0.25/0.5) with checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp('run')
    arch = get_arch('resnet20', num_classes=CLASSES, full_width=0.5, stem='small')
    x = jnp.zeros((1, SIZE, SIZE, CHANNELS))
    base_structure = arch.plain_structure(0.5)
    base = random_variables(arch.module(base_structure), x, seed=1)
    checkpoint.save_network(str(workdir / 'base_0.5'), base_structure, base, _config(0.5),
                            step=4)
    base_eval = [{'subnet': 0, 'top1': 0.31, 'top5': 0.72, 'num_examples': 64}]
    checkpoint.mark_done(str(workdir / 'base_0.5'), {'step': 4, 'eval': base_eval})
    structure = arch.snet_structure((0.25, 0.5))
    model = arch.module(structure)
    checkpoint.save_network(str(workdir / 'pruned'), structure,
                            random_variables(model, x, seed=2), _config(0.5))
    steps = {2: random_variables(model, x, seed=3), 4: random_variables(model, x, seed=4)}
    _save_steps(str(workdir / 'slim'), structure, steps, _config(0.5))
    return {'workdir': workdir, 'arch': arch, 'structure': structure, 'steps': steps,
            'base': (base_structure, base, base_eval)}


@pytest.fixture(scope='module')
def finished(run, tmp_path_factory):
    """A copy of that workdir once the slimmable stage and the evaluation have finished."""
    workdir = tmp_path_factory.mktemp('finished') / 'run'
    shutil.copytree(run['workdir'], workdir)
    checkpoint.mark_done(str(workdir / 'slim'), {'step': 4, 'kind': 'training'})
    from spnet_jax.core.cost import subnet_costs

    costs = subnet_costs(run['arch'], run['structure'], SIZE, CHANNELS)
    report = [{'subnet': c.subnet, 'width': w, 'macs': c.macs, 'params': c.params,
               'top1': 0.5 + c.subnet / 10, 'top5': 0.9, 'latency_ms': 3.0 - c.subnet,
               'latency_batch': 8} for c, w in zip(costs, (0.25, 0.5), strict=True)]
    (workdir / 'report.json').write_text(json.dumps(report))
    return {**run, 'workdir': workdir}


def test_unfinished_workdir_is_refused_naming_the_checkpoint_to_load(run):
    workdir = run['workdir']
    last = workdir / 'slim' / 'checkpoints' / '4'
    with pytest.raises(ConfigError, match=rf'^training in {workdir} has not finished \('
                                          rf'{workdir}/slim is at step 4\); rerun the same '
                                          rf"main.py command to finish it, or load that step "
                                          rf"with spnet_jax.load\('{last}'\)\.$"):
        spnet_jax.load(str(workdir))
    with pytest.raises(ConfigError, match=r'^the stage in .*/slim has not finished'):
        spnet_jax.load(str(workdir / 'slim'))


@pytest.mark.parametrize('step', [2, 4])
def test_any_checkpoint_of_an_unfinished_stage_loads(run, step):
    for path in (run['workdir'] / 'slim' / 'checkpoints' / str(step),
                 run['workdir'] / 'slim' / 'checkpoints' / str(step) / 'variables'):
        net = spnet_jax.load(path)
        assert net.step == step and net.path == str(run['workdir'] / 'slim')
        assert net.structure == run['structure'] and net.config.model.full_width == 0.5
        for k in (0, 1):
            np.testing.assert_allclose(
                net(IMAGES, subnet=k, normalized=True),
                _logits(run['arch'], run['structure'], run['steps'][step], k),
                rtol=1e-5, atol=1e-5)
        assert [s['top1'] for s in net.subnets] == [None, None]  # never evaluated


def test_finished_workdir_loads_its_last_step_with_the_report(finished):
    workdir = finished['workdir']
    net = spnet_jax.load(workdir)
    assert net.step == 4 and net.path == str(workdir / 'slim')
    assert net.structure.widths == (0.25, 0.5)
    other = _logits(finished['arch'], finished['structure'], finished['steps'][2], 1)
    # The width label selects sub-network 1.
    got = np.asarray(net(IMAGES, subnet=0.5, normalized=True))
    np.testing.assert_allclose(
        got, _logits(finished['arch'], finished['structure'], finished['steps'][4], 1),
        rtol=1e-5, atol=1e-5)
    assert np.abs(got - other).max() > 1e-2  # step 2 would differ
    report = json.loads((workdir / 'report.json').read_text())
    for sub, row in zip(net.subnets, report, strict=True):
        for key in ('subnet', 'width', 'macs', 'params', 'top1', 'top5', 'latency_ms',
                    'latency_batch'):
            assert sub[key] == row[key], key
    assert net.subnets[0]['macs'] < net.subnets[1]['macs']
    # The report describes the last step only.
    assert spnet_jax.load(workdir / 'slim' / 'checkpoints' / '2').subnets[1]['top1'] is None
    assert spnet_jax.load(workdir / 'slim' / 'checkpoints' / '4').subnets[1]['top1'] == 0.6


def test_base_stage_folder_loads_with_its_own_evaluation(finished):
    structure, variables, base_eval = finished['base']
    net = spnet_jax.load(finished['workdir'] / 'base_0.5')
    assert net.structure == structure and net.step == 4
    np.testing.assert_allclose(net(IMAGES, normalized=True),
                               _logits(finished['arch'], structure, variables, 0),
                               rtol=1e-5, atol=1e-5)
    assert (net.subnets[0]['top1'], net.subnets[0]['top5']) == (0.31, 0.72)


def test_workdir_without_a_slimmable_network(finished, tmp_path):
    # Only bases: training has not finished.
    os.symlink(finished['workdir'] / 'base_0.5', tmp_path / 'base_0.5')
    with pytest.raises(ConfigError, match=r'^training in .* has not finished: it has base '
                                          r'networks \(base_0.5\) but no pruned or slimmable'):
        spnet_jax.load(tmp_path)
    # A prune command's workdir: the pruned network.
    os.symlink(finished['workdir'] / 'pruned', tmp_path / 'pruned')
    net = spnet_jax.load(tmp_path)
    assert net.path == str(tmp_path / 'pruned') and net.step == 0


def test_published_network_is_preferred_with_the_report(finished, tmp_path):
    """``published/`` (the network after its training scaffold was dropped) is what a
    workdir loads first; the report's rows of the sub-networks it kept describe it."""
    from spnet_jax.pruning.subnets import keep_first

    workdir = tmp_path / 'run'
    shutil.copytree(finished['workdir'], workdir)
    slim = spnet_jax.load(workdir)
    structure, variables = keep_first(finished['arch'].table(), slim.structure, slim.variables,
                                      1)
    checkpoint.save_network(str(workdir / 'published'), structure, variables, _config(0.5))
    net = spnet_jax.load(workdir)
    assert net.path == str(workdir / 'published') and net.structure == structure
    np.testing.assert_allclose(net(IMAGES, subnet=0, normalized=True),
                               slim(IMAGES, subnet=0, normalized=True), rtol=1e-5,
                               atol=1e-5)
    assert [s['top1'] for s in net.subnets] == [0.5]  # report.json's row of sub-network 0
    assert spnet_jax.load(workdir / 'slim').structure.num_subnets == 2
    os.remove(workdir / 'published' / 'done.json')  # written last: an unfinished stage
    with pytest.raises(ConfigError, match=rf'^training in {workdir} has not finished '):
        spnet_jax.load(workdir)


def test_errors_are_one_sentence(finished, tmp_path):
    with pytest.raises(ConfigError, match=r'is not a directory; give a workdir, a stage '):
        spnet_jax.load(tmp_path / 'missing')
    with pytest.raises(ConfigError, match=r'holds no spnet_jax network yet \(no structure.json'):
        spnet_jax.load(tmp_path)
    net = spnet_jax.load(finished['workdir'])
    for subnet in (2, -3):
        with pytest.raises(ConfigError, match=rf'^subnet={subnet} is out of range: this '
                                              r'network has 2 sub-networks, indices 0..1'):
            net(IMAGES, subnet=subnet, normalized=True)
    with pytest.raises(ConfigError, match=r'subnet=0.75 matches no sub-network; use an index '
                                          r'0..1 or one of the widths \[0.25, 0.5\]'):
        net(IMAGES, subnet=0.75, normalized=True)
    with pytest.raises(ConfigError, match=r'images must be a \[batch, height, width, '
                                          r'channels\] array, got shape \(16, 16, 1\)'):
        net(IMAGES[0], normalized=True)


def test_logits_on_8_devices_equal_one_device(finished, tmp_path):
    """A subprocess with 8 host devices loads the workdir and runs batches of 5 and 3 (both
    padded to 8 rows); the logits must equal this process's single-device ones."""
    out = tmp_path / 'eight.npz'
    env = dict(os.environ, XLA_FLAGS=host_devices_flags(8),
               JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, os.path.abspath(__file__),
                           str(finished['workdir']), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    eight = dict(np.load(out))
    assert int(eight['num_devices']) == 8 and int(eight['shards']) == 8
    net = spnet_jax.load(finished['workdir'])
    assert net.mesh.size == jax.local_device_count() == 1
    for k in (0, 1):
        np.testing.assert_allclose(eight[f'five_{k}'], net(IMAGES, subnet=k, normalized=True),
                                   rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(eight[f'three_{k}'], net(IMAGES[2:], subnet=k, normalized=True),
                                   rtol=1e-5, atol=1e-5)


def _eight_devices(workdir, out):
    net = spnet_jax.load(workdir)
    assert net.mesh.size == 8, net.mesh
    result = {'num_devices': jax.device_count()}
    for k in (0, 1):
        five = net(IMAGES, subnet=k, normalized=True)
        assert five.shape == (5, CLASSES)
        result[f'five_{k}'] = np.asarray(five)
        three = net(jnp.asarray(IMAGES[2:]), subnet=k, normalized=True)  # a jax.Array input too
        result[f'three_{k}'] = np.asarray(three)
        padded = net.device_variables, jax.device_put(
            np.zeros((8, SIZE, SIZE, CHANNELS), np.float32), net._batch_sharded)
        result['shards'] = len(loading._forward(net.model, k, net.mesh)(
            *padded).sharding.device_set)
    np.savez(out, **result)


if __name__ == '__main__':
    _eight_devices(sys.argv[1], sys.argv[2])


def test_a_float64_checkpoint_without_x64_is_named_not_called_damaged(tmp_path):
    """A compute_dtype='float64' run's network read by a process without x64: one sentence
    saying so (not 'damaged')."""
    script = f'''
import jax
jax.config.update('jax_enable_x64', True)
import jax.numpy as jnp
from spnet_jax.models import get_arch
from spnet_jax.workdir import checkpoint
arch = get_arch('vgg19', num_classes=3, full_width=0.125)
structure = arch.plain_structure()
v = arch.module(structure, dtype=jnp.float64).init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
assert v['params']['conv0']['kernel'].dtype == jnp.float64
checkpoint.save_network({str(tmp_path / 'net')!r}, structure, dict(v))
'''
    done = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 0, done.stderr[-2000:]
    from spnet_jax.workdir import checkpoint

    with pytest.raises(ConfigError, match='64-bit arrays') as error:
        checkpoint.load_network(str(tmp_path / 'net'))
    assert 'jax_enable_x64' in str(error.value) and 'damaged' not in str(error.value)


def test_the_network_takes_pixels_as_the_dataset_stores_them(finished):
    """uint8 pixels get the training normalisation inside; floats need normalized=True; a
    wrong layout, channel count or size is one sentence (resizing is the caller's job)."""
    net = spnet_jax.load(finished['workdir'])
    spec = net.input_spec
    assert spec['shape'] == (SIZE, SIZE, CHANNELS)
    assert (spec['mean'], spec['std']) == ((0.2860,), (0.3530,))  # Fashion-MNIST's
    pixels = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, CHANNELS), np.uint8)
    by_hand = (pixels.astype(np.float32) / 255 - 0.2860) / 0.3530
    for k in (0, 1):
        np.testing.assert_allclose(net(pixels, subnet=k),
                                   net(by_hand, subnet=k, normalized=True), rtol=1e-5,
                                   atol=1e-5)
    refusals = [
        (pixels.astype(np.float32) / 255, {}, r'images are float32; give uint8 pixels'),
        (pixels, {'normalized': True}, r'images are uint8 but normalized=True'),
        (pixels.transpose(0, 3, 1, 2), {}, r'channels first; .* transpose them'),
        (np.zeros((3, SIZE + 4, SIZE + 4, CHANNELS), np.uint8), {},
         r'\(its height and width differ\); resize or crop'),
        (np.zeros((3, SIZE, SIZE, 3), np.uint8), {}, r'\(its channels differ\)'),
    ]
    for images, kw, message in refusals:
        with pytest.raises(ConfigError, match=message) as error:
            net(images, subnet=0, **kw)
        assert '\n' not in str(error.value)
