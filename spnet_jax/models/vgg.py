"""VGG-19 with BatchNorm as in the release: 16 convs, global average pooling, one classifier.

Names: ``conv{i}``/``bn{i}`` for i = 0..15, classifier ``head``. Every conv is a channel group
of its own, read by the next conv (the last by the classifier).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from spnet_jax.core.channels import ChannelTable
from spnet_jax.models.common import FOLD_SLACK, Architecture, SlimModule, plain_group, scaled

# Output channels per conv; 'M' is a 2x2 max-pool. The release has four pools (no pool after
# the last convs, which global average pooling follows).
VGG19 = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
         512, 512, 512, 512)


def conv_channels(width: float) -> list[int]:
    return [scaled(c, width) for c in VGG19 if c != 'M']


@dataclasses.dataclass(frozen=True)
class VGGArch(Architecture):
    first_conv = 'conv0'

    def table(self, width: float | None = None, zpm: bool = False) -> ChannelTable:
        w = self.full_width if width is None else width
        chans = conv_channels(w)
        groups = []
        for i, c in enumerate(chans):
            reader = (f'conv{i + 1}', 2) if i + 1 < len(chans) else ('head', 0)
            groups.append(plain_group(f'conv{i}', c, f'bn{i}', (reader,)))
        return ChannelTable(self.name, tuple(groups))

    def floor_table(self, base_width: float, zpm: bool = False) -> ChannelTable:
        """The x1.0 table whatever the base: the release's VGG floors read its layer list
        (``cfg``), which is not width-scaled (SPEC section 3)."""
        return self.table(1.0, zpm=zpm)

    def module(self, structure, *, dtype: Any = jnp.float32, bn_scale_init: float = 1.0,
               fold_slack: float = FOLD_SLACK):
        return VGG(structure=structure, num_classes=self.num_classes, dtype=dtype,
                   bn_scale_init=bn_scale_init, fold_slack=fold_slack)


class VGG(SlimModule):
    @nn.compact
    def __call__(self, x, subnet: int | float = -1, train: bool = False):
        k = self.structure.subnet_index(subnet)
        i, x_full = 0, x.shape[-1]
        for c in VGG19:
            if c == 'M':
                x = nn.max_pool(x, (2, 2), (2, 2))
                continue
            g = f'conv{i}'
            x = self.conv(g, g, x_full, 3)(x, self.n(g, k))
            x = nn.relu(self.bn(f'bn{i}', g)(x, k, train))
            x_full, i = self.structure.full_of(g), i + 1
        x = jnp.mean(x, axis=(1, 2))
        return self.logits(self.head(x_full)(x))
