"""The Colab notebook runs top to bottom on CPU (a failing cell fails this test), here with
`configs/tiny.py` made smaller still: it trains SP-Net, shows the report, runs every
sub-network and exports one (and checks the export's logits itself).

The baseline's curve and columns are tested in test_report.py; training the S-Net here too
would double this test's time.
"""

import json
import os

import nbformat
import pytest
from helpers import needs_fashion_mnist
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, 'notebooks', 'spnet_jax_colab.ipynb')
# One base and one keep ratio (two sub-networks), few steps, few test images.
OVERRIDES = {'base.widths': [0.5], 'prune.keep_ratios': [0.5], 'base.num_steps': 2,
             'slim.num_steps': 2, 'eval.eval_bases': False, 'eval.latency_batch': 4,
             'eval.latency_runs': 2, 'eval.latency_warmup': 1, 'data.num_eval_examples': 32}


@pytest.mark.slow  # 40-50 s: the whole notebook's recipe
@needs_fashion_mnist
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    workdir = tmp_path / 'run'
    monkeypatch.setenv('SPNET_NOTEBOOK_CONFIG', 'tiny')
    monkeypatch.setenv('SPNET_NOTEBOOK_BASELINE_CONFIG', '')
    monkeypatch.setenv('SPNET_NOTEBOOK_WORKDIR', str(workdir))
    monkeypatch.setenv('SPNET_NOTEBOOK_OVERRIDES', json.dumps(OVERRIDES))
    monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
    # The kernel inherits conftest's XLA_FLAGS (LLVM's lowest optimization level).
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(cell.get('outputs') for cell in notebook.cells), 'commit it without outputs'
    NotebookClient(notebook, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': ROOT}}).execute()

    def outputs(marker):
        cell = next(c for c in notebook.cells if c.cell_type == 'code' and marker in c.source)
        return cell.outputs

    text = lambda marker: ''.join(o.get('text', '') for o in outputs(marker))
    assert '1 cpu device(s)' in text('jax.devices()')
    # The report of the two sub-networks, as a table with latency, and the plot.
    report = json.loads((workdir / 'report.json').read_text())
    assert [r['subnet'] for r in report] == [0, 1] and report[0]['macs'] < report[1]['macs']
    assert all(r['latency_batch'] == 4 and r['latency_ms'] > 0 for r in report)
    assert not (workdir / 'report_baseline.json').exists()
    shown = outputs('report.md')
    table = shown[0]['data']['text/markdown'].splitlines()
    assert table[2] == ('| sub-network | MACs | params | top-1 | top-5 | '
                        'latency (ms / batch of 4) |')
    assert table[4].startswith(f"| 0 | {report[0]['macs'] / 1e6:.2f}M |")
    assert shown[1]['data']['image/png'] and (workdir / 'accuracy_vs_flops.png').exists()
    # Every sub-network ran, and the exported one equals it (the cell asserts it).
    ran = text('spnet_jax.load(WORKDIR)')
    assert 'sub-network 0:' in ran and 'sub-network 1:' in ran
    assert f"top-1 {100 * report[1]['top1']:.2f}%" in ran
    info = json.loads((tmp_path / 'run_export' / 'subnet_0' / 'export.json').read_text())
    assert info['subnet'] == 0 and info['macs'] == report[0]['macs']
    assert "The exported artifact gives the sub-network's logits" in text('jax.export')
