"""Training metrics: clu writers (TensorBoard + log lines), progress, non-finite detection.

The step returns device scalars every step; they are kept on device and fetched together
every ``log_every_steps`` and before every checkpoint, so the host does not wait on the
accelerator each step. On fetch, the first non-finite loss (in step order, the full network
first) stops training with `NonFiniteLossError` naming the step and sub-network; since the
fetch happens before any save, no checkpoint ever holds the state that followed it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from spnet_jax.core.sharding import to_host


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss (or parameters); ``step`` and ``subnet`` say where
    (``subnet`` is None when the losses were finite but the update overflowed)."""

    def __init__(self, message: str, step: int, subnet: int | None):
        super().__init__(message)
        self.step, self.subnet = step, subnet


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    return f'{h}h{rem // 60:02d}m' if h else f'{rem // 60}m{rem % 60:02d}s'


def _subnet_of(key: str) -> int | None:
    return int(key.rsplit('_', 1)[1]) if '/subnet_' in key else None


class TrainMetrics:
    """Collects a stage's per-step metrics and writes them every ``log_every_steps``.

    Scalars are written as ``train/<name>`` (e.g. ``train/loss/subnet_0``), averaged over
    the steps since the last write, plus ``train/steps_per_sec``; `ReportProgress` adds its
    steps/s and ETA notes. One log line per write shows progress on a terminal.
    """

    def __init__(self, name: str, logdir: str, *, num_steps: int, first_step: int,
                 log_every_steps: int):
        self.name, self.num_steps = name, num_steps
        self.writer = metric_writers.create_default_writer(
            logdir, just_logging=jax.process_index() > 0, asynchronous=False)
        self.progress = periodic_actions.ReportProgress(
            num_train_steps=num_steps, writer=self.writer, every_steps=log_every_steps,
            every_secs=None)
        self.pending: list[tuple[int, dict[str, Any]]] = []
        self.last_step, self.last_time = first_step, time.time()

    def add(self, step: int, metrics: dict[str, Any]) -> None:
        """Records the device metrics of the step that ended at ``step`` (no host sync)."""
        self.pending.append((step, metrics))
        self.progress(step)

    def flush(self) -> dict[str, float]:
        """Fetches pending metrics, raises on a non-finite loss, writes their means."""
        if not self.pending:
            return {}
        fetched = to_host([m for _, m in self.pending])  # replicated: any process count
        steps = [s for s, _ in self.pending]
        self.pending = []
        for step, metrics in zip(steps, fetched, strict=True):
            bad = [k for k in sorted(metrics, key=lambda k: -(_subnet_of(k) or 0))
                   if k.startswith('loss') and not math.isfinite(float(metrics[k]))]
            if bad:
                subnet = next((_subnet_of(k) for k in bad if _subnet_of(k) is not None), None)
                raise NonFiniteLossError(f'{self.name}: the loss of sub-network {subnet} became '
                                         f'non-finite at step {step}', step, subnet)
            if not metrics.get('params_finite', 1.0):
                raise NonFiniteLossError(f'{self.name}: the update of step {step} (the summed '
                                         'gradients of all sub-networks) made the parameters '
                                         'non-finite', step, None)
        means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]
                 if k != 'params_finite'}
        step, now = steps[-1], time.time()
        rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
        self.last_step, self.last_time = step, now
        scalars = {f'train/{k}': v for k, v in means.items()}
        scalars['train/steps_per_sec'] = rate
        self.writer.write_scalars(step, scalars)
        subnet_losses = ' '.join(f'{means[k]:.3f}' for k in sorted(
            (k for k in means if k.startswith('loss/')), key=_subnet_of))
        subnet_top1 = ' '.join(f'{means[k]:.3f}' for k in sorted(
            (k for k in means if k.startswith('top1/')), key=_subnet_of))
        eta = (self.num_steps - step) / rate if rate > 0 else float('inf')
        logging.info('[%s] step %d/%d (%.0f%%) loss %.4f | per sub-network (smallest first) '
                     'loss %s top1 %s | lr %.4g | %.2f steps/s, ETA %s', self.name, step,
                     self.num_steps, 100.0 * step / self.num_steps, means['loss'],
                     subnet_losses, subnet_top1, means['lr'], rate,
                     _format_eta(eta) if math.isfinite(eta) else '?')
        return means

    def write_eval(self, step: int, results: list[dict[str, Any]]) -> None:
        scalars = {}
        for r in results:
            scalars[f'eval/top1/subnet_{r["subnet"]}'] = r['top1']
            scalars[f'eval/top5/subnet_{r["subnet"]}'] = r['top5']
        self.writer.write_scalars(step, scalars)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
