"""Damaged or wrong files given as base networks (``--bases`` of prune and import_release) or
as the release checkpoint: one sentence naming the file, what is wrong and what it should
hold, before anything is written (issue 27)."""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from spnet_jax.core.errors import ConfigError
from spnet_jax.train import release_import
from spnet_jax.train.settings import Settings
from spnet_jax.workdir import convert_torch

ROOT = Path(__file__).resolve().parents[1]
WHAT_A_FILE_HOLDS = ("give the release's torch.save({'model': state_dict}) file (.pt/.pth) or "
                     'an .npz')


def tiny_settings():
    return Settings.from_config(importlib.import_module('configs.tiny').get_config())


def release_state(arch, width: float) -> dict[str, np.ndarray]:
    """A state dict with the keys and shapes of the release's checkpoint of ``arch`` at
    ``width`` (zeros): what a good base file holds."""
    base = arch.at_width(width)
    module = base.module(base.plain_structure())
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), np.zeros((1, 28, 28, 1))))
    return {k: np.zeros(s, np.float32) for k, s in convert_torch.release_shapes(
        base, shapes).items()}


def _torch():
    return pytest.importorskip('torch')


def _truncated(path, write):
    write(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


# name -> (write the bad file at path, what the sentence says is wrong)
BAD_FILES = {
    'truncated.npz': (lambda p: _truncated(p, lambda q: np.savez(q, a=np.zeros(64))),
                      'is not a readable .npz of a state dict (BadZipFile: '),
    'empty.npz': (lambda p: p.write_bytes(b''), 'is empty (0 bytes)'),
    'array.npz': (lambda p: p.write_bytes(_npy_bytes()),
                  'is not an .npz of a state dict: it holds one array of shape (3,)'),
    'empty.pt': (lambda p: p.write_bytes(b''), 'is empty (0 bytes)'),
    'truncated.pt': (lambda p: _truncated(p, lambda q: _torch().save(
        {'model': {'w': _torch().zeros(64)}}, q)), 'is not a readable PyTorch checkpoint ('),
    'list.pt': (lambda p: _torch().save([1, 2], p), 'holds a list of 2 item(s), not a state dict'),
    'tensor.pt': (lambda p: _torch().save(_torch().zeros(3), p),
                  'holds a tensor of shape (3,), not a state dict'),
    'module.pt': (lambda p: _torch().save(_torch().nn.Linear(2, 2), p),
                  'holds a whole Linear module, not its state dict'),
    'no_model.pt': (lambda p: _torch().save({'epoch': 3, 'optimizer': {}}, p),
                    "holds a dict without a 'model' entry (its keys: ['epoch', 'optimizer'])"),
    'model_list.pt': (lambda p: _torch().save({'model': [1]}, p),
                      "holds a dict whose 'model' entry is a list of 1 item(s), not a state dict"),
}


def _npy_bytes() -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, np.zeros(3))
    return out.getvalue()


def _one_sentence(message: str) -> str:
    assert '\n' not in message and message.endswith('.'), message
    return message


@pytest.mark.parametrize('name', sorted(BAD_FILES))
def test_a_bad_base_file_is_one_sentence_naming_it(name, tmp_path):
    write, problem = BAD_FILES[name]
    path = tmp_path / name
    write(path)
    settings = tiny_settings()
    with pytest.raises(ConfigError) as refused:
        release_import.read_base(str(path), settings.arch, 0.25)
    message = _one_sentence(str(refused.value))
    assert message.startswith(f'--bases: base checkpoint {path} (width 0.25) {problem}'), message
    assert WHAT_A_FILE_HOLDS in message and 'Orbax stage folder' in message, message
    # import_release's --checkpoint reads files with the same reader, in the same words.
    with pytest.raises(ConfigError) as refused:
        release_import.read_checkpoint(str(path))
    message = _one_sentence(str(refused.value))
    assert message.startswith(f'--checkpoint={path} {problem}'), message
    assert WHAT_A_FILE_HOLDS in message, message


def test_bad_base_paths_and_other_networks_are_one_sentence_naming_them(tmp_path):
    arch = tiny_settings().arch

    def refused(path, width=0.25):
        with pytest.raises(ConfigError) as e:
            release_import.read_base(str(path), arch, width)
        message = _one_sentence(str(e.value))
        assert message.startswith(f'--bases: base checkpoint {path} (width {width}) '), message
        return message

    assert refused(tmp_path / 'missing.pt').endswith('does not exist.')
    (tmp_path / 'folder').mkdir()
    assert 'is a folder but no stage folder of main.py (it has no structure.json)' in refused(
        tmp_path / 'folder')
    stage = tmp_path / 'run' / 'base_0.25'
    stage.mkdir(parents=True)
    (stage / 'structure.json').write_text('{}')
    assert "is a workdir, not a stage folder; give its base network's folder, " \
        f'{stage}.' in refused(tmp_path / 'run')
    assert 'is a stage whose training has not finished (it has no done.json)' in refused(stage)
    # Readable files of another network: the key or the shape that differs, with the file.
    np.savez(tmp_path / 'other.npz', **{'features.99.weight': np.zeros(3)})
    assert "is not a resnet20 network (checkpoint key 'features.99.weight' is not part of " \
        'resnet20); check the path and model.name.' in refused(tmp_path / 'other.npz')
    np.savez(tmp_path / 'wide.npz', **release_state(arch, 0.5))
    assert 'does not match resnet20 at width 0.25' in refused(tmp_path / 'wide.npz')
    # The same file at its own width is read.
    variables = release_import.read_base(str(tmp_path / 'wide.npz'), arch, 0.5)
    assert set(variables) == {'params', 'batch_stats'}


def run(module, *args):
    return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def test_prune_and_import_refuse_a_damaged_base_before_writing(tmp_path):
    arch = tiny_settings().arch
    good = tmp_path / 'base_0.5.npz'
    np.savez(good, **release_state(arch, 0.5))
    damaged = tmp_path / 'base_0.25.npz'
    BAD_FILES['truncated.npz'][0](damaged)
    bases = f'--bases=0.25={damaged},0.5={good}'
    expected = (f'error: --bases: base checkpoint {damaged} (width 0.25) is not a readable .npz '
                'of a state dict (BadZipFile: File is not a zip file); ')
    for module, args in (('spnet_jax.prune', ()),
                         ('spnet_jax.import_release', (f'--checkpoint={good}',))):
        out = tmp_path / module
        done = run(module, '--config=configs/tiny.py', f'--workdir={out}', bases, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
        assert lines[0].startswith(expected), lines[0]
        assert not out.exists()


def test_a_pt_file_without_torch_says_so_naming_it(tmp_path, monkeypatch):
    path = tmp_path / 'base.pt'
    path.write_bytes(b'PK\x03\x04 not read without torch')
    monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` fails as if absent
    with pytest.raises(ConfigError) as refused:
        release_import.read_checkpoint(str(path))
    assert _one_sentence(str(refused.value)) == (
        f'--checkpoint={path} is a PyTorch file, and reading it needs PyTorch: pip install '
        'torch (only this import uses it), or give an .npz of its state dict.')
