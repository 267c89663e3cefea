"""Fashion-MNIST from its IDX files (as Debian's `dataset-fashion-mnist` installs them).

The IDX format (LeCun's MNIST format): a big-endian header of a magic number
``0x0000TTDD`` (``TT`` the element type, ``DD`` the number of dimensions), then one uint32 per
dimension, then the elements in C order. Files may be gzipped (``.gz``) or plain.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np

from spnet_jax.core.errors import ConfigError

INSTALL_HINT = 'apt-get install -y dataset-fashion-mnist'

# Split name -> file stem of its images and labels.
FILES = {'train': 'train', 'test': 't10k'}
IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (count, rows, columns)
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (count)
IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10

# IDX element type code -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype('u1'),
    0x09: np.dtype('i1'),
    0x0B: np.dtype('>i2'),
    0x0C: np.dtype('>i4'),
    0x0D: np.dtype('>f4'),
    0x0E: np.dtype('>f8'),
}


def _open(path: str) -> BinaryIO:
    return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def _read_header(stream: BinaryIO, path: str) -> tuple[int, np.dtype, tuple[int, ...]]:
    head = stream.read(4)
    if len(head) < 4:
        raise ConfigError(f'{path} is too short to be an IDX file; reinstall it ({INSTALL_HINT}).')
    (magic,) = struct.unpack('>I', head)
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ConfigError(
            f'{path} is not an IDX file (magic number {magic:#010x}); '
            f'reinstall it ({INSTALL_HINT}).'
        )
    dims = stream.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise ConfigError(f'{path} has a truncated IDX header; reinstall it ({INSTALL_HINT}).')
    return magic, _IDX_DTYPES[type_code], struct.unpack(f'>{ndim}I', dims)


def read_idx_header(path: str) -> tuple[int, tuple[int, ...]]:
    """The magic number and shape of an IDX file, reading only its header."""
    with _open(path) as stream:
        magic, _, shape = _read_header(stream, path)
    return magic, shape


def read_idx(path: str, expected_magic: int | None = None) -> np.ndarray:
    """Reads a whole IDX file into a numpy array of its shape and (native-endian) dtype.

    Raises `ConfigError` if the magic number is not an IDX one (or not `expected_magic`),
    or if the file holds fewer or more bytes than its header announces.
    """
    try:
        with _open(path) as stream:
            magic, dtype, shape = _read_header(stream, path)
            if expected_magic is not None and magic != expected_magic:
                raise ConfigError(
                    f'{path} has IDX magic number {magic:#010x}, expected '
                    f'{expected_magic:#010x}; reinstall it ({INSTALL_HINT}).'
                )
            data = stream.read()
    except (EOFError, OSError, zlib.error) as e:  # truncated or corrupt gzip (BadGzipFile)
        raise ConfigError(f'{path} is damaged ({type(e).__name__}: {e}); reinstall it '
                          f'({INSTALL_HINT}).') from None
    expected_bytes = int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected_bytes:
        raise ConfigError(
            f'{path} holds {len(data)} data bytes but its header announces {expected_bytes}; '
            f'reinstall it ({INSTALL_HINT}).'
        )
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder('='))


def _missing(data_dir: str, what: str) -> ConfigError:
    return ConfigError(
        f'data.data_dir {data_dir!r} has no Fashion-MNIST {what}; install it with '
        f'`{INSTALL_HINT}` or set data.data_dir to the folder holding the IDX files.'
    )


def split_paths(data_dir: str, split: str) -> tuple[str, str]:
    """Paths of a split's (images, labels) files, gzipped or plain; `ConfigError` if absent."""
    if not os.path.isdir(data_dir):
        raise _missing(data_dir, 'folder (it does not exist)')
    paths = []
    for kind, ndim in (('images', 3), ('labels', 1)):
        stem = os.path.join(data_dir, f'{FILES[split]}-{kind}-idx{ndim}-ubyte')
        found = [p for p in (stem + '.gz', stem) if os.path.isfile(p)]
        if not found:
            raise _missing(data_dir, f'file {os.path.basename(stem)}.gz')
        paths.append(found[0])
    return paths[0], paths[1]


def split_size(data_dir: str, split: str) -> int:
    """Number of examples in a split, from the labels file's header alone."""
    _, labels_path = split_paths(data_dir, split)
    magic, shape = read_idx_header(labels_path)
    if magic != LABEL_MAGIC:
        raise ConfigError(
            f'{labels_path} has IDX magic number {magic:#010x}, expected {LABEL_MAGIC:#010x}; '
            f'reinstall it ({INSTALL_HINT}).'
        )
    return shape[0]


@functools.lru_cache(maxsize=4)
def load_split(data_dir: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split as read-only arrays: images uint8 (N, 28, 28, 1) and labels int32 (N,).

    Cached (the training split is 47 MB), so the arrays are made read-only.
    """
    images_path, labels_path = split_paths(data_dir, split)
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC).astype(np.int32)
    if images.shape[1:] != IMAGE_SHAPE:
        raise ConfigError(
            f'{images_path} holds images of shape {images.shape[1:]}, not 28x28 Fashion-MNIST '
            f'images; reinstall it ({INSTALL_HINT}).'
        )
    if images.shape[0] != labels.shape[0]:
        raise ConfigError(
            f'{images_path} holds {images.shape[0]} images but {labels_path} '
            f'{labels.shape[0]} labels; one of the two is from another split or damaged: '
            f'reinstall them ({INSTALL_HINT}).'
        )
    if labels.size and not 0 <= labels.min() <= labels.max() < NUM_CLASSES:
        raise ConfigError(f'{labels_path} has labels outside 0..9; reinstall it ({INSTALL_HINT}).')
    images = images[..., None]
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
