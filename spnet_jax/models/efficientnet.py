"""EfficientNet-B0..B7 as the release's ``models/sp_efficientnet.py`` builds them: MobileNetV2's
inverted residuals with squeeze-and-excitation and swish.

The B0 blocks (Tan & Le 2019, table 1) are compound-scaled per variant: channels rounded
twice to multiples of 8 (by the width coefficient, then by the width multiplier), repeats by
the depth coefficient (rounded up); the last 1x1 conv is 4x the last stage's channels (up to
width 1.0; above, that times the width, rounded). The network is `mobilenet_v2.MobileNetV2`'s
module with these blocks, so names, channel groups, ZPM streams and wiring are
MobileNetV2's: ``stem_conv`` (3x3/2), ``block{i}`` with ``expand_conv`` (absent in the first
stage, expansion 1), ``dw_conv`` (3x3 or 5x5), ``se_reduce`` / ``se_expand`` and
``project_conv``, then ``last_conv`` and the classifier ``head``. B5-B7's BatchNorms use eps
1e-3 and (PyTorch) momentum 0.01. Initialisation as the release: convs (the SE's FCs
included) He-normal on fan-out, the classifier uniform in +-1/sqrt(classes).

Squeeze-and-excitation: the block's depthwise output is average-pooled, reduced by an FC to
``max(1, block input channels // 4)``, swish, expanded back by an FC, sigmoid, and multiplies
the depthwise output. In the channel table the reducing FC reads the depthwise conv's group
and the expanding FC writes it (its columns and bias are kept, dropped and permuted with the
group: `mobilenet_v2.se_members`); the squeezed channels are a *derived* group
(`mobilenet_v2.squeeze_group`): not scored nor sorted, each sub-network keeps a prefix, of
``max(1, n // 4)`` channels for a block input of n as the release's pruning counts it
(`spnet_jax.pruning.derived`; an S-Net width: its own input's quarter).

Stochastic depth (torchvision's, mode 'row'): block i (from 1) drops its residual branch with
probability ``stochastic_depth * (i - 1) / blocks``; blocks without a residual never drop.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from spnet_jax.core import layers
from spnet_jax.core.structure import Structure
from spnet_jax.models.common import FOLD_SLACK, make_divisible
from spnet_jax.models.mobilenet_v2 import BlockSpec, MobileNetV2, MobileNetV2Arch

# (expansion, kernel, first stride, output channels, repeats) of B0's stages.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
STEM, LAST_EXPANSION, SE_DIVISOR = 32, 4, 4
# variant -> (width coefficient, depth coefficient, resolution, classifier dropout)
VARIANTS = {
    'b0': (1.0, 1.0, 224, 0.2), 'b1': (1.0, 1.1, 240, 0.2), 'b2': (1.1, 1.2, 260, 0.3),
    'b3': (1.2, 1.4, 300, 0.3), 'b4': (1.4, 1.8, 380, 0.4), 'b5': (1.6, 2.2, 456, 0.4),
    'b6': (1.8, 2.6, 528, 0.5), 'b7': (2.0, 3.1, 600, 0.5),
}
STOCHASTIC_DEPTH = 0.2  # torchvision's and the release's default
# The release's classifier init: uniform in +-1/sqrt(out_features), bias 0. (Its convs, the
# squeeze-and-excitation's biased 1x1 convs included, are He-normal on fan-out: conv_init.)
HEAD_INIT = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_out', 'uniform')


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
        """The release's widths: every stage's channels rounded twice, first by the variant's
        width coefficient, then by ``width`` (``make_divisible(make_divisible(c * wc) *
        width)``: B2 x0.75 has a 24-channel stem and a 40-channel third stage); the last conv
        is 4x the last stage's channels up to width 1.0, ``make_divisible(4 * c * width)``
        above it. The squeeze-and-excitation reduces to ``max(1, block input // 4)``."""
        wc, dc, _, _ = VARIANTS[self.variant]
        channels = lambda c: make_divisible(make_divisible(c * wc) * width)
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
                # which can coincide at small widths (make_divisible's floor of 8). The
                # release tests `stride 1 and equal channel lists`, which differs only where
                # stage 1's first block coincides too (B0 up to x0.2775, B3 x0.37-0.444, ...),
                # and there the release cannot build the network (without ZPM, its block 1
                # would read its stream's list from the stem conv: a TypeError); see
                # tests/test_efficientnet_singlebase.py.
                residual = r > 0
                specs.append(BlockSpec(i, in_ch, make_divisible(in_ch * t), out, stride, t != 1,
                                       residual, entry=False, kernel=kernel,
                                       se=max(1, in_ch // SE_DIVISOR),
                                       drop_path=rate * (i - 1) / total))
                in_ch, i = out, i + 1
        for j, b in enumerate(specs[:-1]):
            if not b.residual and specs[j + 1].residual:
                specs[j] = dataclasses.replace(b, entry=True)
        last = make_divisible(LAST_EXPANSION * in_ch * width) if width > 1.0 else \
            LAST_EXPANSION * in_ch
        return stem, specs, last

    def snet_structure(self, widths) -> Structure:
        """S-Net as the release builds it: each width's channels (and squeeze-and-excitation)
        its own, but the last conv's sized from the *widest* network's last stage (the
        release computes it from ``channels[-1]``), so up to width 1.0 it is not slimmed."""
        snet = super().snet_structure(widths)
        widest = max(float(w) for w in widths)
        last_stage = self.block_specs(widest)[1][-1].out
        last = [make_divisible(LAST_EXPANSION * last_stage * w) if w > 1.0
                else LAST_EXPANSION * last_stage for w in snet.widths]
        g = snet.groups.index('last_conv')
        counts = tuple(row[:g] + (n,) + row[g + 1:] for row, n in zip(snet.counts, last,
                                                                       strict=True))
        return dataclasses.replace(snet, counts=counts, full=counts[-1])

    def multibase_block_groups(self, zpm: bool) -> tuple[str, ...]:
        """Without ZPM, every group but the stem's and the last conv's: the release's pruning
        (train.py ``prune_model``) sets a conv inside a block (``cfg`` entries that are
        lists) only on the base being pruned (``elif not end_of_block: base_conv_m...``),
        and only the stem and the last conv (``int`` entries) also on the slimmable network
        (``org_conv_m.out_channels_list[offset:...]``). With a single base the two are one
        model, so nothing differs; with several, the slimmable network's blocks keep the
        channels of the network built at the keep ratios as widths (B2 recipe). The first
        block's depthwise conv follows the stem (it shares its channel list), so it is
        pruned. With ZPM the release sets every count on the slimmable network."""
        if zpm:
            return ()
        return tuple(g for g in self.table(zpm=False).group_names
                     if g not in (self.first_conv, 'last_conv'))

    def derived_count(self, block_input: int) -> int:
        """A squeeze-and-excitation's channels for a block input of ``block_input``."""
        return max(1, block_input // SE_DIVISOR)

    def bn_options(self) -> dict[str, float]:
        """B5-B7 use BatchNorm eps 1e-3 and (PyTorch) momentum 0.01: Flax's 0.99."""
        if self.variant in ('b5', 'b6', 'b7'):
            return {'bn_epsilon': 1e-3, 'bn_momentum': 0.99}
        return {'bn_epsilon': 1e-5, 'bn_momentum': 0.9}

    def module(self, structure, *, dtype: Any = jnp.float32, bn_scale_init: float = 1.0,
               fold_slack: float = FOLD_SLACK):
        _, specs, _ = self.block_specs(self.full_width)
        dropout = VARIANTS[self.variant][3] if self.dropout is None else self.dropout
        return MobileNetV2(structure=structure, num_classes=self.num_classes, dtype=dtype,
                           bn_scale_init=bn_scale_init, fold_slack=fold_slack,
                           specs=tuple(specs), activation='swish', dropout=dropout,
                           head_init=HEAD_INIT, se_init=layers.conv_init, **self.bn_options())
