"""Input pipelines: Fashion-MNIST from IDX files, CIFAR-10/100 and ImageNet from TFDS.

Public API (see `spnet_jax.data.pipeline` for the guarantees of each back end)::

    info = dataset_info(config.data)
    batches = prefetch(train_batches(config.data, global_batch_size=256, seed=0,
                                     start_step=step), size=2)
    for batch in eval_batches(config.data, global_batch_size=256): ...
"""

from spnet_jax.data.batches import (
    Batch,
    DatasetInfo,
    dataset_info,
    eval_batches,
    train_batches,
    validate_config,
)
from spnet_jax.data.prefetch import Prefetcher, prefetch
from spnet_jax.data.specs import DATASETS, DatasetSpec, DataSettings, parse_settings

__all__ = [
    'DATASETS',
    'Batch',
    'DataSettings',
    'DatasetInfo',
    'DatasetSpec',
    'Prefetcher',
    'dataset_info',
    'eval_batches',
    'parse_settings',
    'prefetch',
    'train_batches',
    'validate_config',
]
