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

An `InvertedResidual` is built from its `BlockWiring` (its convs' channels and its ZPM
junction, precomputed from the structure by `block_wiring`) and hands the next block a
`layers.Activation`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelGroup, ChannelTable, Junction, Stream
from spnet_jax.core.errors import ConfigError
from spnet_jax.models import common
from spnet_jax.models.common import (
    FOLD_SLACK,
    Architecture,
    Channels,
    JunctionWiring,
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
    kernel: int = 3  # the depthwise conv's
    se: int = 0  # squeeze-and-excitation channels (EfficientNet), 0: no SE
    drop_path: float = 0.0  # stochastic depth: the probability of dropping the residual branch

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


def se_members(b: BlockSpec) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """``(consumers, producers)`` a block's squeeze-and-excitation adds to the channel group of
    its depthwise conv: the reducing FC reads the group (kernel axis 0), the expanding FC's
    outputs (kernel axis -1 and bias) gate it channel by channel, so they are kept, dropped
    and permuted with it. The SE's own squeezed channels are not slimmed."""
    if not b.se:
        return (), ()
    return ((f'{b.name}/se_reduce', 0),), (f'{b.name}/se_expand',)


def squeeze_group(b: BlockSpec) -> ChannelGroup:
    """The squeezed channels of a block's squeeze-and-excitation: made by the reducing FC
    (its kernel's axis -1 and bias), read by the expanding FC (kernel axis 0). A derived
    group (`ChannelTable.derived`): not scored nor sorted, each sub-network keeps a prefix
    whose size the architecture's rule gives (EfficientNet: `efficientnet_squeeze`)."""
    return ChannelGroup(f'{b.name}/se', b.se, (f'{b.name}/se_reduce',), (), (),
                        ((f'{b.name}/se_expand', 0),))


@dataclasses.dataclass(frozen=True)
class MobileNetV2Arch(Architecture):
    def block_specs(self, width: float) -> tuple[int, list[BlockSpec], int]:
        """``(stem channels, blocks, last conv channels)`` at ``width``."""
        return block_specs(width)

    def table(self, width: float | None = None, zpm: bool = False) -> ChannelTable:
        w = self.full_width if width is None else width
        stem, specs, last = self.block_specs(w)
        if zpm and any(not b.expand for b in specs[1:]):
            raise ConfigError(
                f'ZPM (prune.zpm=\'release\' or \'aligned\') is not supported for {self.name}: '
                'blocks without expansion after the first run a depthwise conv on a residual '
                "stream; set prune.zpm='none' (the release prunes EfficientNet without ZPM).")

        def reading(i: int) -> dict[str, tuple]:
            """What block i (i = len(specs): the last conv) adds to the channel group of its
            input: the conv reading it, and without expansion also the depthwise conv, its
            BN and the squeeze-and-excitation, which act on those channels."""
            if i == len(specs):
                return dict(consumers=(('last_conv', 2),))
            b = specs[i]
            if b.expand:
                return dict(consumers=((f'{b.name}/expand_conv', 2),))
            se_readers, se_writers = se_members(b)
            return dict(consumers=((f'{b.name}/project_conv', 2), *se_readers),
                        followers=(f'{b.name}/dw_conv',), extra_bns=(f'{b.name}/dw_bn',),
                        producers=se_writers)

        def joined(parts: list[dict], key: str) -> tuple:
            return tuple(x for part in parts for x in part.get(key, ()))

        def group(name: str, size: int, bn: str, readers=(), zpm_role=None, **members):
            """`plain_group` of conv ``name`` read by the blocks ``readers``, plus
            ``members`` (consumers, followers, extra_bns, producers) of its own."""
            parts = [reading(r) for r in readers] + [members]
            g = plain_group(name, size, bn, joined(parts, 'consumers'),
                            followers=joined(parts, 'followers'),
                            extra_bns=joined(parts, 'extra_bns'), zpm_role=zpm_role)
            return dataclasses.replace(g, producers=(*g.producers, *joined(parts, 'producers')))

        groups: list[ChannelGroup] = [group('stem_conv', stem, 'stem_bn', readers=(0,))]
        streams: list[Stream] = []
        stream_members: list[int] = []
        for i, b in enumerate(specs):
            if b.expand:
                se_readers, se_writers = se_members(b)
                groups.append(group(f'{b.name}/expand_conv', b.hidden, f'{b.name}/expand_bn',
                                    consumers=((f'{b.name}/project_conv', 2), *se_readers),
                                    followers=(f'{b.name}/dw_conv',),
                                    extra_bns=(f'{b.name}/dw_bn',), producers=se_writers))
            p, pbn = f'{b.name}/project_conv', f'{b.name}/project_bn'
            in_stream = b.entry or b.residual
            if not in_stream:
                groups.append(group(p, b.out, pbn, readers=(i + 1,)))
                continue
            if zpm:
                groups.append(group(p, b.out, pbn, readers=() if b.residual else (i + 1,),
                                    zpm_role='end' if b.residual else 'entry'))
            stream_members.append(i)
            ends = i + 1 == len(specs) or not specs[i + 1].residual
            if ends:
                members = [specs[m] for m in stream_members]
                name = stream_group(members[0])
                if zpm:
                    junctions = tuple(
                        Junction(m.name, f'{m.name}/project_conv',
                                 f'{members[0].name}/project_conv' if j == 1 else None,
                                 reading(stream_members[j] + 1)['consumers'])
                        for j, m in enumerate(members) if j > 0)
                    streams.append(Stream(name, b.out, junctions))
                else:
                    prods = tuple(f'{m.name}/project_conv' for m in members)
                    bns = tuple(f'{m.name}/project_bn' for m in members)
                    readers = [reading(m + 1) for m in stream_members]
                    # Scored by the stage entry's projection, as the release links the
                    # residual projections' channel counts and order to it.
                    groups.append(ChannelGroup(
                        name, b.out, (*prods, *joined(readers, 'producers')),
                        (*bns, *joined(readers, 'extra_bns')), bns[:1],
                        joined(readers, 'consumers'), followers=joined(readers, 'followers')))
                stream_members = []
        groups.append(plain_group('last_conv', last, 'last_bn', (('head', 0),)))
        return ChannelTable(self.name, tuple(groups), tuple(streams),
                            derived=tuple(squeeze_group(b) for b in specs if b.se))

    def derived_inputs(self) -> dict[str, str]:
        """Per squeeze-and-excitation group, the conv whose output its block reads."""
        _, specs, _ = self.block_specs(self.full_width)
        before = ['stem_conv'] + [f'{b.name}/project_conv' for b in specs]
        return {squeeze_group(b).name: before[i] for i, b in enumerate(specs) if b.se}

    def module(self, structure, *, dtype: Any = jnp.float32, bn_scale_init: float = 1.0,
               fold_slack: float = FOLD_SLACK):
        return MobileNetV2(structure=structure, num_classes=self.num_classes, dtype=dtype,
                           bn_scale_init=bn_scale_init, fold_slack=fold_slack)


def stream_group(entry: BlockSpec) -> str:
    """The channel group (without ZPM) of the residual stream that ``entry`` starts."""
    return f'stream{entry.index}'


@dataclasses.dataclass(frozen=True)
class BlockWiring:
    """A block's channels, from the structure.

    Attributes:
      hidden: the depthwise conv's channels: the expansion conv's output, or without
        expansion the block input's.
      project: the projection conv's (its own group, or without ZPM its stream's).
      junction: the ZPM junction adding the projection to the stream (residual blocks with
        ZPM), or None.
      squeeze: ``[k]``: the squeeze-and-excitation's channels in sub-network k (empty
        without SE).
    """

    hidden: Channels
    project: Channels
    junction: JunctionWiring | None
    squeeze: tuple[int, ...] = ()


def block_wiring(structure, specs: list[BlockSpec],
                 fold_slack: float = FOLD_SLACK) -> list[BlockWiring]:
    """The wiring of each of ``specs`` (in network order) in networks of ``structure``."""
    S, out = structure, []
    # The block input's group, the stream it is in (without ZPM) and its junction (with).
    group, stream, prev = 'stem_conv', None, None
    for b in specs:
        hidden = Channels.of(S, f'{b.name}/expand_conv' if b.expand else group)
        p = f'{b.name}/project_conv'
        if p not in S.groups:  # without ZPM a stream's projections are one group
            if stream_group(b) in S.groups:  # b starts a stream
                stream = stream_group(b)
            p = stream
        project = Channels.of(S, p)
        junction = None
        if b.residual and S.zpm:
            if prev is None:  # the shortcut is the stage entry's sorted prefix
                shortcut, short_counts = common.ENTRY, S.counts_of(group)
            else:
                shortcut, short_counts = common.IDENTITY, S.stream_sizes_of(prev)
            junction = JunctionWiring(shortcut, S.stream_sizes_of(b.name), project.counts,
                                      short_counts, S.stream_order, fold_slack)
        squeeze = S.derived_counts_of(f'{b.name}/se', b.se) if b.se else ()
        out.append(BlockWiring(hidden, project, junction, squeeze))
        group, prev = project.group, b.name if junction is not None else None
    return out


ACTIVATIONS = {'relu6': layers.relu6, 'swish': jax.nn.silu}


class MobileNetV2(SlimModule):
    """MobileNetV2, and with ``specs`` / ``activation`` / ``dropout`` set, any network of
    inverted residual blocks (EfficientNet: `spnet_jax.models.efficientnet`).

    ``specs``: the blocks as built (names, kernels, strides, SE, stochastic depth; their
    channels are the structure's), by default MobileNetV2's. Stochastic depth and the
    classifier's dropout act in training mode when the caller passes a 'dropout' rng
    (``model.apply(..., train=True, rngs={'dropout': key})``), else they are off (BN
    calibration, evaluation)."""

    specs: tuple[BlockSpec, ...] = ()
    activation: str = 'relu6'
    dropout: float = 0.0
    stem_kernel: int = 3
    head_init: Any = None  # None: `layers.SlimDense`'s N(0, 0.01)
    se_init: Any = layers.fc_init  # the squeeze-and-excitation FCs' kernels
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9  # Flax's: PyTorch's 0.1

    def bn(self, name: str, group: str) -> layers.SlimBatchNorm:
        return batch_norm(self.channels(group), name, self.bn_scale_init, self.dtype,
                          epsilon=self.bn_epsilon, momentum=self.bn_momentum)

    @nn.compact
    def __call__(self, x, subnet: int | float = -1, train: bool = False):
        k = self.structure.subnet_index(subnet)
        S = self.structure
        act = ACTIVATIONS[self.activation]
        x = self.conv('stem_conv', 'stem_conv', x.shape[-1], self.stem_kernel, 2)(
            x, self.n('stem_conv', k))
        x = act(self.bn('stem_bn', 'stem_conv')(x, k, train))
        specs = list(self.specs) or block_specs(1.0)[1]
        a = layers.Activation(x, None, S.full_of('stem_conv'))
        for b, wiring in zip(specs, block_wiring(S, specs, self.fold_slack), strict=True):
            a = InvertedResidual(spec=b, wiring=wiring, dtype=self.dtype,
                                 bn_scale_init=self.bn_scale_init, activation=self.activation,
                                 se_init=self.se_init, bn_epsilon=self.bn_epsilon,
                                 bn_momentum=self.bn_momentum, name=b.name)(a, k, train)
        x = self.conv('last_conv', 'last_conv', a.rows, 1)(a.x, self.n('last_conv', k),
                                                           in_index=a.index)
        x = act(self.bn('last_bn', 'last_conv')(x, k, train))
        x = jnp.mean(x, axis=(1, 2))
        if self.dropout:
            x = nn.Dropout(self.dropout)(x, deterministic=not (train and self.has_rng('dropout')))
        init = {} if self.head_init is None else {'kernel_init': self.head_init}
        head = layers.SlimDense(S.full_of('last_conv'), self.num_classes, dtype=self.dtype,
                                name='head', **init)
        return self.logits(head(x))


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Stochastic depth: each example's residual branch is zeroed with probability ``rate``
    and kept ones are scaled by ``1 / (1 - rate)`` (torchvision's ``StochasticDepth``,
    mode 'row')."""
    keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class InvertedResidual(nn.Module):
    """One inverted residual block: the `layers.Activation` it reads in, the block's out."""

    spec: BlockSpec
    wiring: BlockWiring
    dtype: Any = jnp.float32
    bn_scale_init: float = 1.0
    activation: str = 'relu6'
    se_init: Any = layers.fc_init
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, a: layers.Activation, k: int, train: bool) -> layers.Activation:
        b, w = self.spec, self.wiring
        act = ACTIVATIONS[self.activation]
        bn = lambda ch, name: batch_norm(ch, name, self.bn_scale_init, self.dtype,
                                         epsilon=self.bn_epsilon, momentum=self.bn_momentum)
        y = a.x
        if b.expand:
            y = conv(w.hidden, 'expand_conv', a.rows, 1, dtype=self.dtype)(
                y, w.hidden.counts[k], in_index=a.index)
            y = act(bn(w.hidden, 'expand_bn')(y, k, train))
        y = conv(w.hidden, 'dw_conv', 1, b.kernel, b.stride, depthwise=True, dtype=self.dtype)(y)
        y = act(bn(w.hidden, 'dw_bn')(y, k, train))
        if b.se:  # squeeze-and-excitation: channel gates from the pooled activation
            n = y.shape[-1]
            s = jnp.mean(y, axis=(1, 2))
            squeeze = w.squeeze[-1]  # the full network's (a standalone sub-network's own)
            s = jax.nn.silu(layers.SlimDense(w.hidden.full, squeeze, dtype=self.dtype,
                                             kernel_init=self.se_init, name='se_reduce')(
                s, n_out=w.squeeze[k]))
            s = layers.SlimDense(squeeze, w.hidden.full, dtype=self.dtype,
                                 kernel_init=self.se_init, name='se_expand')(s, n_out=n)
            y = y * jax.nn.sigmoid(s)[:, None, None, :].astype(y.dtype)
        junction, body_at = None, None
        if w.junction is not None:
            junction = w.junction.module()
            body_at, _ = w.junction.placements(junction, k)
        y = conv(w.project, 'project_conv', w.hidden.full, 1, dtype=self.dtype)(
            y, w.project.counts[k], out_index=body_at)
        y = bn(w.project, 'project_bn')(y, k, train, out_index=body_at)
        if b.residual and b.drop_path and train and self.has_rng('dropout'):
            y = drop_path(y, b.drop_path, self.make_rng('dropout'))
        if not b.residual:
            return layers.Activation(y, None, w.project.full)
        if junction is None:
            return layers.Activation(a.x + y, None, w.project.full)
        out, fused = junction(y, a.x, k, body_placed=body_at is not None,
                              short_placed=w.junction.short_placed(k))
        return layers.Activation(out, w.junction.consumer_index(fused), w.junction.rows)
