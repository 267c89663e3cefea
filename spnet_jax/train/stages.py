"""The SP-Net recipe as stages: base networks -> prune -> slimmable training -> evaluation.

``train_and_evaluate(config, workdir)`` validates the whole config, then runs the stages
named in ``config.stages`` in the recipe's order. Each stage reads its inputs from, and
writes its result to, its own folder under the workdir (see `spnet_jax.workdir.checkpoint`),
so a stage can also run alone on an existing workdir, a finished stage is skipped, and an
interrupted one resumes.

* ``base`` (SP-Net): one plain network per ``base.widths`` entry, BN scales initialised to
  ``base.bn_scale_init`` and the L1 sub-gradient ``base.sparsity`` on (SPEC section 2).
* ``prune`` (SP-Net): `spnet_jax.pruning.prune` on the finished bases (multi-base pruning,
  SCS, ZPM; SPEC sections 3-6), saved as ``pruned/``.
* ``slim``: every sub-network trained together (SPEC section 8): fine-tuning the pruned
  network (or re-training it from fresh weights, ``prune.start='reinit'``); with
  ``method='snet'`` the S-Net of ``slim.widths`` from scratch (or, with
  ``slim.init_from_base``, from the trained base of its full width).
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
import ml_collections
from absl import logging

from spnet_jax import data as data_lib
from spnet_jax import pruning
from spnet_jax.core import layers, sharding
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.pruning import latency, subnets
from spnet_jax.train import evaluation, validate
from spnet_jax.train import report as report_lib
from spnet_jax.train import state as state_lib
from spnet_jax.train.loop import TrainJob, dtype_of, train_network
from spnet_jax.train.metrics import TrainMetrics
from spnet_jax.train.settings import Settings
from spnet_jax.workdir import checkpoint, lock

PUBLISHED = checkpoint.PUBLISHED


def input_shape(config: Settings) -> tuple[int, int, int]:
    info = data_lib.dataset_info(config.data)
    return (info.image_size, info.image_size, info.channels)


def _fresh_variables(model, seed: int, shape: tuple[int, int, int], stream: int):
    # RBG keys: XLA compiles the initialisers of a deep network in seconds instead of the
    # ~20 s threefry takes on CPU; the values are still a pure function of (seed, stream).
    rng = jax.random.fold_in(jax.random.key(seed, impl='rbg'), stream)
    return lambda: jax.jit(lambda r: state_lib.init_variables(model, r, shape))(rng)


def base_stage(config: Settings, workdir: str, index: int, width: float, shape, mesh):
    arch = config.arch.at_width(width)
    structure = arch.plain_structure()
    model = arch.module(structure, dtype=dtype_of(config.compute_dtype),
                        bn_scale_init=config.base.bn_scale_init)
    job = TrainJob(name=f'base_{float(width)}', directory=checkpoint.base_dir(workdir, width),
                   arch=arch, model=model, structure=structure, section=config.base,
                   input_shape=shape,
                   initial_variables=_fresh_variables(model, config.seed, shape, index),
                   evaluate_at_end=config.eval.eval_bases)
    return train_network(job, config, mesh)


def prune_bases(config: Settings, bases: list[dict], image_size: int, in_channels: int):
    """`spnet_jax.pruning.prune` of ``bases`` (one per ``base.widths``) by the config's
    ``prune`` section: ``(structure, variables, info)``. Latency targets are timed here, on
    this process's first device, at a batch of ``eval.latency_batch``."""
    extra: dict[str, Any] = {}
    p = config.prune
    if p.by_latency:
        timer = latency_timer(config, image_size, in_channels)
        ms, measured = p.latency_targets, None
        if p.latency_widths:
            ms, measured = latency.width_targets(timer, config.arch, p.latency_widths)
            logging.info('[pruned] latency targets: the uniform networks at widths %s take %s '
                         'ms per batch of %d', p.latency_widths,
                         [f'{t:.3g}' for t in measured], timer.batch)
            if ms != measured:
                logging.warning(
                    '[pruned] the measured times are not ascending (the narrow widths are '
                    'equally fast within the timing noise here); each target is raised to the '
                    'largest before it: %s ms', [f'{t:.3g}' for t in ms])
        extra = dict(latency_targets=ms, timer=timer)
    structure, variables, info = pruning.prune(
        config.arch, bases, config.base.widths, image_size=image_size, in_channels=in_channels,
        **config.prune.arguments(seed=config.seed, bn_scale_init=config.slim.bn_scale_init),
        **extra)
    if p.latency_widths:
        info['latency']['widths'] = list(p.latency_widths)
        info['latency']['widths_measured_ms'] = [float(t) for t in measured]
    if p.by_latency:
        lat = info['latency']
        logging.info('[pruned] measured %s ms against targets %s (spread up to %.1f%%; %d '
                     'candidates timed in %.0f s)', [f'{t:.3g}' for t in lat['measured_ms']],
                     [f'{t:.3g}' for t in lat['targets_ms']], 100 * lat['max_spread'],
                     lat['candidates'], lat['seconds'])
        for k, ok in enumerate(lat['met']):
            if not ok:
                logging.warning(
                    '[pruned] sub-network %d: no structure within prune.latency_tolerance=%g '
                    'of %.3g ms (the channel steps are coarser); took the faster neighbour, '
                    '%.3g ms. A smaller prune.round_to makes finer steps.', k,
                    lat['tolerance'], lat['targets_ms'][k], lat['measured_ms'][k])
    return structure, variables, info


def check_latency_targets(config: Settings, workdir: str, shape) -> None:
    """Refuses, before any stage runs, latency targets outside what pruning can reach on this
    backend (every layer at its floor ... the unpruned base; both are known before the bases
    are trained): one sentence with the range in ms."""
    p = config.prune
    if (not p.by_latency or 'prune' not in config.stages
            or checkpoint.is_done(checkpoint.stage_dir(workdir, 'pruned'))):
        return
    latency.check_variant(p.zpm, p.sizing_field)
    timer = latency_timer(config, shape[0], shape[2])
    arch, widths, zpm_on = config.arch, config.base.widths, p.zpm != 'none'
    ms = p.latency_targets or latency.width_targets(timer, arch, p.latency_widths)[0]
    which = range(len(widths)) if len(widths) > 1 else [0] * len(ms)
    for k, (target, b) in enumerate(zip(ms, which, strict=False)):
        floors = pruning.multibase.base_floors(arch, widths[b], zpm_on, p.min_channels_ratio)
        low, high = latency.reachable_range(arch, arch.table(width=widths[b], zpm=zpm_on),
                                            floors, p.round_to, p.zpm, timer)
        error = latency.range_error(target, k, low, high, timer, p.latency_tolerance)
        if error is not None:
            raise error


def latency_timer(config: Settings, image_size: int, in_channels: int) -> latency.Timer:
    """The `latency.Timer` that latency targets are measured with (the full network as the
    anchor, a batch of ``eval.latency_batch``)."""
    return latency.Timer(config.arch, (image_size, image_size, in_channels),
                         config.eval.latency_batch)


def prune_stage(config: Settings, workdir: str, shape) -> dict[str, Any]:
    directory = checkpoint.stage_dir(workdir, 'pruned')
    if checkpoint.is_done(directory):
        logging.info('[pruned] finished earlier; skipping.')
        return {**checkpoint.done_info(directory), 'skipped': True}
    bases = []
    for w in config.base.widths:
        _, variables, _ = checkpoint.load_network(checkpoint.base_dir(workdir, w))
        bases.append({k: variables[k] for k in ('params', layers.BATCH_STATS)})
    structure, variables, info = prune_bases(config, bases, shape[0], shape[2])
    checkpoint.save_pruned(directory, structure, variables, info, config.to_json(), config.arch)
    logging.info('[pruned] %d sub-networks; channels per sub-network: %s',
                 structure.num_subnets,
                 [structure.total_channels(k) for k in range(structure.num_subnets)])
    return {'step': 0, 'kind': 'network'}


def slim_job(config: Settings, workdir: str, shape) -> TrainJob:
    arch, dtype = config.arch, dtype_of(config.compute_dtype)
    directory = checkpoint.stage_dir(workdir, 'slim')
    if config.method == 'snet':
        structure = arch.snet_structure(config.slim.widths)
        model = arch.module(structure, dtype=dtype, bn_scale_init=config.slim.bn_scale_init)
        initial = _fresh_variables(model, config.seed, shape, 2000)
        if config.slim.init_from_base:  # the warm-start ablation: each width a prefix
            fresh, base = initial, checkpoint.base_dir(workdir, config.model.full_width)
            initial = lambda: subnets.snet_from_plain(
                jax.eval_shape(fresh), checkpoint.load_network(base)[1])
    else:
        pruned = checkpoint.stage_dir(workdir, 'pruned')
        structure = Structure.load(os.path.join(pruned, checkpoint.STRUCTURE))
        model = arch.module(structure, dtype=dtype, bn_scale_init=config.slim.bn_scale_init)
        initial = lambda: checkpoint.load_network(pruned)[1]
    return TrainJob(name='slim', directory=directory, arch=arch, model=model,
                    structure=structure, section=config.slim, input_shape=shape,
                    initial_variables=initial,
                    distillation=(config.slim.kd_alpha, config.slim.kd_temperature))


def publish_stage(config: Settings, workdir: str) -> dict[str, Any] | None:
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
    structure, variables = subnets.keep_first(config.arch.table(zpm=structure.zpm), structure,
                                              variables, structure.num_subnets - 1)
    checkpoint.save_network(directory, structure, variables, config.to_json(), step=step,
                            arch=config.arch)
    logging.info('[%s] dropped the scaffold sub-network; %d sub-networks remain.', PUBLISHED,
                 structure.num_subnets)
    return checkpoint.done_info(directory)


def eval_stage(config: Settings, workdir: str, shape, mesh, *,
             force: bool = False) -> list[dict[str, Any]]:
    """The eval stage; skipped when finished earlier unless ``force`` (`evaluate_workdir`)."""
    arch, options = config.arch, config.eval
    directory = checkpoint.stage_dir(workdir, 'eval')
    report_path = os.path.join(workdir, checkpoint.REPORT)
    if not force and checkpoint.is_done(directory) and os.path.exists(report_path):
        # What the run hands on is its final network: a damaged one is refused here too.
        checkpoint.load_network(checkpoint.final_network_dir(workdir))
        logging.info('[eval] finished earlier; skipping (report in %s).', report_path)
        return checkpoint.read_json(report_path)
    publish_stage(config, workdir)  # a no-op unless the recipe drops a scaffold
    net_dir = checkpoint.final_network_dir(workdir)
    structure, variables, _ = checkpoint.load_network(net_dir)
    model = arch.module(structure, dtype=dtype_of(config.compute_dtype))
    expected = jax.eval_shape(lambda: state_lib.init_variables(model, jax.random.key(0), shape))
    checkpoint.check_variables(variables, expected, f'the network in {net_dir}')
    variables = sharding.replicate(variables, mesh)
    calibration = options.bn_calibration_batches
    if calibration:
        variables = evaluation.calibrate_batch_stats(model, variables, structure.num_subnets,
                                                     config, mesh, calibration)
    results = evaluation.evaluate(model, variables, structure.num_subnets, config, mesh)
    latency = None
    if options.latency_batch:
        latency = evaluation.measure_latency(
            model, variables, structure.num_subnets, shape, options.latency_batch,
            runs=options.latency_runs, warmup=options.latency_warmup)
    rows = report_lib.report_rows(arch, structure, results, shape,
                                  bn_calibration_batches=calibration, latency=latency)
    title = f'{report_lib.METHOD_NAMES[config.method]} {arch.name} on {config.data.name}'
    report_lib.write_report(workdir, rows, title, method=config.method,
                            baseline_workdir=options.baseline_workdir)
    step = (checkpoint.done_info(net_dir) or {}).get('step', 0)
    writer = TrainMetrics('eval', directory, num_steps=max(step, 1), first_step=step,
                          log_every_steps=1)
    writer.write_eval(step, rows)
    writer.close()
    checkpoint.mark_done(directory, {'report': report_path})
    logging.info('[eval] report written to %s.', report_path)
    return rows


def saved_settings(workdir: str, **overrides: Any) -> Settings:
    """The settings that trained ``workdir``'s final network (its ``config.json``), with
    ``overrides`` of ``eval.*`` / ``data.*`` fields (e.g. where the data is on this machine)."""
    path = os.path.join(checkpoint.final_network_dir(workdir), checkpoint.CONFIG)
    if not os.path.exists(path):
        raise ConfigError(f'{workdir} has no slimmable network with its config ({path}); give '
                          'the --workdir of a main.py run whose slim stage has finished.')
    config = ml_collections.ConfigDict(checkpoint.read_json(path))
    for name, value in overrides.items():
        if value is None:
            continue
        in_data = name in config.data and name not in config.eval
        (config.data if in_data else config.eval)[name] = value
    config.stages = 'eval'
    return Settings.from_config(config)


def evaluate_workdir(workdir: str, **overrides: Any) -> list[dict[str, Any]]:
    """Evaluates ``workdir``'s finished network (even when its eval stage has finished) and
    writes its report; returns the report rows. ``overrides``: ``eval.*`` or ``data.*``
    fields (``baseline_workdir``, ``latency_batch``, ``batch_size``,
    ``bn_calibration_batches``, ``data_dir``, ...)."""
    holder = lock.holder(workdir)
    if holder is not None:  # refused before reading or writing anything of the run
        raise ConfigError(f'{workdir} is still training (process {holder.get("pid")} on '
                          f'{holder.get("host")}); evaluate it when that run has finished, or '
                          "read its latest checkpoint meanwhile with spnet_jax.load('<workdir>"
                          "/<stage>/checkpoints/<step>').")
    config = saved_settings(workdir, **overrides)
    validate.check_workdir(config, workdir)
    data_lib.prepare(config.data)  # a dataset that cannot be prepared: refused, eval/ unwritten
    logging.info('Evaluating %s on %d devices.', workdir, jax.device_count())
    with lock.workdir_lock(workdir):
        return eval_stage(config, workdir, input_shape(config), sharding.make_mesh(),
                          force=True)


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    """Runs the configured stages in ``workdir``; returns what each stage did.

    ``config``: a ConfigDict (every field of configs/default.py) or its `Settings`. The
    result maps each stage folder's name to its ``done.json`` info (with ``'skipped': True``
    for stages finished earlier), and ``'report'`` to the report rows when eval ran.
    """
    config = validate.check_config(config)
    validate.check_workdir(config, workdir)
    # Downloads and prepares a TFDS dataset that is not yet in data.data_dir: one that cannot
    # be prepared is refused before any stage folder is written.
    data_lib.prepare(config.data)
    check_latency_targets(config, workdir, input_shape(config))
    with lock.workdir_lock(workdir):
        return _run_stages(config, workdir)


def _run_stages(config: Settings, workdir: str) -> dict[str, Any]:
    stages = config.stages
    shape = input_shape(config)
    mesh = sharding.make_mesh()
    logging.info('Stages %s on %d devices (%d processes; this is process %d, local devices '
                 '%r); workdir %s.', ','.join(stages), jax.device_count(), jax.process_count(),
                 jax.process_index(), jax.local_devices(), workdir)
    summary: dict[str, Any] = {}
    if 'base' in stages:
        for index, width in enumerate(config.base.widths):
            summary[f'base_{float(width)}'] = base_stage(config, workdir, index, width, shape,
                                                       mesh)
    if 'prune' in stages:
        summary['pruned'] = prune_stage(config, workdir, shape)
    if 'slim' in stages:
        summary['slim'] = train_network(slim_job(config, workdir, shape), config, mesh)
        published = publish_stage(config, workdir)
        if published is not None:
            summary[PUBLISHED] = published
    if 'eval' in stages:
        summary['report'] = eval_stage(config, workdir, shape, mesh)
    return summary
