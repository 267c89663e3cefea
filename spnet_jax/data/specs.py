"""What the input pipeline knows about each dataset, and the data config it reads.

`DATASETS` is the registry: one `DatasetSpec` per supported name, holding the facts that do
not need the data to be read (class count, native image size, split sizes, normalisation
statistics). `DataSettings` is a data config (an ml_collections `ConfigDict`, a dataclass, a
dict, anything with the fields below) with its defaults filled in and each field checked
for type and range; it does no I/O. Checks that touch the file system live in
`spnet_jax.data.pipeline.validate_config`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from spnet_jax.core.errors import ConfigError

FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
PREPROCESSINGS = ('small', 'imagenet')
# The 'imagenet' eval resizes the shorter side to image_size + this (256 at 224) unless
# data.eval_resize says otherwise, then takes the central image_size square.
IMAGENET_CROP_PADDING = 32


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Fixed facts about one dataset.

    Attributes:
      name: the registry name (`data.name`).
      source: 'idx' (local Fashion-MNIST IDX files, read with numpy) or 'tfds'.
      num_classes: number of labels.
      channels: colour channels of the stored images.
      train_split, eval_split: default split names.
      split_sizes: examples per named split, used when the data need not be opened.
      mean, std: per-channel statistics of the training images, in [0, 1] units.
      preprocessing: the default `data.preprocessing`.
      default_image_size: the default `data.image_size`.
      shuffle_buffer: default tf.data shuffle buffer (TFDS only).
      cache: keep the decoded split in memory after the first epoch (TFDS only).
      jpeg: images are stored as JPEG, so crops are decoded with `decode_and_crop_jpeg`.
    """

    name: str
    source: str
    num_classes: int
    channels: int
    train_split: str
    eval_split: str
    split_sizes: Mapping[str, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    preprocessing: str
    default_image_size: int
    shuffle_buffer: int = 0
    cache: bool = False
    jpeg: bool = False


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name='fashion_mnist',
            source='idx',
            num_classes=10,
            channels=1,
            train_split='train',
            eval_split='test',
            split_sizes={'train': 60_000, 'test': 10_000},
            mean=(0.2860,),
            std=(0.3530,),
            preprocessing='small',
            default_image_size=28,
        ),
        DatasetSpec(
            name='cifar10',
            source='tfds',
            num_classes=10,
            channels=3,
            train_split='train',
            eval_split='test',
            split_sizes={'train': 50_000, 'test': 10_000},
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
            preprocessing='small',
            default_image_size=32,
            shuffle_buffer=50_000,
            cache=True,
        ),
        DatasetSpec(
            name='cifar100',
            source='tfds',
            num_classes=100,
            channels=3,
            train_split='train',
            eval_split='test',
            split_sizes={'train': 50_000, 'test': 10_000},
            mean=(0.5071, 0.4865, 0.4409),
            std=(0.2673, 0.2564, 0.2762),
            preprocessing='small',
            default_image_size=32,
            shuffle_buffer=50_000,
            cache=True,
        ),
        DatasetSpec(
            name='imagenet2012',
            source='tfds',
            num_classes=1000,
            channels=3,
            train_split='train',
            eval_split='validation',
            split_sizes={'train': 1_281_167, 'validation': 50_000},
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            preprocessing='imagenet',
            default_image_size=224,
            shuffle_buffer=10_000,
            jpeg=True,
        ),
    )
}


def get_spec(name: Any) -> DatasetSpec:
    """The registry entry for `name`; an unknown name is a `ConfigError` naming `data.name`."""
    if name not in DATASETS:
        raise ConfigError(
            f'data.name {name!r} is not a known dataset; set it to one of '
            f'{", ".join(sorted(DATASETS))}.'
        )
    return DATASETS[name]


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """A data config with defaults filled in and every field checked (no I/O).

    Attributes:
      spec: the dataset's registry entry (from `data.name`).
      data_dir: Fashion-MNIST IDX folder, or the TFDS data dir (None: TFDS's default).
      manual_dir: imagenet2012's manual download folder (the two ILSVRC2012 tar files).
      image_size: output height and width.
      preprocessing: 'small' (pad + random crop + flip) or 'imagenet' (random-resized crop +
        flip; resize + center crop for eval).
      crop_padding: pixels of zero padding on each side before the small-image random crop.
      random_flip: training images are mirrored left-right with probability 1/2 after the
        crop (both preprocessings; False: never, as the release's ``imagenet_randaug``).
      eval_resize: 'imagenet' eval: the shorter side is resized to this, then the central
        `image_size` square is taken (the release's ``max_image_size``); the config's None
        reads as ``image_size + 32``. None for the 'small' preprocessing, which does not
        resize (it ignores the config's value, as 'imagenet' ignores `crop_padding`).
      train_split, eval_split: split names (TFDS split syntax for TFDS datasets).
      num_train_examples, num_eval_examples: use only the first N examples (None: all).
      shuffle_buffer: tf.data shuffle buffer of the TFDS training stream.
      randaugment_ops: RandAugment's N, the random operations per training image after the
        crop (and the flip, when there is one), last before normalisation (0: none; TFDS
        datasets only).
      randaugment_magnitude: RandAugment's M on the paper's 0-30 scale (the release's
        ``randaug_M``).
    """

    spec: DatasetSpec
    data_dir: str | None
    manual_dir: str | None
    image_size: int
    preprocessing: str
    crop_padding: int
    train_split: str
    eval_split: str
    num_train_examples: int | None
    num_eval_examples: int | None
    shuffle_buffer: int
    randaugment_ops: int = 0
    randaugment_magnitude: float = 10.0
    random_flip: bool = True
    eval_resize: int | None = None

    @property
    def name(self) -> str:
        return self.spec.name


def _field(config: Any, name: str, default: Any = None) -> Any:
    """`config.name`, or `default` when the config lacks the field or holds None."""
    if isinstance(config, Mapping):
        value = config.get(name, default)
    else:
        value = getattr(config, name, default)
    return default if value is None else value


def _int_field(config: Any, name: str, default: int | None, minimum: int) -> int | None:
    value = _field(config, name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f'data.{name} must be an integer >= {minimum}, got {value!r}.')
    return value


def parse_settings(config: Any) -> DataSettings:
    """Reads a data config into `DataSettings`, raising `ConfigError` on a bad field."""
    if isinstance(config, DataSettings):
        return config
    spec = get_spec(_field(config, 'name'))
    preprocessing = _field(config, 'preprocessing', spec.preprocessing)
    if preprocessing not in PREPROCESSINGS:
        raise ConfigError(
            f'data.preprocessing {preprocessing!r} is unknown; set it to one of '
            f'{", ".join(PREPROCESSINGS)}.'
        )
    if spec.source == 'idx' and preprocessing != 'small':
        raise ConfigError(
            f'data.preprocessing {preprocessing!r} is not supported for {spec.name}; '
            "set data.preprocessing to 'small'."
        )
    default_dir = FASHION_MNIST_DIR if spec.source == 'idx' else None
    splits = {}
    for field, default in (('train_split', spec.train_split), ('eval_split', spec.eval_split)):
        split = _field(config, field, default)
        if not isinstance(split, str) or not split:
            raise ConfigError(f'data.{field} must be a split name, got {split!r}.')
        if spec.source == 'idx' and split not in spec.split_sizes:
            raise ConfigError(
                f'data.{field} {split!r} is not a {spec.name} split; set it to one of '
                f'{", ".join(spec.split_sizes)}.'
            )
        splits[field] = split
    data_dir, manual_dir = _field(config, 'data_dir', default_dir), _field(config, 'manual_dir')
    randaugment_ops = _int_field(config, 'randaugment_ops', 0, 0)
    magnitude = _field(config, 'randaugment_magnitude', 10.0)
    if isinstance(magnitude, bool) or not isinstance(magnitude, int | float) or not (
            0 <= magnitude <= 30):
        raise ConfigError(f'data.randaugment_magnitude must be a number in [0, 30] (the '
                          f'RandAugment paper\'s scale), got {magnitude!r}.')
    if randaugment_ops and spec.source == 'idx':
        raise ConfigError(f'data.randaugment_ops={randaugment_ops} needs a TFDS dataset (it '
                          f'runs in the tf.data pipeline); set it to 0 for {spec.name}.')
    image_size = _int_field(config, 'image_size', spec.default_image_size, 1)
    if preprocessing == 'small' and image_size < spec.default_image_size:
        raise ConfigError(
            f'data.image_size={image_size} is smaller than {spec.name}\'s '
            f'{spec.default_image_size} px images, and the \'small\' preprocessing crops (it '
            f'does not resize), so the network would see only the central {image_size} px; '
            f'set data.image_size={spec.default_image_size} (or larger: zero-padded).')
    random_flip = _field(config, 'random_flip', True)
    if not isinstance(random_flip, bool):
        raise ConfigError(
            f'data.random_flip must be True or False, got {random_flip!r}; set it to True '
            '(mirror half the training images) or False (never, as the release\'s '
            'imagenet_randaug).')
    eval_resize = None
    if preprocessing == 'imagenet':  # the 'small' eval crops or pads; it does not resize
        eval_resize = _int_field(config, 'eval_resize', image_size + IMAGENET_CROP_PADDING, 1)
        if eval_resize < image_size:
            raise ConfigError(
                f'data.eval_resize={eval_resize} is smaller than data.image_size={image_size}, '
                f'so there is no central {image_size} px square to take; set it to at least '
                f'{image_size} (the release\'s max_image_size; unset: image_size + 32).')
    return DataSettings(
        spec=spec,
        data_dir=None if data_dir is None else os.fspath(data_dir),
        manual_dir=None if manual_dir is None else os.fspath(manual_dir),
        image_size=image_size,
        preprocessing=preprocessing,
        crop_padding=_int_field(config, 'crop_padding', 4, 0),
        num_train_examples=_int_field(config, 'num_train_examples', None, 1),
        num_eval_examples=_int_field(config, 'num_eval_examples', None, 1),
        shuffle_buffer=_int_field(config, 'shuffle_buffer', max(spec.shuffle_buffer, 1), 1),
        randaugment_ops=randaugment_ops,
        randaugment_magnitude=float(magnitude),
        random_flip=random_flip,
        eval_resize=eval_resize,
        **splits,
    )
