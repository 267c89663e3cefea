"""The SP-Net recipe as stages: base networks -> prune -> slimmable training -> evaluation.

``train_and_evaluate(config, workdir)`` validates the whole config, then runs the stages
named in ``config.stages`` in the recipe's order. Each stage reads its inputs from, and
writes its result to, its own folder under the workdir (see `spnet_jax.train.checkpoint`),
so a stage can also run alone on an existing workdir, a finished stage is skipped, and an
interrupted one resumes.

* ``base`` (SP-Net): one plain network per ``base.widths`` entry, BN scales initialised to
  ``base.bn_scale_init`` and the L1 sub-gradient ``base.sparsity`` on (SPEC section 2).
* ``prune`` (SP-Net): `spnet_jax.pruning.prune` on the finished bases (multi-base pruning,
  SCS, ZPM; SPEC sections 3-6), saved as ``pruned/``.
* ``slim``: every sub-network trained together (SPEC section 8): fine-tuning the pruned
  network (or re-training it from fresh weights, ``prune.start='reinit'``); with
  ``method='snet'`` the S-Net of ``slim.widths`` from scratch.
  With ``slim.drop_scaffold`` the network without its last sub-network (a training scaffold,
  MobileNetV1's x1.5) is then saved as ``published/``, which eval, load and export use.
* ``eval``: top-1/top-5 of every sub-network (optionally after BN calibration), MACs,
  params and latency, written to ``<workdir>/report.json`` (+ ``report.md``,
  ``accuracy_vs_flops.png``; with ``eval.baseline_workdir``, the baseline beside it).
"""

from __future__ import annotations

import os
from typing import Any

import jax
from absl import logging

from spnet_jax import data as data_lib
from spnet_jax import subnets
from spnet_jax.models import get_arch
from spnet_jax.structure import Structure
from spnet_jax.train import checkpoint, sharding, validate
from spnet_jax.train import evaluate as evaluate_lib
from spnet_jax.train import report as report_lib
from spnet_jax.train import state as state_lib
from spnet_jax.train.loop import TrainJob, dtype_of, train_network
from spnet_jax.train.metrics import TrainMetrics

PUBLISHED = checkpoint.PUBLISHED


def build_arch(config: Any):
    m = config.model
    return get_arch(m.name, num_classes=m.num_classes, full_width=m.full_width, stem=m.stem)


def input_shape(config: Any) -> tuple[int, int, int]:
    info = data_lib.dataset_info(config.data)
    return (info.image_size, info.image_size, info.channels)


def _fresh_variables(model, seed: int, shape: tuple[int, int, int], stream: int):
    # RBG keys: XLA compiles the initialisers of a deep network in seconds instead of the
    # ~20 s threefry takes on CPU; the values are still a pure function of (seed, stream).
    rng = jax.random.fold_in(jax.random.key(seed, impl='rbg'), stream)
    return lambda: jax.jit(lambda r: state_lib.init_variables(model, r, shape))(rng)


def run_base(config: Any, workdir: str, arch, index: int, width: float, shape, mesh):
    structure = arch.plain_structure(width)
    model = arch.module(structure, dtype=dtype_of(config.compute_dtype),
                        bn_scale_init=config.base.bn_scale_init)
    job = TrainJob(name=f'base_{float(width)}', directory=checkpoint.base_dir(workdir, width),
                   model=model, structure=structure, section=config.base, input_shape=shape,
                   initial_variables=_fresh_variables(model, config.seed, shape, index),
                   evaluate_at_end=bool(config.eval.eval_bases))
    return train_network(job, config, mesh)


def run_prune(config: Any, workdir: str, arch, shape) -> dict[str, Any]:
    directory = checkpoint.stage_dir(workdir, 'pruned')
    if checkpoint.is_done(directory):
        logging.info('[pruned] finished earlier; skipping.')
        return {**checkpoint.done_info(directory), 'skipped': True}
    from spnet_jax.prune import prune_to

    widths = [float(w) for w in config.base.widths]
    bases = []
    for w in widths:
        _, variables, _ = checkpoint.load_network(checkpoint.base_dir(workdir, w))
        bases.append({k: variables[k] for k in ('params', 'batch_stats')})
    structure, _, _ = prune_to(config, arch, bases, widths, directory, shape[0], shape[2])
    logging.info('[pruned] %d sub-networks; channels per sub-network: %s',
                 structure.num_subnets,
                 [structure.total_channels(k) for k in range(structure.num_subnets)])
    return {'step': 0, 'kind': 'network'}


def slim_job(config: Any, workdir: str, arch, shape) -> TrainJob:
    dtype = dtype_of(config.compute_dtype)
    directory = checkpoint.stage_dir(workdir, 'slim')
    if config.method == 'snet':
        structure = arch.snet_structure(tuple(config.slim.widths))
        model = arch.module(structure, dtype=dtype, bn_scale_init=config.slim.bn_scale_init)
        initial = _fresh_variables(model, config.seed, shape, 2000)
    else:
        pruned = checkpoint.stage_dir(workdir, 'pruned')
        structure = Structure.load(os.path.join(pruned, checkpoint.STRUCTURE))
        model = arch.module(structure, dtype=dtype, bn_scale_init=config.slim.bn_scale_init)
        initial = lambda: checkpoint.load_network(pruned)[1]
    return TrainJob(name='slim', directory=directory, model=model, structure=structure,
                    section=config.slim, input_shape=shape, initial_variables=initial)


def run_publish(config: Any, workdir: str, arch) -> dict[str, Any] | None:
    """With ``slim.drop_scaffold``: the trained network without its last sub-network (the
    release's ``eliminate_width``: MobileNetV1's x1.5 scaffold), saved as ``published/``.

    Returns its ``done.json`` info, or None when the recipe keeps every sub-network.
    """
    if not config.slim.drop_scaffold:
        return None
    directory = checkpoint.stage_dir(workdir, PUBLISHED)
    if checkpoint.is_done(directory):
        logging.info('[%s] finished earlier; skipping.', PUBLISHED)
        return {**checkpoint.done_info(directory), 'skipped': True}
    slim_dir = checkpoint.stage_dir(workdir, 'slim')
    structure, variables, _ = checkpoint.load_network(slim_dir)
    step = (checkpoint.done_info(slim_dir) or {}).get('step', 0)
    structure, variables = subnets.keep_first(arch.table(zpm=structure.zpm), structure,
                                              variables, structure.num_subnets - 1)
    checkpoint.save_network(directory, structure, variables, config, step=step)
    logging.info('[%s] dropped the scaffold sub-network; %d sub-networks remain.', PUBLISHED,
                 structure.num_subnets)
    return checkpoint.done_info(directory)




def run_eval(config: Any, workdir: str, arch, shape, mesh, *,
             force: bool = False) -> list[dict[str, Any]]:
    """The eval stage; skipped when finished earlier unless ``force`` (`spnet_jax.evaluate`)."""
    directory = checkpoint.stage_dir(workdir, 'eval')
    report_path = os.path.join(workdir, 'report.json')
    options = evaluate_lib.report_options(config.eval)
    if not force and checkpoint.is_done(directory) and os.path.exists(report_path):
        logging.info('[eval] finished earlier; skipping (report in %s).', report_path)
        return checkpoint.read_json(report_path)
    run_publish(config, workdir, arch)  # a no-op unless the recipe drops a scaffold
    net_dir = checkpoint.final_network_dir(workdir)
    structure, variables, _ = checkpoint.load_network(net_dir)
    model = arch.module(structure, dtype=dtype_of(config.compute_dtype))
    expected = jax.eval_shape(lambda: state_lib.init_variables(model, jax.random.key(0), shape))
    checkpoint.check_variables(variables, expected, f'the network in {net_dir}')
    variables = sharding.replicate(variables, mesh)
    calibration = int(config.eval.bn_calibration_batches)
    if calibration:
        variables = evaluate_lib.calibrate_batch_stats(model, variables, structure.num_subnets,
                                                       config, mesh, calibration)
    results = evaluate_lib.evaluate(model, variables, structure.num_subnets, config, mesh)
    latency = None
    if options['latency_batch']:
        latency = evaluate_lib.measure_latency(
            model, variables, structure.num_subnets, shape, options['latency_batch'],
            runs=options['latency_runs'], warmup=options['latency_warmup'])
    rows = report_lib.report_rows(arch, structure, results, shape,
                                  bn_calibration_batches=calibration, latency=latency)
    title = f'{report_lib.METHOD_NAMES[config.method]} {arch.name} on {config.data.name}'
    report_lib.write_report(workdir, rows, title, method=config.method,
                            baseline_workdir=options['baseline_workdir'])
    step = (checkpoint.done_info(net_dir) or {}).get('step', 0)
    writer = TrainMetrics('eval', directory, num_steps=max(step, 1), first_step=step,
                          log_every_steps=1)
    writer.write_eval(step, rows)
    writer.close()
    checkpoint.mark_done(directory, {'report': report_path})
    logging.info('[eval] report written to %s.', report_path)
    return rows


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    """Runs the configured stages in ``workdir``; returns what each stage did.

    The result maps each stage folder's name to its ``done.json`` info (with
    ``'skipped': True`` for stages finished earlier), and ``'report'`` to the report rows
    when the eval stage ran.
    """
    stages = validate.check_config(config)
    validate.check_workdir(config, workdir, stages)
    if 'eval' in stages:
        evaluate_lib.report_options(config.eval)
    arch = build_arch(config)
    shape = input_shape(config)
    mesh = sharding.make_mesh()
    logging.info('Stages %s on %d devices (%d processes); workdir %s.', ','.join(stages),
                 jax.device_count(), jax.process_count(), workdir)
    summary: dict[str, Any] = {}
    if 'base' in stages:
        for index, width in enumerate(config.base.widths):
            summary[f'base_{float(width)}'] = run_base(config, workdir, arch, index, width,
                                                       shape, mesh)
    if 'prune' in stages:
        summary['pruned'] = run_prune(config, workdir, arch, shape)
    if 'slim' in stages:
        summary['slim'] = train_network(slim_job(config, workdir, arch, shape), config, mesh)
        published = run_publish(config, workdir, arch)
        if published is not None:
            summary[PUBLISHED] = published
    if 'eval' in stages:
        summary['report'] = run_eval(config, workdir, arch, shape, mesh)
    return summary
