"""ResNet (basic and bottleneck blocks), ImageNet and CIFAR layouts, ResNet-D, optional ZPM.

ResNet-D (the release's ``sp_resnetd``; He et al., "Bag of Tricks", 2019, ResNet-C's deep
stem plus ResNet-D's shortcut) differs in two places: the stem is three 3x3 convs of 32, 32
and 64 channels (``stem1_conv``/``stem1_bn``, ``stem2_conv``/``stem2_bn``, then
``stem_conv``/``stem_bn``; the first strided), and a projection shortcut of a strided
block average-pools 2x2/2 before its 1x1 conv, which then has stride 1. The two extra stem
convs are channel groups of their own, pruned like any inner conv.

Names in the variable trees: ``stem_conv``/``stem_bn``, blocks ``layer{s}_{i}`` holding
``conv1``/``bn1``, ``conv2``/``bn2`` (and ``conv3``/``bn3`` for bottlenecks), a projection
shortcut ``proj_conv``/``proj_bn`` where the shape changes, and ``zpm`` (the ZPM junction's
masks) when ZPM is on; the classifier is ``head``. Strides sit on the 3x3 conv (torchvision's
ResNet v1.5, as in the release).

Channel groups: every conv that does not end a block is its own group, named by its path.
Without ZPM a stage's residual stream (its block ends, projection, and the stem if the
first block has an identity shortcut) is one group named ``stage{s}``; with ZPM each of those
is a group of its own and the stage is a `Stream` of junctions.

A `Block` is built from its `BlockWiring` (its convs' channels and its ZPM junction,
precomputed from the structure by `block_wiring`) and hands the next block a
`layers.Activation`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelGroup, ChannelTable, Junction, Stream
from spnet_jax.models import common
from spnet_jax.models.common import (
    FOLD_SLACK,
    Architecture,
    Channels,
    JunctionWiring,
    SlimModule,
    plain_group,
    scaled,
)

IMAGENET_DEPTHS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
    152: ('bottleneck', (3, 8, 36, 3)),
}
CIFAR_DEPTHS = {20: 3, 32: 5, 44: 7, 56: 9, 110: 18}


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    name: str
    stage: int
    index: int
    in_ch: int
    mid: int
    out: int
    stride: int
    proj: bool
    bottleneck: bool

    @property
    def end(self) -> str:
        return f'{self.name}/conv3' if self.bottleneck else f'{self.name}/conv2'

    @property
    def inner(self) -> tuple[str, ...]:
        """The convs inside the block that are always groups of their own."""
        return (f'{self.name}/conv1', f'{self.name}/conv2') if self.bottleneck else (
            f'{self.name}/conv1',)


def block_specs(depth: int, width: float) -> tuple[int, list[BlockSpec]]:
    """Stem channels and the blocks of ResNet-``depth`` at ``width``."""
    if depth in IMAGENET_DEPTHS:
        kind, counts = IMAGENET_DEPTHS[depth]
        planes, stem = (64, 128, 256, 512), 64
    elif depth in CIFAR_DEPTHS:
        kind, counts = 'basic', (CIFAR_DEPTHS[depth],) * 3
        planes, stem = (16, 32, 64), 16
    else:
        raise ValueError(f'no ResNet of depth {depth}')
    bottleneck = kind == 'bottleneck'
    expansion = 4 if bottleneck else 1
    stem_ch = scaled(stem, width)
    blocks, in_ch = [], stem_ch
    for s, (p, n) in enumerate(zip(planes, counts, strict=True)):
        for i in range(n):
            stride = 2 if (i == 0 and s > 0) else 1
            mid, out = scaled(p, width), scaled(p * expansion, width)
            proj = stride != 1 or in_ch != out
            blocks.append(BlockSpec(f'layer{s + 1}_{i}', s + 1, i, in_ch, mid, out, stride, proj,
                                    bottleneck))
            in_ch = out
    return stem_ch, blocks


DEEP_STEM = (32, 32)  # ResNet-D's first two stem convs, before the 64-channel ``stem_conv``


def deep_stem_channels(width: float) -> tuple[int, ...]:
    return tuple(scaled(c, width) for c in DEEP_STEM)


def _stream_members(stage_blocks: list[BlockSpec]) -> list[str]:
    first = stage_blocks[0]
    members = [b.end for b in stage_blocks]
    members.insert(1, f'{first.name}/proj_conv' if first.proj else 'stem_conv')
    return members


@dataclasses.dataclass(frozen=True)
class ResNetArch(Architecture):
    depth: int = 50
    deep_stem: bool = False  # ResNet-D: three 3x3 stem convs instead of one 7x7
    avg_down: bool = False  # ResNet-D: strided projection shortcuts average-pool first

    @property
    def first_conv(self) -> str:
        return 'stem1_conv' if self.deep_stem else 'stem_conv'

    def table(self, width: float | None = None, zpm: bool = False) -> ChannelTable:
        w = self.full_width if width is None else width
        stem_ch, blocks = block_specs(self.depth, w)
        stages = sorted({b.stage for b in blocks})
        by_stage = {s: [b for b in blocks if b.stage == s] for s in stages}
        stem_in_stream = not by_stage[stages[0]][0].proj

        bn_of = lambda conv: conv.replace('conv', 'bn')

        def readers(i: int) -> tuple[tuple[str, int], ...]:
            """Params reading the output of block i-1 (i = 0: the stem)."""
            if i == len(blocks):
                return (('head', 0),)
            b = blocks[i]
            out = [(f'{b.name}/conv1', 2)]
            if b.proj:
                out.append((f'{b.name}/proj_conv', 2))
            return tuple(out)

        groups: list[ChannelGroup] = []
        streams: list[Stream] = []
        index = {b.name: i for i, b in enumerate(blocks)}
        if self.deep_stem:
            c1, c2 = deep_stem_channels(w)
            groups.append(plain_group('stem1_conv', c1, 'stem1_bn', (('stem2_conv', 2),)))
            groups.append(plain_group('stem2_conv', c2, 'stem2_bn', (('stem_conv', 2),)))
        if zpm or not stem_in_stream:
            groups.append(plain_group('stem_conv', stem_ch, 'stem_bn', readers(0),
                                      zpm_role='entry' if zpm and stem_in_stream else None))
        for s in stages:
            sb = by_stage[s]
            for b in sb:
                convs = b.inner
                sizes = (b.mid,) * len(convs)
                for k, (c, size) in enumerate(zip(convs, sizes, strict=True)):
                    nxt = convs[k + 1] if k + 1 < len(convs) else b.end
                    groups.append(plain_group(c, size, bn_of(c), ((nxt, 2),)))
                if zpm:
                    if b.proj:
                        groups.append(plain_group(f'{b.name}/proj_conv', b.out,
                                                  f'{b.name}/proj_bn', zpm_role='shortcut'))
                    groups.append(plain_group(b.end, b.out, bn_of(b.end), zpm_role='end'))
            if zpm:
                junctions = []
                for b in sb:
                    if b.proj:
                        short = f'{b.name}/proj_conv'
                    elif b is sb[0]:
                        short = 'stem_conv'
                    else:
                        short = None
                    junctions.append(Junction(b.name, b.end, short, readers(index[b.name] + 1)))
                streams.append(Stream(f'stage{s}', sb[0].out, tuple(junctions)))
            else:
                members = _stream_members(sb)
                starts_at_stem = stem_in_stream and s == stages[0]
                if not starts_at_stem:
                    members = [m for m in members if m != 'stem_conv']
                bns = tuple(m.replace('conv', 'bn') for m in members)
                consumers = list(readers(0)) if starts_at_stem else []
                consumers += [r for b in sb for r in readers(index[b.name] + 1)]
                # The release scores a stream by the layer that starts it (the projection
                # shortcut, or the stem): the block ends share its channel count and order.
                entry_bn = (f'{sb[0].name}/proj_bn' if sb[0].proj else 'stem_bn')
                groups.append(ChannelGroup(f'stage{s}', sb[0].out, tuple(members), bns,
                                           (entry_bn,), tuple(dict.fromkeys(consumers))))
        return ChannelTable(self.name, tuple(groups), tuple(streams))

    def module(self, structure, *, dtype: Any = jnp.float32, bn_scale_init: float = 1.0,
               fold_slack: float = FOLD_SLACK):
        return ResNet(structure=structure, depth=self.depth, stem=self.stem,
                      deep_stem=self.deep_stem, avg_down=self.avg_down,
                      num_classes=self.num_classes, dtype=dtype, bn_scale_init=bn_scale_init,
                      fold_slack=fold_slack)


class ResNet(SlimModule):
    depth: int = 50
    stem: str = 'imagenet'
    deep_stem: bool = False
    avg_down: bool = False

    @nn.compact
    def __call__(self, x, subnet: int | float = -1, train: bool = False):
        k = self.structure.subnet_index(subnet)
        S = self.structure
        _, blocks = block_specs(self.depth, 1.0)
        stem_g = group_of(S, 'stem_conv', blocks[0].stage)
        stride = 2 if self.stem == 'imagenet' else 1
        rows = x.shape[-1]
        if self.deep_stem:  # 3x3 convs: the first strided, the last the stem's own group
            for name in ('stem1', 'stem2'):
                g = f'{name}_conv'
                x = self.conv(g, g, rows, 3, stride)(x, self.n(g, k))
                x = nn.relu(self.bn(f'{name}_bn', g)(x, k, train))
                rows, stride = S.full_of(g), 1
            x = self.conv('stem_conv', stem_g, rows, 3, 1)(x, self.n(stem_g, k))
        elif self.stem == 'imagenet':
            x = self.conv('stem_conv', stem_g, rows, 7, 2)(x, self.n(stem_g, k))
        else:
            x = self.conv('stem_conv', stem_g, rows, 3, 1)(x, self.n(stem_g, k))
        x = nn.relu(self.bn('stem_bn', stem_g)(x, k, train))
        if self.stem == 'imagenet':
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        a = layers.Activation(x, None, S.full_of(stem_g))
        for b, wiring in zip(blocks, block_wiring(S, blocks, self.fold_slack), strict=True):
            a = Block(spec=b, wiring=wiring, dtype=self.dtype, bn_scale_init=self.bn_scale_init,
                      avg_down=self.avg_down, name=b.name)(a, k, train)
        x = jnp.mean(a.x, axis=(1, 2))
        return self.logits(self.head(a.rows)(x, in_index=a.index))


def group_of(structure, conv: str, stage: int) -> str:
    """The channel group a conv's output belongs to: its own, or its stage's stream."""
    return conv if conv in structure.groups else f'stage{stage}'


@dataclasses.dataclass(frozen=True)
class BlockWiring:
    """A block's channels, from the structure.

    Attributes:
      body: the channels of ``conv1``, ``conv2`` (and ``conv3``), the last ending the block.
      proj: the projection shortcut's (``proj_conv``), or None for an identity shortcut.
      junction: the ZPM junction adding body and shortcut, or None without ZPM.
    """

    body: tuple[Channels, ...]
    proj: Channels | None
    junction: JunctionWiring | None


def block_wiring(structure, blocks: list[BlockSpec],
                 fold_slack: float = FOLD_SLACK) -> list[BlockWiring]:
    """The wiring of each of ``blocks`` (in network order) in networks of ``structure``."""
    S, out, prev = structure, [], None
    for b in blocks:
        channels = lambda conv, b=b: Channels.of(S, group_of(S, f'{b.name}/{conv}', b.stage))
        body = tuple(channels(conv) for conv in BODY[:3 if b.bottleneck else 2])
        proj = channels('proj_conv') if b.proj else None
        junction = None
        if S.zpm:
            if proj is not None:
                shortcut, short_counts = common.PROJECTION, proj.counts
            elif prev is None:  # the stream starts at the stem
                shortcut, short_counts = common.ENTRY, S.counts_of('stem_conv')
            else:
                shortcut, short_counts = common.IDENTITY, S.stream_sizes_of(prev)
            junction = JunctionWiring(shortcut, S.stream_sizes_of(b.name), body[-1].counts,
                                      short_counts, S.stream_order, fold_slack)
            prev = b.name
        out.append(BlockWiring(body, proj, junction))
    return out


def avg_pool_down(x, stride: int):
    """ResNet-D's shortcut pooling: ``stride`` x ``stride`` average pooling with stride
    ``stride``, the last window of an odd size partial (ceil mode) and averaged over the
    pixels it covers (padding not counted), so the output matches the strided body's size."""
    pads = tuple((0, -size % stride) for size in x.shape[1:3])
    return nn.avg_pool(x, (stride, stride), (stride, stride), padding=pads,
                       count_include_pad=False)


BODY = ('conv1', 'conv2', 'conv3')  # a block's convs, in order (basic blocks: the first two)


class Block(nn.Module):
    """One residual block: the `layers.Activation` it reads in, the block's out."""

    spec: BlockSpec
    wiring: BlockWiring
    dtype: Any = jnp.float32
    bn_scale_init: float = 1.0
    avg_down: bool = False

    @nn.compact
    def __call__(self, a: layers.Activation, k: int, train: bool) -> layers.Activation:
        b, w = self.spec, self.wiring
        conv = lambda ch, name, in_f, ks, st: common.conv(ch, name, in_f, ks, st,
                                                          dtype=self.dtype)
        bn = lambda ch, name: common.batch_norm(ch, name, self.bn_scale_init, self.dtype)
        if b.bottleneck:
            kernels = ((1, 1), (3, b.stride), (1, 1))
        else:
            kernels = ((3, b.stride), (3, 1))
        junction, body_at, short_at = None, None, None
        if w.junction is not None:
            junction = w.junction.module()
            body_at, short_at = w.junction.placements(junction, k)
        y, rows, index = a.x, a.rows, a.index
        for i, (name, ch, (ks, st)) in enumerate(zip(BODY, w.body, kernels, strict=False)):
            at = body_at if i + 1 == len(w.body) else None
            y = conv(ch, name, rows, ks, st)(y, ch.counts[k], in_index=index, out_index=at)
            y = bn(ch, name.replace('conv', 'bn'))(y, k, train, out_index=at)
            if i + 1 < len(w.body):
                y = nn.relu(y)
            rows, index = ch.full, None
        if w.proj is not None:
            x, stride = a.x, b.stride
            if self.avg_down and stride > 1:
                x, stride = avg_pool_down(x, stride), 1
            short = conv(w.proj, 'proj_conv', a.rows, 1, stride)(
                x, w.proj.counts[k], in_index=a.index, out_index=short_at)
            short = bn(w.proj, 'proj_bn')(short, k, train, out_index=short_at)
        else:
            short = a.x
        if junction is None:
            return layers.Activation(nn.relu(y + short), None, rows)
        out, fused = junction(y, short, k, body_placed=body_at is not None,
                              short_placed=w.junction.short_placed(k))
        return layers.Activation(nn.relu(out), w.junction.consumer_index(fused),
                                 w.junction.rows)
