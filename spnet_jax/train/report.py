"""The final report of a workdir: ``report.json`` (one object per sub-network), ``report.md``
(a Markdown table, and a sentence on what its latency column measured: it says so when the
sub-networks time alike although their MACs differ) and ``accuracy_vs_flops.png`` (top-1
against MACs).

Given the workdir of a baseline run (``eval.baseline_workdir``, e.g. the S-Net of the same
model), the table gains the baseline's columns, the plot its curve, and
``report_baseline.json`` keeps a copy of the baseline's rows.
"""

from __future__ import annotations

import os
from typing import Any

import jax
from absl import logging

from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.workdir import checkpoint

REPORT, TABLE, PLOT, BASELINE = ('report.json', 'report.md', 'accuracy_vs_flops.png',
                                 'report_baseline.json')
METHOD_NAMES = {'spnet': 'SP-Net', 'snet': 'S-Net'}


def report_rows(arch, structure: Structure, results: list[dict[str, Any]],
                input_shape: tuple[int, int, int], *, bn_calibration_batches: int = 0,
                latency: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Joins eval results (and latencies) with MACs/params per sub-network, smallest first."""
    costs = subnet_costs(arch, structure, input_shape[0], input_shape[2])
    latency = latency or [{}] * len(costs)
    rows = []
    for result, cost, timed in zip(results, costs, latency, strict=True):
        k = result['subnet']
        rows.append({
            'subnet': k,
            'width': None if structure.widths is None else structure.widths[k],
            'macs': int(cost.macs),
            'params': int(cost.params),
            'channels': int(cost.channels),
            'top1': float(result['top1']),
            'top5': float(result['top5']),
            'num_eval_examples': int(result['num_examples']),
            'images_per_sec': result.get('images_per_sec'),
            'latency_ms': timed.get('latency_ms'),
            'latency_spread': timed.get('latency_spread'),
            'latency_batch': timed.get('latency_batch'),
            'latency_device': timed.get('latency_device'),
            'bn_calibration_batches': int(bn_calibration_batches),
        })
    return rows


def _human(n: float) -> str:
    for unit, div in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if n >= div:
            return f'{n / div:.2f}{unit}'
    return str(int(n))


def _cells(row: dict[str, Any] | None, width: bool, latency: bool) -> list[str]:
    if row is None:
        return [''] * (5 + width + latency)
    cells = [str(row['subnet']), _human(row['macs']), _human(row['params']),
             f'{100 * row["top1"]:.2f}%', f'{100 * row["top5"]:.2f}%']
    if width:
        cells.insert(1, '' if row.get('width') is None else f'{row["width"]:g}')
    if latency:
        ms = row.get('latency_ms')
        cells.append('' if ms is None else f'{ms:.2f}')
    return cells


def _latency_header(rows: list[dict[str, Any]]) -> str | None:
    timed = [r for r in rows if r.get('latency_ms') is not None]
    if not timed:
        return None
    return f'ms / batch of {timed[0]["latency_batch"]}'


def latency_note(rows: list[dict[str, Any]]) -> str | None:
    """One sentence on what the latency column measured; it says plainly when the
    sub-networks time alike although their MACs differ (less than a quarter of the MACs'
    ratio shows in the time: the device spends it on work that does not shrink with the MACs,
    and the column does not rank them)."""
    timed = sorted((r for r in rows if r.get('latency_ms') is not None and r.get('macs')),
                   key=lambda r: r['macs'])
    if not timed:
        return None
    first = timed[0]
    device = first.get('latency_device') or 'one device'
    note = (f'Latency: median wall time of one jitted forward pass of a batch of '
            f'{first["latency_batch"]} images on {device}.')
    spreads = [r['latency_spread'] for r in timed if r.get('latency_spread') is not None]
    if spreads:
        note += (f' The runs spread by up to {100 * max(spreads):.0f}% (interquartile range '
                 'over median).')
    if len(timed) < 2:
        return note
    small, large = timed[0], timed[-1]
    macs_ratio = large['macs'] / small['macs']
    time_ratio = large['latency_ms'] / max(small['latency_ms'], 1e-9)
    if macs_ratio >= 1.5 and time_ratio - 1 < 0.25 * (macs_ratio - 1):
        note += (f' The sub-networks time alike although their MACs differ '
                 f'(x{macs_ratio:.1f} MACs, x{time_ratio:.2f} time from sub-network '
                 f'{small["subnet"]} to {large["subnet"]}): on this device, at this batch, the '
                 f'time goes to work that does not shrink with the MACs (per-operation '
                 f'overhead, memory-bound element-wise layers, narrow convolutions), so this '
                 f'column does not rank them; time a larger batch (eval.latency_batch) or the '
                 f'target device.')
    else:
        note += (f' From sub-network {small["subnet"]} to {large["subnet"]}: '
                 f'x{macs_ratio:.1f} MACs, x{time_ratio:.2f} time.')
    return note


def markdown_table(rows: list[dict[str, Any]],
                   baseline: tuple[str, list[dict[str, Any]]] | None = None,
                   label: str | None = None) -> str:
    """One line per sub-network, smallest first; with ``baseline = (its label, its rows)``,
    the baseline's sub-networks in extra columns beside this run's (``label``)."""
    tables = [(label, rows)] + ([baseline] if baseline else [])
    header, shown = [], []
    for name, table_rows in tables:
        width = any(r.get('width') is not None for r in table_rows)  # S-Net width labels
        latency = _latency_header(table_rows)
        names = (['sub-network'] + (['width'] if width else []) +
                 ['MACs', 'params', 'top-1', 'top-5'] +
                 ([f'latency ({latency})'] if latency else []))
        if baseline and name:
            names = [f'{name} {n}' for n in names]
        header += names
        shown.append((width, latency is not None))
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---:|' * len(header)]
    for i in range(max(len(t) for _, t in tables)):
        cells = []
        for (_, table_rows), (width, latency) in zip(tables, shown, strict=True):
            cells += _cells(table_rows[i] if i < len(table_rows) else None, width, latency)
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def read_baseline(workdir: str) -> tuple[str, list[dict[str, Any]]]:
    """``(label, rows)`` of a finished run's report, for the comparison; the label names its
    method (``S-Net``, ``SP-Net``) as its slimmable network's structure records it."""
    path = os.path.join(workdir, REPORT)
    if not os.path.isdir(workdir):
        raise ConfigError(f'eval.baseline_workdir={workdir!r} is not a directory; give the '
                          'workdir of a finished baseline run (e.g. configs/*_snet.py).')
    if not os.path.exists(path):
        raise ConfigError(f'eval.baseline_workdir={workdir!r} has no {REPORT}; finish that run '
                          f'or evaluate it first (python -m spnet_jax.evaluate '
                          f'--workdir={workdir}).')
    return method_label(workdir), checkpoint.read_json(path)


def method_label(workdir: str) -> str:
    structure = os.path.join(workdir, 'slim', checkpoint.STRUCTURE)
    if os.path.exists(structure):
        method = Structure.load(structure).method
        return METHOD_NAMES.get(method, method)
    return os.path.basename(os.path.normpath(workdir))


def accuracy_vs_flops(curves: list[tuple[str, list[dict[str, Any]]]], title: str):
    """A matplotlib figure: top-1 (%) against MACs (millions, log axis), one line per
    ``(label, rows)`` curve, each point marked with its sub-network index."""
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for (label, rows), marker in zip(curves, 'os^Dv', strict=False):
        macs = [r['macs'] / 1e6 for r in rows]
        top1 = [100 * r['top1'] for r in rows]
        ax.plot(macs, top1, f'{marker}-', label=label)
        for r, x, y in zip(rows, macs, top1, strict=True):
            ax.annotate(str(r['subnet']), (x, y), textcoords='offset points', xytext=(4, -10),
                        fontsize=7, alpha=0.7)
    ax.set_xscale('log')
    plain = ticker.FuncFormatter(lambda value, _: f'{value:g}')
    ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 3.0, 5.0)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel('MACs per image (millions, log scale)')
    ax.set_ylabel('top-1 accuracy (%)')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which='both')
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    return fig


def write_report(workdir: str, rows: list[dict[str, Any]], title: str, *,
                 method: str | None = None, baseline_workdir: str | None = None) -> None:
    """``report.json``, ``report.md``, ``accuracy_vs_flops.png`` (if matplotlib works) and,
    with ``baseline_workdir``, ``report_baseline.json``; from process 0 only."""
    baseline = read_baseline(baseline_workdir) if baseline_workdir else None
    if jax.process_index() != 0:
        return
    label = METHOD_NAMES.get(method, method) if method else None
    if baseline and baseline[0] == label:  # two runs of one method: name them by folder
        label = f'{label} ({os.path.basename(os.path.normpath(workdir))})'
        baseline = (f'{baseline[0]} ({os.path.basename(os.path.normpath(baseline_workdir))})',
                    baseline[1])
    if baseline:
        title = f'{title} (vs {baseline[0]})'
    checkpoint.write_json(os.path.join(workdir, REPORT), rows)
    baseline_path = os.path.join(workdir, BASELINE)
    if baseline:
        checkpoint.write_json(baseline_path, {'workdir': os.path.abspath(baseline_workdir),
                                              'label': baseline[0], 'rows': baseline[1]})
    elif os.path.exists(baseline_path):  # from an earlier evaluation with a baseline
        os.remove(baseline_path)
    table = os.path.join(workdir, TABLE)
    with open(f'{table}.tmp{os.getpid()}', 'w') as fh:
        fh.write(f'# {title}\n\n{markdown_table(rows, baseline, label)}')
        for name, table_rows in [(label, rows)] + ([baseline] if baseline else []):
            note = latency_note(table_rows)
            if note:
                fh.write(f'\n{f"{name}: " if baseline and name else ""}{note}\n')
    os.replace(f'{table}.tmp{os.getpid()}', table)  # atomic, as the JSON
    curves = [(label or 'this run', rows)] + ([baseline] if baseline else [])
    try:
        from matplotlib import pyplot as plt

        fig = accuracy_vs_flops(curves, title)
        plot = os.path.join(workdir, PLOT)
        fig.savefig(f'{plot}.tmp{os.getpid()}', dpi=120, format='png')
        plt.close(fig)
        os.replace(f'{plot}.tmp{os.getpid()}', plot)
    except Exception as e:  # the plot is a convenience; the JSON is the report
        logging.warning('Could not draw %s: %s', PLOT, e)
