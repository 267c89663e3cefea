"""Counts of derived channel groups after pruning: the release's rule for the channels that
pruning neither scores nor sorts (`ChannelTable.derived`: EfficientNet's squeeze-and-
excitation).

The release sizes a block's squeeze-and-excitation in sub-network k from the *block input*
as its pruning bookkeeping sees it, ``max(1, n // 4)``, where ``n`` is:

* after a plain layer (the stem, a block without residual, a stage entry), that layer's
  count in the slimmable network (with several bases and no ZPM, a count inside a block is
  the network's built at the keep ratio: `multibase.release_block_counts`);
* after a residual block, the size of the union of the masks its pruning keeps for the
  residual stream up to that block, computed even without ZPM: the stage entry's kept
  channels (the sorted prefix of its *pruned* count, ``pruned``), then each residual
  block's own top-``c`` by importance, where
  ``c`` counts the channels of that block's last BN above sub-network k's threshold in the
  base it was pruned from (at least ``int(C * min_channels_ratio)``, halved with ZPM, ``C``
  its size in that base). Which ``c`` channels: the largest base's top-``c`` (fine-tuning
  from it), or with re-initialised weights the pruned base's own. With ZPM this union is
  the stream's size after the block (`Structure.stream_sizes`).

So without ZPM a sub-network's squeeze can be wider than its input's quarter. The
architecture names, per derived group, the conv whose output the block reads
(`Architecture.derived_inputs`) and the count from ``n`` (`Architecture.derived_count`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from spnet_jax.core.channels import ChannelGroup, ChannelTable
from spnet_jax.core.structure import Structure


def _conv_producers(group: ChannelGroup) -> list[tuple[str, str]]:
    """``(conv, its BN)`` of a group's conv producers, in network order, by the models'
    naming (``x_conv`` is normalised by ``x_bn``); FC producers (SE gates) have no BN."""
    convs = [(bn.removesuffix('_bn') + '_conv', bn) for bn in group.bns]
    return [(conv, bn) for conv, bn in convs if conv in group.producers]


def _producer_scores(variables: dict, arch, width: float, pairs, importance) -> dict:
    """Importance of each conv in ``pairs`` (scored by its own BN) in the base at ``width``."""
    size = {p: g.size for g in arch.table(width=width).groups for p in g.producers}
    mini = ChannelTable(arch.name, tuple(ChannelGroup(conv, size[conv], (conv,), (bn,), (bn,))
                                         for conv, bn in pairs))
    return importance(variables, mini)[0]


def derived_counts(arch, structure: Structure, base_variables: Sequence[dict],
                   base_widths: Sequence[float], base_of_subnet: Sequence[int],
                   thresholds: Sequence[float], importance: Callable,
                   min_channels_ratio: float, own_base_order: bool = False,
                   pruned: Structure | None = None) -> Structure:
    """``structure`` with the counts of ``arch``'s derived groups in every sub-network (the
    full network keeps them whole); unchanged for architectures without derived groups.

    ``base_of_subnet[k]`` / ``thresholds[k]``: the base sub-network k was pruned from and its
    network-wide threshold; ``own_base_order``: pick each base's own top channels (re-initialised
    networks) instead of the largest base's; ``pruned``: the counts pruning found where
    ``structure`` does not have them (`multibase.Plan.pruned`).
    """
    S = structure
    P = structure if pruned is None else pruned
    table = arch.table(zpm=S.zpm)
    if not table.derived:
        return S
    inputs = arch.derived_inputs()
    group_of = {p: g for g in table.groups for p in g.producers}
    body_of = {j.body: j for j in table.junctions}
    pairs = {conv: bn for g in table.groups for conv, bn in _conv_producers(g)}
    wanted = sorted({conv for conv in pairs if len(_conv_producers(group_of[conv])) > 1})
    pairs = [(conv, pairs[conv]) for conv in wanted]
    scores = [_producer_scores(v, arch, w, pairs, importance) if pairs else {}
              for v, w in zip(base_variables, base_widths, strict=True)]
    sizes = [{conv: len(s) for conv, s in per_base.items()} for per_base in scores]
    halve = 2 if S.zpm else 1
    rows = []
    for k in range(S.num_subnets - 1):
        b, t = base_of_subnet[k], thresholds[k]
        chooser = scores[b] if own_base_order else scores[-1]

        def top(conv: str, count: int, chooser=chooser) -> set[int]:
            return set(np.argsort(-chooser[conv], kind='stable')[:count].tolist())

        def reach(conv: str, k=k, b=b, t=t, top=top) -> int:
            """Channels the block reading ``conv``'s output sees, as the release counts."""
            if S.zpm:
                if conv in body_of:
                    return S.stream_size(body_of[conv].name, k)
                return S.count(group_of[conv].name, k)
            group = group_of[conv]
            convs = [c for c, _ in _conv_producers(group)]
            if convs.index(conv) == 0:  # a plain layer or a stage entry: its channels
                return S.count(group.name, k)
            kept = top(convs[0], P.count(group.name, k))  # the stage entry's pruned prefix
            for c in convs[1:convs.index(conv) + 1]:
                floor = max(1, int(sizes[b][c] * min_channels_ratio / halve))
                own = min(sizes[b][c], max(int(np.sum(scores[b][c] > t)), floor))
                kept |= top(c, own)
            return len(kept)

        rows.append(tuple(arch.derived_count(reach(inputs[g.name])) for g in table.derived))
    rows.append(tuple(g.size for g in table.derived))
    return dataclasses.replace(S, derived=tuple(g.name for g in table.derived),
                               derived_counts=tuple(rows)).validate(table)
