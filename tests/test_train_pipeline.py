"""The stages end to end on a small real Fashion-MNIST slice: report, skip, resume, errors.

Uses `configs/tiny.py` (a thin ResNet-20, a few steps per stage). Programs that several tests
compile identically come from JAX's persistent compilation cache (a per-session folder).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import flip_bytes, needs_fashion_mnist

from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.models import arch_from_config
from spnet_jax.train import loop, metrics, train_and_evaluate
from spnet_jax.train import step as step_lib
from spnet_jax.train.settings import Settings
from spnet_jax.workdir import checkpoint, lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs import tiny  # noqa: E402

pytestmark = [needs_fashion_mnist, pytest.mark.usefixtures('compilation_cache')]



def spnet_config(**overrides):
    """One base and one keep ratio: a pruned and a full sub-network (fast to compile)."""
    config = tiny.get_config()
    config.base.widths = (0.5,)
    config.prune.keep_ratios = (0.5,)
    for key, value in overrides.items():
        section, _, field = key.rpartition('.')
        (config[section] if section else config)[field] = value
    return config


def snet_config(num_steps=4):
    config = tiny.get_config('snet')
    config.slim.num_steps = num_steps
    config.eval.eval_bases = False
    return config


@pytest.mark.slow  # 30-40 s: a base and an S-Net run
def test_snet_started_from_the_trained_base_of_its_full_width(tmp_path):
    """``slim.init_from_base``: the S-Net's first weights are the trained base's, so before
    any slimmable step its full width computes exactly the base's logits, and each narrower
    width its prefix."""
    from spnet_jax.train import stages
    from spnet_jax.workdir import checkpoint

    config = snet_config()
    config.stages = 'base,slim,eval'
    config.base.widths = (0.5,)
    config.slim.init_from_base = True
    workdir = str(tmp_path)
    config.stages = 'base'
    train_and_evaluate(config, workdir)
    settings = Settings.from_config(config)
    job = stages.slim_job(settings, workdir, stages.input_shape(settings))
    variables = job.initial_variables()
    _, base, _ = checkpoint.load_network(checkpoint.base_dir(workdir, 0.5))
    arch = arch_from_config(config.model)
    plain = arch.module(arch.plain_structure(0.5))
    images = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(
        job.model.apply(variables, images, subnet=1, train=False),
        plain.apply(base, images, subnet=0, train=False), rtol=1e-5, atol=1e-5)
    mean = variables['batch_stats']['layer1_0']['bn1']
    np.testing.assert_array_equal(mean['mean_0'],
                                  base['batch_stats']['layer1_0']['bn1']['mean_0'][:4])
    # The stage runs on from there.
    config.stages = 'slim,eval'
    summary = train_and_evaluate(config, workdir)
    assert summary['slim']['step'] == 4 and len(summary['report']) == 2


def _listing(directory):
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            path = os.path.join(root, f)
            out[path] = os.stat(path).st_mtime_ns
    return out


@pytest.fixture(scope='module')
def spnet_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('spnet'))
    config = spnet_config(**{'eval.bn_calibration_batches': 2})
    return workdir, config, train_and_evaluate(config, workdir)


def test_recipe_writes_report_and_stage_folders(spnet_run):
    workdir, config, summary = spnet_run
    report = checkpoint.read_json(os.path.join(workdir, 'report.json'))
    assert report == summary['report']
    assert [r['subnet'] for r in report] == [0, 1]
    assert report[0]['macs'] < report[1]['macs'] and report[0]['params'] < report[1]['params']
    for r in report:
        assert 0.0 <= r['top1'] <= r['top5'] <= 1.0
        assert r['num_eval_examples'] == 64 and r['bn_calibration_batches'] == 2
    # The full sub-network costs what the plain x0.5 network costs.
    arch = arch_from_config(config.model)
    from spnet_jax.core.cost import subnet_costs

    full = subnet_costs(arch, arch.plain_structure(0.5), 28, 1)[0]
    assert (report[1]['macs'], report[1]['params']) == (full.macs, full.params)
    for stage in ('base_0.5', 'pruned', 'slim'):
        d = os.path.join(workdir, stage)
        for f in ('structure.json', 'config.json', 'done.json'):
            assert os.path.exists(os.path.join(d, f)), (stage, f)
    assert any(f.startswith('events.out.tfevents') for f in os.listdir(f'{workdir}/slim'))
    assert os.path.exists(os.path.join(workdir, 'report.md'))
    assert summary['base_0.5']['step'] == 4 and 0 <= summary['base_0.5']['eval'][0]['top1'] <= 1
    # The slimmable network loads back with its structure, ZPM masks and config.
    structure, variables, saved_config = checkpoint.load_network(os.path.join(workdir, 'slim'))
    assert structure.num_subnets == 2 and structure.zpm and 'masks' in variables
    assert saved_config.model.name == 'resnet20'
    assert structure == Structure.load(os.path.join(workdir, 'pruned', 'structure.json'))


def test_rerun_of_a_finished_workdir_does_no_training(spnet_run, monkeypatch):
    workdir, config, _ = spnet_run
    before = _listing(workdir)

    def forbidden(*args, **kwargs):
        raise AssertionError('a finished stage was run again')

    monkeypatch.setattr(step_lib, 'train_step', forbidden)
    monkeypatch.setattr('spnet_jax.pruning.prune', forbidden)
    monkeypatch.setattr(checkpoint, 'save_network', forbidden)
    monkeypatch.setattr(loop.data_lib, 'train_batches', forbidden)
    summary = train_and_evaluate(config, workdir)
    assert summary['base_0.5']['skipped'] and summary['pruned']['skipped']
    assert summary['slim']['skipped']
    assert summary['report'] == checkpoint.read_json(os.path.join(workdir, 'report.json'))
    assert _listing(workdir) == before


def test_rerun_of_a_finished_workdir_notices_a_damaged_network_or_config(spnet_run, tmp_path):
    """A finished run is not taken as healthy on its done markers alone: rerunning it with a
    damaged final network or stage config is one sentence naming the file."""
    workdir, config, _ = spnet_run
    copy = str(tmp_path / 'run')
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(lock.LOCK))
    slim = os.path.join(copy, 'slim')
    flip_bytes(checkpoint.step_dir(slim, checkpoint.done_info(slim)['step']))
    with pytest.raises(ConfigError, match=f'in {slim} is damaged') as error:
        train_and_evaluate(config, copy)
    assert '\n' not in str(error.value)
    shutil.rmtree(copy)
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns(lock.LOCK))
    with open(os.path.join(copy, 'pruned', 'config.json'), 'w') as fh:
        fh.write('{"model": ')
    with pytest.raises(ConfigError, match='pruned/config.json') as error:
        train_and_evaluate(config, copy)
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('field,value', [('slim.lr', 3.0), ('base.sparsity', 0.0),
                                         ('prune.keep_ratios', (0.3,)), ('seed', 7)])
def test_rerun_with_another_recipe_is_refused_naming_the_field(spnet_run, field, value):
    """A finished (or interrupted) stage is never resumed or skipped under a recipe it was
    not made with: one sentence with the field and both values, nothing written."""
    workdir, config, _ = spnet_run
    before = _listing(workdir)
    changed = config.copy_and_resolve_references()
    section, _, name = field.rpartition('.')
    old = (changed[section] if section else changed)[name]
    (changed[section] if section else changed)[name] = value
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(changed, workdir)
    message = str(error.value)
    assert f'made with {field}={old!r}, but the config now says {field}={value!r}' in message
    assert '\n' not in message
    assert _listing(workdir) == before


def test_one_process_per_workdir_and_a_stale_lock_is_taken_over(spnet_run, tmp_path):
    workdir, config, _ = spnet_run
    path = os.path.join(workdir, lock.LOCK)
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
    try:
        with open(path, 'w') as fh:
            json.dump({'host': socket.gethostname(), 'pid': holder.pid, 'since': 0}, fh)
        with pytest.raises(ConfigError, match=f'is in use by process {holder.pid} on '
                                              f'{socket.gethostname()}'):
            train_and_evaluate(config, workdir)
        assert os.path.exists(path)  # the holder's lock is left alone
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is stale, taken over, and released at the end.
    summary = train_and_evaluate(config, workdir)
    assert summary['slim']['skipped'] and not os.path.exists(path)
    # While a run holds it, a second one on the same workdir is refused.
    with lock.workdir_lock(str(tmp_path)):
        with pytest.raises(ConfigError, match=f'in use by process {os.getpid()}'):
            with lock.workdir_lock(str(tmp_path)):
                pass
    assert not os.path.exists(os.path.join(tmp_path, lock.LOCK))


class Crash(RuntimeError):
    pass


def test_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
    config = snet_config(num_steps=6)
    config.stages = 'slim'
    straight = str(tmp_path / 'straight')
    train_and_evaluate(config, straight)
    _, expected, _ = checkpoint.load_network(os.path.join(straight, 'slim'))

    resumed = str(tmp_path / 'resumed')
    real_batches = loop.data_lib.train_batches
    starts = []

    def crashing_batches(*args, **kwargs):
        starts.append(kwargs['start_step'])
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if i == 5:  # dies while fetching the batch of step 6
                raise Crash('simulated crash')
            yield batch

    monkeypatch.setattr(loop.data_lib, 'train_batches', crashing_batches)
    with pytest.raises(Crash):
        train_and_evaluate(config, resumed)
    slim = os.path.join(resumed, 'slim')
    assert not checkpoint.is_done(slim)
    assert checkpoint.reader(slim).latest_step() == 4
    monkeypatch.setattr(loop.data_lib, 'train_batches',
                        lambda *a, **k: (starts.append(k['start_step']), real_batches(*a, **k))[1])
    summary = train_and_evaluate(config, resumed)
    assert starts == [0, 4] and summary['slim']['step'] == 6
    _, got, _ = checkpoint.load_network(slim)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0],
                            jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def test_sigterm_checkpoints_and_stops_then_the_rerun_finishes(tmp_path, monkeypatch):
    config = snet_config(num_steps=6)
    config.stages = 'slim'
    real_batches = loop.data_lib.train_batches

    def terminating_batches(*args, **kwargs):
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            if i == 2 and kwargs['start_step'] == 0:  # a scheduler's SIGTERM, early on
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch

    monkeypatch.setattr(loop.data_lib, 'train_batches', terminating_batches)
    with pytest.raises(loop.Preempted, match='rerunning the same command resumes') as stopped:
        train_and_evaluate(config, str(tmp_path))
    slim = os.path.join(str(tmp_path), 'slim')
    latest = checkpoint.reader(slim).latest_step()
    # The data is prefetched, so the signal lands during step 1, 2 or 3; that step is saved.
    assert latest in (1, 2, 3) and f'stopped at step {latest} ' in str(stopped.value)
    assert not checkpoint.is_done(slim)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was removed
    summary = train_and_evaluate(config, str(tmp_path))
    assert summary['slim']['step'] == 6 and checkpoint.is_done(slim)


def _poison_step_3(monkeypatch, poison):
    real_batches = loop.data_lib.train_batches

    def poisoned_batches(*args, **kwargs):
        for i, batch in enumerate(real_batches(*args, **kwargs)):
            yield poison(batch) if i == 2 else batch  # the batch of step 3

    monkeypatch.setattr(loop.data_lib, 'train_batches', poisoned_batches)


def _assert_stopped_at_step_3_with_step_2_kept(workdir):
    slim = os.path.join(workdir, 'slim')
    assert not checkpoint.is_done(slim)
    assert checkpoint.reader(slim).latest_step() == 2
    _, variables, _ = checkpoint.load_network(slim)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


def test_non_finite_loss_stops_with_step_and_subnet_and_keeps_last_good_checkpoint(
        tmp_path, monkeypatch):
    config = snet_config(num_steps=6)
    config.stages = 'slim'
    # Fault injection: the cross-entropy of a batch carrying label -1 is NaN.
    real_ce = step_lib.cross_entropy
    monkeypatch.setattr(step_lib, 'cross_entropy', lambda logits, labels, *a: real_ce(
        logits, labels, *a) + jax.numpy.where(jax.numpy.any(labels < 0), jax.numpy.nan, 0.0))
    _poison_step_3(monkeypatch, lambda b: {**b, 'label': np.full_like(b['label'], -1)})
    with pytest.raises(metrics.NonFiniteLossError) as error:
        train_and_evaluate(config, str(tmp_path))
    e = error.value
    # The full network (sub-network 1) runs first, so it is the one named.
    assert (e.step, e.subnet) == (3, 1), str(e)
    assert 'sub-network 1 became non-finite at step 3' in str(e)
    assert 'the last good checkpoint is step 2' in str(e)
    # How to retry with a lower rate, in words the recipe check accepts (a fresh workdir;
    # test_reader_misuse checks that finished stages copied into it are accepted).
    assert "this workdir's recipe is fixed" in str(e) and \
        '--workdir=NEW_WORKDIR --config.slim.lr=<lower>' in str(e)
    _assert_stopped_at_step_3_with_step_2_kept(str(tmp_path))


def test_non_finite_update_stops_before_it_is_checkpointed(tmp_path, monkeypatch):
    config = snet_config(num_steps=6)
    config.stages = 'slim'
    # NaN images: ReLU hides them from the loss on CPU, but the gradients are NaN.
    _poison_step_3(monkeypatch, lambda b: {**b, 'image': np.full_like(b['image'], np.nan)})
    with pytest.raises(metrics.NonFiniteLossError,
                       match='update of step 3 .* made the parameters non-finite'):
        train_and_evaluate(config, str(tmp_path))
    _assert_stopped_at_step_3_with_step_2_kept(str(tmp_path))


def test_save_and_load_network_round_trip(tmp_path):
    config = spnet_config()
    arch = arch_from_config(config.model)
    structure = arch.snet_structure((0.25, 0.5))
    model = arch.module(structure)
    from spnet_jax.train import state as state_lib

    variables = jax.jit(lambda r: state_lib.init_variables(model, r, (28, 28, 1)))(
        jax.random.key(3, impl='rbg'))
    directory = str(tmp_path / 'net')
    checkpoint.save_network(directory, structure, variables, config)
    assert checkpoint.is_done(directory)
    got_structure, got, got_config = checkpoint.load_network(directory)
    assert got_structure == structure and set(got) == {'params', 'batch_stats'}
    jax.tree.map(np.testing.assert_array_equal, got, variables)
    assert got_config.prune.keep_ratios == [0.5] and got_config.model.full_width == 0.5


def test_stage_without_its_inputs_is_refused_before_any_work(tmp_path):
    for stages, missing in (('prune', 'base'), ('slim,eval', 'prune'), ('eval', 'slim')):
        config = spnet_config(stages=stages)
        with pytest.raises(ConfigError, match=f"needs the finished '{missing}' stage"):
            train_and_evaluate(config, str(tmp_path / stages))
        assert not os.path.exists(tmp_path / stages / 'slim')


def test_checkpoint_of_another_structure_is_refused(tmp_path):
    config = snet_config()
    other = arch_from_config(config.model).snet_structure((0.125, 0.5))
    os.makedirs(tmp_path / 'slim')
    other.save(str(tmp_path / 'slim' / 'structure.json'))
    with pytest.raises(ConfigError, match='different network structure'):
        train_and_evaluate(config, str(tmp_path))


@pytest.mark.slow  # 40-50 s: a whole tiny recipe
def test_drop_scaffold_publishes_the_network_without_its_last_subnet(tmp_path):
    """slim.drop_scaffold (the release's eliminate_width): the report, `spnet_jax.load` and
    the published folder hold sub-networks 0..n-2, each computing what it computed in the
    trained network."""
    import spnet_jax

    config = spnet_config(**{'prune.keep_ratios': (0.4, 0.7), 'prune.zpm': 'none',
                             'slim.drop_scaffold': True, 'eval.eval_bases': False,
                             'eval.latency_batch': 0})
    workdir = str(tmp_path / 'run')
    summary = train_and_evaluate(config, workdir)
    assert [r['subnet'] for r in summary['report']] == [0, 1]
    trained = spnet_jax.load(os.path.join(workdir, 'slim'))
    published = spnet_jax.load(workdir)
    assert trained.structure.num_subnets == 3 and published.structure.num_subnets == 2
    assert published.path == os.path.join(workdir, 'published')
    assert published.structure.full == trained.structure.counts[1]
    images = np.random.default_rng(0).normal(size=(4, 28, 28, 1)).astype(np.float32)
    for k in (0, 1):
        np.testing.assert_allclose(np.asarray(published(images, subnet=k, normalized=True)),
                                   np.asarray(trained(images, subnet=k, normalized=True)),
                                   rtol=1e-5, atol=1e-5)
        assert published.subnets[k]['macs'] == trained.subnets[k]['macs']
        assert published.subnets[k]['top1'] == summary['report'][k]['top1']
