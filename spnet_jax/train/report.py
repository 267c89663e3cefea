"""The final report: ``report.json`` (one object per sub-network), a Markdown table, a plot."""

from __future__ import annotations

import os
from typing import Any

import jax
from absl import logging

from spnet_jax.cost import subnet_costs
from spnet_jax.structure import Structure
from spnet_jax.train import checkpoint


def report_rows(arch, structure: Structure, results: list[dict[str, Any]],
                input_shape: tuple[int, int, int], *,
                bn_calibration_batches: int = 0) -> list[dict[str, Any]]:
    """Joins eval results with MACs/params per sub-network, smallest first."""
    costs = subnet_costs(arch, structure, input_shape[0], input_shape[2])
    rows = []
    for result, cost in zip(results, costs, strict=True):
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
            'bn_calibration_batches': int(bn_calibration_batches),
        })
    return rows


def _human(n: float) -> str:
    for unit, div in (('G', 1e9), ('M', 1e6), ('K', 1e3)):
        if n >= div:
            return f'{n / div:.2f}{unit}'
    return str(int(n))


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ['| sub-network | width | MACs | params | top-1 | top-5 |',
             '|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        width = '' if r['width'] is None else f'{r["width"]:g}'
        lines.append(f'| {r["subnet"]} | {width} | {_human(r["macs"])} | '
                     f'{_human(r["params"])} | {100 * r["top1"]:.2f}% | {100 * r["top5"]:.2f}% |')
    return '\n'.join(lines) + '\n'


def write_report(workdir: str, rows: list[dict[str, Any]], title: str) -> None:
    """``report.json``, ``report.md`` and (if matplotlib works) ``report.png``."""
    if jax.process_index() != 0:
        return
    checkpoint.write_json(os.path.join(workdir, 'report.json'), rows)
    with open(os.path.join(workdir, 'report.md'), 'w') as fh:
        fh.write(f'# {title}\n\n{markdown_table(rows)}')
    try:
        import matplotlib

        matplotlib.use('Agg')
        from matplotlib import pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([r['macs'] / 1e6 for r in rows], [100 * r['top1'] for r in rows], 'o-')
        ax.set_xlabel('MACs (M)')
        ax.set_ylabel('top-1 accuracy (%)')
        ax.set_title(title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(workdir, 'report.png'), dpi=120)
        plt.close(fig)
    except Exception as e:  # the plot is a convenience; the JSON is the report
        logging.warning('Could not draw report.png: %s', e)
