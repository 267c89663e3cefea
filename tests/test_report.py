"""The eval stage's report: per sub-network top-1/top-5 (equal to the loaded network's own
predictions), MACs/params (equal to the profiler's), measured latency; the baseline beside
it in the table, the JSON and the accuracy-vs-FLOPs plot; `python -m spnet_jax.evaluate`."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import needs_fashion_mnist, random_variables

import spnet_jax
from spnet_jax import data as data_lib
from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.models import arch_from_config, get_arch
from spnet_jax.pruning import prune
from spnet_jax.train import report as report_lib
from spnet_jax.train import validate
from spnet_jax.train.settings import Settings
from spnet_jax.train.stages import evaluate_workdir
from spnet_jax.workdir import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import tiny  # noqa: E402

# A baseline run's report, as its eval stage wrote it (S-Net widths 0.25 / 0.5).
BASELINE_ROWS = [
    {'subnet': 0, 'width': 0.25, 'macs': 1_960_000, 'params': 17_460, 'top1': 0.625,
     'top5': 0.9, 'latency_ms': 1.5, 'latency_batch': 4},
    {'subnet': 1, 'width': 0.5, 'macs': 7_780_000, 'params': 68_640, 'top1': 0.75,
     'top5': 0.95, 'latency_ms': 2.25, 'latency_batch': 4}]


def _config():
    config = tiny.get_config()
    config.data.num_eval_examples = 64
    config.eval.batch_size = 32
    config.eval.latency_batch = 4
    config.eval.latency_runs = 3
    config.eval.latency_warmup = 1
    return config


@pytest.fixture(scope='module')
def baseline(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('snet')
    arch = get_arch('resnet20', num_classes=10, full_width=0.5, stem='small')
    (workdir / 'slim').mkdir()
    arch.snet_structure((0.25, 0.5)).save(str(workdir / 'slim' / 'structure.json'))
    (workdir / 'report.json').write_text(json.dumps(BASELINE_ROWS))
    return workdir


@pytest.fixture(scope='module')
def evaluated(tmp_path_factory, baseline):
    """A finished SP-Net workdir (random ZPM-pruned ResNet-20 x0.5, two sub-networks, saved as
    slim/ with tiny.py's config), evaluated by `spnet_jax.evaluate` with the baseline."""
    workdir = tmp_path_factory.mktemp('spnet')
    config = _config()
    arch = arch_from_config(config.model)
    x = jnp.zeros((1, 28, 28, 1))
    base = random_variables(arch.module(arch.plain_structure()), x, seed=1)
    structure, variables, _ = prune(arch, [base], [0.5], keep_ratios=[0.5], image_size=28,
                                    in_channels=1, zpm='release', round_to=1)
    checkpoint.save_network(str(workdir / 'slim'), structure, variables, config, step=4)
    rows = evaluate_workdir(str(workdir), baseline_workdir=str(baseline))
    return workdir, config, arch, structure, rows


@needs_fashion_mnist
def test_report_agrees_with_the_profiler_and_the_networks_predictions(evaluated):
    workdir, config, arch, structure, rows = evaluated
    assert json.loads((workdir / 'report.json').read_text()) == rows
    costs = subnet_costs(arch, structure, 28, 1)
    assert [r['subnet'] for r in rows] == [0, 1]
    assert [(r['macs'], r['params'], r['channels']) for r in rows] == [
        (c.macs, c.params, c.channels) for c in costs]
    assert rows[0]['macs'] < rows[1]['macs']
    # Accuracy: the fraction of the 64 test images the loaded network itself gets right.
    (batch,) = list(data_lib.eval_batches(config.data, global_batch_size=64))
    assert batch['mask'].all()
    net = spnet_jax.load(workdir)
    for r in rows:
        logits = np.asarray(net(batch['image'], subnet=r['subnet'], normalized=True))
        top5 = np.argsort(-logits, axis=1)[:, :5]
        assert r['top1'] == np.mean(logits.argmax(1) == batch['label'])
        assert r['top5'] == np.mean((top5 == batch['label'][:, None]).any(1))
        assert r['num_eval_examples'] == 64
        assert r['latency_batch'] == 4 and r['latency_ms'] > 0
        assert r['latency_device'] == jax.local_devices()[0].device_kind
    # What `spnet_jax.load` shows is what the report says.
    for sub, r in zip(net.subnets, rows, strict=True):
        assert (sub['top1'], sub['top5'], sub['latency_ms']) == (r['top1'], r['top5'],
                                                                 r['latency_ms'])
    assert (workdir / 'eval' / 'done.json').exists()


@needs_fashion_mnist
def test_baseline_joins_the_table_the_json_and_the_plot(evaluated, baseline):
    workdir, *_, rows = evaluated
    saved = json.loads((workdir / 'report_baseline.json').read_text())
    assert saved == {'workdir': str(baseline), 'label': 'S-Net', 'rows': BASELINE_ROWS}
    table = (workdir / 'report.md').read_text().splitlines()
    assert table[0] == '# SP-Net resnet20 on fashion_mnist (vs S-Net)'
    header = table[2].split(' | ')
    assert header[1] == 'SP-Net MACs' and 'S-Net top-1' in header and 'S-Net width' in header
    assert table[4].endswith('| 0 | 0.25 | 1.96M | 17.46K | 62.50% | 90.00% | 1.50 |')
    assert table[5].endswith('| 1 | 0.5 | 7.78M | 68.64K | 75.00% | 95.00% | 2.25 |')
    png = (workdir / 'accuracy_vs_flops.png').read_bytes()
    assert png.startswith(b'\x89PNG') and not (workdir / 'report.png').exists()


def test_plot_has_one_curve_per_run():
    rows = [{'subnet': 0, 'macs': 6_000_000, 'top1': 0.875},
            {'subnet': 1, 'macs': 31_000_000, 'top1': 0.9}]
    fig = report_lib.accuracy_vs_flops([('SP-Net', rows), ('S-Net', BASELINE_ROWS)], 'title')
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.lines] == ['SP-Net', 'S-Net']
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [6.0, 31.0])
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [87.5, 90.0])
    np.testing.assert_allclose(ax.lines[1].get_xdata(), [1.96, 7.78])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [62.5, 75.0])
    assert ax.get_xscale() == 'log'


def test_markdown_table_without_and_with_a_baseline():
    rows = [{'subnet': 0, 'width': None, 'macs': 6_018_309, 'params': 57_651, 'top1': 0.8774,
             'top5': 0.9981, 'latency_ms': 1.234, 'latency_batch': 32},
            {'subnet': 1, 'width': None, 'macs': 31_021_952, 'params': 272_186,
             'top1': 0.8822, 'top5': 0.9982, 'latency_ms': 4.5, 'latency_batch': 32}]
    assert report_lib.markdown_table(rows).splitlines() == [
        '| sub-network | MACs | params | top-1 | top-5 | latency (ms / batch of 32) |',
        '|---:|---:|---:|---:|---:|---:|',
        '| 0 | 6.02M | 57.65K | 87.74% | 99.81% | 1.23 |',
        '| 1 | 31.02M | 272.19K | 88.22% | 99.82% | 4.50 |']
    three = BASELINE_ROWS + [{**BASELINE_ROWS[1], 'subnet': 2, 'width': 1.0, 'macs': 3.1e7}]
    lines = report_lib.markdown_table(rows, ('S-Net', three), 'SP-Net').splitlines()
    assert lines[0].startswith('| SP-Net sub-network | SP-Net MACs |')
    assert lines[0].endswith('| S-Net top-5 | S-Net latency (ms / batch of 4) |')
    assert lines[4] == '|  |  |  |  |  |  | 2 | 1 | 31.00M | 68.64K | 75.00% | 95.00% | 2.25 |'


def test_report_without_baseline_drops_an_earlier_comparison(tmp_path, baseline):
    rows = [{**r, 'width': None} for r in BASELINE_ROWS]
    report_lib.write_report(str(tmp_path), rows, 't', method='spnet',
                            baseline_workdir=str(baseline))
    assert (tmp_path / 'report_baseline.json').exists()
    report_lib.write_report(str(tmp_path), rows, 't', method='spnet')
    assert not (tmp_path / 'report_baseline.json').exists()
    assert 'S-Net' not in (tmp_path / 'report.md').read_text()
    # Two runs of one method are told apart by their folders.
    report_lib.write_report(str(tmp_path), rows, 't', method='snet',
                            baseline_workdir=str(baseline))
    header = (tmp_path / 'report.md').read_text().splitlines()[2]
    assert f'S-Net ({tmp_path.name}) top-1' in header
    assert f'S-Net ({baseline.name}) top-1' in header


def test_option_errors_are_one_sentence(tmp_path, baseline):
    config = _config()
    config.eval.latency_batch = -1
    with pytest.raises(ConfigError, match=r'^eval.latency_batch=-1 must be an integer >= 0 '
                                          r'\(0: no latency measurement\)\.$'):
        Settings.from_config(config)
    config.eval.latency_batch = 0
    config.eval.baseline_workdir = str(tmp_path / 'nowhere')
    with pytest.raises(ConfigError, match='baseline_workdir=.* is not a directory'):
        validate.check_workdir(Settings.from_config(config), str(tmp_path / 'run'))
    with pytest.raises(ConfigError, match=r'has no report.json; finish that run or evaluate '
                                          r'it first \(python -m spnet_jax.evaluate'):
        report_lib.write_report(str(tmp_path), [], 't', baseline_workdir=str(tmp_path))
    assert not (tmp_path / 'report.json').exists()  # nothing written on error
    with pytest.raises(ConfigError, match=r'has no slimmable network with its config'):
        evaluate_workdir(str(baseline))


def test_evaluate_command_refuses_a_folder_without_a_run(tmp_path):
    done = subprocess.run([sys.executable, '-m', 'spnet_jax.evaluate', f'--workdir={tmp_path}'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f'error: {tmp_path} has no slimmable network with its config '
        f'({tmp_path}/slim/config.json); give the --workdir of a main.py run whose slim stage '
        'has finished.')


def test_latency_spread_is_measured_and_reported():
    from spnet_jax.train import evaluation
    arch = get_arch('resnet20', num_classes=10, stem='small', full_width=0.25)
    structure = arch.snet_structure((0.125, 0.25))
    model = arch.module(structure)
    variables = random_variables(model, jnp.zeros((1, 16, 16, 1)), seed=0)
    timed = evaluation.measure_latency(model, variables, 2, (16, 16, 1), 4, runs=5)
    assert all(t['latency_spread'] >= 0 and t['latency_ms'] > 0 for t in timed)
    rows = [{'subnet': k, 'macs': m, 'latency_ms': ms, 'latency_batch': 4,
             'latency_device': 'cpu', 'latency_spread': s}
            for k, (m, ms, s) in enumerate([(1e6, 1.0, 0.02), (4e6, 3.0, 0.13)])]
    assert 'The runs spread by up to 13% (interquartile range over median).' in (
        report_lib.latency_note(rows))
