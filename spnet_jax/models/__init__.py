"""The model zoo: pick an architecture by name.

Every model is called as ``model.apply(variables, images_nhwc, subnet=k, train=...)`` with
``k`` a static Python int (or a width label of the structure).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from spnet_jax.core.errors import ConfigError
from spnet_jax.models.common import Architecture
from spnet_jax.models.efficientnet import VARIANTS as EFFICIENTNETS
from spnet_jax.models.efficientnet import EfficientNetArch
from spnet_jax.models.mobilenet_v1 import MobileNetV1Arch
from spnet_jax.models.mobilenet_v2 import MobileNetV2Arch
from spnet_jax.models.resnet import CIFAR_DEPTHS, IMAGENET_DEPTHS, ResNetArch
from spnet_jax.models.vgg import VGGArch

STEMS = ('imagenet', 'small')


def _resnet(depth):
    return lambda **kw: ResNetArch(name=f'resnet{depth}', depth=depth, **kw)


def _resnetd(depth):
    return lambda **kw: ResNetArch(name=f'resnetd{depth}', depth=depth, deep_stem=True,
                                   avg_down=True, **kw)


RESNETD_DEPTHS = (50, 101, 152)  # the release's sp_resnetd
REGISTRY = {f'resnet{d}': _resnet(d) for d in (*IMAGENET_DEPTHS, *CIFAR_DEPTHS)}
REGISTRY.update({f'resnetd{d}': _resnetd(d) for d in RESNETD_DEPTHS})
REGISTRY['vgg19'] = lambda **kw: VGGArch(name='vgg19', **kw)
REGISTRY['mobilenet_v1'] = lambda **kw: MobileNetV1Arch(name='mobilenet_v1', **kw)
REGISTRY['mobilenet_v2'] = lambda **kw: MobileNetV2Arch(name='mobilenet_v2', **kw)
REGISTRY.update({f'efficientnet_{v}': functools.partial(
    EfficientNetArch, name=f'efficientnet_{v}', variant=v) for v in EFFICIENTNETS})
CIFAR_LAYOUTS = {f'resnet{d}' for d in CIFAR_DEPTHS}


def get_arch(name: str, *, num_classes: int = 1000, full_width: float = 1.0,
             stem: str | None = None, **regularisation: float | None) -> Architecture:
    """The architecture ``name`` (see `REGISTRY`) with its head, full width and stem.

    ``stem`` (ResNets only) defaults to 'imagenet' (7x7/2 + max-pool), or 'small' (3x3/1,
    no pool) for the CIFAR ResNets. ResNet-D always has its deep stem (three 3x3 convs):
    'imagenet' strides its first conv and max-pools after it, 'small' does neither.
    ``regularisation`` (EfficientNet only): ``dropout``, ``stochastic_depth`` (None: the
    variant's defaults).
    """
    if name not in REGISTRY:
        raise ConfigError(f'model.name={name!r} is unknown; choose one of {sorted(REGISTRY)}.')
    if stem is None:
        stem = 'small' if name in CIFAR_LAYOUTS else 'imagenet'
    if stem not in STEMS:
        raise ConfigError(f'model.stem={stem!r} is unknown; choose one of {list(STEMS)}.')
    if not 0 < full_width <= 4:
        raise ConfigError(f'model.full_width={full_width} must be in (0, 4].')
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f'model.num_classes={num_classes!r} must be a positive int.')
    given = {k: v for k, v in regularisation.items() if v is not None}
    if given and not name.startswith('efficientnet'):
        raise ConfigError(f'model.{next(iter(given))} is for EfficientNet only; unset it for '
                          f'{name}.')
    return REGISTRY[name](num_classes=num_classes, full_width=full_width, stem=stem, **given)


def arch_from_config(model: Any) -> Architecture:
    """The architecture a config's ``model`` section (or `ModelSettings`) describes."""
    return get_arch(model.name, num_classes=model.num_classes, full_width=model.full_width,
                    stem=model.stem, dropout=getattr(model, 'dropout', None),
                    stochastic_depth=getattr(model, 'stochastic_depth', None))


def arch_from_spec(spec: Mapping[str, Any], where: str = 'the architecture file') -> Architecture:
    """The architecture an `Architecture.spec` (as saved in a stage folder) describes."""
    try:
        return get_arch(str(spec['name']), num_classes=int(spec['num_classes']),
                        full_width=float(spec['full_width']), stem=spec.get('stem'),
                        dropout=spec.get('dropout'), stochastic_depth=spec.get('stochastic_depth'))
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f'{where} is not an architecture description ({e!r}); re-save the '
                          'network.') from None


__all__ = ['Architecture', 'REGISTRY', 'arch_from_config', 'arch_from_spec', 'get_arch']
