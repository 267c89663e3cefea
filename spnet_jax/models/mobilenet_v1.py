"""MobileNetV1: a 3x3 stem and 13 depthwise-separable blocks, ReLU6, as in the release.

Channels at width w are ``int(c * w)`` (the release's rounding, not MobileNetV2's
make-divisible: x1.3 has a 41-channel stem, 83 channels in block 1 and 1331 at the end), so
the release's checkpoints of any width load and costs are the release's.

Names: ``stem_conv``/``stem_bn``; ``block{i}`` (i = 1..13) holding ``dw_conv``/``dw_bn`` and
``pw_conv``/``pw_bn``; classifier ``head``. A depthwise conv is not a channel group: it
follows the group that feeds it (the stem or the previous pointwise conv).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelTable
from spnet_jax.models.common import (
    FOLD_SLACK,
    Architecture,
    Channels,
    SlimModule,
    batch_norm,
    conv,
    plain_group,
    scaled,
)

STEM = 32
# (pointwise output channels, depthwise stride) of blocks 1..13.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


@dataclasses.dataclass(frozen=True)
class MobileNetV1Arch(Architecture):
    def table(self, width: float | None = None, zpm: bool = False) -> ChannelTable:
        w = self.full_width if width is None else width
        producers = ['stem_conv'] + [f'block{i}/pw_conv' for i in range(1, len(BLOCKS) + 1)]
        sizes = [scaled(STEM, w)] + [scaled(c, w) for c, _ in BLOCKS]
        groups = []
        for i, (p, c) in enumerate(zip(producers, sizes, strict=True)):
            bn = p.replace('conv', 'bn')
            if i < len(BLOCKS):
                nxt = f'block{i + 1}'
                groups.append(plain_group(p, c, bn, ((f'{nxt}/pw_conv', 2),),
                                          followers=(f'{nxt}/dw_conv',),
                                          extra_bns=(f'{nxt}/dw_bn',)))
            else:
                groups.append(plain_group(p, c, bn, (('head', 0),)))
        return ChannelTable(self.name, tuple(groups))

    def module(self, structure, *, dtype: Any = jnp.float32, bn_scale_init: float = 1.0,
               fold_slack: float = FOLD_SLACK):
        return MobileNetV1(structure=structure, num_classes=self.num_classes, dtype=dtype,
                           bn_scale_init=bn_scale_init, fold_slack=fold_slack)


class MobileNetV1(SlimModule):
    @nn.compact
    def __call__(self, x, subnet: int | float = -1, train: bool = False):
        k = self.structure.subnet_index(subnet)
        g = 'stem_conv'
        x = self.conv('stem_conv', g, x.shape[-1], 3, 2)(x, self.n(g, k))
        x = layers.relu6(self.bn('stem_bn', g)(x, k, train))
        for i, (_, stride) in enumerate(BLOCKS, start=1):
            x = DepthwiseSeparable(dw=self.channels(g), pw=self.channels(f'block{i}/pw_conv'),
                                   stride=stride, dtype=self.dtype,
                                   bn_scale_init=self.bn_scale_init, name=f'block{i}')(x, k, train)
            g = f'block{i}/pw_conv'
        x = jnp.mean(x, axis=(1, 2))
        return self.logits(self.head(self.structure.full_of(g))(x))


class DepthwiseSeparable(nn.Module):
    """A depthwise conv over the input's channels ``dw``, then a pointwise conv to ``pw``."""

    dw: Channels
    pw: Channels
    stride: int
    dtype: Any = jnp.float32
    bn_scale_init: float = 1.0

    @nn.compact
    def __call__(self, x, k: int, train: bool):
        bn = lambda ch, name: batch_norm(ch, name, self.bn_scale_init, self.dtype)
        x = conv(self.dw, 'dw_conv', 1, 3, self.stride, depthwise=True, dtype=self.dtype)(x)
        x = layers.relu6(bn(self.dw, 'dw_bn')(x, k, train))
        x = conv(self.pw, 'pw_conv', self.dw.full, 1, dtype=self.dtype)(x, self.pw.counts[k])
        return layers.relu6(bn(self.pw, 'pw_bn')(x, k, train))
