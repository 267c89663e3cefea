"""CIFAR-10 through TFDS's own preparation (only the download mocked: the archive's files are
written here) and the project's input pipeline; a preparation that fails is one sentence
naming what failed, before any stage folder is written (issue 27)."""

import importlib
from unittest import mock

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds

from spnet_jax import data
from spnet_jax.core.errors import ConfigError
from spnet_jax.train import stages

NUM_TRAIN, NUM_TEST = 12, 6  # over the five training files and the test file
LABELS = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
          'truck']


def pixel_of(split: str, index: int) -> int:
    """Example ``index`` of ``split`` is one flat colour, unique in the split."""
    return 10 * index + (5 if split == 'test' else 3)


def label_of(index: int) -> int:
    return (3 * index) % 10


def write_cifar10_archive(root):
    """The extracted ``cifar-10-binary.tar.gz``: records of one label byte and 3072 pixel
    bytes (channel-major), in five training files and one test file."""
    folder = root / 'cifar-10-batches-bin'
    folder.mkdir(parents=True)
    (folder / 'batches.meta.txt').write_text('\n'.join(LABELS) + '\n')

    def records(split, indices):
        return b''.join(bytes([label_of(i)]) + bytes([pixel_of(split, i)]) * 3072
                        for i in indices)

    for k in range(5):
        (folder / f'data_batch_{k + 1}.bin').write_bytes(records('train', range(k, NUM_TRAIN, 5)))
    (folder / 'test_batch.bin').write_bytes(records('test', range(NUM_TEST)))
    return str(root)


def downloads(result):
    """``DownloadManager.download_and_extract`` replaced: returns ``result`` (the extracted
    archive's folder) or raises it."""
    def download_and_extract(self, url):
        if isinstance(result, BaseException):
            raise result
        return result
    return mock.patch.object(tfds.download.DownloadManager, 'download_and_extract',
                             download_and_extract)


def test_cifar10_is_prepared_by_tfds_and_read_by_the_pipeline(tmp_path):
    config = {'name': 'cifar10', 'data_dir': str(tmp_path / 'tfds'), 'image_size': 32}
    with downloads(write_cifar10_archive(tmp_path / 'extracted')):
        data.prepare(config)  # TFDS's own preparation: its builder, its record writers
    info = data.dataset_info(config)  # now from the prepared dataset's metadata
    assert (info.num_train, info.num_eval, info.num_classes) == (NUM_TRAIN, NUM_TEST, 10)
    spec = data.DATASETS['cifar10']

    def pixels(images):  # the flat colour of each image, undoing the normalisation
        raw = (images * np.asarray(spec.std) + np.asarray(spec.mean)) * 255
        return np.round(raw.reshape(len(images), -1).mean(axis=1)).astype(int)

    train = next(iter(data.train_batches(config, global_batch_size=4, seed=0)))
    assert train['image'].shape == (4, 32, 32, 3) and train['image'].dtype == np.float32
    assert train['label'].shape == (4,) and train['label'].dtype == np.int32
    by_pixel = {pixel_of('train', i): label_of(i) for i in range(NUM_TRAIN)}
    # Pad-crop and flip move a flat image's zero padding in, so look at its centre.
    centre = train['image'][:, 8:24, 8:24]
    assert [by_pixel[p] for p in pixels(centre)] == train['label'].tolist()
    evals = list(data.eval_batches(config, global_batch_size=4))
    assert [int(b['mask'].sum()) for b in evals] == [4, 2]
    images = np.concatenate([b['image'][b['mask']] for b in evals])
    labels = np.concatenate([b['label'][b['mask']] for b in evals])
    assert images.shape == (NUM_TEST, 32, 32, 3) and labels.dtype == np.int32
    seen = pixels(images)
    assert sorted(seen) == sorted(pixel_of('test', i) for i in range(NUM_TEST))
    assert labels.tolist() == [label_of((p - 5) // 10) for p in seen]


def cifar10_config(data_dir):
    config = importlib.import_module('configs.resnet50_cifar10').get_config()
    config.data.data_dir = data_dir
    return config


@pytest.mark.parametrize('failure, named', [
    (ModuleNotFoundError("No module named 'importlib_resources'", name='importlib_resources'),
     "preparing cifar10 needs the Python module 'importlib_resources', which is not installed "
     "(ModuleNotFoundError: No module named 'importlib_resources'); install the pinned "
     'requirements (pip install -r requirements.txt)'),
    (requests.ConnectionError('Max retries exceeded'),
     "could not download cifar10 (ConnectionError: Max retries exceeded); check this "
     "machine's network connection"),
    (ValueError('not a CIFAR archive'),
     "could not prepare cifar10 in data.data_dir '{dir}' (ValueError: not a CIFAR archive); "
     'delete its partial files there'),
])
def test_a_failing_preparation_is_named_before_any_stage_is_written(failure, named, tmp_path):
    data_dir, workdir = tmp_path / 'tfds', tmp_path / 'run'
    with downloads(failure), pytest.raises(ConfigError) as refused:
        stages.train_and_evaluate(cifar10_config(str(data_dir)), str(workdir))
    message = str(refused.value)
    assert message.startswith(named.format(dir=data_dir)) and '\n' not in message, message
    assert message.endswith('(`tfds build cifar10 --data_dir=DIR`) and set data.data_dir to '
                            'DIR.'), message
    assert not workdir.exists() or not list(workdir.iterdir())  # no stage folder, no lock


def test_a_data_dir_that_is_a_file_leaves_the_workdir_without_stages(tmp_path):
    """No mock: TFDS itself fails to make its folders in data.data_dir."""
    data_dir, workdir = tmp_path / 'not_a_folder', tmp_path / 'run'
    data_dir.write_text('x')
    with pytest.raises(ConfigError, match=r"could not prepare cifar10 in data.data_dir '.*' "
                       r'\(NotADirectoryError: '):
        stages.train_and_evaluate(cifar10_config(str(data_dir)), str(workdir))
    assert not list(workdir.glob('base_*')) and not (workdir / 'slim').exists()
