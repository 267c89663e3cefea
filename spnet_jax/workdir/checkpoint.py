"""The workdir layout, Orbax checkpoints of a stage, and saving/loading finished networks.

Every stage writes one folder under the workdir (``base_0.75/``, ``base_1.0/``, ``pruned/``,
``slim/``, ``eval/``)::

    <stage>/checkpoints/<step>/variables   the network: {'params', 'batch_stats', 'masks'}
    <stage>/checkpoints/<step>/train       the optimizer: {'step', 'opt_state'} (training only)
    <stage>/checkpoints/<step>/ema         with weight EMA: the averaged network, as variables
    <stage>/checkpoints/<step>/integrity   a fingerprint of every saved array (JSON)
    <stage>/damaged/<step>                 checkpoints found damaged, moved out of the way
    <stage>/structure.json                 the network's `Structure`
    <stage>/architecture.json              what builds its model (`Architecture.spec`)
    <stage>/config.json                    the config that made it
    <stage>/done.json                      written last: the stage is finished

Orbax writes each step atomically, so a crash never leaves a half checkpoint that is later
read as good; ``done.json`` is written (atomically) only after the final checkpoint is
complete, so a stage is either finished or resumable from its latest checkpoint.

Atomic writes do not protect against what happens to the files later (a disk that truncates
or flips bytes, a half-copied workdir). Every checkpoint therefore carries a fingerprint of
each array (`spnet_jax.workdir.integrity`), saved atomically with it. `restore_latest`
restores the newest checkpoint that reads back with the same fingerprints, moving damaged
ones to ``<stage>/damaged/`` with a warning naming them; a checkpoint whose arrays have other
shapes than the configured model's is refused with a `ConfigError` instead (that is the wrong
run, not damage).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

from spnet_jax.core import layers, sharding
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.models import Architecture, arch_from_spec
from spnet_jax.workdir import integrity

CHECKPOINTS = 'checkpoints'
EMA_ITEM = 'ema'  # the weight EMA's network (training with ema_decay > 0)
DAMAGED = 'damaged'
STRUCTURE = 'structure.json'
ARCHITECTURE = 'architecture.json'
PRUNE_INFO = 'prune_info.json'
REPORT = 'report.json'
CONFIG = 'config.json'
DONE = 'done.json'


def stage_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, name)


# The trained network without its training scaffold (``slim.drop_scaffold``, or a release
# checkpoint imported after its ``eliminate_width``); it supersedes ``slim/`` when finished.
PUBLISHED = 'published'


def final_network_dir(workdir: str) -> str:
    """The stage folder of a run's final network: a finished ``published/``, else ``slim/``."""
    published = stage_dir(workdir, PUBLISHED)
    return published if is_done(published) else stage_dir(workdir, 'slim')


def base_dir(workdir: str, width: float) -> str:
    """``<workdir>/base_<width>`` (e.g. ``base_0.75``, ``base_1.0``)."""
    return stage_dir(workdir, f'base_{float(width)}')


def write_json(path: str, obj: Any) -> None:
    """Writes JSON atomically (temp file + rename), from process 0 only."""
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    try:
        with open(tmp, 'w') as fh:
            json.dump(obj, fh, indent=1)
            fh.write('\n')
        os.replace(tmp, path)
    finally:  # a failed write (a full disk) leaves no partial file behind
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path: str) -> Any:
    """A run's JSON file, or one `ConfigError` sentence naming it if it is damaged (empty,
    truncated, not JSON) or cannot be read."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:
        raise ConfigError(f'{path} cannot be read ({type(e).__name__}: {e}); restore it from a '
                          'copy or rerun the stage that wrote it.') from None


def is_done(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, DONE))


def done_info(directory: str) -> dict[str, Any] | None:
    path = os.path.join(directory, DONE)
    return read_json(path) if os.path.exists(path) else None


def mark_done(directory: str, info: dict[str, Any]) -> None:
    write_json(os.path.join(directory, DONE), info)


def config_to_json(config: Any) -> Any:
    if isinstance(config, ml_collections.ConfigDict):
        return json.loads(config.to_json_best_effort())
    return json.loads(json.dumps(config, default=str))


def check_stage_structure(directory: str, structure: Structure | None) -> None:
    """Refuses a stage folder whose structure.json is not ``structure`` (finished or not)."""
    path = os.path.join(directory, STRUCTURE)
    if structure is None or not os.path.exists(path):
        return
    existing = Structure.load(path)
    if existing != structure:
        differs = next((f'{g}: {a} vs {b} channels' for g, a, b in zip(
            existing.groups, existing.full, structure.full, strict=False) if a != b), None)
        differs = differs or ('other channel counts per sub-network' if existing.arch ==
                              structure.arch else f'{existing.arch} vs {structure.arch}')
        raise ConfigError(
            f'{directory} holds a checkpoint of a different network structure '
            f'({existing.arch}, {existing.num_subnets} sub-networks) than this config makes '
            f'({structure.arch}, {structure.num_subnets}; {differs}); use a fresh --workdir '
            'or the config that made it.')


def write_stage_files(directory: str, structure: Structure | None, config: Any = None,
                      arch: Architecture | None = None) -> None:
    """Writes structure.json, architecture.json and config.json; refuses a folder made for
    another structure."""
    path = os.path.join(directory, STRUCTURE)
    check_stage_structure(directory, structure)
    os.makedirs(directory, exist_ok=True)
    if jax.process_index() == 0:
        if structure is not None:
            tmp = f'{path}.tmp{os.getpid()}'
            structure.save(tmp)
            os.replace(tmp, path)
        if arch is not None:
            write_json(os.path.join(directory, ARCHITECTURE), arch.spec)
        if config is not None:
            write_json(os.path.join(directory, CONFIG), config_to_json(config))


def load_architecture(directory: str) -> Architecture | None:
    """The architecture saved in a stage folder (None in folders written before
    architecture.json existed)."""
    path = os.path.join(directory, ARCHITECTURE)
    if not os.path.exists(path):
        return None
    return arch_from_spec(read_json(path), path)


def manager(directory: str, *, save_every_steps: int = 1, max_to_keep: int | None = 2
            ) -> ocp.CheckpointManager:
    """The writer's Orbax `CheckpointManager` of a stage (``<directory>/checkpoints``): only
    the process that holds the workdir's lock makes one (it removes temporary folders)."""
    # A save that a crash interrupted leaves only a temporary folder, never a step folder;
    # it is removed on the next start.
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every_steps, max_to_keep=max_to_keep, create=True,
        cleanup_tmp_directories=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(directory, CHECKPOINTS)),
                                 options=options)


def _not_read_only_notice(record) -> bool:
    """Orbax warns 'Given directory is read only' on every read-only manager: that is what
    `reader` asks for, not a problem worth a line on a user's terminal."""
    return not str(record.msg).startswith('Given directory is read only')


logging.get_absl_logger().addFilter(_not_read_only_notice)


def reader(directory: str) -> ocp.CheckpointManager:
    """A read-only `CheckpointManager` of a stage: it never creates, deletes or renames
    anything, so it can read a workdir while another process trains in it (a writer's
    in-progress save is a temporary folder, which only the writer may clean up)."""
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None,
                                           save_interval_steps=0,
                                           cleanup_tmp_directories=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(directory, CHECKPOINTS)),
                                 options=options)


def save_args(items: dict[str, Any]) -> ocp.args.Composite:
    """The items, plus their fingerprints (written atomically with them)."""
    args = {k: ocp.args.StandardSave(v) for k, v in items.items()}
    args[integrity.ITEM] = ocp.args.JsonSave({'fingerprints': integrity.fingerprints(items)})
    return ocp.args.Composite(**args)


def restore_args(abstract_items: dict[str, Any] | None = None,
                 names: tuple[str, ...] = ()) -> ocp.args.Composite:
    """Restores into ``abstract_items`` (shapes, dtypes, shardings), or ``names`` as saved."""
    if abstract_items is not None:
        return ocp.args.Composite(
            **{k: ocp.args.StandardRestore(v) for k, v in abstract_items.items()})
    return ocp.args.Composite(**{k: ocp.args.StandardRestore() for k in names})


def save_network(directory: str, structure: Structure, variables: dict[str, Any],
                 config: Any = None, *, step: int = 0, arch: Architecture | None = None,
                 done: dict[str, Any] | None = None) -> None:
    """Writes a finished network (no optimizer state) in the stage layout, then ``done.json``
    (``{'step', 'kind': 'network'}`` plus ``done``).

    ``variables`` = ``{'params', 'batch_stats', 'masks'?}``. Loaded back by `load_network`.
    """
    write_stage_files(directory, structure, config, arch)
    variables = {k: v for k, v in variables.items() if k == 'params' or v}
    if jax.process_count() > 1:  # every process holds the same values: save them as one
        variables = sharding.replicate(sharding.to_host(variables), sharding.make_mesh())
    mngr = manager(directory, max_to_keep=None)
    try:
        if step in mngr.all_steps():  # an earlier attempt crashed before done.json
            mngr.delete(step)
        mngr.save(step, args=save_args({'variables': variables}), force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    mark_done(directory, {'step': step, 'kind': 'network', **(done or {})})


def save_pruned(directory: str, structure: Structure, variables: dict[str, Any],
                info: dict[str, Any], config: Any, arch: Architecture) -> None:
    """The pruned slimmable network (``<workdir>/pruned``) with ``prune_info.json`` (keep
    ratios, thresholds, MACs, which base each sub-network came from). A folder holding
    another network is refused before anything is written."""
    check_stage_structure(directory, structure)
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, PRUNE_INFO),
               json.loads(json.dumps(info, default=lambda o: np.asarray(o).tolist())))
    save_network(directory, structure, variables, config, arch=arch)


def step_dir(directory: str, step: int) -> str:
    return os.path.join(directory, CHECKPOINTS, str(step))


def _has_ema(directory: str, step: int) -> bool:
    """Whether the checkpoint at ``step`` holds a weight EMA's network."""
    return os.path.isdir(os.path.join(step_dir(directory, step), EMA_ITEM))


def _saved_arrays(directory: str, step: int, item: str) -> dict[str, Any]:
    """``{leaf path: ArrayMetadata}`` of a saved item, read from its metadata alone."""
    path = epath.Path(os.path.abspath(os.path.join(step_dir(directory, step), item)))
    tree = ocp.StandardCheckpointHandler().metadata(path).tree
    return {jax.tree_util.keystr(p): m for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_saved_shapes(directory: str, step: int, abstract_items: dict[str, Any],
                       where: str) -> None:
    """Refuses (`ConfigError`) a checkpoint whose arrays are not those of ``abstract_items``;
    `Damaged` if its metadata cannot be read."""
    # Weight EMA on in one run and off in the other: say so, rather than call it damage.
    saved_ema = _has_ema(directory, step)
    if saved_ema != (EMA_ITEM in abstract_items):
        raise ConfigError(
            f'{where}: the checkpoint at step {step} was written with weight EMA '
            f'{"on" if saved_ema else "off"} and the config has it '
            f'{"off" if saved_ema else "on"}; set ema_decay as the run that wrote it had it, '
            'or use a fresh --workdir.')
    for item, tree in abstract_items.items():
        try:
            saved = _saved_arrays(directory, step, item)
        except Exception as e:  # noqa: BLE001
            raise integrity.Damaged(
                f'its {item} metadata does not read ({type(e).__name__})') from None
        want = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(
            tree)[0]}
        if item in ('variables', EMA_ITEM):
            detail = _shape_difference(
                item, {k: tuple(m.shape) for k, m in saved.items()},
                {k: tuple(x.shape) for k, x in want.items()})
        else:  # optimizer state: its containers are saved as plain lists and dicts
            got = sorted((tuple(m.shape), str(m.dtype)) for m in saved.values())
            expected = sorted((tuple(x.shape), str(x.dtype)) for x in want.values())
            detail = None if got == expected else (
                f'its optimizer state has {len(got)} arrays where the configured optimizer '
                f'has {len(expected)}' if len(got) != len(expected) else
                'its optimizer state has other shapes than the configured optimizer\'s')
        if detail:
            raise ConfigError(
                f'{where}: the checkpoint at step {step} does not fit the configured model '
                f'({detail}); use the config that wrote it, or a fresh --workdir.')


def restore_latest(mngr: ocp.CheckpointManager, directory: str,
                   abstract_items: dict[str, Any], name: str
                   ) -> tuple[int | None, dict[str, Any] | None]:
    """``(step, items)`` of the newest intact checkpoint of a stage, or ``(None, None)``.

    Checkpoints newer than it that do not read back as written are moved to
    ``<stage>/damaged/`` with a warning naming each; a checkpoint whose arrays do not fit
    ``abstract_items`` is refused with a `ConfigError` (never loaded into other shapes).
    """
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            check_saved_shapes(directory, step, abstract_items, f'[{name}] {directory}')
            return step, integrity.restore_checked(mngr, step, abstract_items)
        except integrity.Damaged as e:
            moved = integrity.quarantine(step_dir(directory, step),
                                         os.path.join(directory, DAMAGED))
            mngr.reload()
            older = [s for s in mngr.all_steps() if s < step]
            logging.warning('[%s] skipped the damaged checkpoint at step %d (%s); moved it to '
                            '%s and %s.', name, step, e, moved,
                            f'resuming from step {max(older)}' if older else
                            'no older checkpoint is left, starting the stage afresh')
    return None, None


def load_network(directory: str, step: int | None = None, *, ema: bool = True
                 ) -> tuple[Structure, dict[str, Any], ml_collections.ConfigDict | None]:
    """``(structure, variables, config or None)`` of the network saved in a stage folder.

    Reads the latest checkpoint (or ``step``) of a finished or interrupted stage, whatever
    the device topology that wrote it; variables are ``{'params', 'batch_stats', 'masks'?}``
    as jax arrays on the default device. A stage trained with weight EMA saved the averaged
    network beside the raw one: it is read unless ``ema=False``. A checkpoint that does not
    read back as written is refused with a `ConfigError`.
    """
    structure = Structure.load(os.path.join(directory, STRUCTURE))
    if not os.path.isdir(os.path.join(directory, CHECKPOINTS)):
        raise ConfigError(f'{directory} has no checkpoints; run the stage that makes it first.')
    mngr = reader(directory)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise ConfigError(f'{directory} has no checkpoint; run the stage that makes it first.')
        if not os.path.isdir(step_dir(directory, step)):
            raise _vanished(directory, step)
        # Restore onto this process's devices, not the saved topology's.
        if jax.process_count() > 1:
            target = sharding.replicated(sharding.make_mesh())
        else:
            target = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        item = EMA_ITEM if ema and _has_ema(directory, step) else 'variables'
        try:
            saved = _saved_arrays(directory, step, item)
        except Exception as e:  # noqa: BLE001 - Orbax raises what its JSON parser raises
            if not os.path.isdir(step_dir(directory, step)):
                raise _vanished(directory, step) from None
            raise _damaged(directory, step, f'its {item} metadata does not read '
                           f'({type(e).__name__})') from None
        wide = [path for path, m in saved.items() if np.dtype(m.dtype).itemsize == 8]
        if wide and not jax.config.jax_enable_x64:
            raise ConfigError(
                f'the checkpoint at step {step} in {directory} holds 64-bit arrays (e.g. '
                f"{item}{wide[0]}: a compute_dtype='float64' run); enable them first with "
                "jax.config.update('jax_enable_x64', True).")
        try:
            abstract = {item: _abstract_from_metadata(saved, target)}
            restored = integrity.restore_checked(mngr, step, abstract)
        except integrity.Damaged as e:
            if not os.path.isdir(step_dir(directory, step)):
                raise _vanished(directory, step) from None
            raise _damaged(directory, step, str(e)) from None
    finally:
        mngr.close()
    variables = dict(restored[item])
    if jax.process_count() > 1:  # this process's copy, as on one process
        variables = jax.tree.map(jnp.asarray, sharding.to_host(variables))
    config_path = os.path.join(directory, CONFIG)
    config = None
    if os.path.exists(config_path):
        config = ml_collections.ConfigDict(read_json(config_path))
    return structure, variables, config


def _damaged(directory: str, step: int, what: str) -> ConfigError:
    return ConfigError(
        f'the checkpoint at step {step} in {directory} is damaged ({what}); restore the folder '
        'from a copy, or delete it and its done.json to train that stage again.')


def _vanished(directory: str, step: int) -> ConfigError:
    """A checkpoint removed while it was read: the run writing it is still training (it keeps
    only its last ``keep_checkpoints``)."""
    return ConfigError(
        f'the checkpoint at step {step} in {directory} was removed while it was read: the run '
        'is still training and keeps only its latest checkpoints; load the stage again (its '
        'newest checkpoint) or wait until the run has finished.')


def _abstract_from_metadata(saved: dict[str, Any], target) -> dict[str, Any]:
    """The nested dict of ShapeDtypeStructs that the flat ``{"['a']['b']": metadata}`` names."""
    out: dict[str, Any] = {}
    for path, m in saved.items():
        keys = [k.strip("'\"") for k in path[1:-1].split('][')]
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = jax.ShapeDtypeStruct(tuple(m.shape), np.dtype(m.dtype), sharding=target)
    return out


def _shape_difference(collection: str, got_shapes: dict[str, tuple],
                      want_shapes: dict[str, tuple]) -> str | None:
    """The first difference between two ``{path: shape}`` maps, as words (None if equal)."""
    if got_shapes == want_shapes:
        return None
    missing = sorted(set(want_shapes) - set(got_shapes))
    extra = sorted(set(got_shapes) - set(want_shapes))
    wrong = sorted(k for k in set(got_shapes) & set(want_shapes)
                   if got_shapes[k] != want_shapes[k])
    return (f'{collection}{missing[0]} is missing' if missing else
            f'{collection}{extra[0]} is unexpected' if extra else
            f'{collection}{wrong[0]} has shape {got_shapes[wrong[0]]}, the model '
            f'wants {want_shapes[wrong[0]]}')


def check_variables(variables: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Refuses variables whose tree or shapes differ from the model's (``expected``: shapes)."""
    for collection in ('params', layers.BATCH_STATS, layers.MASKS):
        got = jax.tree_util.tree_flatten_with_path(variables.get(collection, {}))[0]
        want = jax.tree_util.tree_flatten_with_path(expected.get(collection, {}))[0]
        detail = _shape_difference(
            collection, {jax.tree_util.keystr(p): tuple(x.shape) for p, x in got},
            {jax.tree_util.keystr(p): tuple(x.shape) for p, x in want})
        if detail:
            raise ConfigError(f'{where} does not fit the configured model ({detail}); check '
                              'model.* and the widths against the run that wrote it.')
