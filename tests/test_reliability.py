"""What survives a crash: SIGKILL mid-stage, damaged checkpoints, checkpoints of another
network, and two processes training together (configs/tiny.py on real Fashion-MNIST)."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from absl import logging as absl_logging
from helpers import flip_bytes, host_devices_flags, needs_fashion_mnist, truncate

from spnet_jax.core.errors import ConfigError
from spnet_jax.models import arch_from_config
from spnet_jax.train import loop, train_and_evaluate
from spnet_jax.train.settings import Settings
from spnet_jax.workdir import checkpoint, integrity

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import tiny  # noqa: E402

pytestmark = [needs_fashion_mnist, pytest.mark.usefixtures('compilation_cache')]



def snet_slim_config(num_steps=6, widths=(0.25, 0.5)):
    config = tiny.get_config('snet')
    config.stages = 'slim'
    config.slim.num_steps = num_steps
    config.slim.widths = widths
    config.eval.eval_bases = False
    return config


def flat(tree):
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_same_bits(got, want):
    got, want = flat(got), flat(want)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


class Crash(RuntimeError):
    pass


def crash_after(monkeypatch, batches):
    """The first run's data pipeline dies after yielding ``batches`` batches; records the
    start step of every run."""
    real = loop.data_lib.train_batches
    starts = []

    def crashing(*args, **kwargs):
        starts.append(kwargs['start_step'])
        for i, batch in enumerate(real(*args, **kwargs)):
            if len(starts) == 1 and i == batches:
                raise Crash('simulated crash')
            yield batch

    monkeypatch.setattr(loop.data_lib, 'train_batches', crashing)
    return starts


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """The slim stage of six steps, run straight through: its final variables."""
    workdir = str(tmp_path_factory.mktemp('straight'))
    train_and_evaluate(snet_slim_config(), workdir)
    return checkpoint.load_network(os.path.join(workdir, 'slim'))[1]


@pytest.fixture
def interrupted(tmp_path, monkeypatch):
    """A slim stage that crashed at step 5 of 6: checkpoints at steps 2 and 4."""
    config = snet_slim_config()
    starts = crash_after(monkeypatch, 5)
    with pytest.raises(Crash):
        train_and_evaluate(config, str(tmp_path))
    slim = os.path.join(str(tmp_path), 'slim')
    assert checkpoint.reader(slim).all_steps() == [2, 4]
    return config, str(tmp_path), slim, starts


class Warnings:
    """Collects the project's absl warnings (its stage-prefixed ones, not Orbax's timings,
    which go through the same absl module)."""

    def __init__(self, monkeypatch):
        self.messages = []
        real = absl_logging.warning

        def warning(msg, *args):
            if str(msg).startswith('['):
                self.messages.append(msg % args)
            real(msg, *args)

        monkeypatch.setattr(checkpoint.logging, 'warning', warning)


@pytest.mark.parametrize('damage', [truncate, flip_bytes], ids=['truncated', 'flipped_bytes'])
def test_damaged_latest_checkpoint_falls_back_to_the_previous_good_one(
        damage, interrupted, uninterrupted, monkeypatch):
    config, workdir, slim, starts = interrupted
    damage(checkpoint.step_dir(slim, 4))
    warnings = Warnings(monkeypatch)
    summary = train_and_evaluate(config, workdir)
    assert starts == [0, 2] and summary['slim']['step'] == 6  # resumed from step 2
    (message,) = warnings.messages
    assert 'skipped the damaged checkpoint at step 4' in message
    assert 'resuming from step 2' in message and os.path.join(slim, 'damaged', '4') in message
    assert os.path.isdir(os.path.join(slim, 'damaged', '4'))  # kept for a post-mortem
    # The fallback cost two steps, not the result: the same parameters as a straight run.
    assert_same_bits(checkpoint.load_network(slim)[1], uninterrupted)


def test_all_checkpoints_damaged_restarts_the_stage_with_a_warning_for_each(
        interrupted, uninterrupted, monkeypatch):
    config, workdir, slim, starts = interrupted
    truncate(checkpoint.step_dir(slim, 4))
    flip_bytes(checkpoint.step_dir(slim, 2))
    warnings = Warnings(monkeypatch)
    train_and_evaluate(config, workdir)
    assert starts == [0, 0]
    assert [m.split(' (')[0] for m in warnings.messages] == [
        '[slim] skipped the damaged checkpoint at step 4',
        '[slim] skipped the damaged checkpoint at step 2']
    assert 'starting the stage afresh' in warnings.messages[-1]
    assert_same_bits(checkpoint.load_network(slim)[1], uninterrupted)


def test_checkpoint_of_other_shapes_is_refused_not_loaded_or_skipped(interrupted):
    """The same structure.json and config.json (say, copied) over checkpoints of other
    widths: refused."""
    _, workdir, slim, _ = interrupted
    other = snet_slim_config(widths=(0.125, 0.5))
    arch = arch_from_config(other.model)
    arch.snet_structure((0.125, 0.5)).save(os.path.join(slim, checkpoint.STRUCTURE))
    checkpoint.write_json(os.path.join(slim, checkpoint.CONFIG),
                          Settings.from_config(other).to_json())
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(other, workdir)
    message = str(error.value)
    assert 'the checkpoint at step 4 does not fit the configured model' in message
    # Names an array and both shapes.
    assert re.search(r"\(variables\['(params|batch_stats)'\]\S+ has shape \([\d, ]+\), the "
                     r"model wants \([\d, ]+\)\)", message), message
    assert '\n' not in message
    # Not mistaken for damage: nothing was moved or deleted.
    assert checkpoint.reader(slim).all_steps() == [2, 4]
    assert not os.path.exists(os.path.join(slim, 'damaged'))


def test_finished_stage_of_another_structure_is_refused_not_skipped(tmp_path):
    config = snet_slim_config()
    arch = arch_from_config(config.model)
    structure = arch.snet_structure((0.125, 0.5))
    model = arch.module(structure)
    from spnet_jax.train import state as state_lib

    variables = jax.eval_shape(lambda: state_lib.init_variables(
        model, jax.random.key(0), (28, 28, 1)))
    variables = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), variables)
    checkpoint.save_network(str(tmp_path / 'slim'), structure, variables)
    assert checkpoint.is_done(str(tmp_path / 'slim'))
    with pytest.raises(ConfigError, match='holds a checkpoint of a different network structure'):
        train_and_evaluate(config, str(tmp_path))


def test_damaged_finished_network_is_refused_with_one_sentence(tmp_path):
    config = snet_slim_config()
    arch = arch_from_config(config.model)
    structure = arch.snet_structure((0.25, 0.5))
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: arch.module(structure).init(
        jax.random.key(0), np.zeros((1, 28, 28, 1), np.float32)))
    variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), dict(shapes))
    directory = str(tmp_path / 'net')
    checkpoint.save_network(directory, structure, variables)
    assert_same_bits(checkpoint.load_network(directory)[1], variables)
    flip_bytes(checkpoint.step_dir(directory, 0))
    with pytest.raises(ConfigError, match='the checkpoint at step 0 in .* is damaged') as error:
        checkpoint.load_network(directory)
    assert '\n' not in str(error.value)


def test_fingerprint_sees_one_flipped_bit_and_swapped_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 5, 7)).astype(np.float32)
    base = integrity.fingerprints({'v': {'x': x}})['v']["['x']"]
    bits = x.view(np.uint32)
    for index in [(0, 0, 0), (1, 2, 3), (2, 4, 6)]:
        for bit in (0, 17, 31):
            flipped = bits.copy()
            flipped[index] ^= np.uint32(1 << bit)
            value = integrity.fingerprints({'v': {'x': flipped.view(np.float32)}})['v']["['x']"]
            assert value != base, (index, bit)
    swapped = x.copy()
    swapped[0, 0, [0, 1]] = swapped[0, 0, [1, 0]]
    assert integrity.fingerprints({'v': {'x': swapped}})['v']["['x']"] != base


# ------------------------------------------------------------------ real processes

def _main_command(workdir, *extra):
    return [sys.executable, os.path.join(ROOT, 'main.py'), '--config=configs/tiny.py:snet',
            f'--workdir={workdir}', '--config.stages=slim', '--config.slim.num_steps=16',
            '--config.checkpoint_every_steps=2', '--config.log_every_steps=2', *extra]


def _env(cache_dir):
    return dict(os.environ, JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')


def test_main_exits_2_with_one_sentence_before_any_work(tmp_path):
    done = subprocess.run(
        [sys.executable, 'main.py', '--config=configs/tiny.py', f'--workdir={tmp_path / "w"}',
         '--config.prune.keep_ratios=0.5,1.5'], cwd=ROOT, env=_env(tmp_path / 'cache'),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if not line.startswith(('I', 'W'))]
    assert errors == ['error: prune.keep_ratios=(0.5, 1.5) must each lie in (0, 1] (a '
                      'fraction of BN channels kept).'], done.stderr[-2000:]
    assert not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_sigkill_mid_stage_then_the_same_command_ends_with_the_same_parameters(tmp_path):
    env = _env(tmp_path / 'cache')
    straight = subprocess.Popen(_main_command(tmp_path / 'straight'), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed_dir = tmp_path / 'killed'
    command = _main_command(killed_dir)
    victim = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    slim = str(killed_dir / 'slim')
    deadline = time.time() + 600
    while not os.path.isdir(checkpoint.step_dir(slim, 4)) and victim.poll() is None:
        assert time.time() < deadline, 'no checkpoint at step 4 after 10 minutes'
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    assert not checkpoint.is_done(slim)
    killed_at = checkpoint.reader(slim).latest_step()
    assert 4 <= killed_at < 16

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f'resuming from the checkpoint at step {killed_at} of 16' in again.stderr
    assert straight.wait(timeout=900) == 0, straight.stderr.read()[-3000:]
    assert checkpoint.done_info(slim)['step'] == 16
    # Only whole checkpoints are left (a save the kill cut short is removed, not kept).
    assert all(name.isdigit() for name in os.listdir(os.path.join(slim, 'checkpoints')))
    assert_same_bits(checkpoint.load_network(slim)[1],
                     checkpoint.load_network(str(tmp_path / 'straight' / 'slim'))[1])


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_the_recipe_as_one_process_does(tmp_path):
    """Two processes (one CPU device each, gloo collectives) over 127.0.0.1 run the whole
    tiny recipe, each feeding its half of every global batch; every stage ends bit for bit
    where one process with two devices and the same global batch ends.

    (Against one device the sums run in another order; on this tiny, steep recipe that
    difference grows from 1e-6 after one step to 4e-2 after four, so the comparison keeps
    the device count. One device against eight: `test_train_step.py`.)"""
    env = _env(tmp_path / 'cache')
    recipe = ['--config=configs/tiny.py', '--config.base.widths=0.5,',
              '--config.prune.keep_ratios=0.5,', '--config.eval.eval_bases=False']
    port = _free_port()
    two = [subprocess.Popen(
        [sys.executable, 'main.py', *recipe, f'--workdir={tmp_path / "two"}',
         f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2', f'--process_id={i}'],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    one = subprocess.run(
        [sys.executable, 'main.py', *recipe, f'--workdir={tmp_path / "one"}'], cwd=ROOT,
        env=dict(env, XLA_FLAGS=host_devices_flags(2)),
        capture_output=True, text=True, timeout=1800)
    assert one.returncode == 0, one.stderr[-3000:]
    outputs = [p.communicate(timeout=1800) for p in two]
    for i, (p, (_, err)) in enumerate(zip(two, outputs, strict=True)):
        assert p.returncode == 0, err[-3000:]
        assert f'on 2 devices (2 processes; this is process {i},' in err
    # Process 0 alone writes the report (and prints its table).
    assert '| sub-network |' in outputs[0][0] and '| sub-network |' not in outputs[1][0]
    for stage in ('base_0.5', 'pruned', 'slim'):
        s_two, v_two, _ = checkpoint.load_network(str(tmp_path / 'two' / stage))
        s_one, v_one, _ = checkpoint.load_network(str(tmp_path / 'one' / stage))
        assert s_two == s_one, stage
        assert_same_bits(v_two, v_one)
    report = [checkpoint.read_json(str(tmp_path / run / 'report.json')) for run in ('two', 'one')]
    keys = ('subnet', 'macs', 'params', 'top1', 'top5')
    assert [[r[k] for k in keys] for r in report[0]] == [[r[k] for k in keys] for r in report[1]]
