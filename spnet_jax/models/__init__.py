"""The model zoo: pick an architecture by name."""

from __future__ import annotations

from spnet_jax.errors import ConfigError
from spnet_jax.models.common import Architecture
from spnet_jax.models.resnet import CIFAR_DEPTHS, IMAGENET_DEPTHS, ResNetArch

STEMS = ('imagenet', 'small')


def _resnet(depth):
    return lambda **kw: ResNetArch(name=f'resnet{depth}', depth=depth, **kw)


REGISTRY = {f'resnet{d}': _resnet(d) for d in (*IMAGENET_DEPTHS, *CIFAR_DEPTHS)}


def get_arch(name: str, *, num_classes: int = 1000, full_width: float = 1.0,
             stem: str | None = None) -> Architecture:
    """The architecture ``name`` (see `REGISTRY`) with its head, full width and stem.

    ``stem`` defaults to 'imagenet' for ImageNet layouts and 'small' for CIFAR ResNets.
    """
    if name not in REGISTRY:
        raise ConfigError(f'model.name={name!r} is unknown; choose one of {sorted(REGISTRY)}.')
    if stem is None:
        stem = 'small' if name in {f'resnet{d}' for d in CIFAR_DEPTHS} else 'imagenet'
    if stem not in STEMS:
        raise ConfigError(f'model.stem={stem!r} is unknown; choose one of {list(STEMS)}.')
    if not 0 < full_width <= 4:
        raise ConfigError(f'model full width {full_width} must be in (0, 4].')
    return REGISTRY[name](num_classes=num_classes, full_width=full_width, stem=stem)
