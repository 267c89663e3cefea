"""A reader never disturbs a writer, and a run stopped by Ctrl-C, SIGTERM or a full disk
says so in one sentence, keeps its checkpoints and resumes (main.py in subprocesses, on real
Fashion-MNIST: an S-Net slim stage of configs/tiny.py, checkpointed every step)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from helpers import host_devices_flags, needs_fashion_mnist

from spnet_jax.workdir import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8
RUN = ['main.py', '--config=configs/tiny.py:snet', '--config.stages=slim',
       f'--config.slim.num_steps={STEPS}', '--config.checkpoint_every_steps=1',
       '--config.log_every_steps=1', '--config.eval.eval_bases=False']

pytestmark = needs_fashion_mnist


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    """The subprocesses' environment: one CPU device compiling as this process does, and a
    compilation cache shared by all of them (the same programs: bit-identical results)."""
    return {**os.environ, 'XLA_FLAGS': host_devices_flags(1), 'JAX_PLATFORMS': 'cpu',
            'JAX_COMPILATION_CACHE_DIR': str(tmp_path_factory.mktemp('jit_cache')),
            'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0'}


def train(workdir, env, *prefix, **kw):
    return subprocess.Popen([*prefix, sys.executable, *RUN, f'--workdir={workdir}'], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kw)


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def final_weights(workdir):
    _, variables, _ = checkpoint.load_network(os.path.join(workdir, 'slim'))
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(variables)[0]}


def assert_same_weights(workdir, reference):
    got = final_weights(workdir)
    assert sorted(got) == sorted(reference)
    for key, value in reference.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def one_sentence(err: str) -> str:
    """The terminal's last line, after checking that no traceback was printed."""
    assert 'Traceback' not in err, err[-3000:]
    return err.strip().splitlines()[-1]


@pytest.fixture(scope='module')
def reference(tmp_path_factory, env):
    """The final weights of the run trained straight through, nothing else running."""
    workdir = tmp_path_factory.mktemp('straight')
    rc, _, err = finish(train(workdir, env))
    assert rc == 0, err[-3000:]
    return final_weights(workdir)


READER = r'''
import json, os, sys
import spnet_jax
from spnet_jax.core.errors import ConfigError
workdir, stop, out = sys.argv[1:]
seen = []
while not os.path.isdir(workdir) and not os.path.exists(stop):
    pass
while not os.path.exists(stop):
    root = os.path.join(workdir, 'slim', 'checkpoints')
    steps = sorted(int(n) for n in os.listdir(root) if n.isdigit()) if os.path.isdir(root) else []
    for path in [workdir] + [os.path.join(root, str(s)) for s in steps[-1:]]:
        try:
            seen.append(['ok', path, spnet_jax.load(path).step])
        except ConfigError as e:
            seen.append(['refused', path, str(e)])
        except Exception as e:  # what the test is for: never anything but those two
            seen.append(['crash', path, f'{type(e).__name__}: {e}'])
with open(out, 'w') as fh:
    json.dump(seen, fh)
'''


def test_loading_a_workdir_while_it_trains_never_disturbs_the_training(tmp_path, env,
                                                                       reference):
    """spnet_jax.load of the workdir and of its newest checkpoint, in a loop from another
    process for the whole run: the run finishes with the weights of an undisturbed run, and
    every load either reads a finished checkpoint or says the run is still training (an
    Orbax manager of the reader used to delete the writer's in-progress save)."""
    workdir, stop, out = tmp_path / 'run', tmp_path / 'stop', tmp_path / 'seen.json'
    writer = train(workdir, env)
    reader = subprocess.Popen([sys.executable, '-c', READER, str(workdir), str(stop), str(out)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    rc, _, err = finish(writer)
    stop.write_text('')
    reader_log = reader.communicate(timeout=300)[0]
    assert rc == 0, err[-3000:]
    assert reader.returncode == 0, reader_log[-3000:]
    seen = json.loads(out.read_text())
    assert not [s for s in seen if s[0] == 'crash'], seen
    checkpoint_reads = [s for s in seen if s[0] == 'ok' and '/checkpoints/' in s[1]]
    assert checkpoint_reads, seen  # it did read checkpoints while the run was writing others
    for _, _path, message in (s for s in seen if s[0] == 'refused'):
        # (a workdir main.py has just made, before its lock: 'no spnet_jax network yet')
        assert any(m in message for m in ('has not finished', 'still training',
                                          'no spnet_jax network yet')), message
    assert_same_weights(workdir, reference)
    assert not (workdir / 'slim' / 'damaged').exists()


def wait_for_step(proc, workdir, step, timeout=300):
    """Waits until the run has written its checkpoint of ``step``."""
    deadline = time.time() + timeout
    while not (workdir / 'slim' / 'checkpoints' / str(step)).is_dir():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.05)


# Ctrl-C (SIGINT) takes the same checkpoint-and-stop path as SIGTERM: slow, to keep the default
# run near 15 minutes.
@pytest.mark.parametrize('how', [pytest.param('Ctrl-C', marks=pytest.mark.slow), 'SIGTERM'])
def test_stopping_a_run_checkpoints_it_says_so_once_and_resumes_exactly(tmp_path, env,
                                                                        reference, how):
    workdir = tmp_path / 'run'
    proc = train(workdir, env)
    wait_for_step(proc, workdir, 2)
    proc.send_signal(signal.SIGINT if how == 'Ctrl-C' else signal.SIGTERM)
    rc, _, err = finish(proc)
    line = one_sentence(err)
    assert rc == 1, err[-3000:]
    stopped = int(line.split('stopped at step ')[1].split()[0])
    assert 2 <= stopped < STEPS and how in line and 'rerunning the same command resumes' in line
    assert 'python main.py' in line and f'--workdir={workdir}' in line
    assert checkpoint.reader(str(workdir / 'slim')).latest_step() == stopped
    rc, _, err = finish(train(workdir, env))
    assert rc == 0, err[-3000:]
    assert_same_weights(workdir, reference)


def test_a_second_ctrl_c_stops_at_once_with_one_sentence(tmp_path, env):
    workdir = tmp_path / 'run'
    proc = train(workdir, env)
    wait_for_step(proc, workdir, 1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc)
    line = one_sentence(err)
    assert rc in (1, 130), err[-3000:]  # 1: the first Ctrl-C's checkpoint came first
    if rc == 130:
        assert line.startswith('error: interrupted (Ctrl-C); kept in') and 'slim at its ' \
            'checkpoint of step' in line and 'python main.py' in line, line


def _can_mount_tmpfs() -> bool:
    if shutil.which('unshare') is None:
        return False
    probe = subprocess.run(['unshare', '-rm', 'sh', '-c', 'mount -t tmpfs -o size=1m none /mnt'],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason='needs unshare and a mountable tmpfs')
def test_a_full_disk_is_one_sentence_and_the_rerun_resumes_exactly(tmp_path, env, reference):
    """The workdir on a 1.5 MB tmpfs (in a private mount namespace): the second checkpoint
    does not fit. One sentence (Orbax says RESOURCE_EXHAUSTED, not ENOSPC), the first
    checkpoint kept; the folder copied to a roomy disk resumes to the undisturbed weights."""
    disk = tmp_path / 'disk'
    disk.mkdir()
    script = (f'mount -t tmpfs -o size=1536k none {disk} && "$@"; rc=$?; '
              f'cp -a {disk}/run {tmp_path}/copied; exit $rc')
    proc = subprocess.Popen(['unshare', '-rm', 'sh', '-c', script, 'sh', sys.executable, *RUN,
                             f'--workdir={disk}/run'], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rc, _, err = finish(proc)
    line = one_sentence(err)
    assert rc == 1, err[-3000:]
    assert line.startswith('error: the disk is full') and 'slim at its checkpoint of step' \
        in line and 'rerun the same command to resume: python main.py' in line, line
    copied = tmp_path / 'copied'
    assert checkpoint.reader(str(copied / 'slim')).latest_step() >= 1
    rc, _, err = finish(train(copied, env))
    assert rc == 0, err[-3000:]
    assert_same_weights(copied, reference)
