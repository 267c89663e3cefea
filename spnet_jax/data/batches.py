"""The input pipeline's public API: dataset facts, training and eval batches.

Batches are host numpy arrays, ``{'image': float32 (L, H, W, C), 'label': int32 (L,)}`` (plus
``'mask'`` for eval), where ``L = global_batch_size // process_count`` is this process's
slice of the global batch; the trainer puts them on its devices.

Two back ends, picked by `data.name`:

- **fashion_mnist**: the IDX files read with numpy (`spnet_jax.data.in_memory`). Exact: the
  examples and augmentation of global batch ``step`` are a pure function of
  ``(seed, step)``, a resumed run sees the uninterrupted run's batches, and process ``p`` of
  ``P`` gets rows ``[p L, (p + 1) L)`` of the single-process global batch.
- **cifar10, cifar100, imagenet2012**: TFDS + tf.data (`spnet_jax.data.tfds_input`).
  Deterministic given ``(seed, step, process_index, process_count)`` and resumable, but each
  process reads its own shard, so results depend on the process count (see that module).

Config fields (`data.*`): `name`, `data_dir`, `manual_dir`, `image_size`, `preprocessing`
('small' | 'imagenet'), `crop_padding`, `random_flip`, `eval_resize`, `train_split`,
`eval_split`, `num_train_examples`, `num_eval_examples`, `shuffle_buffer`,
`randaugment_ops`, `randaugment_magnitude`; see `spnet_jax.data.specs.DataSettings`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from spnet_jax.core.errors import ConfigError
from spnet_jax.data import fashion_mnist, in_memory, tfds_input
from spnet_jax.data.specs import DataSettings, parse_settings

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a training schedule need to know about the data.

    Attributes:
      name: the dataset (`data.name`).
      num_classes: number of labels.
      image_size: height and width of the preprocessed images.
      channels: image channels (1 for Fashion-MNIST, 3 otherwise).
      num_train: training examples used (after `data.num_train_examples`), all processes.
      num_eval: eval examples (after `data.num_eval_examples`), all processes.
    """

    name: str
    num_classes: int
    image_size: int
    channels: int
    num_train: int
    num_eval: int


def validate_config(data_config: Any) -> DataSettings:
    """Checks a data config before any work starts; returns it with defaults filled in.

    Raises `ConfigError` (a `ValueError`) with one sentence naming the field and the fix: an
    unknown dataset or preprocessing, a bad size, a data dir without the Fashion-MNIST files,
    an unprepared ImageNet without its manual download.
    """
    settings = parse_settings(data_config)
    if settings.spec.source == 'idx':
        # Read whole (it is cached for training anyway): a truncated or corrupt archive, or
        # files of different lengths, are named now rather than after training started.
        for split in (settings.train_split, settings.eval_split):
            fashion_mnist.load_split(settings.data_dir, split)
    else:
        tfds_input.check_source(settings)
    return settings


def prepare(data_config: Any) -> DataSettings:
    """A TFDS dataset not yet in `data.data_dir` downloaded and prepared there, so training
    and evaluation only read it (Fashion-MNIST's files need no preparation; `validate_config`
    reads them). Run before anything is written (`spnet_jax.train.stages`): a dataset that
    cannot be prepared is one `ConfigError` sentence naming what failed (a missing Python
    module, the download, the preparation)."""
    settings = parse_settings(data_config)
    if settings.spec.source != 'idx':
        tfds_input.prepare_dataset(settings)
    return settings


def _limited(size: int, limit: int | None) -> int:
    return size if limit is None else min(size, limit)


def dataset_info(data_config: Any) -> DatasetInfo:
    """The dataset's facts, read from file headers or known split sizes (not the data)."""
    settings = validate_config(data_config)
    spec = settings.spec
    if spec.source == 'idx':
        num_train = fashion_mnist.split_size(settings.data_dir, settings.train_split)
        num_eval = fashion_mnist.split_size(settings.data_dir, settings.eval_split)
    else:
        num_train = tfds_input.split_size(settings, settings.train_split, 'train_split')
        num_eval = tfds_input.split_size(settings, settings.eval_split, 'eval_split')
    return DatasetInfo(
        name=spec.name,
        num_classes=spec.num_classes,
        image_size=settings.image_size,
        channels=spec.channels,
        num_train=_limited(num_train, settings.num_train_examples),
        num_eval=_limited(num_eval, settings.num_eval_examples),
    )


def _processes(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    """Explicit (index, count), or JAX's when both are None."""
    if process_index is None and process_count is None:
        return jax.process_index(), jax.process_count()
    if process_index is None or process_count is None:
        raise ValueError('process_index and process_count must be given together.')
    if not 0 <= process_index < process_count:
        raise ValueError(f'process_index {process_index} is not in [0, {process_count}).')
    return process_index, process_count


def _local_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ConfigError(
            f'global_batch_size {global_batch_size} must be a positive multiple of the '
            f'process count {process_count}; set the batch size in the config to one.'
        )
    return global_batch_size // process_count


def _in_memory_split(settings: DataSettings, split: str, limit: int | None):
    images, labels = fashion_mnist.load_split(settings.data_dir, split)
    return images[:limit], labels[:limit]


def train_batches(
    data_config: Any,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """This process's training batches for steps `start_step`, `start_step` + 1, ... forever.

    Yields ``{'image': float32 (L, S, S, C), 'label': int32 (L,)}``,
    ``L = global_batch_size // process_count``. Config errors are raised here, not at the
    first `next`. Process index and count default to JAX's.
    """
    settings = validate_config(data_config)
    process_index, process_count = _processes(process_index, process_count)
    local = _local_batch_size(global_batch_size, process_count)
    if start_step < 0:
        raise ValueError(f'start_step must be >= 0, got {start_step}.')
    if settings.spec.source == 'idx':
        images, labels = _in_memory_split(
            settings, settings.train_split, settings.num_train_examples
        )
        return in_memory.train_batches(
            images,
            labels,
            global_batch_size=global_batch_size,
            seed=seed,
            start_step=start_step,
            process_index=process_index,
            process_count=process_count,
            image_size=settings.image_size,
            padding=settings.crop_padding,
            mean=settings.spec.mean,
            std=settings.spec.std,
            flip=settings.random_flip,
        )
    ds = tfds_input.train_dataset(
        settings,
        local_batch_size=local,
        seed=seed,
        start_step=start_step,
        process_index=process_index,
        process_count=process_count,
    )
    return ds.as_numpy_iterator()


def eval_batches(
    data_config: Any,
    *,
    global_batch_size: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> Iterator[Batch]:
    """One pass over the eval split in a fixed order, as this process's padded batches.

    Yields ``{'image': float32 (L, S, S, C), 'label': int32 (L,), 'mask': bool (L,)}``; the
    last batches are padded to size ``L`` with rows whose mask is False (zero image, label
    0), and every process yields the same number of batches. Over all processes every eval
    example appears exactly once with mask True.
    """
    settings = validate_config(data_config)
    process_index, process_count = _processes(process_index, process_count)
    local = _local_batch_size(global_batch_size, process_count)
    if settings.spec.source == 'idx':
        images, labels = _in_memory_split(settings, settings.eval_split, settings.num_eval_examples)
        return in_memory.eval_batches(
            images,
            labels,
            global_batch_size=global_batch_size,
            process_index=process_index,
            process_count=process_count,
            image_size=settings.image_size,
            mean=settings.spec.mean,
            std=settings.spec.std,
        )
    ds = tfds_input.eval_dataset(
        settings,
        local_batch_size=local,
        process_index=process_index,
        process_count=process_count,
    )
    return ds.as_numpy_iterator()
