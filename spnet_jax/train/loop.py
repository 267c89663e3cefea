"""Trains one network in one stage folder: resumable, sharded, checkpointed, logged.

`train_network` is the outer loop shared by the base stage (a plain network, one
sub-network) and the slimmable stage (every sub-network in one step). It

1. skips the stage if ``done.json`` is there;
2. resumes from the latest intact checkpoint if there is one (the data restarts at that
   step, so the run continues exactly as an uninterrupted one; damaged checkpoints are moved
   aside with a warning, ones of other shapes refused), else starts from the job's initial
   variables (checked against the model's shapes);
3. runs one jitted, sharded step per batch (state donated), fetches metrics every
   ``log_every_steps`` and before every checkpoint, and stops on a non-finite loss;
4. checkpoints every ``checkpoint_every_steps``, at the end, and on preemption (Orbax's
   ``reached_preemption`` on multi-host jobs, SIGTERM or a first Ctrl-C on one process);
5. writes ``done.json`` after the final checkpoint.

With weight EMA (``ema_decay`` > 0) the checkpoints also hold the averaged network (item
``ema``); it is what the stage hands on (`checkpoint.load_network` reads it first) and what
``evaluate_at_end`` measures, while training resumes from the raw weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from absl import logging
from jax.sharding import Mesh

from spnet_jax import data as data_lib
from spnet_jax.core import sharding
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.models import Architecture
from spnet_jax.train import metrics as metrics_lib
from spnet_jax.train import state as state_lib
from spnet_jax.train import step as step_lib
from spnet_jax.train.evaluation import evaluate
from spnet_jax.train.optim import make_optimizer
from spnet_jax.train.settings import Settings, TrainingSettings
from spnet_jax.workdir import checkpoint


class Preempted(RuntimeError):
    """The job was asked to stop; the latest state is checkpointed. Rerun to resume."""


@dataclasses.dataclass
class TrainJob:
    """What `train_network` trains.

    Attributes:
      name: the stage folder's name, for logs (``base_0.75``, ``slim``).
      directory: the stage folder.
      arch: the architecture (saved beside the checkpoints).
      model: the Flax module (built for ``structure``).
      structure: the network's `Structure` (saved beside the checkpoints).
      section: the recipe (``settings.base`` or ``settings.slim``).
      input_shape: (H, W, C) of the images.
      initial_variables: called (only when not resuming) for the starting variables.
      evaluate_at_end: evaluate every sub-network when training ends (kept in done.json).
      distillation: in-place distillation's (alpha, temperature) for the smaller
        sub-networks (a single network has none).
    """

    name: str
    directory: str
    arch: Architecture
    model: Any
    structure: Structure
    section: TrainingSettings
    input_shape: tuple[int, int, int]
    initial_variables: Callable[[], dict[str, Any]]
    evaluate_at_end: bool = False
    distillation: tuple[float, float] = (0.0, 1.0)


def schedule_length(section: TrainingSettings, num_train: int) -> tuple[int, int]:
    """(steps per epoch, total steps) of a training section."""
    steps_per_epoch = max(1, num_train // section.batch_size)
    if section.num_steps > 0:
        return steps_per_epoch, int(section.num_steps)
    return steps_per_epoch, max(1, int(round(float(section.epochs) * steps_per_epoch)))


@contextlib.contextmanager
def _stop_flag():
    """Yields a callable giving the signal that asked the run to stop ('SIGTERM', 'Ctrl-C')
    or None (handled only in the main thread). A first Ctrl-C stops after the current step
    with a checkpoint, as SIGTERM does; a second one stops at once (KeyboardInterrupt, which
    `spnet_jax.cli.entry` reports in one sentence: the checkpoints already written stay)."""
    received: dict[str, str] = {}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: received.get('signal')
        return

    def on_sigint(*_):
        if 'signal' in received:
            raise KeyboardInterrupt
        received['signal'] = 'Ctrl-C'
        logging.warning('Ctrl-C: stopping after the current step with a checkpoint (press '
                        'Ctrl-C again to stop at once, keeping the checkpoints already '
                        'written).')

    previous = {signal.SIGTERM: signal.signal(
                    signal.SIGTERM, lambda *_: received.setdefault('signal', 'SIGTERM')),
                signal.SIGINT: signal.signal(signal.SIGINT, on_sigint)}
    try:
        yield lambda: received.get('signal')
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _retry_advice(job: TrainJob, section: TrainingSettings) -> str:
    """How to train the stage again with a lower learning rate: a workdir's recipe is fixed
    once a stage starts, so in a fresh workdir that starts from this one's finished stages."""
    workdir = os.path.dirname(os.path.abspath(job.directory))
    finished = sorted(name for name in os.listdir(workdir)
                      if checkpoint.is_done(os.path.join(workdir, name)))
    key = 'base' if job.name.startswith('base') else 'slim'
    copy = (f'copy the stages that finished into it first (cp -r '
            f'{" ".join(os.path.join(workdir, n) for n in finished)} NEW_WORKDIR/) so they are '
            'not trained again, and ' if finished else '')
    return (f'To retry with a lower learning rate than {key}.lr={section.lr:g}: this '
            f'workdir\'s recipe is fixed, so {copy}rerun with --workdir=NEW_WORKDIR '
            f'--config.{key}.lr=<lower>; or check the data for bad values.')


def abstract_state(job: TrainJob, tx, mesh: Mesh) -> state_lib.TrainState:
    """Shapes, dtypes and shardings of the job's state (no compute)."""
    shapes = jax.eval_shape(lambda: state_lib.create_state(
        state_lib.init_variables(job.model, jax.random.key(0), job.input_shape), tx,
        ema=job.section.ema_decay > 0))
    repl = sharding.replicated(mesh)
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), shapes)


def jit_train_step(model, num_subnets: int, tx, schedule, mesh: Mesh, *,
                   label_smoothing: float, distillation: tuple[float, float] = (0.0, 1.0),
                   mixup_alpha: float = 0.0, seed: int = 0, ema_decay: float = 0.0):
    """The all-sub-network step, jitted over ``mesh``: state replicated and donated, the
    batch split on the 'data' axis. Returns ``(state, batch) -> (state, metrics)``.

    ``distillation``: (alpha, temperature) of the smaller sub-networks' in-place
    distillation; ``mixup_alpha``, ``seed`` and ``ema_decay``: see `step.train_step`."""
    repl = sharding.replicated(mesh)
    kd_alpha, kd_temperature = distillation
    fn = step_lib.bind(step_lib.train_step, model=model, num_subnets=num_subnets, tx=tx,
                       schedule=schedule, kd_alpha=float(kd_alpha),
                       kd_temperature=float(kd_temperature),
                       label_smoothing=float(label_smoothing),
                       mixup_alpha=float(mixup_alpha), seed=int(seed),
                       ema_decay=float(ema_decay))
    return jax.jit(fn, in_shardings=(repl, sharding.batch_sharded(mesh)),
                   out_shardings=(repl, repl), donate_argnums=(0,))


def train_network(job: TrainJob, config: Settings, mesh: Mesh) -> dict[str, Any]:
    """Trains (or resumes, or skips) ``job``; returns its ``done.json`` info."""
    checkpoint.check_stage_structure(job.directory, job.structure)
    if checkpoint.is_done(job.directory):
        logging.info('[%s] finished earlier; skipping.', job.name)
        return {**checkpoint.done_info(job.directory), 'skipped': True}
    checkpoint.write_stage_files(job.directory, job.structure, config.to_json(), job.arch)
    section = job.section
    info = data_lib.dataset_info(config.data)
    steps_per_epoch, num_steps = schedule_length(section, info.num_train)
    tx, schedule = make_optimizer(section, steps_per_epoch, num_steps,
                                  job.arch.table(zpm=job.structure.zpm))
    abstract = abstract_state(job, tx, mesh)
    repl = sharding.replicated(mesh)

    mngr = checkpoint.manager(job.directory, save_every_steps=config.checkpoint_every_steps,
                              max_to_keep=config.keep_checkpoints)
    writer = batches = None
    # SIGTERM and a first Ctrl-C are noted from here on (restoring, compiling, prefetching),
    # acted on after the next step.
    stack = contextlib.ExitStack()
    stop_signal = stack.enter_context(_stop_flag())
    try:
        start, restored = checkpoint.restore_latest(mngr, job.directory,
                                                    abstract.to_checkpoint(), job.name)
        if start is None:
            variables = job.initial_variables()
            checkpoint.check_variables(variables, abstract.variables,
                                       f'the starting network of {job.name}')
            # In the state's dtypes (e.g. a float32 pruned network in a float64 run), so the
            # step compiles once.
            variables = {c: jax.tree.map(lambda v, a: jnp.asarray(v, a.dtype), variables[c],
                                         abstract.variables[c])
                         for c in abstract.variables}
            create = jax.jit(lambda v: state_lib.create_state(v, tx,
                                                              ema=section.ema_decay > 0),
                             out_shardings=repl)
            state = create(sharding.replicate(variables, mesh))
            start = 0
            logging.info('[%s] training %d steps (%d per epoch, batch %d) on %d devices.',
                         job.name, num_steps, steps_per_epoch, section.batch_size,
                         mesh.devices.size)
        else:
            state = state_lib.TrainState.from_checkpoint(restored)
            logging.info('[%s] resuming from the checkpoint at step %d of %d.', job.name,
                         start, num_steps)

        train_step = jit_train_step(job.model, job.structure.num_subnets, tx, schedule, mesh,
                                    label_smoothing=section.label_smoothing,
                                    distillation=job.distillation,
                                    mixup_alpha=section.mixup_alpha, seed=config.seed,
                                    ema_decay=section.ema_decay)
        writer = metrics_lib.TrainMetrics(job.name, job.directory, num_steps=num_steps,
                                          first_step=start,
                                          log_every_steps=config.log_every_steps)
        batches = data_lib.train_batches(config.data, global_batch_size=section.batch_size,
                                         seed=config.seed, start_step=start)
        batches = data_lib.prefetch(batches, config.prefetch)
        for step in range(start, num_steps):
            state, step_metrics = train_step(state, sharding.global_batch(next(batches),
                                                                           mesh))
            done = step + 1
            writer.add(done, step_metrics)
            preempted = stop_signal() or mngr.reached_preemption(done)
            final = done == num_steps
            saving = final or preempted or mngr.should_save(done)
            if saving or done % config.log_every_steps == 0:
                try:
                    writer.flush()
                except metrics_lib.NonFiniteLossError as e:
                    last = mngr.latest_step()
                    kept = ('no checkpoint was written yet' if last is None else
                            f'the last good checkpoint is step {last} in {job.directory}')
                    raise metrics_lib.NonFiniteLossError(
                        f'{e}; training stopped and {kept}. {_retry_advice(job, section)}',
                        e.step, e.subnet) from None
            if saving:
                mngr.save(done, args=checkpoint.save_args(state.to_checkpoint()),
                          force=final or preempted)
            if preempted and not final:
                mngr.wait_until_finished()
                why = stop_signal() or 'a preemption notice'
                raise Preempted(f'[{job.name}] stopped at step {done} of {num_steps} on '
                                f'{why}; the state is checkpointed at that step in '
                                f'{job.directory}, and rerunning the same command resumes '
                                'from it.')
        mngr.wait_until_finished()
        result = {'step': num_steps, 'kind': 'training'}
        if job.evaluate_at_end:
            result['eval'] = evaluate(job.model, state.network, job.structure.num_subnets,
                                      config, mesh, name=job.name)
            writer.write_eval(num_steps, result['eval'])
        checkpoint.mark_done(job.directory, result)
        return result
    finally:
        stack.close()
        if batches is not None:
            batches.close()
        mngr.wait_until_finished()
        mngr.close()
        if writer is not None:
            writer.close()


def dtype_of(name: str):
    """The compute dtype named by ``config.compute_dtype``. 'float64' needs JAX's x64 mode,
    which `main.py` turns on for such a config before anything builds an array."""
    if name == 'float64' and not jax.config.read('jax_enable_x64'):
        raise ConfigError("compute_dtype='float64' needs JAX x64 mode: run main.py (it turns "
                          "it on), or call jax.config.update('jax_enable_x64', True) first.")
    return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float64': jnp.float64}[name]
