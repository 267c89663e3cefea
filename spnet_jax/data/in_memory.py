"""Exact, stateless batching of a dataset held in memory as numpy arrays (Fashion-MNIST).

Everything here is a pure function of its arguments, so training is reproducible to the
bit and independent of how it is split over processes or interrupted:

- The training stream is the concatenation of epochs; epoch ``e`` visits the examples in
  the order of a permutation drawn from ``(seed, e)``. Global batch ``step`` holds stream
  positions ``[step * B, (step + 1) * B)`` (it may straddle two epochs).
- The augmentation of the example at position ``j`` of global batch ``step`` is element ``j``
  of arrays drawn from ``(seed, step)`` for the whole global batch.
- Process ``p`` of ``P`` takes rows ``[p * B / P, (p + 1) * B / P)`` of every global batch.

So a run resumed at `start_step` sees the batches an uninterrupted one saw, and ``P``
processes together see exactly the global batches one process would.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator

import numpy as np

from spnet_jax.data import preprocess

# Distinct first entropy words keep the permutation and augmentation streams independent.
_PERMUTATION_STREAM = 0
_AUGMENTATION_STREAM = 1


def _entropy(seed: int) -> int:
    """Any Python int as a non-negative seed word for `np.random.SeedSequence`."""
    return int(seed) % 2**64


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The example order of one epoch: a permutation of ``range(num_examples)`` (read-only)."""
    rng = np.random.default_rng([_PERMUTATION_STREAM, _entropy(seed), epoch])
    order = rng.permutation(num_examples)
    order.flags.writeable = False
    return order


def example_indices(seed: int, step: int, global_batch_size: int, num_examples: int) -> np.ndarray:
    """Dataset indices of the examples in global batch `step` (int64, length B)."""
    positions = step * global_batch_size + np.arange(global_batch_size, dtype=np.int64)
    epochs, within = np.divmod(positions, num_examples)
    indices = np.empty_like(positions)
    for epoch in np.unique(epochs):
        selected = epochs == epoch
        indices[selected] = epoch_permutation(seed, int(epoch), num_examples)[within[selected]]
    return indices


def crop_flip_params(
    seed: int, step: int, global_batch_size: int, padding: int
) -> tuple[np.ndarray, np.ndarray]:
    """Crop offsets int (B, 2) in ``[0, 2 * padding]`` and flip bits (B,) of one global batch."""
    rng = np.random.default_rng([_AUGMENTATION_STREAM, _entropy(seed), step])
    offsets = rng.integers(0, 2 * padding + 1, size=(global_batch_size, 2))
    flips = rng.random(global_batch_size) < 0.5
    return offsets, flips


def train_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int,
    process_index: int,
    process_count: int,
    image_size: int,
    padding: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    flip: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless local training batches from step `start_step` on (see the module docstring).

    Yields ``{'image': float32 (L, S, S, C), 'label': int32 (L,)}`` with
    ``L = global_batch_size // process_count``. ``flip=False`` mirrors nothing (the crops
    stay those of ``flip=True``).
    """
    local = global_batch_size // process_count
    rows = slice(process_index * local, (process_index + 1) * local)
    for step in itertools.count(start_step):
        indices = example_indices(seed, step, global_batch_size, len(images))[rows]
        offsets, flips = crop_flip_params(seed, step, global_batch_size, padding)
        flips = flips & flip
        batch = preprocess.small_train_np(
            images[indices], offsets[rows], flips[rows], image_size=image_size, padding=padding
        )
        yield {
            'image': preprocess.normalize_np(batch, mean, std),
            'label': labels[indices],
        }


def eval_batches(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> Iterator[dict[str, np.ndarray]]:
    """One pass in dataset order; global batch ``b`` holds examples ``[b * B, (b + 1) * B)``.

    Every process yields the same number of batches, ``ceil(N / B)``; positions past the end
    are padding (zero image, label 0, ``mask`` False).
    """
    local = global_batch_size // process_count
    num_examples = len(images)
    size = len(range(0, num_examples, global_batch_size))
    channels = images.shape[-1]
    for batch_index in range(size):
        start = batch_index * global_batch_size + process_index * local
        positions = np.arange(start, start + local)
        mask = positions < num_examples
        real = positions[mask]
        image = np.zeros((local, image_size, image_size, channels), np.float32)
        image[mask] = preprocess.normalize_np(
            preprocess.small_eval_np(images[real], image_size), mean, std
        )
        label = np.zeros(local, np.int32)
        label[mask] = labels[real]
        yield {'image': image, 'label': label, 'mask': mask}
