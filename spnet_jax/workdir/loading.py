"""Load a saved slimmable network and run any sub-network on every device there is:

    net = spnet_jax.load('/ckpt/run')          # a workdir, a stage folder or a checkpoint
    net.subnets                                 # [{'subnet', 'macs', 'params', 'top1', ...}]
    logits = net(images_nhwc, subnet=0)         # smallest; subnet=-1 is the full network

Needs nothing but the directory: the structure, config and weights are read from it, and the
accuracy the evaluation stage measured from the workdir's ``report.json``. A call splits the
batch over a `Mesh` of the local devices (TPU cores, GPUs or the CPU) on its 'data' axis,
with the parameters replicated; a batch that does not divide evenly is padded and the padding
dropped from the logits.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from spnet_jax.core import sharding
from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.data import DATASETS
from spnet_jax.models import get_arch
from spnet_jax.pruning import latency
from spnet_jax.pruning.subnets import standalone_structure
from spnet_jax.workdir import checkpoint, lock
from spnet_jax.workdir.checkpoint import CHECKPOINTS, REPORT, STRUCTURE

# Stage folders of a workdir that hold a slimmable network, most finished first:
# ``published`` is the trained network after its training scaffold was dropped
# (`spnet_jax.pruning.subnets.keep_first`), ``slim`` the trained slimmable network, ``pruned`` the
# prune command's.
STAGES = ('published', 'slim', 'pruned')
# Stages whose accuracy is in the workdir's report.json (which describes the newest network).
REPORTED_STAGES = ('published', 'slim')


def _is_stage(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, STRUCTURE))


def _checkpoint_steps(folder: str) -> list[int]:
    """Steps of the finished (not temporary) Orbax checkpoints in a stage folder."""
    root = os.path.join(folder, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    return sorted(int(name) for name in os.listdir(root)
                  if name.isdigit() and os.path.isdir(os.path.join(root, name)))


def _done_step(folder: str) -> int | None:
    info = checkpoint.done_info(folder)
    return None if info is None else int(info.get('step', 0))


def _not_finished(folder: str, what: str) -> ConfigError:
    steps = _checkpoint_steps(folder)
    if not steps:
        return ConfigError(f'{what} has not finished: {folder} has no checkpoint yet; rerun the '
                           'same main.py command to train it.')
    last = os.path.join(folder, CHECKPOINTS, str(steps[-1]))
    return ConfigError(f'{what} has not finished ({folder} is at step {steps[-1]}); rerun the '
                       f"same main.py command to finish it, or load that step with "
                       f"spnet_jax.load('{last}').")


def resolve(path: str) -> tuple[str, int | None]:
    """``(stage folder, step or None for its final checkpoint)`` that ``path`` names.

    ``path``: a workdir (its finished ``published/``, else ``slim/``, else ``pruned/``), a
    stage folder
    (``base_0.75/``, ``slim/``, ...; finished), or one checkpoint of a stage at any step
    (``<stage>/checkpoints/<step>``, finished or not).
    """
    path = os.path.abspath(os.fspath(path))
    if not os.path.isdir(path):
        raise ConfigError(f'{path} is not a directory; give a workdir, a stage folder in it or '
                          'one of its checkpoints (<stage>/checkpoints/<step>).')
    name = os.path.basename(path)
    if name in ('variables', 'train', checkpoint.EMA_ITEM):  # an item folder in a checkpoint
        path, name = os.path.dirname(path), os.path.basename(os.path.dirname(path))
    parent = os.path.dirname(path)
    if name.isdigit() and os.path.basename(parent) == CHECKPOINTS and _is_stage(
            os.path.dirname(parent)):
        return os.path.dirname(parent), int(name)
    if name == CHECKPOINTS and _is_stage(parent):
        path = parent
    if _is_stage(path):
        if _done_step(path) is None:
            raise _not_finished(path, f'the stage in {path}')
        return path, None
    for stage in STAGES:
        folder = os.path.join(path, stage)
        if not _is_stage(folder):
            continue
        if _done_step(folder) is None:
            raise _not_finished(folder, f'training in {path}')
        if stage == 'pruned' and _fine_tuning_planned(folder):
            raise ConfigError(
                f'training in {path} has not finished: its pruned network is not fine-tuned yet '
                '(no finished slim/ stage); rerun the same main.py command to fine-tune it, or '
                f"load the un-fine-tuned network on purpose with spnet_jax.load('{folder}').")
        return folder, None
    bases = sorted(n for n in os.listdir(path)
                   if n.startswith('base_') and _is_stage(os.path.join(path, n)))
    if bases:
        raise ConfigError(
            f'training in {path} has not finished: it has base networks ({", ".join(bases)}) '
            'but no pruned or slimmable network yet; rerun main.py to finish it, or load a '
            f"base with spnet_jax.load('{os.path.join(path, bases[-1])}').")
    holder = lock.holder(path)
    if holder is not None:
        raise ConfigError(f'training in {path} has not finished: process {holder.get("pid")} '
                          f'on {holder.get("host")} is still training it and has written no '
                          'network yet; load it when a stage has finished.')
    raise ConfigError(f'{path} holds no spnet_jax network yet (no {STRUCTURE} in it or in its '
                      f'{"/".join(STAGES)} folders); if main.py is just starting there, load it '
                      'when a stage has finished, else give a workdir written by main.py or '
                      'prune.')


def _fine_tuning_planned(pruned: str) -> bool:
    """Whether the run that wrote ``pruned/`` meant to fine-tune it (main.py with a slim
    stage), unlike ``python -m spnet_jax.prune``, whose network is the pruned one."""
    path = os.path.join(pruned, checkpoint.CONFIG)
    stages = checkpoint.read_json(path).get('stages', '') if os.path.exists(path) else ''
    names = stages.split(',') if isinstance(stages, str) else list(stages)
    return 'slim' in [str(n).strip() for n in names]


def recorded_accuracy(folder: str, step: int) -> dict[int, dict[str, Any]]:
    """What evaluation recorded for the network of ``folder`` at ``step``, per sub-network.

    The workdir's ``report.json`` describes its newest network (``published/`` or
    ``slim/``; rows of another network are dropped by their MACs in `subnets`); a base
    network's ``done.json`` holds its own evaluation. Earlier checkpoints have none.
    """
    if _done_step(folder) != step:
        return {}
    if os.path.basename(folder) in REPORTED_STAGES:
        report = os.path.join(os.path.dirname(folder), REPORT)
        rows = checkpoint.read_json(report) if os.path.exists(report) else []
    else:
        rows = (checkpoint.done_info(folder) or {}).get('eval') or []
    return {int(r['subnet']): r for r in rows}


def widest_within(latency_ms: Sequence[float], macs: Sequence[int], budget_ms: float,
                  batch: int) -> int:
    """The index of the widest (most MACs) sub-network whose ``latency_ms`` fits
    ``budget_ms``; `ConfigError` naming the fastest when none does."""
    fits = [k for k, ms in enumerate(latency_ms) if ms <= budget_ms]
    if not fits:
        fastest = min(range(len(latency_ms)), key=lambda k: latency_ms[k])
        raise ConfigError(f'no width meets {budget_ms:g} ms at batch {batch}: the fastest, '
                          f'sub-network {fastest}, took {latency_ms[fastest]:.3g} ms.')
    return max(fits, key=lambda k: macs[k])


class SlimmableNetwork:
    """A loaded network: ``net(images, subnet=k)`` runs sub-network k (jitted per k), with
    the batch split over ``devices`` (default: every local device)."""

    def __init__(self, arch, structure, variables, config=None, image_size: int = 224, *,
                 path: str | None = None, step: int | None = None,
                 accuracy: dict[int, dict[str, Any]] | None = None,
                 devices: Sequence[jax.Device] | None = None):
        self.arch, self.structure, self.variables, self.config = (
            arch, structure, variables, config)
        self.image_size = image_size
        self.path, self.step = path, step
        self.model = arch.module(structure)
        devices = jax.local_devices() if devices is None else list(devices)
        if not devices:
            raise ConfigError('devices=[] is empty; give at least one device (e.g. '
                              'devices=jax.local_devices()[:1]), or leave it out to use all.')
        self.mesh = sharding.make_mesh(devices)
        self._replicated = sharding.replicated(self.mesh)
        self._batch_sharded = sharding.batch_sharded(self.mesh)
        self._accuracy = accuracy or {}

    @functools.cached_property
    def subnets(self) -> list[dict]:
        """Per sub-network (smallest first): ``subnet``, ``width`` (S-Net label or None),
        ``macs`` and ``params`` at ``image_size``, ``channels``, ``executed_macs`` (what its
        program computes: more than ``macs`` where ZPM junction convs write a stream wider than
        their branch; `spnet_jax.core.cost.SubnetCost.executed_macs`), and what evaluation
        recorded (``top1``, ``top5`` as fractions; ``latency_ms`` at ``latency_batch``;
        None when this checkpoint was not evaluated)."""
        in_channels = self.arch.input_channels(self.variables['params'])
        widths = self.structure.widths
        rows = []
        for c in subnet_costs(self.arch, self.structure, self.image_size, in_channels):
            seen = self._accuracy.get(c.subnet, {})
            if seen.get('macs', c.macs) != c.macs:  # a report of another network
                seen = {}
            rows.append({'subnet': c.subnet, 'width': None if widths is None else widths[c.subnet],
                         'macs': c.macs, 'params': c.params, 'channels': c.channels,
                         'executed_macs': c.executed_macs,
                         **{key: seen.get(key) for key in ('top1', 'top5', 'latency_ms',
                                                           'latency_batch')}})
        return rows

    @functools.cached_property
    def device_variables(self) -> dict[str, Any]:
        """The variables replicated on every device of ``mesh``."""
        return jax.device_put(self.variables, self._replicated)

    @functools.cached_property
    def input_spec(self) -> dict[str, Any]:
        """What ``net(images)`` takes: ``shape`` (height, width, channels; NHWC), the dataset's
        per-channel ``mean`` and ``std`` (in [0, 1] units) the training normalised with, or
        None where the network's config does not name its dataset."""
        channels = self.arch.input_channels(self.variables['params'])
        spec = None
        if self.config is not None and 'data' in self.config:
            spec = DATASETS.get(self.config.data.get('name'))
        return {'shape': (self.image_size, self.image_size, channels),
                'mean': None if spec is None else spec.mean,
                'std': None if spec is None else spec.std}

    def measure_latency(self, batch: int = 32, runs: int = 10) -> list[float]:
        """Median ms per batch of ``batch`` images of each sub-network as it deploys (the
        standalone network `spnet_jax.export` writes; time does not depend on the weights) on
        this process's first device, timed against the full network interleaved, at least
        ``runs`` rounds (`spnet_jax.pruning.latency.Timer`); measured once per batch size."""
        cache = self.__dict__.setdefault('_latency', {})
        if batch not in cache:
            timer = latency.Timer(self.arch, self.input_spec['shape'], batch,
                                  min_rounds=runs, max_rounds=4 * runs)
            cache[batch] = [timer.measure(standalone_structure(self.structure, k)).ms
                            for k in range(self.structure.num_subnets)]
        return cache[batch]

    def choose(self, budget_ms: float, batch: int = 32, runs: int = 10) -> int:
        """The widest sub-network whose latency, measured here (`measure_latency`), fits
        ``budget_ms`` per batch of ``batch``; `ConfigError` naming the fastest when none
        does."""
        return widest_within(self.measure_latency(batch, runs),
                             [r['macs'] for r in self.subnets], budget_ms, batch)

    def _checked_images(self, images, normalized: bool):
        """``images`` as the model's float input, or one sentence saying what is wrong."""
        if not hasattr(images, 'shape') or not hasattr(images, 'dtype'):
            try:  # nested lists of pixels, a PIL image's array interface, ...
                images = np.asarray(images)
            except (ValueError, TypeError) as e:
                raise ConfigError(f'images must be an array [batch, height, width, channels] '
                                  f'(numpy or jax), got {type(images).__name__} that does not '
                                  f'convert to one ({str(e).splitlines()[0]}).') from None
            if images.dtype.kind in 'iu' and images.size and 0 <= images.min() <= images.max(
                    ) <= 255:  # Python ints that are pixels: the dataset's uint8
                images = images.astype(np.uint8)
        shape = tuple(images.shape)
        want = self.input_spec['shape']
        if len(shape) != 4:
            raise ConfigError(f'images must be a [batch, height, width, channels] array, got '
                              f'shape {shape}.')
        if shape[1:] != want:
            if shape[1] == want[2] and shape[2:] == want[:2]:
                raise ConfigError(f'images have shape {shape}, channels first; this network '
                                  f'takes [batch, {want[0]}, {want[1]}, {want[2]}] (NHWC): '
                                  'transpose them, e.g. images.transpose(0, 2, 3, 1).')
            what = ('channels' if shape[1:3] == want[:2] else 'height and width')
            raise ConfigError(f'images have shape {shape}, but this network takes [batch, '
                              f'{want[0]}, {want[1]}, {want[2]}] (its {what} differ); '
                              'resize or crop them to that size first.')
        dtype = np.dtype(images.dtype)
        xp = jnp if isinstance(images, jax.Array) else np
        if normalized:
            if dtype.kind != 'f':
                raise ConfigError(f'images are {dtype} but normalized=True says they are '
                                  'already normalised floats; give the uint8 pixels without '
                                  'normalized=True.')
            images = xp.asarray(images, xp.float32)
            bad = int(xp.size(images) - xp.sum(xp.isfinite(images)))
            if bad:
                raise ConfigError(f'images hold {bad} NaN or infinite values; the logits of '
                                  'such an input mean nothing: fix or drop those images.')
            return images
        if dtype != np.uint8:
            raise ConfigError(
                f'images are {dtype}; give uint8 pixels (0-255) as the dataset stores them, '
                'or pass normalized=True for images already normalised as in training '
                '((pixels / 255 - mean) / std, see net.input_spec).')
        mean, std = self.input_spec['mean'], self.input_spec['std']
        if mean is None:
            raise ConfigError('this network\'s config names no known dataset, so its input '
                              'normalisation is unknown; pass images normalised as in its '
                              'training with normalized=True.')
        return ((xp.asarray(images, xp.float32) / 255.0 - xp.asarray(mean, xp.float32))
                / xp.asarray(std, xp.float32))

    def __call__(self, images, subnet: int | float = -1, *, normalized: bool = False
                 ) -> jax.Array:
        """Logits ``[batch, classes]`` of sub-network ``subnet`` (index or width label).

        ``images``: uint8 pixels ``[batch, height, width, channels]`` as the dataset stores
        them, at the network's image size (resizing is the caller's job); the training
        normalisation is applied here. With ``normalized=True``, float images already
        normalised that way. Anything else is refused with one sentence (`ConfigError`).
        """
        k = self.structure.subnet_index(subnet)
        images = self._checked_images(images, normalized)
        xp = jnp if isinstance(images, jax.Array) else np
        count, devices = images.shape[0], self.mesh.size
        padding = -count % devices  # every device gets the same number of rows
        if padding:
            images = xp.concatenate([images, xp.zeros((padding, *images.shape[1:]),
                                                      images.dtype)])
        images = jax.device_put(images, self._batch_sharded)
        logits = _forward(self.model, k, self.mesh)(self.device_variables, images)
        return logits[:count] if padding else logits

    def __repr__(self):
        return (f'SlimmableNetwork({self.arch.name}, {self.structure.num_subnets} sub-networks, '
                f'method={self.structure.method}, zpm={self.structure.zpm_variant!r}, '
                f'{self.mesh.size} device(s))')


@functools.lru_cache(maxsize=64)
def _forward(model, subnet: int, mesh: Mesh):
    """Sub-network ``subnet``'s jitted forward pass, shared by networks of the same model
    (Flax modules compare by their fields), on ``mesh``."""
    return jax.jit(lambda variables, x: model.apply(variables, x, subnet=subnet),
                   in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                   out_shardings=sharding.batch_sharded(mesh))


def load(path: str | os.PathLike, *,
         devices: Sequence[jax.Device] | None = None) -> SlimmableNetwork:
    """The network saved at ``path``, ready to run on ``devices`` (default: all local ones).

    ``path``: a workdir of ``main.py``, ``python -m spnet_jax.prune`` or
    ``python -m spnet_jax.import_release`` (its finished network: ``published/``, else
    ``slim/``, else ``pruned/``), a finished stage folder in it (``base_<w>/``, ``pruned/``,
    ``slim/``, ``published/``), or any checkpoint of a stage
    (``<stage>/checkpoints/<step>``), finished or not. Raises `ConfigError` (one sentence)
    for anything else, or for a workdir whose training has not finished.
    """
    folder, step = resolve(path)
    if step is None:
        step = _done_step(folder)
        if step not in _checkpoint_steps(folder):  # stage written before done.json had steps
            step = None
    structure, variables, config = checkpoint.load_network(folder, step)
    if step is None:
        step = _checkpoint_steps(folder)[-1]
    arch = checkpoint.load_architecture(folder)
    if arch is None:
        arch = _legacy_arch(structure, variables['params'], config)
    image_size = 224
    if config is not None and 'data' in config:
        image_size = int(config.data.image_size)
    return SlimmableNetwork(arch, structure, variables, config, image_size, path=folder,
                            step=step, accuracy=recorded_accuracy(folder, step),
                            devices=devices)


def _legacy_arch(structure, params, config):
    """For stage folders written before architecture.json existed: the architecture read off
    the weights (classes, stem) and the widths the structure and config name (for a network
    cut out of a wider one, the width it was cut from, else the narrowest that holds it)."""
    num_classes = int(params['head']['kernel'].shape[1])
    stem = None
    if structure.arch.startswith('resnet') and not structure.arch.startswith('resnetd'):
        stem = 'imagenet' if params['stem_conv']['kernel'].shape[0] == 7 else 'small'
    configured = [] if config is None else [config.model.get('full_width', 1.0)]
    candidates = [structure.widths[-1]] if structure.widths else []
    candidates += configured
    if config is not None and 'base' in config and config.base.get('widths'):
        candidates.append(config.base.widths[-1])
    candidates.append(1.0)
    arch_at = lambda width: get_arch(structure.arch, num_classes=num_classes, stem=stem,
                                     full_width=float(width))
    for width in candidates:
        arch = arch_at(width)
        table = arch.table(zpm=structure.zpm)
        if tuple(g.size for g in table.groups) == structure.full:
            structure.validate(table)
            return arch
    for width in configured + candidates:  # cut from the configured network, if it was
        arch = arch_at(width)
        if _is_cut_network(structure, arch.table(zpm=structure.zpm)):
            return arch
    raise ConfigError(f'the saved structure matches {structure.arch} at none of the widths '
                      f'{candidates}; the checkpoint and its structure.json disagree.')


def _is_cut_network(structure, table) -> bool:
    """A network cut out of a wider one: a sub-network exported as a standalone network
    (`spnet_jax.export`), or the first sub-networks of a slimmable one with the rest dropped
    (`spnet_jax.pruning.subnets.keep_first`): the architecture's layers, none wider than at this
    width."""
    return (structure.groups == table.group_names
            and all(c <= g.size for c, g in zip(structure.full, table.groups, strict=True)))


def parse_bases(text: str | None, widths: Sequence[float]) -> list[tuple[float, str]]:
    """``--bases=WIDTH=PATH,...`` (the prune and import commands) -> ``[(width, path)]``:
    every path exists, and the widths are ``widths`` (the config's ``base.widths``), in order."""
    if not text:
        raise ConfigError('--bases is empty; give WIDTH=PATH pairs, e.g. '
                          '--bases=0.75=/ckpt/base_0.75,1.0=/ckpt/base_1.0.')
    out = []
    for item in text.split(','):
        width, sep, path = item.partition('=')
        try:
            w = float(width)
        except ValueError:
            w = None
        if not sep or w is None or not path:
            raise ConfigError(f'--bases entry {item!r} is not WIDTH=PATH (e.g. 1.0=/ckpt/b).')
        if not os.path.exists(path):
            raise ConfigError(f'--bases: base checkpoint {path} (width {width}) does not exist.')
        out.append((w, path))
    if [w for w, _ in out] != list(widths):
        raise ConfigError(f'--bases widths {[w for w, _ in out]} differ from config base.widths '
                          f'{list(widths)}; give one checkpoint per configured base width, in the '
                          'same order.')
    return out
