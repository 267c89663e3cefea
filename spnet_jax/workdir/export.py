r"""Export one sub-network of a slimmable network as a standalone network
(`export_subnet`, `export_all`; the command: ``python -m spnet_jax.export``).

The output folder then holds:

* the standalone network, saved like any other (``structure.json``, ``config.json``, an Orbax
  checkpoint under ``checkpoints/``, ``done.json``): a single-sub-network `Structure` whose
  layers have exactly sub-network k's channels, and its variables. Nothing in it is sliced or
  switched any more: each parameter has the shape sub-network k uses, the BN statistics are
  k's private ones (S-Net: also k's private affine), and every layer that reads a ZPM stream
  has its input rows gathered once by k's fused index, so it reads the compact stream densely
  (the junction's fused index becomes the identity; its placement of the two branches stays);
* ``model.jax_export``: the eval-mode forward pass, weights included as constants, serialized
  by `jax.export` (StableHLO). NHWC images with any batch size in, logits out: uint8 pixels
  as the dataset stores them (the training normalisation is inside), or, where the
  network's dataset is not known, float32 images normalised as in training
  (``export.json``'s ``input_dtype``)::

      exported = jax.export.deserialize(open('DIR/model.jax_export', 'rb').read())
      logits = exported.call(pixels)     # no spnet_jax (or Flax) needed

* ``export.json``: what was exported (architecture, sub-network, MACs, params, input shape,
  classes), written last.

`export_switchable` (``--switchable``) writes instead **one** artifact for every width: the
slimmable network's weights stored once, each width reading its prefix slices as in training,
the sub-network a run-time int32 scalar (``lax.switch`` over the widths' programs: switching
compiles nothing)::

    logits = exported.call(pixels, np.int32(k))    # k = 0 (smallest) .. num_subnets - 1

An index out of range gives logits that are all NaN (never another width's); `choose`
picks the widest sub-network whose measured latency (in ``export.json``, timed on the
exporting machine at batch 1 and ``serving_batch``) fits a budget.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.pruning.subnets import standalone_structure, standalone_variables
from spnet_jax.workdir import checkpoint, tf_export
from spnet_jax.workdir.loading import SlimmableNetwork, load, widest_within
from spnet_jax.workdir.switchable import switchable_function

ARTIFACT = 'model.jax_export'
INFO = 'export.json'
# What an export writes into its folder (a re-export with overwrite=True replaces only these).
_OUTPUTS = (checkpoint.CHECKPOINTS, checkpoint.STRUCTURE, checkpoint.ARCHITECTURE,
            checkpoint.CONFIG, checkpoint.DONE, ARTIFACT, INFO, 'saved_model', 'tflite')
_SUBNET_DIR = re.compile(r'subnet_\d+$')
# The artifact runs on any of these, whichever machine exported it (jax.export lowers for
# each; the weights are stored once).
PLATFORMS = ('cpu', 'cuda', 'tpu')
KNOWN_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')


# --------------------------------------------------------------- the standalone network
def standalone(net: SlimmableNetwork, subnet: int | float) -> tuple[Structure, dict[str, Any]]:
    """``(structure, variables)`` of sub-network ``subnet`` of ``net`` as a standalone
    network; checked against the shapes its model expects."""
    S = net.structure
    k = S.subnet_index(subnet)
    structure = standalone_structure(S, k)
    variables = standalone_variables(net.arch.table(zpm=S.zpm), S, net.variables, k)
    model = net.arch.module(structure)
    in_channels = net.arch.input_channels(net.variables['params'])
    x = jax.ShapeDtypeStruct((1, 32, 32, in_channels), jnp.float32)
    want = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    got_shapes, want_shapes = _shapes(variables), _shapes(want)
    if got_shapes != want_shapes:  # a table that misses a parameter: a bug, not user input
        diff = sorted(set(got_shapes.items()) ^ set(want_shapes.items()))[:3]
        raise AssertionError(f'standalone variables of {S.arch} do not fit its model: {diff}')
    return structure, variables


# --------------------------------------------------------------- the jax.export artifact
def export_forward(arch, structure: Structure, variables: dict[str, Any],
                   input_shape: Sequence[int], platforms: Sequence[str] = PLATFORMS,
                   normalization: tuple[Sequence[float], Sequence[float]] | None = None
                   ) -> jax.export.Exported:
    """The eval-mode forward of a standalone network with its weights as constants, for
    NHWC inputs of shape ``(batch, *input_shape)`` with a symbolic batch.

    With ``normalization`` (the training's per-channel mean and std, in [0, 1] units) the
    artifact takes uint8 pixels as the dataset stores them and normalises them itself;
    without it, float32 images already normalised as in training."""
    model = arch.module(structure)
    consts = jax.tree.map(jnp.asarray, variables)

    def forward(images):
        if normalization is not None:
            mean, std = (jnp.asarray(v, jnp.float32) for v in normalization)
            images = (images.astype(jnp.float32) / 255.0 - mean) / std
        return model.apply(consts, images, subnet=0, train=False)

    dims = ', '.join(str(int(d)) for d in input_shape)
    dtype = jnp.float32 if normalization is None else jnp.uint8
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f'batch, {dims}'), dtype)
    return jax.export.export(jax.jit(forward), platforms=tuple(platforms))(spec)


def export_switchable_forward(arch, structure: Structure, variables: dict[str, Any],
                              input_shape: Sequence[int], platforms: Sequence[str] = PLATFORMS,
                              normalization: tuple[Sequence[float], Sequence[float]] | None
                              = None) -> jax.export.Exported:
    """The eval-mode forward of every sub-network of a slimmable network, chosen by a
    run-time int32 scalar: ``f(images, subnet) -> logits``. The variables are constants
    shared by every width's branch (stored once); an out-of-range ``subnet`` gives NaN
    logits. Inputs as `export_forward`."""
    forward = switchable_function(arch, structure, variables, normalization)
    dims = ', '.join(str(int(d)) for d in input_shape)
    dtype = jnp.float32 if normalization is None else jnp.uint8
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f'batch, {dims}'), dtype)
    index = jax.ShapeDtypeStruct((), jnp.int32)
    return jax.export.export(jax.jit(forward), platforms=tuple(platforms))(spec, index)


def time_widths(exported: jax.export.Exported, input_shape: Sequence[int], dtype: str,
                num_subnets: int, batches: Sequence[int], rounds: int = 10) -> list[dict]:
    """Median ms of ``exported.call(images, k)`` per width and batch on this machine, all
    widths timed interleaved round by round (so a load change hits them alike)."""
    calls = {}
    for b in batches:
        rng = np.random.default_rng(0)
        images = (rng.integers(0, 256, (b, *input_shape), dtype=np.uint8) if dtype == 'uint8'
                  else rng.normal(size=(b, *input_shape)).astype(np.float32))
        images = jnp.asarray(images)
        for k in range(num_subnets):
            index = jnp.int32(k)
            calls[b, k] = lambda x=images, i=index: exported.call(x, i).block_until_ready()
            calls[b, k]()  # compiles once per batch size; every width shares the program
    times: dict = {key: [] for key in calls}
    keys = list(calls)
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            t = time.perf_counter()
            calls[key]()
            times[key].append(1e3 * (time.perf_counter() - t))
    return [{str(b): statistics.median(times[b, k]) for b in batches} for k in range(num_subnets)]


def choose(info: dict[str, Any], budget_ms: float, batch: int) -> int:
    """The widest sub-network of a switchable export (its ``export.json``) whose measured
    latency at ``batch`` fits ``budget_ms``; `ConfigError` naming the fastest when none
    does."""
    rows = info['subnets']
    key = str(batch)
    if key not in rows[0]['latency_ms']:
        raise ConfigError(f'the export timed batches {sorted(rows[0]["latency_ms"], key=int)}, '
                          f'not {batch}; choose one of them or re-export with '
                          f'--serving_batch={batch}.')
    return widest_within([r['latency_ms'][key] for r in rows], [r['macs'] for r in rows],
                         budget_ms, batch)


# --------------------------------------------------------------- writing a folder
def export_switchable(net_or_path: SlimmableNetwork | str | os.PathLike,
                      out_dir: str | os.PathLike, *, overwrite: bool = False,
                      image_size: int | None = None, platforms: Sequence[str] = PLATFORMS,
                      serving_batch: int = 32, timing_rounds: int = 10,
                      saved_model: bool = False, tflite: bool = False) -> dict[str, Any]:
    """Writes one `jax.export` artifact that runs every sub-network of a network, chosen at
    run time, and ``export.json`` (each width's MACs, params and measured latency at batch 1
    and ``serving_batch`` on this machine); returns export.json's contents. ``saved_model``:
    also a TF SavedModel of the switchable network; ``tflite``: also one TFLite flatbuffer
    per sub-network (`spnet_jax.workdir.tf_export`). A failed conversion leaves ``out_dir``
    as it was."""
    _check_options(image_size, platforms)
    if not (isinstance(serving_batch, int) and serving_batch >= 1):
        raise ConfigError(f'--serving_batch={serving_batch!r} must be a positive batch size.')
    net = _as_network(net_or_path)
    out_dir = os.fspath(out_dir)
    _check_out_dir(out_dir, overwrite, _source(net_or_path))
    S = net.structure
    size = int(net.image_size if image_size is None else image_size)
    in_channels = net.arch.input_channels(net.variables['params'])
    spec = net.input_spec
    normalization = None if spec['mean'] is None else (spec['mean'], spec['std'])
    variables = {c: net.variables[c] for c in net.variables}
    exported = export_switchable_forward(net.arch, S, variables, (size, size, in_channels),
                                         platforms, normalization)
    dtype = 'float32' if normalization is None else 'uint8'
    batches = sorted({1, serving_batch})
    latency = time_widths(exported, (size, size, in_channels), dtype, S.num_subnets, batches,
                          timing_rounds)
    costs = subnet_costs(net.arch, S, size, in_channels)
    weight_bytes = sum(int(np.asarray(x).nbytes) for x in jax.tree.leaves(variables))
    info = {
        'arch': net.arch.name, 'switchable': True, 'num_subnets': S.num_subnets,
        'method': S.method, 'zpm': S.zpm_variant,
        'subnets': [{'subnet': c.subnet, 'width': None if S.widths is None else S.widths[k],
                     'macs': c.macs, 'params': c.params, 'latency_ms': latency[k]}
                    for k, c in enumerate(costs)],
        'latency_batches': batches, 'latency_rounds': timing_rounds,
        'latency_device': jax.local_devices()[0].device_kind,
        'weight_bytes': weight_bytes,
        'call': 'exported.call(images, np.int32(subnet)); subnet out of range: NaN logits',
        'input_shape': ['batch', size, size, in_channels], 'input_dtype': dtype,
        'normalization': None if normalization is None else {
            'mean': list(normalization[0]), 'std': list(normalization[1])},
        'layout': 'NHWC', 'num_classes': net.arch.num_classes, 'artifact': ARTIFACT,
        'platforms': list(exported.platforms), 'jax_version': jax.__version__,
        'source': _source(net_or_path),
    }
    with _staged(out_dir) as staging:
        _write_atomic(os.path.join(staging, ARTIFACT), bytes(exported.serialize()))
        if saved_model or tflite:
            shape = (size, size, in_channels)
            if saved_model:
                tf_export.write_saved_model(net.arch, S, variables, shape, normalization,
                                            staging)
                info['saved_model'] = {'folder': tf_export.SAVED_MODEL,
                                       'signature': 'serving_default(images, subnet)'}
            if tflite:
                sizes = tf_export.write_tflite(
                    net.arch, [standalone(net, k) for k in range(S.num_subnets)], shape,
                    normalization, staging)
                info['tflite'] = {'folder': tf_export.TFLITE, 'batch': 1,
                                  'files': [f'subnet_{k}.tflite' for k in range(len(sizes))],
                                  'bytes': sizes}
        _write_atomic(os.path.join(staging, INFO), (json.dumps(info, indent=1) + '\n').encode())
    return info


def export_subnet(net_or_path: SlimmableNetwork | str | os.PathLike, subnet: int | float,
                  out_dir: str | os.PathLike, *, overwrite: bool = False,
                  image_size: int | None = None,
                  platforms: Sequence[str] = PLATFORMS) -> dict[str, Any]:
    """Writes sub-network ``subnet`` of a network (or of the one saved at a path) to
    ``out_dir`` as a standalone network plus its `jax.export` artifact; returns export.json's
    contents.

    Args:
      net_or_path: a loaded `SlimmableNetwork`, or a workdir / stage folder for
        `spnet_jax.load`.
      subnet: the sub-network's index (smallest first, -1 the full one) or width label.
      out_dir: a new or empty folder (or an earlier export's, with ``overwrite``).
      image_size: the artifact's input height and width (default: the network's config).
      platforms: where the artifact may run (jax.export platform names).
    """
    _check_options(image_size, platforms)
    net = _as_network(net_or_path)
    k = net.structure.subnet_index(subnet)
    out_dir = os.fspath(out_dir)
    _check_out_dir(out_dir, overwrite, _source(net_or_path))
    with _staged(out_dir) as staging:
        return _write(net, k, staging, image_size, platforms, _source(net_or_path))


def export_all(net_or_path: SlimmableNetwork | str | os.PathLike, out_dir: str | os.PathLike,
               *, overwrite: bool = False, image_size: int | None = None,
               platforms: Sequence[str] = PLATFORMS) -> list[dict[str, Any]]:
    """`export_subnet` for every sub-network, into ``out_dir/subnet_<k>/``."""
    _check_options(image_size, platforms)
    net = _as_network(net_or_path)
    out_dir = os.fspath(out_dir)
    _check_out_dir(out_dir, overwrite, _source(net_or_path))
    with _staged(out_dir) as staging:
        return [_write(net, k, os.path.join(staging, f'subnet_{k}'), image_size, platforms,
                       _source(net_or_path))
                for k in range(net.structure.num_subnets)]


def _write(net: SlimmableNetwork, k: int, out_dir: str, image_size: int | None,
           platforms: Sequence[str], source: str | None) -> dict[str, Any]:
    structure, variables = standalone(net, k)
    size = int(net.image_size if image_size is None else image_size)
    in_channels = net.arch.input_channels(variables['params'])
    spec = net.input_spec
    normalization = None if spec['mean'] is None else (spec['mean'], spec['std'])
    exported = export_forward(net.arch, structure, variables, (size, size, in_channels),
                              platforms, normalization)
    (cost,) = subnet_costs(net.arch, structure, size, in_channels)
    checkpoint.save_network(out_dir, structure, variables, net.config, arch=net.arch)
    _write_atomic(os.path.join(out_dir, ARTIFACT), bytes(exported.serialize()))
    S = net.structure
    info = {
        'arch': net.arch.name,
        'subnet': k,
        'width': None if S.widths is None else S.widths[k],
        'num_subnets': S.num_subnets,
        'method': S.method,
        'zpm': S.zpm,
        'macs': cost.macs,
        'params': cost.params,
        'input_shape': ['batch', size, size, in_channels],
        # uint8 pixels as the dataset stores them, normalised inside; float32 images already
        # normalised as in training where the network's dataset is not known.
        'input_dtype': 'float32' if normalization is None else 'uint8',
        'normalization': None if normalization is None else {
            'mean': list(normalization[0]), 'std': list(normalization[1])},
        'layout': 'NHWC',
        'num_classes': net.arch.num_classes,
        'artifact': ARTIFACT,
        'platforms': list(exported.platforms),
        'jax_version': jax.__version__,
        'source': source,
    }
    _write_atomic(os.path.join(out_dir, INFO), (json.dumps(info, indent=1) + '\n').encode())
    return info


def _check_options(image_size: int | None, platforms: Sequence[str]) -> None:
    if image_size is not None and image_size < 1:
        raise ConfigError(f'--image_size={image_size} must be a positive number of pixels.')
    bad = [p for p in platforms if p not in KNOWN_PLATFORMS]
    if bad or not platforms:
        raise ConfigError(f'--platforms={",".join(platforms)} names no jax.export platform '
                          f'({bad[0] if bad else "empty"}); choose from '
                          f'{",".join(KNOWN_PLATFORMS)}.')


def _as_network(net_or_path) -> SlimmableNetwork:
    if isinstance(net_or_path, SlimmableNetwork):
        return net_or_path
    if isinstance(net_or_path, str | os.PathLike):
        return load(os.fspath(net_or_path))
    raise ConfigError(f'export needs a SlimmableNetwork or a workdir path, got '
                      f'{type(net_or_path).__name__}.')


def _source(net_or_path) -> str | None:
    return None if isinstance(net_or_path, SlimmableNetwork) else os.path.abspath(net_or_path)


def _check_out_dir(out_dir: str, overwrite: bool, source: str | None) -> None:
    """Refuses a non-empty ``out_dir`` (unless ``overwrite`` and it holds only export
    outputs, which `_staged` replaces) and one that would hold the network being exported;
    before any work."""
    out = os.path.realpath(out_dir)
    if source is not None:
        src = os.path.realpath(source)
        if src == out or src.startswith(out + os.sep):
            raise ConfigError(f'--out={out_dir} holds the network being exported; choose a '
                              'folder outside the workdir.')
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f'--out={out_dir} is a file; give a folder to write the export to.')
    entries = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    if not entries:
        return
    if not overwrite:
        raise ConfigError(f'--out={out_dir} is not empty; choose a new folder or pass '
                          '--overwrite to replace an earlier export there.')
    foreign = [e for e in entries if e not in _OUTPUTS and not _SUBNET_DIR.match(e)]
    if foreign:
        raise ConfigError(f'--out={out_dir} holds files that no export wrote ({foreign[0]}); '
                          '--overwrite only replaces an earlier export, so choose another folder.')
    if INFO not in entries and not all(_SUBNET_DIR.match(e) for e in entries):
        raise ConfigError(f'--out={out_dir} holds a network that is not an export (no {INFO}); '
                          '--overwrite only replaces an earlier export, so choose another folder.')


@contextlib.contextmanager
def _staged(out_dir: str):
    """Yields a hidden folder beside ``out_dir`` to write the export into; when the block
    succeeds, it replaces ``out_dir`` (an earlier export there, checked by `_check_out_dir`,
    is removed only then). When it fails (a full disk, a conversion error, Ctrl-C) the
    staging folder is removed and ``out_dir`` is as it was: nothing half-written is left."""
    out = os.path.abspath(out_dir)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.partial-', dir=parent)
    try:
        yield staging
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if os.path.isdir(staging):
            shutil.rmtree(staging, ignore_errors=True)


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as fh:
        fh.write(data)
    os.replace(tmp, path)


def _shapes(variables) -> dict[str, tuple]:
    return {'/'.join((c, *path)): tuple(np.shape(x)) for c, tree in variables.items()
            for path, x in traverse_util.flatten_dict(dict(tree)).items()}
