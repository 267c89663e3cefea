"""EfficientNet-B0..B7: MobileNetV2's inverted residuals with squeeze-and-excitation and swish.

The B0 blocks (Tan & Le 2019, table 1) are compound-scaled per variant: channels by the width
coefficient (rounded to multiples of 8 as MobileNet's), repeats by the depth coefficient
(rounded up); each variant has its native resolution and classifier dropout. The network is
`mobilenet_v2.MobileNetV2`'s module with these blocks, so names, channel groups, ZPM streams
and wiring are MobileNetV2's: ``stem_conv`` (3x3/2), ``block{i}`` with ``expand_conv``
(absent in the first stage, expansion 1), ``dw_conv`` (3x3 or 5x5), ``se_reduce`` /
``se_expand`` and ``project_conv``, then ``last_conv`` (1x1, 4x the last block's channels)
and the classifier ``head``.

Squeeze-and-excitation: the block's depthwise output is average-pooled, reduced by an FC to
a quarter of the *block input's* channels, swish, expanded back by an FC, sigmoid, and
multiplies the depthwise output. In the channel table the reducing FC reads the depthwise
conv's group and the expanding FC writes it (its columns and bias are kept, dropped and
permuted with the group: `mobilenet_v2.se_members`); the squeezed channels themselves are not
slimmed (each sub-network keeps the full network's, and the SE is not scored).

Stochastic depth (torchvision's): block i (from 1) drops its residual branch with probability
``stochastic_depth * (i - 1) / blocks``; blocks without a residual never drop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from spnet_jax.models.common import FOLD_SLACK, make_divisible
from spnet_jax.models.mobilenet_v2 import BlockSpec, MobileNetV2, MobileNetV2Arch

# (expansion, kernel, first stride, output channels, repeats) of B0's stages.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, LAST_EXPANSION, SE_RATIO = 32, 4, 0.25
# variant -> (width coefficient, depth coefficient, resolution, classifier dropout)
VARIANTS = {
    'b0': (1.0, 1.0, 224, 0.2), 'b1': (1.0, 1.1, 240, 0.2), 'b2': (1.1, 1.2, 260, 0.3),
    'b3': (1.2, 1.4, 300, 0.3), 'b4': (1.4, 1.8, 380, 0.4), 'b5': (1.6, 2.2, 456, 0.4),
    'b6': (1.8, 2.6, 528, 0.5), 'b7': (2.0, 3.1, 600, 0.5),
}
STOCHASTIC_DEPTH = 0.2  # torchvision's and the release's default


@dataclasses.dataclass(frozen=True)
class EfficientNetArch(MobileNetV2Arch):
    """EfficientNet ``variant`` ('b0'..'b7'); ``full_width`` multiplies the variant's width
    coefficient (the release's width_mult). ``dropout`` / ``stochastic_depth``: None takes
    the variant's dropout and 0.2."""

    variant: str = 'b0'
    dropout: float | None = None
    stochastic_depth: float | None = None

    @property
    def spec(self) -> dict[str, Any]:
        regularisation = {'dropout': self.dropout, 'stochastic_depth': self.stochastic_depth}
        return {**super().spec, **{k: v for k, v in regularisation.items() if v is not None}}

    @property
    def resolution(self) -> int:
        return VARIANTS[self.variant][2]

    def block_specs(self, width: float) -> tuple[int, list[BlockSpec], int]:
        wc, dc, _, _ = VARIANTS[self.variant]
        channels = lambda c: make_divisible(c * wc * width)
        repeats = [int(math.ceil(n * dc)) for *_, n in STAGES]
        total, rate = sum(repeats), (STOCHASTIC_DEPTH if self.stochastic_depth is None
                                     else self.stochastic_depth)
        stem = channels(STEM)
        specs, in_ch, i = [], stem, 1
        for (t, kernel, s, c, _), n in zip(STAGES, repeats, strict=True):
            out = channels(c)
            for r in range(n):
                stride = s if r == 0 else 1
                # A stage's repeats; fixed by the topology, not by the channel counts,
                # which can coincide at small widths (make_divisible's floor of 8).
                residual = r > 0
                specs.append(BlockSpec(i, in_ch, in_ch * t, out, stride, t != 1, residual,
                                       entry=False, kernel=kernel,
                                       se=max(1, int(in_ch * SE_RATIO)),
                                       drop_path=rate * (i - 1) / total))
                in_ch, i = out, i + 1
        for j, b in enumerate(specs[:-1]):
            if not b.residual and specs[j + 1].residual:
                specs[j] = dataclasses.replace(b, entry=True)
        return stem, specs, channels(STAGES[-1][3] * LAST_EXPANSION)

    def module(self, structure, *, dtype: Any = jnp.float32, bn_scale_init: float = 1.0,
               fold_slack: float = FOLD_SLACK):
        _, specs, _ = self.block_specs(self.full_width)
        dropout = VARIANTS[self.variant][3] if self.dropout is None else self.dropout
        return MobileNetV2(structure=structure, num_classes=self.num_classes, dtype=dtype,
                           bn_scale_init=bn_scale_init, fold_slack=fold_slack,
                           specs=tuple(specs), activation='swish', dropout=dropout)
