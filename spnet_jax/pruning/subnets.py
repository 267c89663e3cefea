"""Choosing sub-networks of a slimmable network, as pure functions over
``(ChannelTable, Structure, variables)``.

* `standalone_structure` / `standalone_variables`: one sub-network as a network of its own
  (what `spnet_jax.export` writes);
* `keep_first`: the network of sub-networks ``0..count-1`` only, the last of them becoming
  the full network (the release's ``eliminate_width``, which drops a training scaffold such
  as MobileNetV1's x1.5 after fine-tuning);
* `snet_from_plain`: an S-Net started from a trained network of its full width (each width
  its prefix).

The first two read the wiring from the table only (which params produce, follow and consume each
channel group), so they work for every architecture; neither changes the function of the
sub-networks they keep.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelTable
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure


def _flat(tree) -> dict[str, Any]:
    return dict(traverse_util.flatten_dict(dict(tree), sep='/')) if tree else {}


def _unflat(flat: dict[str, Any]) -> dict[str, Any]:
    return traverse_util.unflatten_dict(flat, sep='/')


def _at(module: str, name: str, subnet: int | None = None) -> str:
    """The flat key of variable ``name`` of ``module`` (a '/'-joined path), or with
    ``subnet`` of that sub-network's own variable of kind ``name``."""
    return f'{module}/{name if subnet is None else layers.subnet_variable(name, subnet)}'


def _cutter(params: dict[str, Any]):
    """``cut(path, axis, index)``: keeps the first ``index`` entries (an int) of a kernel's
    axis, or gathers the entries ``index`` (an array), in ``params`` (flat, updated)."""

    def cut(path: str, axis: int, index) -> None:
        keys = [(f'{path}/kernel', axis)]
        if axis == -1 and f'{path}/bias' in params:  # an FC's outputs: its bias too
            keys.append((f'{path}/bias', -1))
        for key, ax in keys:
            if isinstance(index, int):
                params[key] = jax.lax.slice_in_dim(params[key], 0, index,
                                                   axis=ax % params[key].ndim)
            else:
                params[key] = jnp.take(params[key], index, axis=ax)

    return cut


# --------------------------------------------------------------- one sub-network alone
def _cut_group(cut, group, n: int) -> None:
    """Keeps ``n`` channels of a group: its producers' and depthwise followers' first ``n``
    outputs and its consumers' first ``n`` input rows."""
    for path in (*group.producers, *group.followers):
        cut(path, -1, n)
    for path, axis in group.consumers:
        cut(path, axis, n)


def standalone_structure(structure: Structure, subnet: int) -> Structure:
    """A one-sub-network structure: sub-network ``subnet``'s channels are the full network."""
    k = structure.subnet_index(subnet)
    return Structure(
        arch=structure.arch,
        method='spnet',
        groups=structure.groups,
        full=structure.counts[k],
        counts=(structure.counts[k],),
        junctions=structure.junctions,
        stream_sizes=(structure.stream_sizes[k],) if structure.zpm else (),
        widths=None if structure.widths is None else (structure.widths[k],),
        stream_order=structure.stream_order,
        derived=structure.derived,
        derived_counts=structure.derived_counts[k:k + 1],
    )


def standalone_variables(table: ChannelTable, structure: Structure, variables: dict[str, Any],
                         subnet: int) -> dict[str, Any]:
    """Sub-network ``subnet``'s variables as a standalone network's (a new tree).

    Reads the wiring from ``table`` only: each group's producers and depthwise followers
    keep their first ``n`` outputs, its consumers their first ``n`` input rows, its BNs their
    first ``n`` affine entries (S-Net: sub-network k's private ones) and k's private
    statistics; each ZPM junction's consumers gather their input rows by k's fused index.
    """
    k = structure.subnet_index(subnet)
    params = _flat(variables['params'])
    stats = _flat(variables.get(layers.BATCH_STATS, {}))
    masks = _flat(variables.get(layers.MASKS, {}))
    cut = _cutter(params)

    new_stats: dict[str, Any] = {}
    for group in table.groups:
        n = structure.count(group.name, k)
        _cut_group(cut, group, n)
        for bn in group.bns:
            for leaf in (layers.SCALE, layers.BIAS):
                if structure.method == 'snet':  # switchable BN: k's own affine
                    params[_at(bn, leaf)] = params[_at(bn, leaf, k)]
                    for i in range(structure.num_subnets):
                        del params[_at(bn, leaf, i)]
                else:
                    params[_at(bn, leaf)] = params[_at(bn, leaf)][:n]
            for stat in layers.STATISTICS:
                new_stats[_at(bn, stat, 0)] = stats[_at(bn, stat, k)]
    for group in table.derived:
        _cut_group(cut, group, structure.derived_counts_of(group.name, group.size)[k])

    new_masks: dict[str, Any] = {}
    for junction in table.junctions:
        module = _at(junction.name, layers.JUNCTION)
        fused = jnp.asarray(masks[_at(module, layers.FUSED, k)])
        for path, axis in junction.consumers:
            cut(path, axis, fused)
        new_masks[_at(module, layers.FUSED, 0)] = jnp.arange(fused.shape[0], dtype=fused.dtype)
        for branch in (layers.BODY, layers.SHORT):
            new_masks[_at(module, branch, 0)] = masks[_at(module, branch, k)]

    out = {'params': _unflat(params), layers.BATCH_STATS: _unflat(new_stats)}
    if new_masks:
        out[layers.MASKS] = _unflat(new_masks)
    return out


# --------------------------------------------------------------- the first sub-networks
def keep_first_structure(structure: Structure, count: int) -> Structure:
    """The structure of sub-networks ``0..count-1``, sub-network ``count-1`` the full one.

    Refuses (`ConfigError`, one sentence) a ZPM structure (its residual streams are numbered
    in the dropped network's channels), a ``count`` outside ``1..num_subnets-1``, and counts
    that are not nested (a kept sub-network wider than the new full one in some layer).
    """
    S = structure
    if S.zpm:
        raise ConfigError(
            f'cannot drop sub-networks of a ZPM {S.arch}: its residual streams are numbered in '
            'the full network\'s channels; only networks without ZPM (e.g. MobileNetV1) have '
            'a scaffold to drop.')
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count < S.num_subnets:
        raise ConfigError(
            f'keeping the first {count!r} sub-networks of a network of {S.num_subnets}: the '
            f'count must be between 1 and {S.num_subnets - 1} (at least one is dropped).')
    full = S.counts[count - 1]
    for k in range(count - 1):
        for name, c, f in zip(S.groups, S.counts[k], full, strict=True):
            if c > f:
                raise ConfigError(
                    f'cannot make sub-network {count - 1} the full network: sub-network {k} '
                    f'has {c} channels in layer {name!r}, more than its {f}; its counts are '
                    'not nested.')
    return Structure(
        arch=S.arch,
        method=S.method,
        groups=S.groups,
        full=full,
        counts=S.counts[:count],
        widths=None if S.widths is None else S.widths[:count],
        derived=S.derived,
        derived_counts=S.derived_counts[:count],
    )


def keep_first(table: ChannelTable, structure: Structure, variables: dict[str, Any],
               count: int) -> tuple[Structure, dict[str, Any]]:
    """``(structure, variables)`` of the network of sub-networks ``0..count-1`` only, the
    last of them becoming the full network (the release's ``eliminate_width``).

    Every group's producers and depthwise followers keep their first ``n`` outputs
    (``n`` = sub-network ``count-1``'s channels), its consumers their first ``n`` input rows,
    its BNs their first ``n`` shared scale/bias entries (S-Net: the private affines of the
    kept sub-networks) and the kept sub-networks' private statistics. The kept sub-networks
    compute exactly what they did. Refusals as `keep_first_structure`.
    """
    new = keep_first_structure(structure, count)
    params = _flat(variables['params'])
    stats = _flat(variables.get(layers.BATCH_STATS, {}))
    cut = _cutter(params)
    new_stats: dict[str, Any] = {}
    for group in table.groups:
        n = new.full_of(group.name)
        _cut_group(cut, group, n)
        for bn in group.bns:
            for leaf in (layers.SCALE, layers.BIAS):
                if structure.method == 'snet':
                    for i in range(count, structure.num_subnets):
                        del params[_at(bn, leaf, i)]
                else:
                    params[_at(bn, leaf)] = params[_at(bn, leaf)][:n]
            for k in range(count):
                for stat in layers.STATISTICS:
                    new_stats[_at(bn, stat, k)] = stats[_at(bn, stat, k)]
    for group in table.derived:
        _cut_group(cut, group, new.derived_counts_of(group.name, group.size)[-1])
    return new, {'params': _unflat(params), layers.BATCH_STATS: _unflat(new_stats)}


# --------------------------------------------------------------- S-Net from a trained network
def snet_from_plain(shapes: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    """An S-Net's variables started from a trained plain network of its full width.

    ``shapes``: the S-Net's variables or their shapes (`jax.eval_shape` of its init);
    ``plain``: the plain network's ``{'params', 'batch_stats'}``. An S-Net's width is a
    prefix of its full network, so every shared weight is the plain network's as it is, and
    each width's own BN scale, bias and running statistics are the prefix of the plain
    network's (its single sub-network's). A weight of another shape than the plain one is
    refused: the plain network is not this S-Net's full width.
    """
    out = {}
    for collection, tree in shapes.items():
        source = _flat(plain.get(collection))
        flat = {}
        for path, leaf in _flat(tree).items():
            module, _, name = path.rpartition('/')
            own = layers.subnet_of(name)
            # A plain network's own BN variables are sub-network 0's, or shared by name.
            value = (source.get(_at(module, own[0], 0), source.get(_at(module, own[0])))
                     if own else source.get(path))
            if value is None or (not own and value.shape != leaf.shape) or (
                    own and value.shape[0] < leaf.shape[0]):
                got = None if value is None else tuple(value.shape)
                raise ConfigError(f'the trained network has {collection}/{path} of shape {got}, '
                                  f'the S-Net wants {tuple(leaf.shape)}: it is not the S-Net\'s '
                                  'full-width network.')
            flat[path] = value[:leaf.shape[0]] if own else value
        out[collection] = _unflat(flat)
    return out
