"""Image preprocessing: numpy for in-memory data, TensorFlow for tf.data pipelines.

Two recipes, both ending in float32 HWC (NHWC for batches) normalised by the dataset's
per-channel mean and std (given in [0, 1] units):

- **small** (CIFAR-style, 28-32 px data). Eval: center crop or zero-pad to `image_size`.
  Train: center crop or zero-pad to ``image_size + 2 * padding`` (so ``padding`` pixels of
  zeros on each side when `image_size` is the native size), a random `image_size` crop, and
  a random horizontal flip (``flip=False``: none).
- **imagenet**. Train: a random-resized crop (area 8%-100% of the image, aspect ratio
  3/4-4/3, at most 10 attempts, else the default eval crop), resized bilinearly to
  `image_size`, and a random horizontal flip (``flip=False``: none, as the release's
  ``imagenet_randaug``). Eval: the central square of ``image_size / resize`` of the shorter
  side, resized to `image_size`: "resize the shorter side to `resize`, center crop
  `image_size`" (``resize`` defaults to ``image_size + 32``: 87.5% at 224, "resize to 256,
  center crop 224"; the release's EfficientNet recipe has ``resize = image_size = 256``, the
  whole central square).

RandAugment (`rand_augment`), when a recipe has it, runs on the output of the train recipe
(after the crop and any flip) and before normalisation.

Randomness is explicit and stateless: the numpy functions take the crop offsets and flip
bits as arrays (drawn by the caller from a seeded generator), the TensorFlow ones take a
stateless seed (an int32/int64 tensor of shape [2]), so an augmentation is a pure function of
its seed. The TensorFlow functions accept a decoded uint8 image or, for ImageNet's JPEGs,
the encoded bytes, which are decoded only inside the crop window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from spnet_jax.data.specs import IMAGENET_CROP_PADDING

AREA_RANGE = (0.08, 1.0)
ASPECT_RATIO_RANGE = (3 / 4, 4 / 3)
MAX_ATTEMPTS = 10


# ------------------------------------------------------------------------------ numpy


def center_crop_or_pad_np(images: np.ndarray, size: int) -> np.ndarray:
    """Crops the center of, or zero-pads around, a (B, H, W, C) batch to (B, size, size, C).

    Offsets round down, as in `tf.image.resize_with_crop_or_pad`.
    """
    out = images
    for axis in (1, 2):
        length = out.shape[axis]
        if length > size:
            start = (length - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
        elif length < size:
            before = (size - length) // 2
            widths = [(0, 0)] * out.ndim
            widths[axis] = (before, size - length - before)
            out = np.pad(out, widths)
    return out


def small_eval_np(images: np.ndarray, image_size: int) -> np.ndarray:
    """Small-image eval preprocessing of a uint8 batch (before normalisation)."""
    return center_crop_or_pad_np(images, image_size)


def small_train_np(
    images: np.ndarray,
    offsets: np.ndarray,
    flips: np.ndarray,
    *,
    image_size: int,
    padding: int,
) -> np.ndarray:
    """Pad + random crop + horizontal flip of a uint8 (B, H, W, C) batch.

    Args:
      images: the batch.
      offsets: int (B, 2): top-left corner of each crop in the padded image, each in
        ``[0, 2 * padding]``.
      flips: bool (B,): which examples are mirrored left-right.
      image_size: output height and width.
      padding: zero padding on each side before cropping.

    Returns:
      uint8 (B, image_size, image_size, C).
    """
    padded = center_crop_or_pad_np(images, image_size + 2 * padding)
    grid = np.arange(image_size)
    rows = offsets[:, 0, None] + grid
    cols = offsets[:, 1, None] + grid
    cols = np.where(flips[:, None], cols[:, ::-1], cols)
    batch = np.arange(len(images))[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def normalize_np(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 -> float32 ``(x / 255 - mean) / std``, per channel (last axis)."""
    scale = np.float32(1 / 255)
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    return (images.astype(np.float32) * scale - mean) / std


# ------------------------------------------------------------------------- TensorFlow


def _is_encoded(image: tf.Tensor) -> bool:
    return image.dtype == tf.string


def _image_shape(image: tf.Tensor) -> tf.Tensor:
    """[height, width, channels] of a decoded image or of JPEG bytes (read from the header)."""
    if _is_encoded(image):
        return tf.image.extract_jpeg_shape(image)
    return tf.shape(image)


def _crop(image: tf.Tensor, top, left, height, width) -> tf.Tensor:
    """A window of a decoded image, or of JPEG bytes decoded only inside the window."""
    if _is_encoded(image):
        window = tf.stack([top, left, height, width])
        return tf.image.decode_and_crop_jpeg(image, window, channels=3)
    return tf.image.crop_to_bounding_box(image, top, left, height, width)


def decode(image: tf.Tensor) -> tf.Tensor:
    """A decoded uint8 image (JPEG bytes are decoded to RGB; decoded images pass through)."""
    if _is_encoded(image):
        return tf.io.decode_jpeg(image, channels=3)
    return image


def _resize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    resized = tf.image.resize(image, [image_size, image_size], method='bilinear')
    return tf.ensure_shape(resized, [image_size, image_size, None])


def imagenet_eval(image: tf.Tensor, *, image_size: int, resize: int | None = None) -> tf.Tensor:
    """Center crop of ``image_size / resize`` of the shorter side, resized to `image_size`.

    That is "resize the shorter side to `resize`, center crop `image_size`" with the crop
    taken first (its side rounded down to whole source pixels, odd margins split with the
    extra pixel before the window). `resize` defaults to ``image_size + 32``; it must be at
    least `image_size` (`image_size` itself: the whole central square).

    Returns float32 (image_size, image_size, C) in [0, 255].
    """
    if resize is None:
        resize = image_size + IMAGENET_CROP_PADDING
    if resize < image_size:
        raise ValueError(f'resize={resize} must be >= image_size={image_size}.')
    shape = _image_shape(image)
    height, width = shape[0], shape[1]
    crop = tf.cast(
        image_size / resize * tf.cast(tf.minimum(height, width), tf.float64),
        tf.int32,
    )
    crop = tf.maximum(crop, 1)
    top = (height - crop + 1) // 2
    left = (width - crop + 1) // 2
    return _resize(_crop(image, top, left, crop, crop), image_size)


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, *, image_size: int) -> tf.Tensor:
    """Random crop of 8%-100% of the area, aspect 3/4-4/3, resized to `image_size`.

    When 10 attempts find no such window, falls back to `imagenet_eval`'s default center crop
    (``image_size / (image_size + 32)`` of the shorter side; torchvision's fallback, the
    release's, is the whole image with its aspect ratio clamped to 3/4-4/3).
    Returns float32 (image_size, image_size, C) in [0, 255].
    """
    shape = _image_shape(image)
    whole_image = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=whole_image,
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=ASPECT_RATIO_RANGE,
        area_range=AREA_RANGE,
        max_attempts=MAX_ATTEMPTS,
        use_image_if_no_bounding_boxes=True,
    )
    # The sampler returns the whole image when every attempt failed.
    failed = tf.reduce_all(tf.equal(size[:2], shape[:2]))
    return tf.cond(
        failed,
        lambda: imagenet_eval(image, image_size=image_size),
        lambda: _resize(_crop(image, begin[0], begin[1], size[0], size[1]), image_size),
    )


def imagenet_train(image: tf.Tensor, seed: tf.Tensor, *, image_size: int,
                   flip: bool = True) -> tf.Tensor:
    """Random-resized crop + random horizontal flip (``flip=False``: the crop alone, the same
    crop for the same seed); float32 in [0, 255]."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = random_resized_crop(image, crop_seed, image_size=image_size)
    if not flip:
        return image
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def small_eval(image: tf.Tensor, *, image_size: int) -> tf.Tensor:
    """Center crop or zero-pad to `image_size`; uint8."""
    return tf.image.resize_with_crop_or_pad(decode(image), image_size, image_size)


def small_train(image: tf.Tensor, seed: tf.Tensor, *, image_size: int, padding: int,
                flip: bool = True) -> tf.Tensor:
    """Zero-pad + random `image_size` crop + random horizontal flip (``flip=False``: the crop
    alone, the same crop for the same seed); uint8."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = decode(image)
    padded_size = image_size + 2 * padding
    image = tf.image.resize_with_crop_or_pad(image, padded_size, padded_size)
    channels = image.shape[-1] or tf.shape(image)[-1]
    crop_shape = tf.stack([image_size, image_size, channels])
    image = tf.image.stateless_random_crop(image, crop_shape, seed=crop_seed)
    if not flip:
        return image
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def rand_augment(num_ops: int, magnitude: float, seed: int):
    """RandAugment (Cubuk et al. 2020) as Keras ships it (`keras.layers.RandAugment`):
    ``num_ops`` random operations per image at strength ``magnitude`` on the paper's 0-30
    scale (Keras's ``factor = magnitude / 30``), on float images in [0, 255]. Returns a
    function of one image.

    Where it runs is the release's: ``imagenet_randaug`` is ``RandomResizedCrop(size)``,
    ``RandAugment(randaug_N, randaug_M)``, ``ToTensor``, ``Normalize`` (its ``train.py``
    ``get_trans``), so the pipeline applies this to the cropped `image_size` image, last
    before normalisation (and, with ``data.random_flip=False`` as the EfficientNet config
    has it, with no flip: the release's randaug pipeline has none).

    The operations are not the release's. The release's are torchvision's
    ``RandAugment(num_ops=2, magnitude=10)`` (torchvision 0.11 per its README; defaults
    ``num_magnitude_bins=31``, nearest interpolation, fill 0) on the PIL uint8 crop: each of
    the N operations is drawn uniformly, with replacement, from 14 (Identity, ShearX, ShearY,
    TranslateX, TranslateY, Rotate, Brightness, Color, Contrast, Sharpness, Posterize,
    Solarize, AutoContrast, Equalize) at the *fixed* strength of bin M of 31 (one third of
    each range at M=10), with a random sign for the signed ones: shear 0.1 along one axis,
    translation ``int(150/331 * side / 3)`` px (38 px at 256) along one axis, rotation 10
    degrees, brightness / saturation / contrast / sharpness factor 1 +- 0.3, posterize to 7
    bits, solarize pixels at or above 170.7 (the 0.11-era ``linspace(256, 0, 31)``; 170 with
    later versions' 255).
    Keras 3.15's layer (read in its source, and its drawn parameters checked at
    ``factor=1/3``) draws each operation uniformly from 11 (no Identity) and each
    operation's parameters once per image (the same operation drawn twice repeats them),
    at a strength drawn uniformly in ``[0, M/30]`` of its own ranges, mostly one-sided; at
    M=10: shear in x *and* y, each in [0, 1/3] (one sign for both); translation in x and y, each
    in [0, 1/3] of the side, one direction only; rotation in [0, 120] degrees, one
    direction (geometric ops bilinear with reflected borders); brightness + [0, 85] (never
    darker); colour blended towards grey by [0, 1/3] (never more saturated); contrast x [1,
    4/3] about each channel's mean (never less); sharpness always a blur (the 3x3 smoothing
    kernel mixed in with weight in [1/3, 1]); posterize to 1 bit (``factor=max(1, int(8 *
    M/30)) = 2`` is the range [1, 2) of kept bits); solarize: + [0, 85], then pixels above
    a threshold in [0, 85] inverted; AutoContrast and Equalize per channel, as PIL's. Values
    stay float between operations (torchvision rounds to uint8 after each). So at M=10
    Keras's geometry, posterize and solarize are much stronger, and its colour operations
    weaker and one-sided, than the release's; matching them would take torchvision's
    operations written for tf.data (not done).

    Keras draws from its own seeded generator, not from the example's stateless seed: the
    operations an image gets are not a function of its position in the stream (a resumed run
    augments differently from an unbroken one; everything else in the pipeline repeats)."""
    import keras  # noqa: PLC0415 - only the recipes that use RandAugment need Keras

    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=num_ops,
                                     factor=magnitude / 30.0, seed=seed)
    return lambda image: tf.clip_by_value(layer(tf.cast(image, tf.float32)), 0.0, 255.0)


def normalize(image: tf.Tensor, mean: Sequence[float], std: Sequence[float]) -> tf.Tensor:
    """Pixel values in [0, 255] -> float32 ``(x / 255 - mean) / std``, per channel."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
