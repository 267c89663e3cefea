"""Zero-padding-match: masks of block ends and shortcuts, fused along each residual stream.

`VARIANTS` are the values of ``prune.zpm``:

* ``'release'`` (`zpm_masks`): the release's ZPM. Each branch (block end, projection
  shortcut, a stream's entry) keeps its own top channels by its own importance; the stream is
  the union of the branches' channel sets. For every junction and sub-network k, with branch
  channels given in their sorted order:

  * a branch's mask is the set of original channels it keeps (``order[:count]``), or for an
    identity shortcut, the previous junction's fused mask;
  * the fused mask is the union of the two, the shortcut's channels first in their order and
    then the body's channels the shortcut lacks, in the body's order
    (`Structure.stream_order` ``'appended'``): an identity or entry shortcut then occupies a
    prefix of the stream, which the models place by a zero-pad instead of a gather
    (`release_layout` gives the release's layout, the union in original channel order);
  * ``body_k[p]`` / ``short_k[p]`` say which branch channel lands at fused position p (or the
    branch's channel count: none), which `spnet_jax.core.layers.ZPMAdd` reads.

* ``'aligned'`` (`aligned_orders`, `aligned_masks`): the branches of a stream share ONE
  channel order, scored jointly (`joint_scores`), and each keeps a prefix of it of its own
  length (its count, from its own importance and the global threshold, as in the release).
  The stream after a junction is then the longer of its two branches' prefixes (for an
  identity shortcut, the stream before it), i.e. as wide as the widest branch so far, never
  a union that grows towards the full width; SCS sorts the stream's consumers by the same
  order, so every junction is a zero-pad and an add and every read of a stream a prefix
  slice (`Structure.stream_order` ``'prefix'``): no gather anywhere, every conv computing
  exactly its sub-network's channels.
* ``'none'``: no ZPM; a stream is one channel group (one count and one order per stage).
"""

from __future__ import annotations

import numpy as np

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelTable, Stream

RELEASE, ALIGNED, NONE = 'release', 'aligned', 'none'
VARIANTS = (RELEASE, ALIGNED, NONE)
# What each variant does, for the sentences that refuse an unknown one.
DESCRIPTIONS = {RELEASE: "the release's ZPM, streams the union of their branches",
                ALIGNED: 'ZPM whose branches keep prefixes of one shared order per stream',
                NONE: 'no ZPM, one channel set per stream'}


def _positions(branch_channels: np.ndarray, fused: np.ndarray) -> np.ndarray:
    """For each fused position, the index in ``branch_channels`` holding that channel (or
    ``len(branch_channels)``: none)."""
    index = {int(c): i for i, c in enumerate(branch_channels)}
    return np.asarray([index.get(int(c), len(branch_channels)) for c in fused], np.int32)


def release_layout(table: ChannelTable, masks: dict) -> dict:
    """``masks`` (a ``masks`` collection of ``table``'s network) in the release's layout:
    each junction's fused mask ascending, its ``body_k`` / ``short_k`` permuted with it, and
    an identity shortcut's positions renumbered into the previous stream's new order. The
    same network in `Structure.stream_order` 'ascending'; for comparing with the release's
    fused masks, and the identity on masks that are ascending already."""
    out: dict = {}
    for stream in table.streams:
        ranks: dict[int, np.ndarray] = {}  # sub-network -> previous stream's new positions
        for j in stream.junctions:
            old = masks[j.name][layers.JUNCTION]
            new = {}
            for key in old:
                kind, k = layers.subnet_of(key)
                if kind != layers.FUSED:
                    continue
                fused = np.asarray(old[key])
                perm = np.argsort(fused, kind='stable')
                short = np.asarray(old[layers.subnet_variable(layers.SHORT, k)])
                if j.shortcut is None:  # positions in the previous stream, renumbered
                    rank = ranks[k]
                    short = np.where(short < len(rank), rank[np.minimum(short, len(rank) - 1)],
                                     short)
                new[layers.subnet_variable(layers.FUSED, k)] = fused[perm]
                new[layers.subnet_variable(layers.BODY, k)] = np.asarray(
                    old[layers.subnet_variable(layers.BODY, k)])[perm]
                new[layers.subnet_variable(layers.SHORT, k)] = short[perm].astype(np.int32)
                ranks[k] = np.argsort(perm, kind='stable')
            out[j.name] = {layers.JUNCTION: new}
    return out


def zpm_masks(table: ChannelTable, counts: list[dict[str, int]],
              orders: dict[str, np.ndarray]) -> tuple[list[list[int]], dict, list[dict]]:
    """Returns (stream_sizes[k][j], the ``masks`` collection, fused masks[k][junction]).

    ``counts[k]`` maps group -> channels in sub-network k; ``orders`` are the SCS orders.
    """
    masks: dict = {}
    sizes = [[] for _ in counts]
    fused_all = [{} for _ in counts]
    for stream in table.streams:
        for k, c in enumerate(counts):
            prev = None
            for j in stream.junctions:
                body = orders[j.body][:c[j.body]]
                short = orders[j.shortcut][:c[j.shortcut]] if j.shortcut else prev
                # The shortcut's channels, then the body's others.
                fused = np.concatenate([short, body[~np.isin(body, short)]]).astype(np.int32)
                entry = masks.setdefault(j.name, {}).setdefault(layers.JUNCTION, {})
                entry[layers.subnet_variable(layers.FUSED, k)] = fused
                entry[layers.subnet_variable(layers.BODY, k)] = _positions(body, fused)
                entry[layers.subnet_variable(layers.SHORT, k)] = _positions(short, fused)
                sizes[k].append(len(fused))
                fused_all[k][j.name] = fused
                prev = fused
    # Junction order in the sizes must follow table.junctions (streams in order): it does.
    return sizes, masks, fused_all


# ------------------------------------------------------------------------ 'aligned'
def stream_members(stream: Stream) -> tuple[str, ...]:
    """The groups whose outputs are added into ``stream``: every block end, every projection
    shortcut and the layer the stream starts from, in network order."""
    out: list[str] = []
    for j in stream.junctions:
        out += [g for g in (j.shortcut, j.body) if g is not None and g not in out]
    return tuple(out)


def joint_scores(table: ChannelTable, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per stream, one score per channel: the sum of its members' scores (`stream_members`).

    A stream channel carries the sum of what its branches write into it, each scaled by its
    BN's ``|gamma|``; the sum of the members' importance is the size of what the channel
    carries, as dependency-group pruning scores coupled channels by their group's summed
    importance. Unnormalised on purpose: a block whose scales are small contributes little
    to the stream and should weigh little in its order."""
    return {s.name: np.sum([np.asarray(scores[g], np.float64) for g in stream_members(s)],
                           axis=0) for s in table.streams if s.junctions}


def aligned_orders(table: ChannelTable, scores: dict[str, np.ndarray],
                   orders: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``orders`` (SCS's, one per group) with every stream's members, and the stream itself
    (its name: the order its consumers' input rows are sorted by, `scs.permute`), given the
    stream's joint order (descending `joint_scores`, stable). ``scores`` are the largest
    base's: as SCS, the channels every sub-network keeps come from the largest base, the
    counts from each sub-network's own base. Inputs are not modified."""
    out = dict(orders)
    for name, joint in joint_scores(table, scores).items():
        order = np.argsort(-joint, kind='stable')
        stream = next(s for s in table.streams if s.name == name)
        for g in (*stream_members(stream), name):
            out[g] = order
    return out


def aligned_masks(table: ChannelTable,
                  counts: list[dict[str, int]]) -> tuple[list[list[int]], dict, list[dict]]:
    """`zpm_masks` for aligned streams: returns (stream_sizes[k][j], the ``masks``
    collection, fused masks[k][junction]).

    Numbered in the stream's shared (sorted) order: a stream is the prefix of that order as
    long as its longer branch (``max(body, shortcut)``, the shortcut of an identity junction
    being the stream before it), so ``fused_k`` is ``arange(size)`` and a branch of ``n``
    channels sits at positions ``0..n-1`` (``body_k``/``short_k`` = ``n`` elsewhere: none).
    """
    masks: dict = {}
    sizes = [[] for _ in counts]
    fused_all = [{} for _ in counts]
    for stream in table.streams:
        for k, c in enumerate(counts):
            prev = 0
            for j in stream.junctions:
                body = c[j.body]
                short = c[j.shortcut] if j.shortcut else prev
                size = max(body, short)
                where = np.arange(size, dtype=np.int32)
                entry = masks.setdefault(j.name, {}).setdefault(layers.JUNCTION, {})
                entry[layers.subnet_variable(layers.FUSED, k)] = where
                entry[layers.subnet_variable(layers.BODY, k)] = np.minimum(where, body)
                entry[layers.subnet_variable(layers.SHORT, k)] = np.minimum(where, short)
                sizes[k].append(size)
                fused_all[k][j.name] = where
                prev = size
    return sizes, masks, fused_all


def stream_masks(variant: str, table: ChannelTable, counts: list[dict[str, int]],
                 orders: dict[str, np.ndarray]) -> tuple[list[list[int]], dict, list[dict]]:
    """The variant's masks (`zpm_masks` or `aligned_masks`) of a ZPM ``table``."""
    if variant == ALIGNED:
        return aligned_masks(table, counts)
    return zpm_masks(table, counts, orders)
