"""Evaluation of every sub-network: top-1/top-5, measured latency, optional BN calibration
(the library the eval stage and `spnet_jax.train.stages.evaluate_workdir` use)."""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from spnet_jax import data as data_lib
from spnet_jax.core import layers, sharding
from spnet_jax.pruning import latency
from spnet_jax.train import step as step_lib


def evaluate(model, variables: dict[str, Any], num_subnets: int, config: Any, mesh: Mesh,
             *, name: str = 'eval') -> list[dict[str, Any]]:
    """Top-1 and top-5 accuracy (fractions) of each sub-network on the eval split.

    Returns one dict per sub-network, smallest first: ``subnet``, ``top1``, ``top5``,
    ``num_examples`` and ``images_per_sec`` (eval throughput after compilation).
    """
    repl, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    results = []
    for k in range(num_subnets):
        fn = jax.jit(step_lib.bind(step_lib.eval_step, model=model, subnet=k),
                     in_shardings=(repl, split), out_shardings=repl)
        totals = {'top1': 0.0, 'top5': 0.0, 'count': 0.0}
        start, timed = None, 0.0
        batches = data_lib.eval_batches(config.data, global_batch_size=config.eval.batch_size)
        for i, batch in enumerate(data_lib.prefetch(batches, config.prefetch)):
            sums = jax.device_get(fn(variables, sharding.global_batch(batch, mesh)))
            for key in totals:
                totals[key] += float(sums[key])
            if i == 0:
                start = time.time()  # after the first batch: compilation excluded
            else:
                timed += float(sums['count'])
        elapsed = time.time() - start if start is not None else 0.0
        count = max(totals['count'], 1.0)
        result = {'subnet': k, 'top1': totals['top1'] / count, 'top5': totals['top5'] / count,
                  'num_examples': int(totals['count']),
                  'images_per_sec': timed / elapsed if elapsed > 0 else None}
        logging.info('[%s] sub-network %d: top-1 %.4f, top-5 %.4f on %d examples', name, k,
                     result['top1'], result['top5'], result['num_examples'])
        results.append(result)
    return results


def calibrate_batch_stats(model, variables: dict[str, Any], num_subnets: int, config: Any,
                          mesh: Mesh, num_batches: int) -> dict[str, Any]:
    """Recomputes every sub-network's running BN statistics over training batches.

    Weights frozen; each sub-network's statistics become the average over ``num_batches``
    batches (of ``slim.batch_size``, training augmentation) of the per-batch statistics, as
    the release's calibration with cumulative averaging does (SPEC section 7).
    """
    repl, split = sharding.replicated(mesh), sharding.batch_sharded(mesh)
    batch_stats = variables[layers.BATCH_STATS]
    for k in range(num_subnets):
        stats_fn = jax.jit(step_lib.bind(step_lib.batch_statistics, model=model, subnet=k),
                           in_shardings=(repl, split), out_shardings=repl)
        average = jax.jit(lambda acc, new, n: jax.tree.map(lambda a, b: a + (b - a) / n,
                                                           acc, new), out_shardings=repl)
        batches = data_lib.train_batches(config.data, global_batch_size=config.slim.batch_size,
                                         seed=config.seed + 1)
        acc = None
        for i, batch in zip(range(num_batches), batches, strict=False):
            images = sharding.global_batch({'image': batch['image']}, mesh)['image']
            new = stats_fn(variables, images)
            acc = new if acc is None else average(acc, new, i + 1)
        batch_stats = step_lib.replace_subnet_stats(batch_stats, acc, k)
        logging.info('[calibrate] sub-network %d: BN statistics from %d batches', k,
                     num_batches)
    return {**variables, layers.BATCH_STATS: batch_stats}


def measure_latency(model, variables: dict[str, Any], num_subnets: int,
                    input_shape: tuple[int, int, int], batch_size: int, *, runs: int = 10,
                    warmup: int = 2, device: jax.Device | None = None) -> list[dict[str, Any]]:
    """Wall time of one forward pass (eval mode, logits) of each sub-network on one device.

    Each sub-network's forward pass is jitted and compiled first and run ``warmup`` times;
    then the sub-networks are timed in turn, ``runs`` rounds (so a machine whose load changes
    slows them alike), each pass to ``block_until_ready``. The median is reported, in
    milliseconds, for a batch of ``batch_size`` images on ``device`` (default: the first
    local device), as a deployed sub-network serves requests. Returns, smallest first:
    ``subnet``, ``latency_ms``, ``latency_spread`` (interquartile range of the runs over
    their median: how noisy the timing was), ``latency_batch``, ``latency_device``.
    """
    device = jax.local_devices()[0] if device is None else device
    on_device = jax.device_put(sharding.to_host(variables), device)
    images = jax.device_put(np.random.default_rng(0).normal(
        size=(batch_size, *input_shape)).astype(np.float32), device)
    forwards = []
    for k in range(num_subnets):
        forward = jax.jit(lambda v, x, k=k: model.apply(v, x, subnet=k, train=False))
        forwards.append(forward.lower(on_device, images).compile())
        for _ in range(warmup):
            forwards[k](on_device, images).block_until_ready()
    times = [[] for _ in forwards]
    for _ in range(runs):
        for k, forward in enumerate(forwards):
            start = time.perf_counter()
            forward(on_device, images).block_until_ready()
            times[k].append(time.perf_counter() - start)
    results = []
    for k in range(num_subnets):
        results.append({'subnet': k, 'latency_ms': 1e3 * statistics.median(times[k]),
                        'latency_spread': latency.spread(times[k]),
                        'latency_batch': batch_size, 'latency_device': device.device_kind})
        logging.info('[latency] sub-network %d: %.3f ms per batch of %d on %s', k,
                     results[-1]['latency_ms'], batch_size, device.device_kind)
    return results
