"""MobileNetV2 (inverted residuals, linear bottlenecks), channels rounded to 8, optional ZPM.

Names follow the release's ``features.<i>``: ``stem_conv``/``stem_bn`` (features.0),
``block{i}`` for i = 1..17 holding ``expand_conv``/``expand_bn`` (absent when the expansion
is 1), ``dw_conv``/``dw_bn``, ``project_conv``/``project_bn`` and, for residual blocks with
ZPM, ``zpm``; ``last_conv``/``last_bn`` (features.18) and the classifier ``head``.

Channel groups: the stem and each expansion conv (their depthwise conv follows them), each
projection conv, and the last conv. A run of residual blocks forms a stream that starts at
the projection of the block before them (the stage's entry): without ZPM the entry and the
residual projections are one group; with ZPM each is its own, joined by junctions.
ReLU6 everywhere except after projections.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelGroup, ChannelTable, Junction, Stream
from spnet_jax.models.common import (
    Architecture,
    SlimModule,
    batch_norm,
    conv,
    make_divisible,
    plain_group,
)

# (expansion t, output channels c, repeats n, first stride s)
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))
STEM, LAST = 32, 1280


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    index: int
    in_ch: int
    hidden: int
    out: int
    stride: int
    expand: bool
    residual: bool
    entry: bool  # a stage's first block whose output starts a residual stream

    @property
    def name(self) -> str:
        return f'block{self.index}'


def block_specs(width: float) -> tuple[int, list[BlockSpec], int]:
    stem = make_divisible(STEM * width)
    specs, in_ch, i = [], stem, 1
    for t, c, n, s in SETTINGS:
        out = make_divisible(c * width)
        for r in range(n):
            stride = s if r == 0 else 1
            residual = stride == 1 and in_ch == out
            specs.append(BlockSpec(i, in_ch, int(round(in_ch * t)), out, stride, t != 1,
                                   residual, entry=False))
            in_ch, i = out, i + 1
    for j, b in enumerate(specs[:-1]):
        if not b.residual and specs[j + 1].residual:
            specs[j] = dataclasses.replace(b, entry=True)
    last = make_divisible(LAST * width) if width > 1.0 else LAST
    return stem, specs, last


@dataclasses.dataclass(frozen=True)
class MobileNetV2Arch(Architecture):
    def table(self, width: float | None = None, zpm: bool = False) -> ChannelTable:
        w = self.full_width if width is None else width
        stem, specs, last = block_specs(w)

        def first_reader(i: int) -> tuple[str, int]:
            """The param reading block i's output (i = len(specs): the last conv)."""
            if i == len(specs):
                return ('last_conv', 2)
            b = specs[i]
            return (f'{b.name}/expand_conv' if b.expand else f'{b.name}/project_conv', 2)

        groups: list[ChannelGroup] = []
        streams: list[Stream] = []
        first = specs[0]
        groups.append(plain_group('stem_conv', stem, 'stem_bn',
                                  (first_reader(0),) if first.expand else
                                  ((f'{first.name}/project_conv', 2),),
                                  followers=() if first.expand else (f'{first.name}/dw_conv',),
                                  extra_bns=() if first.expand else (f'{first.name}/dw_bn',)))
        stream_members: list[str] = []
        for i, b in enumerate(specs):
            if b.expand:
                e = f'{b.name}/expand_conv'
                groups.append(plain_group(e, b.hidden, f'{b.name}/expand_bn',
                                          ((f'{b.name}/project_conv', 2),),
                                          followers=(f'{b.name}/dw_conv',),
                                          extra_bns=(f'{b.name}/dw_bn',)))
            p, pbn = f'{b.name}/project_conv', f'{b.name}/project_bn'
            in_stream = b.entry or b.residual
            if not in_stream:
                groups.append(plain_group(p, b.out, pbn, (first_reader(i + 1),)))
                continue
            if zpm:
                readers = () if b.residual else (first_reader(i + 1),)
                groups.append(plain_group(p, b.out, pbn, readers,
                                          zpm_role='end' if b.residual else 'entry'))
            stream_members.append(i)
            ends = i + 1 == len(specs) or not specs[i + 1].residual
            if ends:
                members = [specs[m] for m in stream_members]
                name = f'stream{members[0].index}'
                if zpm:
                    junctions = tuple(
                        Junction(m.name, f'{m.name}/project_conv',
                                 f'{members[0].name}/project_conv' if j == 1 else None,
                                 (first_reader(stream_members[j] + 1),))
                        for j, m in enumerate(members) if j > 0)
                    streams.append(Stream(name, b.out, junctions))
                else:
                    prods = tuple(f'{m.name}/project_conv' for m in members)
                    bns = tuple(f'{m.name}/project_bn' for m in members)
                    readers = tuple(first_reader(m + 1) for m in stream_members)
                    # Scored by the stage entry's projection, as the release links the
                    # residual projections' channel counts and order to it.
                    groups.append(ChannelGroup(name, b.out, prods, bns, bns[:1], readers))
                stream_members = []
        groups.append(plain_group('last_conv', last, 'last_bn', (('head', 0),)))
        return ChannelTable(self.name, tuple(groups), tuple(streams))

    def module(self, structure, *, dtype: Any = jnp.float32, bn_scale_init: float = 1.0):
        return MobileNetV2(structure=structure, num_classes=self.num_classes, dtype=dtype,
                           bn_scale_init=bn_scale_init)


def project_group(structure, b: BlockSpec) -> str:
    """The group of block b's projection: its own, or (without ZPM) its stream's."""
    p = f'{b.name}/project_conv'
    if p in structure.groups:
        return p
    return next(g for g in structure.groups if g.startswith('stream')
                and _stream_covers(g, b.index))


def _stream_covers(group: str, index: int) -> bool:
    start = int(group[len('stream'):])
    _, specs, _ = block_specs(1.0)
    i = start
    while True:
        if i == index:
            return True
        if i >= len(specs) or not specs[i].residual:  # specs[i] is block i+1
            return False
        i += 1


class MobileNetV2(SlimModule):
    @nn.compact
    def __call__(self, x, subnet: int | float = -1, train: bool = False):
        k = self.structure.subnet_index(subnet)
        S = self.structure
        x = self.conv('stem_conv', 'stem_conv', x.shape[-1], 3, 2)(x, self.n('stem_conv', k))
        x = layers.relu6(self.bn('stem_bn', 'stem_conv')(x, k, train))
        _, specs, _ = block_specs(1.0)
        g, x_index, prev_junction = 'stem_conv', None, None
        for b in specs:
            x, x_index, g, prev_junction = InvertedResidual(
                spec=b, structure=S, in_group=g, prev_junction=prev_junction, dtype=self.dtype,
                bn_scale_init=self.bn_scale_init, name=b.name)(x, x_index, k, train)
        x = self.conv('last_conv', 'last_conv', stream_input_width(S, g, prev_junction, x_index),
                      1)(x, self.n('last_conv', k), x_index)
        x = layers.relu6(self.bn('last_bn', 'last_conv')(x, k, train))
        x = jnp.mean(x, axis=(1, 2))
        return self.logits(self.head(S.full_of('last_conv'))(x))


def stream_input_width(structure, group: str, junction: str | None, index) -> int:
    """Input rows of a layer reading ``group``'s output, or (``index`` set) a ZPM stream: the
    stream's size in the largest sub-network (the group's full count after pruning; more in a
    standalone exported sub-network)."""
    if index is None:
        return structure.full_of(group)
    return structure.stream_sizes_of(junction)[-1]


class InvertedResidual(nn.Module):
    """Returns (output, its stream index array or None, its group, its junction or None)."""

    spec: BlockSpec
    structure: Any
    in_group: str
    prev_junction: str | None
    dtype: Any = jnp.float32
    bn_scale_init: float = 1.0

    @nn.compact
    def __call__(self, x, x_index, k: int, train: bool):
        b, S = self.spec, self.structure
        bn = lambda name, grp: batch_norm(S, name, grp, self.bn_scale_init, self.dtype)
        in_full = stream_input_width(S, self.in_group, self.prev_junction, x_index)
        y, dw_group = x, self.in_group
        if b.expand:
            dw_group = f'{b.name}/expand_conv'
            y = conv(S, 'expand_conv', dw_group, in_full, 1, dtype=self.dtype)(
                y, S.count(dw_group, k), x_index)
            y = layers.relu6(bn('expand_bn', dw_group)(y, k, train))
        y = conv(S, 'dw_conv', dw_group, 1, 3, b.stride, depthwise=True, dtype=self.dtype)(y)
        y = layers.relu6(bn('dw_bn', dw_group)(y, k, train))
        pg = project_group(S, b)
        junction, body_at = None, None
        if b.residual and S.zpm:
            if self.prev_junction is None:  # the shortcut is the stage entry's sorted prefix
                short_counts = S.counts_of(self.in_group)
            else:
                short_counts = S.stream_sizes_of(self.prev_junction)
            junction = layers.ZPMAdd(stream_sizes=S.stream_sizes_of(b.name),
                                     body_counts=S.counts_of(pg), short_counts=short_counts,
                                     name='zpm')
            body_at, _ = junction.placement(k)
        y = conv(S, 'project_conv', pg, S.full_of(dw_group), 1, dtype=self.dtype)(
            y, S.count(pg, k), None, body_at)
        y = bn('project_bn', pg)(y, k, train, body_at)
        if not b.residual:
            return y, None, pg, None
        if not S.zpm:
            return x + y, None, pg, None
        # An identity shortcut is already in place where the stream does not grow.
        short_placed = (self.prev_junction is not None
                        and short_counts[k] == S.stream_sizes_of(b.name)[k])
        out, fused = junction(y, x, k, body_placed=body_at is not None,
                              short_placed=short_placed)
        return out, fused, pg, b.name
