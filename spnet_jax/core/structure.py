"""`Structure`: the per-sub-network channel counts of a slimmable network, as data.

A structure is what distinguishes one slimmable network from another of the same
architecture: for each sub-network ``k`` (smallest first, the full network last) the number
of channels of every channel group, and with ZPM the size of the residual stream after every
junction. It is hashable (a static argument under `jax.jit`) and round-trips through JSON,
so it is saved beside every checkpoint and a checkpoint loads without re-running pruning.

S-Net structures come from width multipliers (`snet_structure`); SP-Net structures come
from pruning (`spnet_jax.pruning`).
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable, Sequence

from spnet_jax.core.channels import ChannelTable
from spnet_jax.core.errors import ConfigError

# `Structure.stream_order`: the channel order of ZPM streams.
ASCENDING, APPENDED, PREFIX = 'ascending', 'appended', 'prefix'


@dataclasses.dataclass(frozen=True)
class Structure:
    """Channel counts of every sub-network.

    Attributes:
      arch: the architecture's name (as in `spnet_jax.models.build`).
      method: 'snet' (uniform widths, private BatchNorm per width) or 'spnet' (pruned
        counts, shared BN affine, private BN statistics).
      groups: channel group names, in the order of the architecture's `ChannelTable`.
      full: each group's channel count in the full network (= parameter shapes).
      counts: ``counts[k][g]``: channels of group ``g`` in sub-network ``k``.
      junctions: ZPM junction names (empty without ZPM).
      stream_sizes: ``stream_sizes[k][j]``: channels of the residual stream after junction
        ``j`` in sub-network ``k`` (the size of the union of its two branches' masks).
      widths: optional label per sub-network (the width multiplier of S-Net, or of the base
        a pruned sub-network came from); lets callers pick a sub-network by width.
      stream_order: how each ZPM stream orders its channels: ``'appended'`` (pruned since
        2026-12-01: the previous stream's channels first, in its order, then the body's new
        ones, so an identity or entry shortcut lands on a prefix of the stream and is placed by
        a zero-pad), ``'ascending'`` (earlier runs: the full network's channel order, the
        shortcut placed by a gather), or ``'prefix'`` (``prune.zpm='aligned'``: every branch
        of a stream keeps a prefix of one shared channel order, the stream is the longest of
        them, its consumers' input rows are sorted by that order: every junction is a
        zero-pad and an add, every read of a stream a prefix slice). The masks say where each
        channel is; this says only what the models may assume of them.
      derived: names of the architecture's derived groups (`ChannelTable.derived`, e.g.
        EfficientNet's squeeze-and-excitation channels) whose counts are given; empty in
        structures of other architectures and in those saved before such counts existed,
        where every sub-network keeps a derived group whole.
      derived_counts: ``derived_counts[k][i]``: channels of ``derived[i]`` in sub-network k.
    """

    arch: str
    method: str
    groups: tuple[str, ...]
    full: tuple[int, ...]
    counts: tuple[tuple[int, ...], ...]
    junctions: tuple[str, ...] = ()
    stream_sizes: tuple[tuple[int, ...], ...] = ()
    widths: tuple[float, ...] | None = None
    stream_order: str = ASCENDING
    derived: tuple[str, ...] = ()
    derived_counts: tuple[tuple[int, ...], ...] = ()

    # ----------------------------------------------------------------- access
    @property
    def num_subnets(self) -> int:
        return len(self.counts)

    @property
    def zpm(self) -> bool:
        return bool(self.junctions)

    @property
    def zpm_variant(self) -> str:
        """The ``prune.zpm`` variant this structure was pruned with: 'none' (no junctions),
        'aligned' (prefix streams) or 'release'."""
        if not self.junctions:
            return 'none'
        return 'aligned' if self.stream_order == PREFIX else 'release'

    def _group_index(self, group: str) -> int:
        try:
            return self.groups.index(group)
        except ValueError:
            raise KeyError(f'Structure of {self.arch} has no channel group {group!r}.') from None

    def count(self, group: str, subnet: int) -> int:
        return self.counts[subnet][self._group_index(group)]

    def counts_of(self, group: str) -> tuple[int, ...]:
        g = self._group_index(group)
        return tuple(c[g] for c in self.counts)

    def full_of(self, group: str) -> int:
        return self.full[self._group_index(group)]

    def stream_size(self, junction: str, subnet: int) -> int:
        return self.stream_sizes[subnet][self.junctions.index(junction)]

    def stream_sizes_of(self, junction: str) -> tuple[int, ...]:
        j = self.junctions.index(junction)
        return tuple(s[j] for s in self.stream_sizes)

    def subnet_index(self, subnet: int | float) -> int:
        """Maps a sub-network index, or a width label, to its index."""
        if isinstance(subnet, bool) or str(getattr(subnet, 'dtype', '')) == 'bool':
            raise ConfigError(f'subnet must be an int index or a width, got {subnet!r}.')
        try:  # Python, numpy and 0-d jax integers alike (e.g. from np.arange)
            subnet = operator.index(subnet)
        except TypeError:
            pass
        if isinstance(subnet, int):
            if not -self.num_subnets <= subnet < self.num_subnets:
                raise ConfigError(
                    f'subnet={subnet} is out of range: this network has {self.num_subnets} '
                    f'sub-networks, indices 0..{self.num_subnets - 1} (smallest first).'
                )
            return subnet % self.num_subnets
        if self.widths is not None:
            for k, w in enumerate(self.widths):
                if abs(w - float(subnet)) < 1e-9:
                    return k
        raise ConfigError(
            f'subnet={subnet!r} matches no sub-network; use an index 0..{self.num_subnets - 1}'
            + (f' or one of the widths {list(self.widths)}.' if self.widths else '.')
        )

    def derived_counts_of(self, group: str, full: int) -> tuple[int, ...]:
        """Derived group ``group``'s count per sub-network (``full``, its size in the full
        network, in every sub-network when the structure gives none)."""
        if group not in self.derived:
            return (full,) * self.num_subnets
        i = self.derived.index(group)
        return tuple(c[i] for c in self.derived_counts)

    def total_channels(self, subnet: int) -> int:
        return sum(self.counts[subnet])

    # ----------------------------------------------------------------- JSON
    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        if not self.derived:  # the files of architectures without derived groups as before
            del d['derived'], d['derived_counts']
        return json.dumps(d, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Structure:
        d = json.loads(text)
        try:
            return cls(
                arch=d['arch'],
                method=d['method'],
                groups=tuple(d['groups']),
                full=tuple(int(x) for x in d['full']),
                counts=tuple(tuple(int(x) for x in c) for c in d['counts']),
                junctions=tuple(d.get('junctions', ())),
                stream_sizes=tuple(tuple(int(x) for x in s) for s in d.get('stream_sizes', ())),
                widths=None if d.get('widths') is None else tuple(float(w) for w in d['widths']),
                stream_order=d.get('stream_order', ASCENDING),
                derived=tuple(d.get('derived', ())),
                derived_counts=tuple(tuple(int(x) for x in c)
                                     for c in d.get('derived_counts', ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f'Malformed structure JSON ({e!r}); re-create it with prune.') from e

    def save(self, path: str) -> None:
        from etils import epath

        epath.Path(path).write_text(self.to_json())

    @classmethod
    def load(cls, path: str) -> Structure:
        from etils import epath

        p = epath.Path(path)
        if not p.exists():
            raise ConfigError(f'No structure file at {path}; is this a spnet_jax checkpoint?')
        try:
            return cls.from_json(p.read_text())
        except (ValueError, UnicodeDecodeError) as e:  # a damaged file (JSONDecodeError, ...)
            if isinstance(e, ConfigError):
                raise ConfigError(f'{path}: {e}') from None
            raise ConfigError(f'{path} is damaged ({type(e).__name__}: {e}); restore it from a '
                              'copy or rerun the stage that wrote it.') from None

    # ------------------------------------------------------------- validation
    def validate(self, table: ChannelTable) -> Structure:
        """Checks this structure fits ``table``; raises ConfigError naming the first problem."""
        where = f'structure for {self.arch}'
        if self.method not in ('snet', 'spnet'):
            raise ConfigError(f'{where}: method must be "snet" or "spnet", got {self.method!r}.')
        if self.groups != table.group_names:
            missing = sorted(set(table.group_names) - set(self.groups))
            extra = sorted(set(self.groups) - set(table.group_names))
            raise ConfigError(
                f'{where} does not match architecture {table.arch} (ZPM={table.zpm}): '
                f'missing groups {missing[:4]}, unknown groups {extra[:4]}; build it for this '
                'architecture and ZPM setting.'
            )
        sizes = tuple(g.size for g in table.groups)
        for name, f, s in zip(self.groups, self.full, sizes, strict=True):
            if f != s:
                raise ConfigError(
                    f'{where}: layer {name!r} has {f} channels in the full network but the '
                    f'architecture has {s}; the structure was made for another width.'
                )
        if not self.counts:
            raise ConfigError(f'{where} has no sub-networks.')
        if self.widths is not None and len(self.widths) != len(self.counts):
            raise ConfigError(f'{where}: {len(self.widths)} widths for {len(self.counts)} subnets.')
        for k, row in enumerate(self.counts):
            if len(row) != len(self.groups):
                raise ConfigError(f'{where}: sub-network {k} has {len(row)} counts, expected '
                                  f'{len(self.groups)} (one per channel group).')
            for name, c, f in zip(self.groups, row, self.full, strict=True):
                if not 1 <= c <= f:
                    raise ConfigError(
                        f'{where}: layer {name!r} of sub-network {k} has {c} channels; it must '
                        f'be between 1 and the full network\'s {f}.'
                    )
        if self.counts[-1] != self.full:
            bad = next(n for n, c, f in zip(self.groups, self.counts[-1], self.full, strict=True)
                       if c != f)
            raise ConfigError(
                f'{where}: the last sub-network must be the full network, but layer {bad!r} is '
                'pruned in it; put the full network last.'
            )
        if self.stream_order not in (ASCENDING, APPENDED, PREFIX):
            raise ConfigError(f'{where}: stream_order={self.stream_order!r} is unknown; it is '
                              f'one of {[ASCENDING, APPENDED, PREFIX]}.')
        names = tuple(j.name for j in table.junctions)
        if self.junctions != names:
            raise ConfigError(
                f'{where}: ZPM junctions {list(self.junctions)[:3]}... do not match the '
                f'architecture\'s {list(names)[:3]}...; was it built with the same ZPM setting?'
            )
        self._validate_derived(table)
        if len(self.stream_sizes) != (len(self.counts) if names else 0):
            raise ConfigError(f'{where}: needs one row of stream sizes per sub-network.')
        stream_of = table.junction_stream()
        for k, row in enumerate(self.stream_sizes):
            for j, s in zip(table.junctions, row, strict=True):
                size = stream_of[j.name].size
                body = self.count(j.body, k)
                if not body <= s <= size:
                    raise ConfigError(
                        f'{where}: stream after {j.name!r} in sub-network {k} has {s} channels; '
                        f'it must hold the block output ({body}) and at most {size}.'
                    )
        return self

    def _validate_derived(self, table: ChannelTable) -> None:
        if not self.derived:
            return
        where = f'structure for {self.arch}'
        want = tuple(g.name for g in table.derived)
        if self.derived != want:
            raise ConfigError(f'{where}: derived channel groups {list(self.derived)[:3]}... do '
                              f'not match the architecture\'s {list(want)[:3]}...; build it '
                              'for this architecture.')
        if len(self.derived_counts) != len(self.counts):
            raise ConfigError(f'{where}: needs one row of derived counts per sub-network.')
        sizes = tuple(g.size for g in table.derived)
        for k, row in enumerate(self.derived_counts):
            for name, c, size in zip(self.derived, row, sizes, strict=True):
                if not 1 <= c <= size:
                    raise ConfigError(f'{where}: {name!r} of sub-network {k} has {c} channels; '
                                      f'it must be between 1 and the full network\'s {size}.')
        if self.derived_counts[-1] != sizes:
            raise ConfigError(f'{where}: the full network must keep its derived groups whole; '
                              'put the full network last.')


def uniform_structure(
    table_at: Callable[[float], ChannelTable],
    widths: Sequence[float],
    *,
    method: str = 'snet',
) -> Structure:
    """A structure whose sub-network k is the architecture at width ``widths[k]``.

    ``table_at(w)`` builds the architecture's table at width ``w`` (the architecture applies
    the release's rounding); the largest width is the full network. Used for S-Net and for
    plain (single-width) base networks.
    """
    widths = tuple(float(w) for w in widths)
    if not widths or any(b <= a for a, b in zip(widths, widths[1:], strict=False)):
        raise ConfigError(f'widths must be a non-empty ascending list, got {list(widths)}.')
    if any(w <= 0 for w in widths):
        raise ConfigError(f'widths must be positive, got {list(widths)}.')
    tables = [table_at(w) for w in widths]
    full = tables[-1]
    if full.zpm:
        raise ConfigError('uniform (S-Net) structures have no ZPM; build the table without it.')
    counts, derived = [], []
    for t in tables:
        if t.group_names != full.group_names or len(t.derived) != len(full.derived):
            raise ConfigError('the architecture changes its layers with width; cannot slim it.')
        counts.append(tuple(max(1, g.size) for g in t.groups))
        derived.append(tuple(max(1, g.size) for g in t.derived))
    extra = {}
    if full.derived:  # each width its own derived channels (e.g. S-Net's squeeze-excitation)
        extra = {'derived': tuple(g.name for g in full.derived),
                 'derived_counts': tuple(derived)}
    return Structure(
        arch=full.arch,
        method=method,
        groups=full.group_names,
        full=tuple(g.size for g in full.groups),
        counts=tuple(counts),
        widths=widths,
        **extra,
    )
