"""TFDS datasets (CIFAR-10/100, ImageNet) as deterministic, per-process tf.data pipelines.

What is guaranteed (and what is not), for a fixed dataset version and process count:

- **Per-process shards.** With ``P > 1`` processes, process ``p`` reads only its contiguous
  shard ``tfds.even_splits(split, P)[p]`` (training: ``drop_remainder=True``, so shards are
  equal and at most ``P - 1`` examples are never used; eval: every example once). The
  union of the processes' batches at a step is therefore *not* the batch one process would
  read: unlike the in-memory Fashion-MNIST pipeline, results depend on ``P``.
- **Order.** Files are read in a fixed order (``shuffle_files=False``; TFDS shuffled the
  records when it prepared the dataset). Epoch ``e`` of a process's shard passes through a
  shuffle buffer seeded from ``(seed, process, e)``; with a buffer at least the shard size
  (the CIFAR default) that is a uniform permutation, otherwise (ImageNet: 10,000) a local
  one. tf.data runs with ``deterministic=True``, so the stream of examples is a function of
  ``(seed, process, P)`` on a given machine.
- **Augmentation.** The example at position ``i`` of a process's stream is augmented with
  the stateless seed ``(key(seed, process), i)``: a pure function, independent of threads.
- **Resuming.** `train_dataset` at ``start_step`` starts at the epoch holding example
  ``start_step * L`` and skips the rest of it (reading, but not decoding, at most one epoch
  of records), so it yields the batches an uninterrupted run yields at those steps.

Not guaranteed: identical streams across TFDS dataset versions, different ``P``, or
TensorFlow versions (whose image kernels may change).

Preparation: a dataset that is not yet in `data_dir` is downloaded and prepared by
`prepare_dataset`, which a run calls before any stage writes (ImageNet from the two tar files
in `manual_dir`); a failure is one sentence naming what failed. With several processes on a
shared `data_dir`, prepare it once beforehand (e.g. ``tfds build imagenet2012
--manual_dir=...``).
"""

from __future__ import annotations

import errno
import os

import numpy as np
import requests
import tensorflow as tf
import tensorflow_datasets as tfds

from spnet_jax.core.errors import ConfigError
from spnet_jax.data import preprocess
from spnet_jax.data.specs import DataSettings

IMAGENET_MANUAL_FILES = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
_FOREVER = 2**62  # the epoch count of an endless training stream
AUTOTUNE = tf.data.AUTOTUNE


def _keep_tf_off_accelerators() -> None:
    """The input pipeline runs on the host; leave the GPUs to JAX."""
    try:
        tf.config.set_visible_devices([], 'GPU')
    except RuntimeError:  # TF already initialised its devices; too late, and harmless on CPU.
        pass


def _builder(settings: DataSettings) -> tfds.core.DatasetBuilder:
    return tfds.builder(settings.name, data_dir=settings.data_dir)


def check_source(settings: DataSettings) -> None:
    """Raises `ConfigError` if the dataset is neither prepared nor preparable from the config.

    Only ImageNet can be checked ahead: it needs its tar files in `data.manual_dir`. CIFAR is
    downloaded when missing (`prepare_dataset`, which reports what failed). Also checks that
    the example limits fit the splits.
    """
    sliced_split(settings.train_split, settings.num_train_examples, 'train_split')
    sliced_split(settings.eval_split, settings.num_eval_examples, 'eval_split')
    if settings.name != 'imagenet2012' or _builder(settings).is_prepared():
        return
    manual_dir = settings.manual_dir
    missing = [
        name
        for name in IMAGENET_MANUAL_FILES
        if not manual_dir or not os.path.isfile(os.path.join(manual_dir, name))
    ]
    if missing:
        raise ConfigError(
            f'imagenet2012 is not prepared in data.data_dir {settings.data_dir!r} and '
            f'data.manual_dir {manual_dir!r} lacks {" and ".join(missing)}; set data.manual_dir '
            'to the folder holding both ILSVRC2012 tar files, or data.data_dir to a prepared '
            'TFDS folder.'
        )


def prepare_dataset(settings: DataSettings) -> tfds.core.DatasetBuilder:
    """The dataset's builder, downloaded and prepared into `data_dir` first if it is not.

    `spnet_jax.train.stages` calls this before any stage writes, so a dataset that cannot be
    prepared is refused with a workdir as it was. Each failure is named as what it is: a
    Python module TFDS needs that is not installed, a download that failed (network), or
    the preparation itself; a full disk is left to the command's disk-full sentence.
    """
    check_source(settings)
    builder = _builder(settings)
    if builder.is_prepared():
        return builder
    name, where = settings.name, f'data.data_dir {settings.data_dir!r}'
    elsewhere = (f'or prepare it where that works (`tfds build {name} --data_dir=DIR`) and '
                 'set data.data_dir to DIR')
    config = tfds.download.DownloadConfig(manual_dir=settings.manual_dir)
    try:
        builder.download_and_prepare(download_config=config)
    except ImportError as error:  # TFDS imports some of its modules only while preparing
        raise ConfigError(
            f'preparing {name} needs the Python module {error.name!r}, which is not installed '
            f'({_first_line(error)}); install the pinned requirements (pip install -r '
            f'requirements.txt), {elsewhere}.') from error
    except requests.RequestException as error:
        raise ConfigError(
            f'could not download {name} ({_first_line(error)}); check this machine\'s '
            f'network connection, {elsewhere}.') from error
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise  # the command's one sentence for a full disk
        raise ConfigError(
            f'could not prepare {name} in {where} ({_first_line(error)}); check that the '
            f'folder is writable and has space, {elsewhere}.') from error
    except Exception as error:  # noqa: BLE001 - an archive or a builder that fails
        raise ConfigError(
            f'could not prepare {name} in {where} ({_first_line(error)}); delete its partial '
            f'files there ({name}/, downloads/) and rerun, {elsewhere}.') from error
    return builder


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message``, for a parenthesis in one sentence."""
    first = (str(error).strip().splitlines() or [''])[0][:300]
    return f'{type(error).__name__}: {first}' if first else type(error).__name__


def sliced_split(split: str, num_examples: int | None, field: str) -> str:
    """`split` limited to its first `num_examples` examples (TFDS slicing syntax)."""
    if num_examples is None:
        return split
    if any(char in split for char in '[+'):
        raise ConfigError(
            f'data.{field} {split!r} already selects examples, so data.num_'
            f'{field.split("_")[0]}_examples cannot; set one of the two.'
        )
    return f'{split}[:{num_examples}]'


def split_size(settings: DataSettings, split: str, field: str) -> int:
    """Examples in `split`: from the prepared dataset's metadata, else the registry's table."""
    builder = _builder(settings)
    if builder.is_prepared():
        try:
            return builder.info.splits[split].num_examples
        except (KeyError, ValueError) as error:
            raise ConfigError(
                f'data.{field} {split!r} is not a split of {settings.name} ({error}); set it '
                f'to one of {", ".join(builder.info.splits)}.'
            ) from error
    base = split.split('[')[0]
    if base != split or base not in settings.spec.split_sizes:
        raise ConfigError(
            f'the size of data.{field} {split!r} is unknown until {settings.name} is '
            f'prepared; prepare it in data.data_dir or use a plain split name.'
        )
    return settings.spec.split_sizes[base]


def _read(builder: tfds.core.DatasetBuilder, split, settings: DataSettings) -> tf.data.Dataset:
    """(image, int32 label) pairs of a split in file order; JPEGs are left encoded."""
    decoders = {'image': tfds.decode.SkipDecoding()} if settings.spec.jpeg else None
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        decoders=decoders,
        read_config=tfds.ReadConfig(try_autocache=False),
    )
    return ds.map(
        lambda example: (example['image'], tf.cast(example['label'], tf.int32)),
        num_parallel_calls=AUTOTUNE,
    )


def _count(ds: tf.data.Dataset) -> int:
    cardinality = int(ds.cardinality())
    if cardinality >= 0:
        return cardinality
    return int(ds.reduce(np.int64(0), lambda count, _: count + 1))


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _stream_keys(seed: int, process_index: int) -> tuple[int, int]:
    """Non-negative int64 keys (shuffle, augmentation) of one process's stream."""
    words = np.random.SeedSequence([int(seed) % 2**64, process_index]).generate_state(2, np.uint64)
    return int(words[0] >> 1), int(words[1] >> 1)


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    options.threading.max_intra_op_parallelism = 1
    return options


def train_dataset(
    settings: DataSettings,
    *,
    local_batch_size: int,
    seed: int,
    start_step: int,
    process_index: int,
    process_count: int,
) -> tf.data.Dataset:
    """The endless training stream of one process, from `start_step` (see module docstring).

    Elements: ``{'image': float32 (L, S, S, 3), 'label': int32 (L,)}``.
    """
    _keep_tf_off_accelerators()
    builder = prepare_dataset(settings)
    split = sliced_split(settings.train_split, settings.num_train_examples, 'train_split')
    if process_count > 1:
        split = tfds.even_splits(split, process_count, drop_remainder=True)[process_index]
    examples = _read(builder, split, settings)
    if settings.spec.cache:
        examples = examples.cache()
    num_examples = _count(examples)
    if num_examples == 0:
        raise ConfigError(
            f'data.train_split {settings.train_split!r} gives process {process_index} no '
            'examples; use a larger split or fewer processes.'
        )
    shuffle_key, augment_key = _stream_keys(seed, process_index)
    buffer_size = min(settings.shuffle_buffer, num_examples)
    rand_augment = None
    if settings.randaugment_ops:
        rand_augment = preprocess.rand_augment(settings.randaugment_ops,
                                               settings.randaugment_magnitude, augment_key)

    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        epoch_seed = tf.random.stateless_uniform(
            [],
            seed=tf.stack([tf.constant(shuffle_key, tf.int64), index]),
            minval=None,
            maxval=None,
            dtype=tf.int64,
        )
        return examples.shuffle(buffer_size, seed=epoch_seed, reshuffle_each_iteration=False)

    def augment(position: tf.Tensor, example: tuple[tf.Tensor, tf.Tensor]) -> dict:
        image, label = example
        example_seed = tf.stack([tf.constant(augment_key, tf.int64), position])
        if settings.preprocessing == 'imagenet':
            image = preprocess.imagenet_train(image, example_seed, image_size=settings.image_size,
                                              flip=settings.random_flip)
        else:
            image = preprocess.small_train(
                image,
                example_seed,
                image_size=settings.image_size,
                padding=settings.crop_padding,
                flip=settings.random_flip,
            )
        # As the release's imagenet_randaug: RandomResizedCrop, RandAugment, normalisation.
        if rand_augment is not None:
            image = rand_augment(image)
        image = preprocess.normalize(image, settings.spec.mean, settings.spec.std)
        return {'image': image, 'label': label}

    first = start_step * local_batch_size
    start_epoch, offset = divmod(first, num_examples)
    ds = tf.data.Dataset.range(start_epoch, _FOREVER).flat_map(epoch)
    ds = ds.skip(offset).enumerate(start=first)
    ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(local_batch_size, drop_remainder=True)
    return ds.prefetch(AUTOTUNE).with_options(_options())


def eval_dataset(
    settings: DataSettings,
    *,
    local_batch_size: int,
    process_index: int,
    process_count: int,
) -> tf.data.Dataset:
    """One pass over this process's eval shard in file order, padded to whole batches.

    Every process yields ``ceil(ceil(N / P) / L)`` batches (so collective eval steps line up);
    elements are ``{'image': float32 (L, S, S, 3), 'label': int32 (L,), 'mask': bool (L,)}``,
    padding rows holding a zero image, label 0 and mask False.
    """
    _keep_tf_off_accelerators()
    builder = prepare_dataset(settings)
    split = sliced_split(settings.eval_split, settings.num_eval_examples, 'eval_split')
    total = _count(_read(builder, split, settings))
    if process_count > 1:
        split = tfds.even_splits(split, process_count)[process_index]
    num_batches = _ceil_div(_ceil_div(total, process_count), local_batch_size)
    size = settings.image_size

    def prepare(image: tf.Tensor, label: tf.Tensor) -> dict:
        if settings.preprocessing == 'imagenet':
            image = preprocess.imagenet_eval(image, image_size=size, resize=settings.eval_resize)
        else:
            image = preprocess.small_eval(image, image_size=size)
        image = preprocess.normalize(image, settings.spec.mean, settings.spec.std)
        image = tf.ensure_shape(image, [size, size, settings.spec.channels])
        return {'image': image, 'label': label, 'mask': tf.constant(True)}

    padding = tf.data.Dataset.from_tensors(
        {
            'image': tf.zeros([size, size, settings.spec.channels], tf.float32),
            'label': tf.constant(0, tf.int32),
            'mask': tf.constant(False),
        }
    ).repeat()
    ds = _read(builder, split, settings).map(prepare, num_parallel_calls=AUTOTUNE)
    ds = ds.concatenate(padding).take(num_batches * local_batch_size)
    ds = ds.batch(local_batch_size, drop_remainder=True)  # drops nothing: static shapes
    return ds.prefetch(AUTOTUNE).with_options(_options())
