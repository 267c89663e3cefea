"""The channel-dependency table: how channels are wired through an architecture, as data.

Every architecture describes itself once as a `ChannelTable`. Pruning (importance,
thresholds, multi-base, SCS, ZPM), cost accounting and checkpoint conversion read only this
table; none of them knows a model's code.

Paths are '/'-joined module paths inside the model's variable trees, e.g. 'layer1_0/conv1'
for the conv whose kernel is ``params['layer1_0']['conv1']['kernel']``.

A *channel group* is a set of channels that must be kept, dropped and permuted together:

* ``producers``: convs (HWIO kernels) whose output axis (-1) makes the group;
* ``bns``: BatchNorms normalising the group (scale/bias in ``params``, statistics in
  ``batch_stats``); all of them are permuted with the group;
* ``scored_by``: the BNs whose ``|gamma|`` rank the group's channels (importance);
* ``followers``: depthwise convs that carry the group's channels through unchanged (their
  kernel's axis -1 is the group); their count and order follow the group;
* ``consumers``: (path, axis) of params that read the group on an input axis: 2 for a conv
  kernel, 0 for the classifier's kernel.

With zero-padding-match (ZPM), residual streams are not one group: each block end, each
projection shortcut and the layer a stream starts from is its own group (``zpm_role`` 'end',
'shortcut', 'entry'; the first two get the halved channel floor), and a `Stream` lists the
junctions where they are added. Consumers of a stream read it through the fused index array
of the junction that produced it; they are listed on the junction, not on a group.

*Derived* groups (``ChannelTable.derived``) are channels that pruning neither scores nor
sorts, whose per-sub-network count a rule of the architecture gives (EfficientNet's
squeeze-and-excitation channels): each sub-network keeps a prefix of their producers'
outputs and consumers' input rows. Importance, thresholds, SCS and ZPM read only ``groups``.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    name: str
    size: int
    producers: tuple[str, ...]
    bns: tuple[str, ...]
    scored_by: tuple[str, ...]
    consumers: tuple[tuple[str, int], ...] = ()
    followers: tuple[str, ...] = ()
    zpm_role: str | None = None  # ZPM layers: 'end' (block end), 'shortcut', 'entry'


@dataclasses.dataclass(frozen=True)
class Junction:
    """One residual add of a ZPM stream: ``stream = place(body) + place(shortcut)``.

    ``shortcut`` names a group whose sorted prefix is the shortcut (a projection conv, or the
    layer that starts the stream); ``None`` means the previous junction's stream (identity).
    ``consumers`` read this junction's output with their input rows gathered by its fused
    index array (axis as in `ChannelGroup.consumers`).
    """

    name: str
    body: str
    shortcut: str | None
    consumers: tuple[tuple[str, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Stream:
    name: str
    size: int
    junctions: tuple[Junction, ...]


@dataclasses.dataclass(frozen=True)
class ChannelTable:
    arch: str
    groups: tuple[ChannelGroup, ...]
    streams: tuple[Stream, ...] = ()
    derived: tuple[ChannelGroup, ...] = ()

    def group(self, name: str) -> ChannelGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f'No channel group {name!r} in the {self.arch} table.')

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    @property
    def junctions(self) -> tuple[Junction, ...]:
        return tuple(j for s in self.streams for j in s.junctions)

    @property
    def zpm(self) -> bool:
        return bool(self.streams)

    def junction_stream(self) -> dict[str, Stream]:
        return {j.name: s for s in self.streams for j in s.junctions}
