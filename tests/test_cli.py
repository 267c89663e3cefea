"""The small command-line tools: profile and prune, as a user runs them."""

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import reference_case

from spnet_jax.cli.profile import profile_config
from spnet_jax.core.cost import subnet_costs
from spnet_jax.models import get_arch

ROOT = Path(__file__).resolve().parents[1]


def run(module, *args):
    return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def load_config(name):
    return importlib.import_module(f'configs.{name}').get_config()


def test_profile_json_lists_every_snet_width_smallest_first():
    done = run('spnet_jax.profile', '--config=configs/resnet50_snet.py', '--json')
    assert done.returncode == 0, done.stderr
    # Nothing but the answer: no library INFO lines (XLA's "Unable to initialize backend
    # 'tpu'" used to precede every command's output).
    assert 'Unable to initialize backend' not in done.stderr, done.stderr
    rows = json.loads(done.stdout)
    assert [r['subnet'] for r in rows] == [0, 1, 2]
    assert [r['width'] for r in rows] == [0.5, 0.75, 1.0]
    assert all(isinstance(r['macs'], int) and isinstance(r['params'], int) for r in rows)
    assert rows[-1]['macs'] == 4_089_184_256 and rows[-1]['params'] == 25_557_032
    table = run('spnet_jax.profile', '--config=configs/resnet50_snet.py')
    assert '4089.2M' in table.stdout and 'MACs' in table.stdout


@pytest.mark.parametrize('name,widths', [('vgg19_snet', (0.25, 0.5, 1.0)),
                                         ('mobilenet_v1_snet', (0.5, 0.75, 1.0)),
                                         ('mobilenet_v2_snet', (0.75, 1.0, 1.3))])
def test_snet_configs_have_the_release_widths(name, widths):
    config = load_config(name)
    _, rows, _ = profile_config(config)
    assert tuple(r['width'] for r in rows) == widths
    arch = get_arch(config.model.name, full_width=widths[-1])
    costs = subnet_costs(arch, arch.snet_structure(widths), 224)
    assert [r['macs'] for r in rows] == [c.macs for c in costs]
    assert rows[0]['macs'] < rows[1]['macs'] < rows[2]['macs']


def test_profile_bad_input_is_one_sentence():
    done = run('spnet_jax.profile', '--config=configs/resnet50_snet.py',
               '--config.model.name=resnet7')
    assert done.returncode == 2
    assert done.stderr.strip().count('\n') == 0
    assert "model.name='resnet7' is unknown" in done.stderr


def test_prune_refuses_bad_bases(tmp_path):
    missing = run('spnet_jax.prune', '--config=configs/resnet50.py', f'--workdir={tmp_path}',
                  '--bases=0.75=/nonexistent/a.pt,1.0=/nonexistent/b.pt')
    assert missing.returncode == 2
    assert 'does not exist' in missing.stderr and '/nonexistent/a.pt' in missing.stderr
    wrong_widths = run('spnet_jax.prune', '--config=configs/resnet50.py',
                       f'--workdir={tmp_path}', f'--bases=0.5={tmp_path},1.0={tmp_path}')
    assert wrong_widths.returncode == 2
    assert 'base.widths' in wrong_widths.stderr
    # A VGG checkpoint given as ResNet-50 bases.
    vgg = reference_case('vgg19_cifar_singlebase') / 'base_1.0_bn.npz'
    other = run('spnet_jax.prune', '--config=configs/resnet50.py', f'--workdir={tmp_path}',
                f'--bases=0.75={vgg},1.0={vgg}')
    assert other.returncode == 2
    assert 'resnet50' in other.stderr and other.stderr.strip().count('\n') == 0


def test_profile_times_each_subnetwork_against_the_full_network():
    done = run('spnet_jax.profile', '--config=configs/fashion_mnist_snet.py', '--json',
               '--latency_batch=64', '--latency_runs=3')
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r['width'] for r in rows] == [0.5, 0.75, 1.0]
    for r in rows:
        assert r['latency_batch'] == 64 and r['latency_device'] == 'cpu'
        assert r['latency_rounds'] >= 3 and r['latency_spread'] >= 0
    # x0.5 computes a quarter of x1.0's MACs: on any machine it takes less time.
    assert rows[0]['latency_ms'] < rows[-1]['latency_ms']
    bad = run('spnet_jax.profile', '--config=configs/fashion_mnist_snet.py', '--latency_runs=1',
              '--latency_batch=8')
    assert bad.returncode == 2 and bad.stderr.strip().count('\n') == 0
    assert '--latency_runs=1 >= 2' in bad.stderr
