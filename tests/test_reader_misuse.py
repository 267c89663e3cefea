"""Issue 27's classes that need no training: a reader leaves the workdir exactly as it found
it; damaged metadata, a run whose fine-tuning is missing, odd API types, NaN images, a crop
instead of a resize, contradicting flags and advice, and a failed export are each one
sentence or a correct answer, and leave nothing half-written."""

import errno
import os
import socket
import subprocess
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import random_variables

import spnet_jax
from spnet_jax.cli import entry
from spnet_jax.core.errors import ConfigError
from spnet_jax.data import specs
from spnet_jax.models import get_arch
from spnet_jax.train import stages, validate
from spnet_jax.train.settings import Settings
from spnet_jax.workdir import checkpoint, export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import tiny  # noqa: E402

SIZE = 28


def _config(stages_=('base', 'prune', 'slim', 'eval')):
    return ml_collections.ConfigDict({'model': {'full_width': 0.5}, 'stages': ','.join(stages_),
                                      'data': {'image_size': SIZE, 'name': 'fashion_mnist'}})


@pytest.fixture(scope='module')
def arch():
    return get_arch('resnet20', num_classes=10, full_width=0.5, stem='small')


def _save(directory, arch, config, seed=0, done=True):
    structure = arch.snet_structure((0.25, 0.5))
    variables = random_variables(arch.module(structure), jnp.zeros((1, SIZE, SIZE, 1)), seed)
    if done:
        checkpoint.save_network(str(directory), structure, variables, config, step=3,
                                arch=arch)
    return structure, variables


@pytest.fixture(scope='module')
def workdir(tmp_path_factory, arch):
    """A finished run (pruned/ and slim/), read-only for the tests that take it."""
    path = tmp_path_factory.mktemp('run')
    _save(path / 'pruned', arch, _config(), seed=1)
    _save(path / 'slim', arch, _config(), seed=2)
    return path


def _listing(root):
    return sorted((os.path.relpath(os.path.join(d, n), root),
                   os.stat(os.path.join(d, n)).st_mtime_ns)
                  for d, dirs, files in os.walk(root) for n in dirs + files)


def test_a_reader_leaves_a_training_runs_in_progress_save_and_every_file_alone(tmp_path, arch):
    """spnet_jax.load used to make an Orbax manager that removed '*.orbax-checkpoint-tmp'
    folders: the save a training process was writing at that moment."""
    run = tmp_path / 'run'
    _save(run / 'slim', arch, _config())
    in_progress = run / 'slim' / 'checkpoints' / '4.orbax-checkpoint-tmp'
    (in_progress / 'variables').mkdir(parents=True)
    (in_progress / 'variables' / 'partial').write_bytes(b'half a save')
    before = _listing(run)
    net = spnet_jax.load(str(run))
    net(np.zeros((2, SIZE, SIZE, 1), np.uint8), subnet=0)
    spnet_jax.load(str(run / 'slim' / 'checkpoints' / '3'))
    assert _listing(run) == before
    assert (in_progress / 'variables' / 'partial').read_bytes() == b'half a save'


def _metadata_files(step_dir):
    """Every file of a checkpoint that is not array data (Orbax's and this project's JSON)."""
    return sorted(os.path.relpath(os.path.join(d, n), step_dir)
                  for d, _, files in os.walk(step_dir) for n in files
                  if os.sep + 'd' not in d and 'ocdbt' not in d and n != 'manifest.ocdbt')


@pytest.mark.parametrize('index', range(6))
def test_an_empty_metadata_file_is_one_sentence_or_a_verified_answer(tmp_path, arch, index):
    """Each metadata file of the checkpoint emptied in turn: load and export either refuse
    with one sentence naming the stage, or (where Orbax does not need that file) return the
    network, whose every array the fingerprints then verify: the same logits as before."""
    run = tmp_path / 'run'
    _, variables = _save(run / 'slim', arch, _config())
    images = np.random.default_rng(3).integers(0, 256, (2, SIZE, SIZE, 1), np.uint8)
    want = np.asarray(spnet_jax.load(str(run))(images, subnet=0))
    step_dir = run / 'slim' / 'checkpoints' / '3'
    files = _metadata_files(step_dir)
    assert len(files) >= 6, files
    (step_dir / files[index]).write_bytes(b'')
    try:
        got = spnet_jax.load(str(run))(images, subnet=0)
    except ConfigError as error:
        message = str(error)
        assert message.count('\n') == 0 and str(run / 'slim') in message, (files[index],
                                                                           message)
        with pytest.raises(ConfigError):
            export.export_subnet(str(run), 0, tmp_path / 'out', platforms=('cpu',))
        assert not (tmp_path / 'out').exists()
    else:
        np.testing.assert_array_equal(got, want, err_msg=files[index])


@pytest.mark.parametrize('name', ['structure.json', 'config.json', 'done.json',
                                  'architecture.json'])
def test_an_empty_stage_file_is_one_sentence_naming_it(tmp_path, arch, name):
    run = tmp_path / 'run'
    _save(run / 'slim', arch, _config())
    (run / 'slim' / name).write_bytes(b'')
    with pytest.raises(ConfigError, match=name):
        spnet_jax.load(str(run))


def test_a_run_without_its_fine_tuned_network_is_not_loaded_as_if_it_were(tmp_path, arch):
    run = tmp_path / 'run'
    _save(run / 'pruned', arch, _config())  # main.py's pruned stage: slim was to follow
    with pytest.raises(ConfigError, match='not fine-tuned yet .* rerun the same main.py'):
        spnet_jax.load(str(run))
    with pytest.raises(ConfigError, match='not fine-tuned yet'):
        export.export_subnet(str(run), 0, tmp_path / 'out', platforms=('cpu',))
    assert spnet_jax.load(str(run / 'pruned')).step == 3  # asked for by name: loaded
    cli = tmp_path / 'pruned_by_the_prune_command'
    _save(cli / 'pruned', arch, _config(('prune',)))
    assert spnet_jax.load(str(cli)).path == str(cli / 'pruned')


def test_numpy_and_jax_integers_pick_the_same_sub_network(workdir):
    net = spnet_jax.load(str(workdir))
    images = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 1), np.uint8)
    want = [np.asarray(net(images, subnet=k)) for k in range(2)]
    for k in np.arange(2):  # np.int64
        np.testing.assert_array_equal(net(images, subnet=k), want[int(k)])
    np.testing.assert_array_equal(net(images, subnet=jnp.int32(1)), want[1])
    np.testing.assert_array_equal(net(images, subnet=np.int8(-1)), want[1])
    with pytest.raises(ConfigError, match='int index or a width'):
        net(images, subnet=np.True_)
    with pytest.raises(ConfigError, match='out of range'):
        net(images, subnet=np.int64(2))


def test_pixels_as_nested_lists_are_read_as_uint8_and_other_inputs_are_one_sentence(workdir):
    net = spnet_jax.load(str(workdir))
    images = np.random.default_rng(1).integers(0, 256, (2, SIZE, SIZE, 1), np.uint8)
    np.testing.assert_array_equal(net(images.tolist(), subnet=0), net(images, subnet=0))
    with pytest.raises(ConfigError, match='images are int64; give uint8'):
        net((images.astype(np.int64) + 300).tolist(), subnet=0)
    with pytest.raises(ConfigError, match='must be an array'):
        net([[1, 2], [3]], subnet=0)


def test_nan_or_infinite_images_are_refused_not_answered(workdir):
    net = spnet_jax.load(str(workdir))
    images = np.zeros((2, SIZE, SIZE, 1), np.float32)
    images[1, 3, 4, 0] = np.nan
    with pytest.raises(ConfigError, match='1 NaN or infinite'):
        net(images, subnet=0, normalized=True)
    with pytest.raises(ConfigError, match='784 NaN or infinite'):
        net(jnp.full((1, SIZE, SIZE, 1), jnp.inf), subnet=1, normalized=True)


def test_an_empty_device_list_is_one_sentence(workdir):
    with pytest.raises(ConfigError, match=r'devices=\[\] is empty'):
        spnet_jax.load(str(workdir), devices=[])


def test_an_image_size_below_the_datas_is_refused_not_centre_cropped():
    with pytest.raises(ConfigError, match='data.image_size=7 is smaller than fashion_mnist'):
        specs.parse_settings({'name': 'fashion_mnist', 'image_size': 7})
    assert specs.parse_settings({'name': 'fashion_mnist', 'image_size': 32}).image_size == 32


def test_profile_refuses_a_config_and_a_workdir_together(workdir):
    out = subprocess.run([sys.executable, '-m', 'spnet_jax.profile', '--config=configs/tiny.py',
                          f'--workdir={workdir}'], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        'error: give either --config (its S-Net widths or base networks) or --workdir (a saved '
        'network), not both: a saved network is profiled as it was trained, whatever a config '
        'says.']


def test_evaluate_refuses_a_run_that_is_training_and_writes_nothing(tmp_path, arch):
    run = tmp_path / 'run'
    _save(run / 'slim', arch, _config())
    (run / '.lock').write_text(
        f'{{"host": "{socket.gethostname()}", "pid": {os.getpid()}, "since": 0}}')
    before = _listing(run)
    with pytest.raises(ConfigError, match='is still training'):
        stages.evaluate_workdir(str(run))
    assert _listing(run) == before


def test_a_failed_export_leaves_no_half_written_folder_and_a_retry_works(workdir, tmp_path,
                                                                        monkeypatch):
    out = tmp_path / 'out'
    export.export_all(str(workdir), out, platforms=('cpu',))
    first = _listing(out)
    real = export._write_atomic
    calls = []

    def disk_full_on_the_second_file(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, 'No space left on device', path)
        real(path, data)

    monkeypatch.setattr(export, '_write_atomic', disk_full_on_the_second_file)
    with pytest.raises(OSError):
        export.export_all(str(workdir), out, overwrite=True, platforms=('cpu',))
    assert _listing(out) == first  # the earlier export is untouched
    assert sorted(os.listdir(tmp_path)) == ['out']  # and no staging folder is left
    calls.clear()
    with pytest.raises(OSError):
        export.export_subnet(str(workdir), 0, tmp_path / 'new', platforms=('cpu',))
    assert sorted(os.listdir(tmp_path)) == ['out']
    monkeypatch.setattr(export, '_write_atomic', real)
    info = export.export_subnet(str(workdir), 0, tmp_path / 'new', platforms=('cpu',))
    assert info['subnet'] == 0 and (tmp_path / 'new' / export.INFO).exists()


def test_a_reading_tool_keeps_its_error_log_out_of_the_run(monkeypatch, tmp_path):
    monkeypatch.setattr(entry, '_workdir', lambda: str(tmp_path))
    monkeypatch.setitem(entry._STATE, 'reads_only', False)
    assert entry._log_path() == str(tmp_path / entry.ERROR_LOG)
    monkeypatch.setitem(entry._STATE, 'reads_only', True)
    assert not entry._log_path().startswith(str(tmp_path))
    from spnet_jax.cli import export as export_cli
    from spnet_jax.cli import profile

    assert export_cli.READS_ONLY and profile.READS_ONLY


def test_the_retry_advice_of_a_non_finite_loss_is_accepted_by_the_recipe_check(tmp_path):
    """The advice: a fresh workdir holding copies of the finished stages, with a lower
    slim.lr. The recipe check accepts that, and refuses the same in the old workdir."""
    config = Settings.from_config(tiny.get_config())
    old = tmp_path / 'old'
    for width in config.base.widths:
        directory = checkpoint.base_dir(str(old), width)
        checkpoint.write_stage_files(directory, None, config.to_json())
        checkpoint.mark_done(directory, {'step': 4})
    checkpoint.write_stage_files(str(old / 'slim'), None, config.to_json())
    lower = tiny.get_config()
    lower.slim.lr = config.slim.lr / 10
    lower = Settings.from_config(lower)
    with pytest.raises(ConfigError, match='slim.lr'):
        validate.check_workdir(lower, str(old))
    new = tmp_path / 'new'
    new.mkdir()
    for width in config.base.widths:
        name = os.path.basename(checkpoint.base_dir(str(old), width))
        os.rename(old / name, new / name)  # what `cp -r` of the advice does, cheaper
    validate.check_workdir(lower, str(new))  # accepted: the copied bases are reused
