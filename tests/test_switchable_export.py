"""``python -m spnet_jax.export --switchable`` (issue 31): one `jax.export` artifact for every
width, the sub-network a run-time int32 scalar, the weights stored once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_variables
from test_export import IMAGE_SIZE, _config, _private_statistics  # noqa: F401

from spnet_jax.core.errors import ConfigError
from spnet_jax.models import get_arch
from spnet_jax.pruning import prune
from spnet_jax.workdir import export
from spnet_jax.workdir.checkpoint import save_network

ROOT = Path(__file__).resolve().parents[1]


def _pruned_workdir(root, name, zpm, seed, **arch_kw):
    arch = get_arch(name, num_classes=7, **arch_kw)
    x = jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3))
    base = random_variables(arch.module(arch.plain_structure()), x, seed=seed)
    structure, variables, _ = prune(arch, [base], [1.0], keep_ratios=[0.4, 0.7],
                                    image_size=IMAGE_SIZE, zpm=zpm, round_to=1)
    save_network(str(root / 'pruned'), structure, _private_statistics(variables, seed + 1),
                 _config(1.0))
    return root


@pytest.fixture(scope='module', params=[('resnet20', 'release'), ('resnet20', 'aligned')])
def switchable(request, tmp_path_factory):
    """(workdir, switchable export folder, standalone export folders) of a pruned network."""
    name, zpm = request.param
    root = tmp_path_factory.mktemp(f'{name}_{zpm}')
    workdir = _pruned_workdir(root / 'run', name, zpm, seed=4)
    info = export.export_switchable(str(workdir), root / 'switch', serving_batch=8,
                                    timing_rounds=3)
    standalone = export.export_all(str(workdir), root / 'each')
    return workdir, root / 'switch', root / 'each', info, standalone


def _deserialize(folder):
    return jax.export.deserialize(bytearray((folder / export.ARTIFACT).read_bytes()))


IMAGES = jax.random.normal(jax.random.key(7), (5, IMAGE_SIZE, IMAGE_SIZE, 3))


def test_every_width_equals_its_standalone_export_and_switching_compiles_nothing(switchable):
    _, switch, each, info, standalone = switchable
    exported = _deserialize(switch)
    n = info['num_subnets']
    assert n == 3 and len(standalone) == 3
    references = [np.asarray(_deserialize(each / f'subnet_{k}').call(IMAGES)) for k in range(n)]
    exported.call(IMAGES, jnp.int32(0)).block_until_ready()  # the one compilation
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event) if 'compile' in event else 0
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for _ in range(2):
            for k in (2, 0, 1):
                got = np.asarray(exported.call(IMAGES, jnp.int32(k)))
                np.testing.assert_allclose(got, references[k], atol=1e-5, rtol=1e-5)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    # Widths differ (else the comparison above proves nothing).
    assert np.abs(references[0] - references[2]).max() > 1e-3


def test_an_index_out_of_range_gives_nan_not_another_widths_logits(switchable):
    exported = _deserialize(switchable[1])
    for k in (-1, 3, 100):
        assert np.isnan(np.asarray(exported.call(IMAGES, jnp.int32(k)))).all()


def test_the_artifact_stores_the_weights_once(switchable):
    _, switch, each, info, _ = switchable
    size = (switch / export.ARTIFACT).stat().st_size
    full = (each / 'subnet_2' / export.ARTIFACT).stat().st_size
    parts = sum((each / f'subnet_{k}' / export.ARTIFACT).stat().st_size for k in range(3))
    assert size <= 1.1 * full, (size, full)
    assert size < 0.75 * parts  # not the sum of the widths' copies


def test_export_json_lists_each_widths_cost_and_latency(switchable):
    _, switch, _, info, standalone = switchable
    saved = json.loads((switch / export.INFO).read_text())
    assert saved['switchable'] and saved['latency_batches'] == [1, 8]
    for row, one in zip(saved['subnets'], standalone, strict=True):
        assert (row['macs'], row['params']) == (one['macs'], one['params'])
        assert set(row['latency_ms']) == {'1', '8'} and all(v > 0 for v in
                                                             row['latency_ms'].values())


def test_choose_takes_the_widest_width_that_fits():
    info = {'subnets': [{'subnet': k, 'macs': m, 'latency_ms': {'32': t}}
                        for k, (m, t) in enumerate([(1, 10.0), (2, 20.0), (4, 30.0)])]}
    assert export.choose(info, 25.0, 32) == 1
    assert export.choose(info, 30.0, 32) == 2
    with pytest.raises(ConfigError, match=r'^no width meets 5 ms at batch 32: the fastest, '
                                          r'sub-network 0, took 10 ms'):
        export.choose(info, 5.0, 32)
    # Widest by MACs, not by index, should a faster width be listed later.
    info['subnets'][2]['latency_ms']['32'] = 40.0
    assert export.choose(info, 35.0, 32) == 1
    with pytest.raises(ConfigError, match=r'not 8; choose one of them or re-export with '
                                          r'--serving_batch=8'):
        export.choose(info, 5.0, 8)


def test_cli_switchable_refuses_an_existing_folder_and_mixed_modes(switchable, tmp_path):
    workdir, switch = switchable[0], switchable[1]
    env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
    run = lambda *a: subprocess.run([sys.executable, '-m', 'spnet_jax.export', *a], cwd=ROOT,
                                    capture_output=True, text=True, timeout=300, env=env)
    again = run(f'--workdir={workdir}', '--switchable', f'--out={switch}')
    assert again.returncode == 2 and 'is not empty' in again.stderr
    assert again.stderr.strip().count('\n') == 0
    mixed = run(f'--workdir={workdir}', '--switchable', '--all', f'--out={tmp_path / "x"}')
    assert mixed.returncode == 2 and 'give one of --subnet=K, --all and --switchable' in (
        mixed.stderr)


# ------------------------------------------------------------------ TensorFlow formats
@pytest.fixture(scope='module')
def tf_formats(tmp_path_factory):
    root = tmp_path_factory.mktemp('tf_formats')
    workdir = _pruned_workdir(root / 'run', 'resnet20', 'aligned', seed=6)
    info = export.export_switchable(str(workdir), root / 'out', serving_batch=4,
                                    timing_rounds=2, saved_model=True, tflite=True)
    return workdir, root / 'out', info


@pytest.mark.slow  # TensorFlow conversions: a minute or more
def test_saved_model_runs_every_width_in_tensorflow(tf_formats):
    import tensorflow as tf
    _, out, info = tf_formats
    exported = _deserialize(out)
    loaded = tf.saved_model.load(str(out / info['saved_model']['folder']))
    serve = loaded.signatures['serving_default']
    images = np.asarray(IMAGES)
    for k in range(info['num_subnets']):
        got = next(iter(serve(images=tf.constant(images), subnet=tf.constant(k)).values()))
        want = np.asarray(exported.call(IMAGES, jnp.int32(k)))
        np.testing.assert_allclose(got.numpy(), want, atol=1e-4, rtol=1e-4)
    bad = next(iter(serve(images=tf.constant(images), subnet=tf.constant(7)).values()))
    assert np.isnan(bad.numpy()).all()


@pytest.mark.slow  # TensorFlow conversions: a minute or more
def test_tflite_flatbuffers_equal_each_width(tf_formats):
    from spnet_jax.workdir import tf_export
    workdir, out, info = tf_formats
    exported = _deserialize(out)
    for k, name in enumerate(info['tflite']['files']):
        got = tf_export.run_tflite(str(out / 'tflite' / name), np.asarray(IMAGES[:3]))
        want = np.asarray(exported.call(IMAGES[:3], jnp.int32(k)))
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # TensorFlow conversions: a minute or more
def test_a_failed_conversion_leaves_nothing_behind(tf_formats, tmp_path, monkeypatch):
    from spnet_jax.workdir import tf_export
    workdir = tf_formats[0]

    def fail(*args, **kwargs):
        raise ConfigError("the TFLite conversion of sub-network 0 failed at op "
                          "'vhlo.dynamic_gather_v1'; nothing was written.")
    monkeypatch.setattr(tf_export, 'write_tflite', fail)
    with pytest.raises(ConfigError, match='failed at op'):
        export.export_switchable(str(workdir), tmp_path / 'out', timing_rounds=2, tflite=True)
    assert sorted(os.listdir(tmp_path)) == []


def test_converter_errors_name_the_op():
    from spnet_jax.workdir import tf_export
    error = tf_export._failed('the TFLite conversion of sub-network 0', RuntimeError(
        "Could not translate MLIR to FlatBuffer. error: 'vhlo.dynamic_gather_v1' op is not "
        'part of the vhlo support yet.'))
    assert str(error).startswith("the TFLite conversion of sub-network 0 failed at op "
                                 "'vhlo.dynamic_gather_v1' (TensorFlow ")


def test_a_loaded_network_chooses_by_its_own_measured_latency(switchable):
    import spnet_jax
    net = spnet_jax.load(str(switchable[0]))
    ms = net.measure_latency(batch=4, runs=3)
    assert len(ms) == 3 and net.measure_latency(batch=4) is ms  # measured once per batch
    assert net.choose(max(ms) + 1, batch=4) == 2
    fastest = min(range(3), key=lambda k: ms[k])
    with pytest.raises(ConfigError, match=rf'^no width meets 1e-06 ms at batch 4: the fastest, '
                                          rf'sub-network {fastest}, took'):
        net.choose(1e-6, batch=4)


@pytest.mark.slow  # ResNet-50: three branches to compile
def test_resnet50_with_zpm_switchable_equals_its_standalone_exports(tmp_path):
    workdir = _pruned_workdir(tmp_path / 'run', 'resnet50', 'release', seed=8)
    info = export.export_switchable(str(workdir), tmp_path / 'switch', timing_rounds=1,
                                    serving_batch=2)
    export.export_all(str(workdir), tmp_path / 'each')
    exported = _deserialize(tmp_path / 'switch')
    images = IMAGES[:2]
    for k in range(info['num_subnets']):
        want = np.asarray(_deserialize(tmp_path / 'each' / f'subnet_{k}').call(images))
        np.testing.assert_allclose(np.asarray(exported.call(images, jnp.int32(k))), want,
                                   atol=1e-5, rtol=1e-5)
    size = (tmp_path / 'switch' / export.ARTIFACT).stat().st_size
    assert size <= 1.1 * (tmp_path / 'each' / 'subnet_2' / export.ARTIFACT).stat().st_size
