"""Input pipelines: Fashion-MNIST from IDX files, CIFAR-10/100 and ImageNet from TFDS.

Public API (see `spnet_jax.data.batches` for the guarantees of each back end)::

    info = dataset_info(config.data)
    batches = prefetch(train_batches(config.data, global_batch_size=256, seed=0,
                                     start_step=step), size=2)
    for batch in eval_batches(config.data, global_batch_size=256): ...

The datasets' fixed facts (`DATASETS`, `DataSettings`) import without TensorFlow; the
pipelines (which need it) load on first use, so `import spnet_jax` stays light.
"""

import importlib

from spnet_jax.data.prefetch import Prefetcher, prefetch
from spnet_jax.data.specs import DATASETS, DatasetSpec, DataSettings, parse_settings

_LAZY = {
    'Batch': 'spnet_jax.data.batches', 'DatasetInfo': 'spnet_jax.data.batches',
    'dataset_info': 'spnet_jax.data.batches', 'eval_batches': 'spnet_jax.data.batches',
    'prepare': 'spnet_jax.data.batches',
    'train_batches': 'spnet_jax.data.batches', 'validate_config': 'spnet_jax.data.batches',
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['DATASETS', 'Batch', 'DataSettings', 'DatasetInfo', 'DatasetSpec', 'Prefetcher',
           'dataset_info', 'eval_batches', 'parse_settings', 'prefetch', 'prepare',
           'train_batches', 'validate_config']
