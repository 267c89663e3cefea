"""What every slimmable architecture shares: the `Architecture` interface and small helpers."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelGroup, ChannelTable
from spnet_jax.core.structure import APPENDED, ASCENDING, PREFIX, Structure, uniform_structure

# The default `fold_slack` of the models: a ZPM branch's conv writes the stream layout itself
# when the stream is at most ``1 + fold_slack`` times as wide as the branch
# (`JunctionWiring.folds`). inf: always, measured faster on XLA:CPU than placing
# (benchmarks/junction_choice.py); 0: place wherever the stream is wider.
FOLD_SLACK = float('inf')


def scaled(channels: int, width: float) -> int:
    """``floor(channels * width)`` (the release's ResNet/VGG rounding), at least 1."""
    return max(1, int(math.floor(channels * width + 1e-9)))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """MobileNet rounding: nearest multiple of ``divisor``, never 10% below ``value``."""
    min_value = divisor if min_value is None else min_value
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def plain_group(name: str, size: int, bn: str, consumers=(), followers=(), extra_bns=(),
                zpm_role: str | None = None) -> ChannelGroup:
    """The common case: one conv ``name`` followed by its BN ``bn``."""
    return ChannelGroup(name=name, size=size, producers=(name,), bns=(bn, *extra_bns),
                        scored_by=(bn,), consumers=tuple(consumers),
                        followers=tuple(followers), zpm_role=zpm_role)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An architecture: its channel table at any width, and its Flax module for a structure.

    Subclasses implement `table` and `module`. ``full_width`` is the width multiplier of
    the full (largest) network; ``num_classes`` and ``stem`` select the head and stem.
    """

    name: str
    num_classes: int = 1000
    full_width: float = 1.0
    stem: str = 'imagenet'
    first_conv = 'stem_conv'  # the conv that reads the images (its input axis is not slimmed)

    @property
    def spec(self) -> dict[str, Any]:
        """What rebuilds this architecture (`spnet_jax.models.arch_from_spec`): saved beside
        every network, so loading never has to guess its width or stem."""
        return {'name': self.name, 'num_classes': self.num_classes,
                'full_width': float(self.full_width), 'stem': self.stem}

    def at_width(self, width: float) -> Architecture:
        """The same architecture with another full width (e.g. a base network's)."""
        return dataclasses.replace(self, full_width=float(width))

    def input_channels(self, params) -> int:
        """Image channels a parameter tree of this architecture was built for."""
        return int(params[self.first_conv]['kernel'].shape[2])

    def table(self, width: float | None = None, zpm: bool = False) -> ChannelTable:
        raise NotImplementedError

    def module(self, structure: Structure, *, dtype: Any = jnp.float32,
               bn_scale_init: float = 1.0, fold_slack: float = FOLD_SLACK) -> nn.Module:
        raise NotImplementedError

    def floor_table(self, base_width: float, zpm: bool = False) -> ChannelTable:
        """The table whose channel counts floor the pruning of a base at ``base_width``
        (`spnet_jax.pruning.threshold.floors`): the base's own, as the release does."""
        return self.table(base_width, zpm=zpm)

    def multibase_block_groups(self, zpm: bool) -> tuple[str, ...]:
        """Groups whose counts the release's *multi-base* pruning leaves at the network built
        at each keep ratio as a width (`spnet_jax.pruning.multibase.release_block_counts`):
        the release sets a block's pruned counts only on the base's own model. None here:
        this project prunes every group (the release's recipes of the other architectures
        use ZPM, or have no blocks)."""
        return ()

    # Structures that need no pruning.
    def plain_structure(self, width: float | None = None) -> Structure:
        """A single plain network (e.g. a base network) at ``width``."""
        w = self.full_width if width is None else width
        return uniform_structure(lambda v: self.table(v), [w], method='spnet')

    def snet_structure(self, widths) -> Structure:
        """S-Net: sub-network k is the whole network at ``widths[k]``, private BN per width."""
        return uniform_structure(lambda v: self.table(v), widths, method='snet')


# ------------------------------------------------------------------ block wiring
# A block is built from its wiring, precomputed from the `Structure` by its model: the
# channels of each of its convs and its ZPM junction. It never looks a group up itself.
@dataclasses.dataclass(frozen=True)
class Channels:
    """The output channels of one conv (and of its BatchNorm).

    Attributes:
      group: the channel group they belong to.
      full: the full network's count (the parameters' size).
      counts: ``counts[k]``: sub-network k's count.
      shared_bn: SP-Net's BN with a shared affine (else S-Net's private ones).
    """

    group: str
    full: int
    counts: tuple[int, ...]
    shared_bn: bool

    @classmethod
    def of(cls, structure: Structure, group: str) -> Channels:
        return cls(group, structure.full_of(group), structure.counts_of(group),
                   structure.method == 'spnet')


# How a ZPM junction's shortcut arrives (`JunctionWiring.shortcut`).
PROJECTION = 'projection'  # a conv (+BN) that writes the stream's layout itself
ENTRY = 'entry'  # the sorted prefix of the layer the stream starts from; placed at the add
IDENTITY = 'identity'  # the previous junction's stream, in the stream's channel order


@dataclasses.dataclass(frozen=True)
class JunctionWiring:
    """A block's ZPM junction (`layers.ZPMAdd`): its sizes and its kind of shortcut.

    Attributes:
      shortcut: `PROJECTION`, `ENTRY` or `IDENTITY`.
      stream_sizes: ``[k]``: channels of the stream after the junction in sub-network k.
      body_counts: ``[k]``: channels of the block's last conv.
      short_counts: ``[k]``: channels of the shortcut (for `IDENTITY`, the stream before).
      stream_order: the structure's `Structure.stream_order`.
      fold_slack: the model's (`SlimModule.fold_slack`).
    """

    shortcut: str
    stream_sizes: tuple[int, ...]
    body_counts: tuple[int, ...]
    short_counts: tuple[int, ...]
    stream_order: str = ASCENDING
    fold_slack: float = FOLD_SLACK

    @property
    def prefix(self) -> bool:
        """Both branches are prefixes of the stream, which its consumers read as a prefix
        (`Structure.stream_order` 'prefix', ``prune.zpm='aligned'``): the junction zero-pads
        the shorter branch, nothing is gathered or folded."""
        return self.stream_order == PREFIX

    def module(self) -> layers.ZPMAdd:
        prefix = self.prefix or (self.shortcut in (IDENTITY, ENTRY)
                                 and self.stream_order == APPENDED)
        return layers.ZPMAdd(stream_sizes=self.stream_sizes, body_counts=self.body_counts,
                             short_counts=self.short_counts, short_prefix=prefix,
                             body_prefix=self.prefix, name=layers.JUNCTION)

    def folds(self, branch_count: int, subnet: int) -> bool:
        """Whether a conv branch of ``branch_count`` channels writes sub-network ``subnet``'s
        stream layout itself (its placement folded into its weights: it computes the whole
        stream's width, zero columns included) rather than its own channels, placed into the
        stream by an activation gather at the add. Folding costs the extra columns,
        ``stream / branch - 1`` of the conv; placing costs a gather of the activations. Chosen
        at trace time from the static counts: fold when the stream is at most
        ``1 + fold_slack`` times the branch. Prefix streams never fold: their branches are
        zero-padded, which costs neither."""
        if self.prefix:
            return False
        return self.stream_sizes[subnet] <= branch_count * (1.0 + self.fold_slack)

    def body_folded(self, subnet: int) -> bool:
        return self.folds(self.body_counts[subnet], subnet)

    def short_placed(self, subnet: int) -> bool:
        """Whether sub-network ``subnet``'s shortcut is already in the stream's layout: a
        projection wrote it (folded), or an identity shortcut's stream does not grow here."""
        if self.shortcut == IDENTITY:
            return self.short_counts[subnet] == self.stream_sizes[subnet]
        return self.shortcut == PROJECTION and self.folds(self.short_counts[subnet], subnet)

    def placements(self, junction: layers.ZPMAdd, subnet: int):
        """``(body_at, short_at)``: the ``out_index`` of the body's last conv and BN and of a
        projection shortcut's, None where that branch is placed at the add instead."""
        body, short = junction.placement(subnet)
        return (body if self.body_folded(subnet) else None,
                short if self.shortcut == PROJECTION and self.short_placed(subnet) else None)

    def consumer_index(self, fused):
        """What the stream's consumers gather their input rows by: the fused index, or None
        for a prefix stream (they slice its first rows)."""
        return None if self.prefix else fused

    @property
    def rows(self) -> int:
        """Input rows of the stream's consumers: its size in the largest sub-network (the
        block end's full count after pruning; more in a standalone exported sub-network)."""
        return self.stream_sizes[-1]


def conv(channels: Channels, name: str, in_features: int, kernel_size: int, strides: int = 1,
         depthwise: bool = False, dtype: Any = jnp.float32) -> layers.SlimConv:
    """A conv producing ``channels``, reading ``in_features`` input rows."""
    return layers.SlimConv(in_features=in_features, features=channels.full,
                           kernel_size=kernel_size, strides=strides, depthwise=depthwise,
                           dtype=dtype, name=name)


def batch_norm(channels: Channels, name: str, scale_init: float = 1.0,
               dtype: Any = jnp.float32, *, epsilon: float = 1e-5,
               momentum: float = 0.9) -> layers.SlimBatchNorm:
    """SP-Net BN (shared affine) or S-Net's switchable BN over ``channels`` (``momentum``
    is Flax's: PyTorch's 0.1 is 0.9)."""
    return layers.SlimBatchNorm(counts=channels.counts, shared=channels.shared_bn,
                                scale_init=scale_init, dtype=dtype, epsilon=epsilon,
                                momentum=momentum, name=name)


class SlimModule(nn.Module):
    """Base of the model modules: the structure, head size and BN settings."""

    structure: Structure
    num_classes: int = 1000
    dtype: Any = jnp.float32
    bn_scale_init: float = 1.0
    # ZPM junctions: fold a branch's placement into its conv or place it (`FOLD_SLACK`).
    fold_slack: float = FOLD_SLACK

    def n(self, group: str, subnet: int) -> int:
        return self.structure.count(group, subnet)

    def channels(self, group: str) -> Channels:
        return Channels.of(self.structure, group)

    def conv(self, name, group, in_features, kernel_size, strides=1, depthwise=False):
        return conv(self.channels(group), name, in_features, kernel_size, strides, depthwise,
                    self.dtype)

    def bn(self, name: str, group: str) -> layers.SlimBatchNorm:
        return batch_norm(self.channels(group), name, self.bn_scale_init, self.dtype)

    def logits(self, x):
        """The classifier's output in the wider of the compute dtype and float32 (bfloat16
        runs give float32 logits, float64 runs float64)."""
        return x.astype(jnp.promote_types(self.dtype, jnp.float32))

    def head(self, in_features: int) -> layers.SlimDense:
        return layers.SlimDense(in_features=in_features, features=self.num_classes,
                                dtype=self.dtype, name='head')
