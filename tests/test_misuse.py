"""Misuse met with one sentence: damaged data archives and run files are named, a file of the
wrong kind is refused, and an unexpected failure is one line pointing at a full traceback."""

import gzip
import os
import shutil
import subprocess
import sys

import pytest
from helpers import FASHION_MNIST, needs_fashion_mnist

from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.data import fashion_mnist
from spnet_jax.workdir import convert_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
    return subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def copy_of_fashion_mnist(folder):
    os.makedirs(folder)
    for name in os.listdir(FASHION_MNIST):
        shutil.copy(os.path.join(FASHION_MNIST, name), folder)
    return folder


@needs_fashion_mnist
@pytest.mark.parametrize('damage', ['truncated', 'not gzip', 'labels of another split'])
def test_a_damaged_data_file_is_named_before_any_work(damage, tmp_path):
    data = copy_of_fashion_mnist(str(tmp_path / 'data'))
    images = os.path.join(data, 'train-images-idx3-ubyte.gz')
    if damage == 'truncated':
        content = open(images, 'rb').read()
        open(images, 'wb').write(content[:len(content) // 2])
        named = images
    elif damage == 'not gzip':
        open(images, 'wb').write(b'this is not a gzip file' * 100)
        named = images
    else:  # the test split's labels (10,000) beside the training images (60,000)
        shutil.copy(os.path.join(data, 't10k-labels-idx1-ubyte.gz'),
                    os.path.join(data, 'train-labels-idx1-ubyte.gz'))
        named = os.path.join(data, 'train-labels-idx1-ubyte.gz')
    fashion_mnist.load_split.cache_clear()
    workdir = tmp_path / 'run'
    done = run_main('--config=configs/tiny.py', f'--config.data.data_dir={data}',
                    f'--workdir={workdir}')
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith('error: ') and named in lines[0] and 'reinstall' in lines[0]
    assert not workdir.exists()


def test_a_damaged_structure_file_is_named(tmp_path):
    path = tmp_path / 'structure.json'
    path.write_text('{"arch": "resnet20", "meth')
    with pytest.raises(ConfigError, match=f'{path} is damaged .*rerun the stage that wrote it'):
        Structure.load(str(path))


def test_a_text_file_is_not_taken_for_a_checkpoint(tmp_path):
    for name in ('base.npz', 'base.pt'):
        path = tmp_path / name
        path.write_text('weights? no, a note\n')
        with pytest.raises(ConfigError, match=f'{path} is not a readable'):
            convert_torch.read_state_dict(str(path))


def run_tool_whose_main_is(code, workdir):
    """Runs a command-line tool that writes its workdir (evaluate's flags) through the entry
    wrapper with ``code`` defining its ``main``, in a fresh interpreter; returns the finished
    process. (A tool that only reads, as profile, keeps its log out of the workdir:
    test_reader_misuse.py.)"""
    script = ('from spnet_jax.cli import entry, evaluate\n' + code +
              'evaluate.main = main\nentry.run(evaluate)\n')
    return subprocess.run([sys.executable, '-c', script, f'--workdir={workdir}'], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'JAX_PLATFORMS': 'cpu'})


def test_an_unexpected_failure_is_one_line_with_the_traceback_kept(tmp_path):
    """A failure that is not bad input (here the tool's code breaks): one line naming it and
    the log that keeps the whole traceback."""
    done = run_tool_whose_main_is(
        'def main(argv):\n'
        '    raise RuntimeError("something inside broke")\n', tmp_path)
    lines = done.stderr.strip().splitlines()
    log = tmp_path / 'error.log'
    assert done.returncode == 1 and lines == [
        f'error: RuntimeError: something inside broke; the full traceback is in {log}.']
    assert 'Traceback' in log.read_text() and 'something inside broke' in log.read_text()


def test_library_noise_around_a_failure_goes_to_the_log_not_the_terminal(tmp_path):
    """Exceptions nobody can catch (as Orbax's abandoned asyncio readers raise "Event loop is
    closed" by the hundred after a damaged checkpoint) stay off the terminal: the one
    sentence is all it shows, the log keeps them."""
    done = run_tool_whose_main_is(
        'class Reader:\n'
        '    def __del__(self):\n'
        '        raise RuntimeError("Event loop is closed")\n'
        'def main(argv):\n'
        '    for _ in range(300):\n'
        '        Reader()\n'
        '    raise RuntimeError("the real failure")\n', tmp_path)
    log = tmp_path / 'error.log'
    assert done.stderr.strip().splitlines() == [
        f'error: RuntimeError: the real failure; the full traceback is in {log}.']
    assert log.read_text().count('Event loop is closed') == 300


@needs_fashion_mnist
def test_gzip_module_is_what_the_files_use():
    """The Debian package's files are gzip archives (the damage cases above rely on it)."""
    with gzip.open(os.path.join(FASHION_MNIST, 't10k-labels-idx1-ubyte.gz')) as fh:
        assert fh.read(4) == b'\x00\x00\x08\x01'
