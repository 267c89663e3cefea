"""The workdir layout, Orbax checkpoints of a stage, and saving/loading finished networks.

Every stage writes one folder under the workdir (``base_0.75/``, ``base_1.0/``, ``pruned/``,
``slim/``, ``eval/``)::

    <stage>/checkpoints/<step>/variables   the network: {'params', 'batch_stats', 'masks'}
    <stage>/checkpoints/<step>/train       the optimizer: {'step', 'opt_state'} (training only)
    <stage>/structure.json                 the network's `Structure`
    <stage>/config.json                    the config that made it
    <stage>/done.json                      written last: the stage is finished

Orbax writes each step atomically, so a crash never leaves a half checkpoint that is later
read as good; ``done.json`` is written (atomically) only after the final checkpoint is
complete, so a stage is either finished or resumable from its latest checkpoint.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from spnet_jax.errors import ConfigError
from spnet_jax.structure import Structure

CHECKPOINTS = 'checkpoints'
STRUCTURE = 'structure.json'
CONFIG = 'config.json'
DONE = 'done.json'


def stage_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, name)


def base_dir(workdir: str, width: float) -> str:
    """``<workdir>/base_<width>`` (e.g. ``base_0.75``, ``base_1.0``)."""
    return stage_dir(workdir, f'base_{float(width)}')


def write_json(path: str, obj: Any) -> None:
    """Writes JSON atomically (temp file + rename), from process 0 only."""
    if jax.process_index() != 0:
        return
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w') as fh:
        json.dump(obj, fh, indent=1)
        fh.write('\n')
    os.replace(tmp, path)


def read_json(path: str) -> Any:
    with open(path) as fh:
        return json.load(fh)


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


def write_stage_files(directory: str, structure: Structure | None, config: Any = None) -> None:
    """Writes structure.json and config.json; refuses a folder made for another structure."""
    path = os.path.join(directory, STRUCTURE)
    if structure is not None and os.path.exists(path):
        existing = Structure.load(path)
        if existing != structure:
            raise ConfigError(
                f'{directory} holds a checkpoint of a different network structure '
                f'({existing.arch}, {existing.num_subnets} sub-networks) than this config makes '
                f'({structure.arch}, {structure.num_subnets}); use a fresh --workdir or the '
                'config that made it.')
    os.makedirs(directory, exist_ok=True)
    if jax.process_index() == 0:
        if structure is not None:
            tmp = f'{path}.tmp{os.getpid()}'
            structure.save(tmp)
            os.replace(tmp, path)
        if config is not None:
            write_json(os.path.join(directory, CONFIG), config_to_json(config))


def manager(directory: str, *, save_every_steps: int = 1, max_to_keep: int | None = 2,
            create: bool = True) -> ocp.CheckpointManager:
    """The stage's Orbax `CheckpointManager` (``<directory>/checkpoints``)."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_every_steps, max_to_keep=max_to_keep, create=create)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(directory, CHECKPOINTS)),
                                 options=options)


def save_args(items: dict[str, Any]) -> ocp.args.Composite:
    return ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in items.items()})


def restore_args(abstract_items: dict[str, Any] | None = None,
                 names: tuple[str, ...] = ()) -> ocp.args.Composite:
    """Restores into ``abstract_items`` (shapes, dtypes, shardings), or ``names`` as saved."""
    if abstract_items is not None:
        return ocp.args.Composite(
            **{k: ocp.args.StandardRestore(v) for k, v in abstract_items.items()})
    return ocp.args.Composite(**{k: ocp.args.StandardRestore() for k in names})


def save_network(directory: str, structure: Structure, variables: dict[str, Any],
                 config: Any = None, *, step: int = 0) -> None:
    """Writes a finished network (no optimizer state) in the stage layout, then ``done.json``.

    ``variables`` = ``{'params', 'batch_stats', 'masks'?}``. Loaded back by `load_network`.
    """
    write_stage_files(directory, structure, config)
    variables = {k: v for k, v in variables.items() if k == 'params' or v}
    mngr = manager(directory, max_to_keep=None)
    try:
        if step in mngr.all_steps():  # an earlier attempt crashed before done.json
            mngr.delete(step)
        mngr.save(step, args=save_args({'variables': variables}), force=True)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    mark_done(directory, {'step': step, 'kind': 'network'})


def load_network(directory: str, step: int | None = None
                 ) -> tuple[Structure, dict[str, Any], ml_collections.ConfigDict | None]:
    """``(structure, variables, config or None)`` of the network saved in a stage folder.

    Reads the latest checkpoint (or ``step``) of a finished or interrupted stage; variables
    are ``{'params', 'batch_stats', 'masks'?}`` as jax arrays on the default device.
    """
    structure = Structure.load(os.path.join(directory, STRUCTURE))
    if not os.path.isdir(os.path.join(directory, CHECKPOINTS)):
        raise ConfigError(f'{directory} has no checkpoints; run the stage that makes it first.')
    mngr = manager(directory, max_to_keep=None, create=False)
    try:
        step = mngr.latest_step() if step is None else step
        if step is None:
            raise ConfigError(f'{directory} has no checkpoint; run the stage that makes it first.')
        restored = mngr.restore(step, args=restore_args(names=('variables',)))
    finally:
        mngr.close()
    variables = dict(restored['variables'])
    config_path = os.path.join(directory, CONFIG)
    config = None
    if os.path.exists(config_path):
        config = ml_collections.ConfigDict(read_json(config_path))
    return structure, variables, config


def check_variables(variables: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    """Refuses variables whose tree or shapes differ from the model's (``expected``: shapes)."""
    for collection in ('params', 'batch_stats', 'masks'):
        got = jax.tree_util.tree_flatten_with_path(variables.get(collection, {}))[0]
        want = jax.tree_util.tree_flatten_with_path(expected.get(collection, {}))[0]
        got_shapes = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in got}
        want_shapes = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in want}
        if got_shapes == want_shapes:
            continue
        missing = sorted(set(want_shapes) - set(got_shapes))
        extra = sorted(set(got_shapes) - set(want_shapes))
        wrong = sorted(k for k in set(got_shapes) & set(want_shapes)
                       if got_shapes[k] != want_shapes[k])
        detail = (f'{collection}{missing[0]} is missing' if missing else
                  f'{collection}{extra[0]} is unexpected' if extra else
                  f'{collection}{wrong[0]} has shape {got_shapes[wrong[0]]}, the model '
                  f'wants {want_shapes[wrong[0]]}')
        raise ConfigError(f'{where} does not fit the configured model ({detail}); check '
                          'model.* and the widths against the run that wrote it.')
