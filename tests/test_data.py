"""Input pipeline: IDX reading, preprocessing, determinism, process slicing, eval padding."""

import gzip
import os
import struct
import threading

import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from hypothesis import given, settings
from hypothesis import strategies as st

from spnet_jax import data
from spnet_jax.core.errors import ConfigError
from spnet_jax.data import fashion_mnist, in_memory, preprocess, specs

FASHION_DIR = '/usr/share/datasets/fashion-mnist'
needs_fashion = pytest.mark.skipif(
    not os.path.isdir(FASHION_DIR), reason='apt-get install -y dataset-fashion-mnist'
)
FASHION_MEAN, FASHION_STD = data.DATASETS['fashion_mnist'].mean, data.DATASETS['fashion_mnist'].std


def fashion(**fields):
    return ml_collections.ConfigDict({'name': 'fashion_mnist', 'data_dir': FASHION_DIR, **fields})


def take(iterator, count):
    return [next(iterator) for _ in range(count)]


def assert_batches_equal(left, right):
    assert left.keys() == right.keys()
    for key in left:
        np.testing.assert_array_equal(left[key], right[key], err_msg=key)


# ------------------------------------------------------------------------------- IDX


@needs_fashion
def test_idx_reader_gives_the_real_fashion_mnist():
    for split, count in (('train', 60_000), ('test', 10_000)):
        images, labels = fashion_mnist.load_split(FASHION_DIR, split)
        assert images.shape == (count, 28, 28, 1) and images.dtype == np.uint8
        assert labels.shape == (count,) and labels.dtype == np.int32
        np.testing.assert_array_equal(np.bincount(labels), [count // 10] * 10)
        assert images.max() == 255 and images.min() == 0
        assert not images.flags.writeable  # cached arrays are shared, so frozen
    info = data.dataset_info(fashion())
    assert info == data.DatasetInfo('fashion_mnist', 10, 28, 1, 60_000, 10_000)
    assert data.dataset_info(fashion(num_train_examples=123)).num_train == 123
    assert data.dataset_info({'name': 'fashion_mnist'}) == info  # the Debian folder is the default


def write_idx(path, array, type_code, magic=None):
    header = struct.pack('>I', magic if magic is not None else (type_code << 8) | array.ndim)
    header += struct.pack(f'>{array.ndim}I', *array.shape)
    dtype = {0x08: 'u1', 0x0C: '>i4', 0x0D: '>f4'}[type_code]
    payload = header + array.astype(dtype).tobytes()
    opener = gzip.open if str(path).endswith('.gz') else open
    with opener(path, 'wb') as f:
        f.write(payload)


@pytest.mark.parametrize('suffix', ['', '.gz'])
def test_read_idx_roundtrips_types_and_validates(tmp_path, suffix):
    values = np.arange(-12, 12, dtype=np.int32).reshape(2, 3, 4)
    write_idx(tmp_path / f'a{suffix}', values, 0x0C)
    read = fashion_mnist.read_idx(str(tmp_path / f'a{suffix}'))
    np.testing.assert_array_equal(read, values)
    assert read.dtype.isnative
    floats = np.linspace(0, 1, 5, dtype=np.float32)
    write_idx(tmp_path / 'f', floats, 0x0D)
    np.testing.assert_array_equal(fashion_mnist.read_idx(str(tmp_path / 'f')), floats)
    with pytest.raises(ConfigError, match='expected 0x00000803'):
        fashion_mnist.read_idx(str(tmp_path / 'f'), fashion_mnist.IMAGE_MAGIC)
    write_idx(tmp_path / 'bad', floats, 0x0D, magic=0x12340801)
    with pytest.raises(ConfigError, match='not an IDX file'):
        fashion_mnist.read_idx(str(tmp_path / 'bad'))
    (tmp_path / 'short').write_bytes(struct.pack('>II', 0x0801, 10) + b'\0' * 9)
    with pytest.raises(ConfigError, match='holds 9 data bytes'):
        fashion_mnist.read_idx(str(tmp_path / 'short'))


def test_missing_data_dir_and_files_name_the_field_and_the_fix(tmp_path):
    missing = tmp_path / 'nowhere'
    for call in (data.dataset_info, lambda c: data.train_batches(c, global_batch_size=8, seed=0)):
        with pytest.raises(ValueError) as error:
            call(fashion(data_dir=str(missing)))
        message = str(error.value)
        assert 'data.data_dir' in message and str(missing) in message
        assert 'apt-get install -y dataset-fashion-mnist' in message
    with pytest.raises(ValueError, match='train-images-idx3-ubyte.gz.*apt-get install'):
        data.eval_batches(fashion(data_dir=str(tmp_path)), global_batch_size=8)


def test_config_errors_name_their_field():
    with pytest.raises(ValueError, match="data.name 'mnist'.*cifar10, cifar100, fashion_mnist"):
        data.dataset_info({'name': 'mnist'})
    with pytest.raises(ValueError, match='data.preprocessing'):
        data.validate_config(fashion(preprocessing='imagenet'))
    with pytest.raises(ValueError, match='data.preprocessing'):
        data.validate_config({'name': 'cifar10', 'preprocessing': 'autoaugment'})
    with pytest.raises(ValueError, match='data.image_size'):
        data.validate_config(fashion(image_size=0))
    with pytest.raises(ValueError, match='data.eval_split'):
        data.validate_config(fashion(eval_split='validation'))
    with pytest.raises(ValueError, match='data.train_split .* data.num_train_examples'):
        data.validate_config(
            {'name': 'cifar10', 'train_split': 'train[:9%]', 'num_train_examples': 5}
        )


@needs_fashion
def test_batch_size_must_split_over_processes():
    with pytest.raises(
        ValueError, match='global_batch_size 10 must be a positive multiple of the process count 3'
    ):
        data.train_batches(
            fashion(), global_batch_size=10, seed=0, process_index=0, process_count=3
        )


# ---------------------------------------------------------------------- preprocessing


def reference_pad_crop_flip(image, offset, flip, size, padding):
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    crop = padded[offset[0] : offset[0] + size, offset[1] : offset[1] + size]
    return crop[:, ::-1] if flip else crop


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    padding=st.integers(0, 4),
    channels=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**32 - 1),
)
def test_small_train_np_equals_per_example_pad_crop_flip(batch, padding, channels, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (batch, 6, 6, channels), dtype=np.uint8)
    offsets = rng.integers(0, 2 * padding + 1, (batch, 2))
    flips = rng.random(batch) < 0.5
    out = preprocess.small_train_np(images, offsets, flips, image_size=6, padding=padding)
    for i in range(batch):
        expected = reference_pad_crop_flip(images[i], offsets[i], flips[i], 6, padding)
        np.testing.assert_array_equal(out[i], expected)


def test_center_crop_or_pad_np_matches_tensorflow():
    image = np.arange(5 * 7 * 2, dtype=np.uint8).reshape(1, 5, 7, 2)
    for size in (3, 4, 6, 9):
        expected = tf.image.resize_with_crop_or_pad(image[0], size, size).numpy()
        np.testing.assert_array_equal(preprocess.center_crop_or_pad_np(image, size)[0], expected)


def test_normalize_is_per_channel():
    images = np.array([[[[0, 255, 51]]]], np.uint8)
    out = preprocess.normalize_np(images, (0.0, 0.5, 0.2), (1.0, 0.5, 0.1))
    np.testing.assert_allclose(out, [[[[0.0, 1.0, 0.0]]]], atol=1e-6)
    assert out.dtype == np.float32
    np.testing.assert_allclose(
        preprocess.normalize(images, (0.0, 0.5, 0.2), (1.0, 0.5, 0.1)), out, atol=1e-6
    )


def distinct(arrays):
    return len({a.tobytes() for a in arrays})


def test_tf_augmentations_are_pure_functions_of_the_seed_and_vary_with_it():
    rng = np.random.default_rng(0)
    small = tf.constant(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    large = tf.constant(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    jpeg = tf.io.encode_jpeg(large)
    recipes = {
        'small': lambda seed: preprocess.small_train(small, seed, image_size=32, padding=4),
        'imagenet': lambda seed: preprocess.imagenet_train(large, seed, image_size=40),
        'imagenet_jpeg': lambda seed: preprocess.imagenet_train(jpeg, seed, image_size=40),
    }
    for name, augment in recipes.items():
        outs = [augment(tf.constant([7, s], tf.int64)).numpy() for s in range(12)]
        again = augment(tf.constant([7, 3], tf.int64)).numpy()
        np.testing.assert_array_equal(outs[3], again, err_msg=name)
        assert distinct(outs) >= 10, name
        shape = (32, 32, 3) if name == 'small' else (40, 40, 3)
        assert all(o.shape == shape for o in outs), name
        assert min(o.min() for o in outs) >= 0 and max(o.max() for o in outs) <= 255, name
    # Some seeds mirror the image exactly: with zero padding the crop is the whole image.
    flips = [
        preprocess.small_train(small, tf.constant([1, s]), image_size=32, padding=0)
        for s in range(8)
    ]
    kinds = {
        0 if np.array_equal(f, small) else 1 if np.array_equal(f, small[:, ::-1]) else 2
        for f in flips
    }
    assert kinds == {0, 1}


def test_imagenet_eval_is_the_central_crop():
    image = np.random.default_rng(1).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    out = preprocess.imagenet_eval(tf.constant(image), image_size=224).numpy()
    # 224 / (224 + 32) of the shorter side 256 is 224: the crop needs no resizing.
    np.testing.assert_allclose(out, image[16:240, 48:272], atol=1e-3)
    jpeg = tf.io.encode_jpeg(image, quality=100)
    decoded = tf.io.decode_jpeg(jpeg).numpy()[16:240, 48:272]
    from_jpeg = preprocess.imagenet_eval(jpeg, image_size=224).numpy()
    # Decoding only the window changes chroma upsampling on its one-pixel rim, nothing else.
    np.testing.assert_allclose(from_jpeg[1:-1, 1:-1], decoded[1:-1, 1:-1], atol=1)


# -------------------------------------------------------------- Fashion-MNIST, exact


def test_epoch_order_covers_every_example_once_and_changes_per_epoch():
    indices = np.concatenate([in_memory.example_indices(5, step, 100, 600) for step in range(12)])
    first, second = indices[:600], indices[600:]
    np.testing.assert_array_equal(np.sort(first), np.arange(600))
    np.testing.assert_array_equal(np.sort(second), np.arange(600))
    assert not np.array_equal(first, second)
    # A batch straddling an epoch boundary takes the end of one order, then the next one.
    straddle = in_memory.example_indices(5, 4, 130, 600)  # stream positions 520..649
    np.testing.assert_array_equal(straddle[:80], in_memory.epoch_permutation(5, 0, 600)[520:])
    np.testing.assert_array_equal(straddle[80:], in_memory.epoch_permutation(5, 1, 600)[:50])
    np.testing.assert_array_equal(first, in_memory.epoch_permutation(5, 0, 600))


@needs_fashion
def test_fashion_train_batches_are_a_function_of_seed_and_step():
    config = fashion(num_train_examples=300)
    run = take(data.train_batches(config, global_batch_size=64, seed=3), 8)
    again = take(data.train_batches(config, global_batch_size=64, seed=3), 8)
    resumed = take(data.train_batches(config, global_batch_size=64, seed=3, start_step=5), 3)
    other_seed = next(data.train_batches(config, global_batch_size=64, seed=4))
    for left, right in zip(run, again, strict=True):
        assert_batches_equal(left, right)
    for left, right in zip(run[5:], resumed, strict=True):
        assert_batches_equal(left, right)
    assert not np.array_equal(run[0]['image'], other_seed['image'])
    padded = next(data.train_batches(fashion(image_size=32), global_batch_size=8, seed=3))
    assert padded['image'].shape == (8, 32, 32, 1)  # centered in a 32x32 frame, then cropped
    batch = run[0]
    assert batch['image'].shape == (64, 28, 28, 1) and batch['image'].dtype == np.float32
    assert batch['label'].shape == (64,) and batch['label'].dtype == np.int32
    low, high = (0 - FASHION_MEAN[0]) / FASHION_STD[0], (1 - FASHION_MEAN[0]) / FASHION_STD[0]
    assert low - 1e-5 <= batch['image'].min() and batch['image'].max() <= high + 1e-5
    # The batch is the augmented version of exactly the examples `example_indices` names.
    images, labels = fashion_mnist.load_split(FASHION_DIR, 'train')
    indices = in_memory.example_indices(3, 0, 64, 300)
    np.testing.assert_array_equal(batch['label'], labels[indices])
    offsets, flips = in_memory.crop_flip_params(3, 0, 64, 4)
    expected = reference_pad_crop_flip(images[indices[0]], offsets[0], flips[0], 28, 4)
    np.testing.assert_allclose(
        batch['image'][0], preprocess.normalize_np(expected, FASHION_MEAN, FASHION_STD)
    )


@needs_fashion
def test_process_slices_concatenate_to_the_single_process_batch():
    config = fashion(num_train_examples=100)  # batch 1 of 64 straddles two epochs
    whole = take(data.train_batches(config, global_batch_size=64, seed=9, start_step=1), 2)
    parts = [
        take(
            data.train_batches(
                config, global_batch_size=64, seed=9, start_step=1, process_index=p, process_count=2
            ),
            2,
        )
        for p in range(2)
    ]
    for step in range(2):
        for key in ('image', 'label'):
            joined = np.concatenate([parts[p][step][key] for p in range(2)])
            np.testing.assert_array_equal(joined, whole[step][key])


@needs_fashion
@pytest.mark.parametrize('process_count', [1, 3])
def test_fashion_eval_covers_every_example_once_in_order(process_count):
    images, labels = fashion_mnist.load_split(FASHION_DIR, 'test')
    per_process = [
        list(
            data.eval_batches(
                fashion(), global_batch_size=1536, process_index=p, process_count=process_count
            )
        )
        for p in range(process_count)
    ]
    assert {len(batches) for batches in per_process} == {7}  # ceil(10000 / 1536)
    seen = []
    for step in range(7):
        for batches in per_process:
            batch = batches[step]
            assert batch['image'].shape == (1536 // process_count, 28, 28, 1)
            assert batch['mask'].dtype == bool
            assert not batch['image'][~batch['mask']].any()
            seen.append(batch['label'][batch['mask']])
    np.testing.assert_array_equal(np.concatenate(seen), labels)
    first = per_process[0][0]
    np.testing.assert_allclose(
        first['image'][:5], preprocess.normalize_np(images[:5], FASHION_MEAN, FASHION_STD)
    )


# --------------------------------------------------------------------- TFDS (mocked)


@pytest.fixture
def manual_dir(tmp_path):
    for name in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'):
        (tmp_path / name).touch()
    return str(tmp_path)


@pytest.mark.parametrize('name', ['cifar10', 'imagenet2012'])
def test_tfds_train_batches_are_deterministic_and_resumable(name, manual_dir):
    config = {'name': name, 'manual_dir': manual_dir, 'image_size': 32}
    with tfds.testing.mock_data(num_examples=10):
        run = take(data.train_batches(config, global_batch_size=4, seed=0), 6)
        again = take(data.train_batches(config, global_batch_size=4, seed=0), 6)
        resumed = take(data.train_batches(config, global_batch_size=4, seed=0, start_step=4), 2)
        other = take(data.train_batches(config, global_batch_size=4, seed=1), 1)
        local = take(
            data.train_batches(
                config, global_batch_size=4, seed=0, process_index=1, process_count=2
            ),
            1,
        )
    for left, right in zip(run, again, strict=True):
        assert_batches_equal(left, right)
    for left, right in zip(run[4:], resumed, strict=True):
        assert_batches_equal(left, right)
    assert not np.array_equal(run[0]['image'], other[0]['image'])
    num_classes = data.DATASETS[name].num_classes
    for batch in run:
        assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.float32
        assert batch['label'].dtype == np.int32
        assert 0 <= batch['label'].min() and batch['label'].max() < num_classes
    assert local[0]['image'].shape == (2, 32, 32, 3)
    # 6 batches of 4 span 2.4 epochs of the 10 mock examples; each epoch visits all 10.
    labels = np.concatenate([b['label'] for b in run])
    np.testing.assert_array_equal(np.sort(labels[:10]), np.sort(labels[10:20]))


@pytest.mark.parametrize(
    'name, preprocessing', [('cifar10', 'imagenet'), ('imagenet2012', 'imagenet')]
)
def test_tfds_eval_batches_are_padded_with_a_mask(name, preprocessing, manual_dir):
    config = {
        'name': name,
        'manual_dir': manual_dir,
        'image_size': 48,
        'preprocessing': preprocessing,
    }
    with tfds.testing.mock_data(num_examples=10):
        batches = list(data.eval_batches(config, global_batch_size=4))
        again = list(data.eval_batches(config, global_batch_size=4))
        info = data.dataset_info(config)
    assert [b['mask'].sum() for b in batches] == [4, 4, 2]
    for batch, same in zip(batches, again, strict=True):
        assert_batches_equal(batch, same)
        assert batch['image'].shape == (4, 48, 48, 3) and batch['image'].dtype == np.float32
        assert batch['label'].dtype == np.int32 and batch['mask'].dtype == bool
    assert not batches[-1]['image'][2:].any()
    spec = data.DATASETS[name]
    assert (info.num_train, info.num_eval) == (
        spec.split_sizes[spec.train_split],
        spec.split_sizes[spec.eval_split],
    )
    assert info.num_classes == spec.num_classes and info.image_size == 48


def test_unprepared_imagenet_needs_its_manual_dir(tmp_path):
    with tfds.testing.mock_data(num_examples=2):
        with pytest.raises(ValueError, match='data.manual_dir None lacks ILSVRC2012_img_train'):
            data.validate_config({'name': 'imagenet2012'})
        with pytest.raises(ValueError, match='data.manual_dir'):
            data.train_batches(
                {'name': 'imagenet2012', 'manual_dir': str(tmp_path)}, global_batch_size=2, seed=0
            )


# --------------------------------------------------------------------------- prefetch


def test_prefetch_keeps_order_stops_and_forwards_errors():
    assert list(data.prefetch(iter(range(50)), size=3)) == list(range(50))

    def failing():
        yield 1
        raise RuntimeError('source broke')

    stream = data.prefetch(failing(), size=2)
    assert next(stream) == 1
    with pytest.raises(RuntimeError, match='source broke'):
        next(stream)
    with pytest.raises(StopIteration):
        next(stream)

    produced = []
    endless = (produced.append(i) or i for i in range(10**9))
    with data.prefetch(endless, size=2) as stream:
        assert next(stream) == 0
    assert len(produced) <= 4  # one consumed, two queued, one waiting to be queued
    assert not any(t.name == 'prefetch' and t.is_alive() for t in threading.enumerate())
    with pytest.raises(ValueError, match='at least 1'):
        data.prefetch([], size=0)


def test_randaugment_changes_training_images_only_and_keeps_their_range():
    """RandAugment (N=2, M=10) after the crop and flip: the same examples in the same order,
    other pixels, still within [0, 255] before normalisation; evaluation is untouched."""
    base = {'name': 'cifar10', 'image_size': 32, 'preprocessing': 'small'}
    augmented = {**base, 'randaugment_ops': 2, 'randaugment_magnitude': 10}
    with tfds.testing.mock_data(num_examples=16):
        plain = take(data.train_batches(base, global_batch_size=16, seed=0), 1)[0]
        mixed = take(data.train_batches(augmented, global_batch_size=16, seed=0), 1)[0]
        evals = [next(iter(data.eval_batches(c, global_batch_size=16))) for c in (base, augmented)]
    np.testing.assert_array_equal(plain['label'], mixed['label'])
    changed = np.abs(plain['image'] - mixed['image']).reshape(16, -1).max(axis=1) > 1e-3
    assert changed.mean() >= 0.75
    spec = data.DATASETS['cifar10']
    pixels = (mixed['image'] * np.asarray(spec.std) + np.asarray(spec.mean)) * 255
    assert pixels.min() >= -1e-3 and pixels.max() <= 255 + 1e-3
    assert_batches_equal(*evals)


def test_randaugment_settings_are_checked():
    with pytest.raises(ValueError, match=r'data.randaugment_magnitude .*\[0, 30\]'):
        data.validate_config({'name': 'cifar10', 'randaugment_ops': 2,
                              'randaugment_magnitude': 45})
    with pytest.raises(ValueError, match='data.randaugment_ops=2 needs a TFDS dataset'):
        data.validate_config(fashion(randaugment_ops=2))
    with pytest.raises(ValueError, match='data.randaugment_ops must be an integer >= 0'):
        data.validate_config({'name': 'cifar10', 'randaugment_ops': -1})


# ------------------------------------------ the release's imagenet_randaug (EfficientNet)


def _effnet_data(manual_dir, **fields):
    """configs/efficientnet_b2.py's data section (the release's imagenet_randaug recipe)."""
    import sys

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configs import efficientnet_b2

    config = efficientnet_b2.get_config().data
    config.manual_dir = manual_dir
    config.update(fields)
    return config


def _pixels(images, name):
    """Normalised pipeline images back in [0, 255] units."""
    spec = data.DATASETS[name]
    return (images * np.asarray(spec.std) + np.asarray(spec.mean)) * 255


def test_the_efficientnet_config_is_imagenet_randaug_without_flip_and_evaluates_at_256_of_256():
    """The release's ``get_trans(..., randaug=True)``: RandomResizedCrop(256), RandAugment(2,
    10), no flip; eval ``Resize(max_image_size=256)``, ``CenterCrop(256)``."""
    settings = specs.parse_settings(_effnet_data(None))  # no I/O: no ImageNet needed
    assert (settings.preprocessing, settings.image_size, settings.random_flip) == (
        'imagenet', 256, False)
    assert (settings.randaugment_ops, settings.randaugment_magnitude) == (2, 10.0)
    assert settings.eval_resize == 256
    # Every other recipe flips and evaluates at image_size + 32 (the release's 256 at 224).
    others = specs.parse_settings({'name': 'imagenet2012'})
    assert (others.random_flip, others.eval_resize) == (True, 224 + 32)
    assert specs.parse_settings({'name': 'cifar10', 'preprocessing': 'small'}).eval_resize is None


def test_imagenet_eval_at_resize_equal_to_image_size_is_the_whole_central_square():
    """torchvision's Resize(256) + CenterCrop(256) of a 256 x 320 image: no resize (the shorter
    side is 256), columns round(64 / 2) = 32 to 288."""
    image = np.random.default_rng(2).integers(0, 256, (256, 320, 3), dtype=np.uint8)
    out = preprocess.imagenet_eval(tf.constant(image), image_size=256, resize=256).numpy()
    np.testing.assert_allclose(out, image[:, 32:288], atol=1e-3)
    # Half the size: the central 128 x 128 square halved; bilinear at exactly 1/2 with
    # half-pixel centres is the mean of each 2 x 2 block.
    tall = np.random.default_rng(3).integers(0, 256, (160, 128, 3), dtype=np.uint8)
    square = tall[16:144].astype(np.float64)
    blocks = square.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    out = preprocess.imagenet_eval(tf.constant(tall), image_size=64, resize=64).numpy()
    np.testing.assert_allclose(out, blocks, atol=1e-3)
    # The default (resize = image_size + 32) is a smaller, central window: other pixels.
    default = preprocess.imagenet_eval(tf.constant(image), image_size=256).numpy()
    assert np.abs(default - image[:, 32:288]).max() > 10
    with pytest.raises(ValueError, match='resize=200 must be >= image_size=256'):
        preprocess.imagenet_eval(tf.constant(image), image_size=256, resize=200)


def test_efficientnet_eval_batches_are_the_central_square_resized(manual_dir):
    """Through the pipeline, on mock ImageNet JPEGs: each eval image is the central square of
    the shorter side resized to image_size (here 64 instead of 256, eval_resize with it)."""
    config = _effnet_data(manual_dir, image_size=64, eval_resize=64)
    with tfds.testing.mock_data(num_examples=6):
        batch = next(iter(data.eval_batches(config, global_batch_size=6)))
        default = next(iter(data.eval_batches(_effnet_data(manual_dir, image_size=64,
                                                           eval_resize=None),
                                              global_batch_size=6)))
        # The pipeline reads the JPEG bytes (mock data encodes its random pixels, lossily).
        raw = list(tfds.load('imagenet2012', split='validation',
                             decoders={'image': tfds.decode.SkipDecoding()}).take(6))
    assert batch['image'].shape == (6, 64, 64, 3) and batch['mask'].all()
    compared = 0
    for got, plain, example in zip(_pixels(batch['image'], 'imagenet2012'),
                                   _pixels(default['image'], 'imagenet2012'), raw, strict=True):
        image = tf.io.decode_jpeg(example['image'], channels=3).numpy()
        height, width = image.shape[:2]
        side = min(height, width)
        if (height - side) % 2 or (width - side) % 2:
            continue  # an odd margin: where its extra pixel goes is a rounding convention
        top, left = (height - side) // 2, (width - side) // 2
        want = tf.image.resize(image[top:top + side, left:left + side].astype(np.float32),
                               [64, 64], method='bilinear').numpy()
        # Decoding only the window changes JPEG chroma upsampling near its edges (a few levels
        # at a few source pixels: 1.3 on average for a 6 px square magnified 11x, 0 for the
        # others); the window itself must match. The default (64 of 96) is far off.
        error, other = np.abs(got - want).mean(), np.abs(plain - want).mean()
        assert error < 2 and other > 10 * error, (image.shape, error, other)
        compared += 1
    assert compared >= 2


def _marked(image_size):
    """A left-right asymmetric image: a mirror or a crop of it is something else."""
    column = np.linspace(0, 255, image_size, dtype=np.float32)
    return np.broadcast_to(column[None, :, None], (image_size, image_size, 3)).copy()


@pytest.mark.parametrize('recipe', ['efficientnet', 'cifar_small_with_flip'])
def test_randaugment_gets_the_crop_and_is_last_before_normalisation(recipe, manual_dir,
                                                                     monkeypatch):
    """A stand-in RandAugment records what it is given and returns a fixed asymmetric image:
    it must get the cropped image_size image, and the batch must be exactly that image
    normalised (no flip or crop after RandAugment)."""
    received = []

    def stand_in(num_ops, magnitude, seed):
        received.append(('made', num_ops, magnitude))

        def apply(image):
            received.append(tuple(image.shape))
            return tf.constant(_marked(int(image.shape[0])))

        return apply

    monkeypatch.setattr(preprocess, 'rand_augment', stand_in)
    if recipe == 'efficientnet':
        name, size, config = 'imagenet2012', 256, _effnet_data(manual_dir)
    else:
        name, size = 'cifar10', 32
        config = {'name': name, 'image_size': size, 'preprocessing': 'small',
                  'random_flip': True, 'randaugment_ops': 2, 'randaugment_magnitude': 10}
    with tfds.testing.mock_data(num_examples=8):
        batch = take(data.train_batches(config, global_batch_size=8, seed=0), 1)[0]
    assert received[0] == ('made', 2, 10.0)
    assert received[1:] == [(size, size, 3)]  # the image_size crop (traced once)
    np.testing.assert_allclose(_pixels(batch['image'], name),
                               np.broadcast_to(_marked(size), (8, size, size, 3)), atol=1e-3)


def test_random_flip_false_never_mirrors_and_keeps_the_crops():
    """flip=False gives, seed for seed, the flip=True output or its mirror image (the same
    crop), and never mirrors: with no room to crop, the image itself."""
    rng = np.random.default_rng(4)
    small = tf.constant(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    large = tf.constant(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    recipes = {
        'small': lambda seed, flip: preprocess.small_train(small, seed, image_size=32,
                                                           padding=4, flip=flip),
        'imagenet': lambda seed, flip: preprocess.imagenet_train(large, seed, image_size=40,
                                                                 flip=flip),
    }
    for name, augment in recipes.items():
        kinds = set()
        for s in range(16):
            seed = tf.constant([5, s], tf.int64)
            plain, maybe = augment(seed, False).numpy(), augment(seed, True).numpy()
            kind = (0 if np.array_equal(maybe, plain)
                    else 1 if np.array_equal(maybe, plain[:, ::-1]) else 2)
            kinds.add(kind)
        assert kinds == {0, 1}, name
    for s in range(8):
        out = preprocess.small_train(small, tf.constant([1, s]), image_size=32, padding=0,
                                     flip=False)
        np.testing.assert_array_equal(out, small)


@pytest.mark.parametrize('random_flip', [False, True])
def test_tfds_training_images_are_mirrored_only_with_random_flip(random_flip):
    """CIFAR at its own 32 px with no padding: the training images are the eval images, some
    of them mirrored exactly when data.random_flip is on, none when it is off."""
    config = {'name': 'cifar10', 'image_size': 32, 'preprocessing': 'small', 'crop_padding': 0,
              'random_flip': random_flip, 'eval_split': 'train'}
    with tfds.testing.mock_data(num_examples=12):
        train = take(data.train_batches(config, global_batch_size=12, seed=0), 2)
        evals = next(iter(data.eval_batches(config, global_batch_size=12)))['image']
    as_is = {e.tobytes() for e in evals}
    mirrored = {e[:, ::-1].tobytes() for e in evals} - as_is
    images = [i for b in train for i in b['image']]
    kinds = [0 if i.tobytes() in as_is else 1 if i.tobytes() in mirrored else 2 for i in images]
    assert set(kinds) == ({0, 1} if random_flip else {0})


@needs_fashion
@pytest.mark.parametrize('random_flip', [False, True])
def test_fashion_training_images_are_mirrored_only_with_random_flip(random_flip):
    config = fashion(crop_padding=0, random_flip=random_flip, num_train_examples=64,
                     eval_split='train', num_eval_examples=64)
    train = take(data.train_batches(config, global_batch_size=64, seed=0), 1)[0]['image']
    evals = next(iter(data.eval_batches(config, global_batch_size=64)))['image']
    as_is = {e.tobytes() for e in evals}
    mirrored = {e[:, ::-1].tobytes() for e in evals} - as_is
    kinds = {0 if i.tobytes() in as_is else 1 if i.tobytes() in mirrored else 2 for i in train}
    assert kinds == ({0, 1} if random_flip else {0})


def test_flip_and_eval_resize_settings_are_checked():
    with pytest.raises(ConfigError) as error:
        data.validate_config({'name': 'cifar10', 'random_flip': 'no'})
    message = str(error.value)
    assert message.startswith("data.random_flip must be True or False, got 'no'; set it to")
    assert '\n' not in message and message.endswith('.')
    with pytest.raises(ConfigError) as error:
        specs.parse_settings({'name': 'imagenet2012', 'image_size': 256, 'eval_resize': 200})
    message = str(error.value)
    assert message.startswith('data.eval_resize=200 is smaller than data.image_size=256')
    assert 'set it to at least 256' in message and message.endswith('.')
    with pytest.raises(ConfigError, match='data.eval_resize must be an integer >= 1'):
        specs.parse_settings({'name': 'imagenet2012', 'eval_resize': 0})
