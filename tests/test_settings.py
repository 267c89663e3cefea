"""The config parsed once into typed settings: every field declared and checked, settings
immutable, runs saved before a field existed still read, and the command-line tools' config
mistakes met with one sentence."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from spnet_jax.core.errors import ConfigError
from spnet_jax.train.settings import LEGACY_DEFAULTS, Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import default, fashion_mnist  # noqa: E402


def test_settings_mirror_the_config_and_are_frozen():
    config = fashion_mnist.get_config()
    s = Settings.from_config(config)
    assert (s.model.name, s.slim.lr, s.base.widths, s.prune.keep_ratios) == (
        'resnet20', config.slim.lr, tuple(config.base.widths), tuple(config.prune.keep_ratios))
    assert s.data.image_size == 28 and s.stages == ('base', 'prune', 'slim', 'eval')
    assert s.arch.name == 'resnet20' and s.arch.full_width == 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.slim.lr = 1.0  # noqa - what is checked cannot change afterwards
    # The saved form reads back to equal settings.
    assert Settings.from_config(s.to_json()) == s


def test_every_field_the_code_reads_is_declared_in_default():
    """A field missing from a config is refused by name (only fields added after runs were
    saved have a legacy default)."""
    config = default.get_config()
    for section, field in [('slim', 'kd_alpha'), ('eval', 'bn_calibration_batches'),
                           ('base', 'warmup_epochs'), ('config', 'prefetch')]:
        saved = json.loads(config.to_json_best_effort())
        del (saved if section == 'config' else saved[section])[field]
        with pytest.raises(ConfigError, match=f'{section}.{field} is missing from the config'):
            Settings.from_config(saved)
    data_fields = set(default.get_config().data.keys())
    assert {'train_split', 'eval_split', 'shuffle_buffer'} <= data_fields


def test_a_config_saved_before_newer_fields_still_reads():
    saved = json.loads(fashion_mnist.get_config().to_json_best_effort())
    for section, field in LEGACY_DEFAULTS:
        saved[section].pop(field, None)
    s = Settings.from_config(saved)
    assert (s.base.optimizer, s.slim.optimizer, s.slim.drop_scaffold) == ('sgd', 'sgd', False)
    assert (s.eval.latency_batch, s.eval.latency_runs, s.eval.baseline_workdir) == (32, 10, None)


@pytest.mark.parametrize('args,message', [
    (['--config=configs/no_such_file.py'], '--config could not be loaded'),
    (['--config=configs/tiny.py', '--config.no_such_field=1'],
     '--config.no_such_field is not a field of the config'),
    (['--config=configs/tiny.py', '--config.slim.lr=fast'], 'slim.lr'),
    (['--config=configs/tiny.py', '--config.slim.optimizer=adam'],
     "slim.optimizer='adam' is unknown"),
    (['--config=configs/tiny.py', '--config.slim.init_from_base=True'],
     'slim.init_from_base=True starts an S-Net from a trained base; an SP-Net starts'),
    (['--config=configs/tiny.py:snet', '--config.slim.init_from_base=True',
      '--config.stages=base,slim,eval'],
     'the base of its full width, but base.widths=(0.25, 0.5); set base.widths=(0.5,).'),
])
def test_config_mistakes_are_one_sentence_before_anything_is_written(args, message, tmp_path):
    workdir = tmp_path / 'run'
    done = subprocess.run([sys.executable, 'main.py', *args, f'--workdir={workdir}'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith('error: ') and message in lines[0], lines[0]
    assert not workdir.exists()
