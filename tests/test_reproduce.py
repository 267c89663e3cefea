"""The reproduction orchestrator (`benchmarks/reproduce.py`): which runs share SP-Net's
bases, the paired differences and the computed verdict, the report of a partial study."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    'reproduce', os.path.join(ROOT, 'benchmarks', 'reproduce.py'))
reproduce = importlib.util.module_from_spec(_spec)
sys.modules['reproduce'] = reproduce
_spec.loader.exec_module(reproduce)

CONVERGED = reproduce.STUDIES['converged']


def _stage(path, done=True):
    os.makedirs(path)
    with open(os.path.join(path, 'params'), 'w') as fh:
        fh.write(path)
    if done:
        with open(os.path.join(path, 'done.json'), 'w') as fh:
            json.dump({'step': 1}, fh)


def test_arms_that_start_from_spnet_get_its_finished_bases(tmp_path):
    out = str(tmp_path)
    spnet = tmp_path / 'seed0' / 'spnet'
    for width in ('0.5', '0.75', '1.0'):
        _stage(str(spnet / f'base_{width}'))
    assert reproduce.share_bases(out, 0, 'snet_warm') == ['base_1.0']
    assert sorted(os.listdir(tmp_path / 'seed0' / 'snet_warm')) == ['base_1.0']
    copied = tmp_path / 'seed0' / 'snet_warm' / 'base_1.0' / 'params'
    assert copied.read_text() == str(spnet / 'base_1.0')
    assert reproduce.share_bases(out, 0, 'spnet_reinit') == ['base_0.5', 'base_0.75',
                                                              'base_1.0']
    # Once there, never copied again; other arms and other seeds get nothing.
    assert reproduce.share_bases(out, 0, 'snet_warm') == []
    assert reproduce.share_bases(out, 0, 'snet') == []
    assert reproduce.share_bases(out, 1, 'snet_warm') == []


def test_an_unfinished_base_is_not_shared(tmp_path):
    _stage(str(tmp_path / 'seed0' / 'spnet' / 'base_1.0'), done=False)
    assert reproduce.share_bases(str(tmp_path), 0, 'snet_warm') == []
    assert not os.path.exists(tmp_path / 'seed0' / 'snet_warm' / 'base_1.0')


def test_a_fresh_machine_trains_spnets_recorded_bases_again_for_the_arms_that_need_them(
        tmp_path, monkeypatch):
    out, records = str(tmp_path / 'out'), str(tmp_path / 'records')
    assert reproduce.spnet_bases_missing(CONVERGED, out, 0, 'snet_warm') == ['base_1.0']
    assert reproduce.spnet_bases_missing(CONVERGED, out, 0, 'spnet_reinit') == [
        'base_0.5', 'base_0.75', 'base_1.0']
    assert reproduce.spnet_bases_missing(CONVERGED, out, 0, 'snet') == []
    _stage(os.path.join(out, 'seed0', 'spnet', 'base_1.0'))
    assert reproduce.spnet_bases_missing(CONVERGED, out, 0, 'snet_warm') == []
    assert reproduce.spnet_bases_missing(CONVERGED, out, 0, 'spnet_reinit') == [
        'base_0.5', 'base_0.75']

    calls = []

    def rerun(study, out_, seed, extra, niceness=0):
        calls.append(seed)
        raise SystemExit('stop here')  # before run_one would launch main.py

    monkeypatch.setattr(reproduce, 'rerun_spnet_bases', rerun)
    epochs = CONVERGED.module.EPOCHS
    # SP-Net not recorded: the arm is not SP-Net's to rebuild (the orchestrator runs SP-Net
    # first on this machine), so nothing is retrained.
    monkeypatch.setattr(reproduce.subprocess, 'Popen', lambda *a, **k: (_ for _ in ()).throw(
        SystemExit('launched')))
    with pytest.raises(SystemExit, match='launched'):
        reproduce.run_one(CONVERGED, out, 1, 'spnet_reinit', [], records=records)
    assert calls == []
    reproduce.write_record(records, 1, 'spnet', epochs, _result([0.9] * 4))
    with pytest.raises(SystemExit, match='stop here'):
        reproduce.run_one(CONVERGED, out, 1, 'spnet_reinit', [], records=records)
    assert calls == [1]


def _result(top1s, seconds=100.0):
    rows = [{'top1': t, 'macs': 1e6 * (k + 1), 'params': 1e3 * (k + 1)}
            for k, t in enumerate(top1s)]
    return {'rows': rows, 'seconds': seconds, 'cpu_seconds': 2 * seconds,
            'bases_from_spnet': []}


# Top-1 (fractions) per arm and seed, four sub-networks each; seed 1 lacks two arms.
TOP1 = {
    'spnet': {0: [0.90, 0.91, 0.92, 0.93], 1: [0.89, 0.915, 0.925, 0.93]},
    'snet': {0: [0.88, 0.90, 0.915, 0.925], 1: [0.895, 0.90, 0.92, 0.92]},
    'snet_warm': {0: [0.895, 0.905, 0.91, 0.93]},
    'spnet_reinit': {0: [0.885, 0.90, 0.91, 0.92]},
    'snet_release': {0: [0.87, 0.89, 0.91, 0.92], 1: [0.88, 0.89, 0.91, 0.92]},
    'individual': {0: [0.89, 0.91, 0.92, 0.934], 1: [0.89, 0.91, 0.92, 0.93]},
}


def _results():
    return {m: {s: _result(t) for s, t in per_seed.items()} for m, per_seed in TOP1.items()}


def test_paired_differences_are_per_seed_and_sub_network():
    rows = reproduce.paired(_results(), 'spnet', 'snet')
    assert [r['seeds'] for r in rows] == [[0, 1]] * 4
    assert rows[0]['diffs'] == pytest.approx([2.0, -0.5])
    assert rows[0]['wins'] == 1 and rows[0]['diff_min'] == pytest.approx(-0.5)
    assert rows[1]['diff_mean'] == pytest.approx(1.25) and rows[1]['wins'] == 2
    # Only the seeds both arms finished are paired.
    assert [r['seeds'] for r in reproduce.paired(_results(), 'spnet', 'snet_warm')] == [[0]] * 4
    assert reproduce.paired(_results(), 'spnet', 'missing') == []


def test_verdict_splits_the_margin_into_warm_start_and_structures():
    results = {m: {0: r[0]} for m, r in _results().items()}  # one seed: all arms present
    pairs = [(a, b) for a, b, _ in reproduce.CONVERGED_PAIRS]
    summary = reproduce.summarise(CONVERGED, results, pairs)
    by_pair = {(p['a'], p['b']): p['subnets'] for p in summary['pairs']}
    for k in range(4):
        margin = by_pair[('spnet', 'snet')][k]['diff_mean']
        warm = by_pair[('snet_warm', 'snet')][k]['diff_mean']
        structures = by_pair[('spnet', 'snet_warm')][k]['diff_mean']
        assert warm + structures == pytest.approx(margin)
    lines = reproduce.verdict_converged(CONVERGED, by_pair)
    # x0.25: SP-Net 90.0 vs S-Net 88.0, warm S-Net 89.5: warm start +1.50, structures +0.50.
    assert lines[0].startswith('* x0.25 MACs: SP-Net beat S-Net in all 1 seeds, +2.00')
    assert 'gives +1.50' in lines[0] and '(SP-Net - warm S-Net) +0.50' in lines[0]
    # x1.0: SP-Net 93.0 vs S-Net 92.5; the warm S-Net is SP-Net's x1.0 base fine-tuned.
    assert '+0.50 points' in lines[3] and 'gives +0.50' in lines[3]


def test_report_of_a_partial_study_names_what_is_missing():
    results = _results()
    pairs = [(a, b) for a, b, _ in reproduce.CONVERGED_PAIRS]
    summary = reproduce.summarise(CONVERGED, results, pairs)
    text = reproduce.markdown_converged(CONVERGED, summary, 'cmd', False, 'p.png', [0, 1])
    assert '**Not finished yet** (left out below): spnet_reinit (seed 1), snet_warm (seed 1).' \
        in text
    methods = summary['methods']
    assert methods['spnet']['seeds'] == [0, 1] and methods['snet_warm']['seeds'] == [0]
    assert methods['spnet']['subnets'][0]['top1_mean'] == pytest.approx(89.5)
    assert methods['individual']['subnets'][3]['top1_std'] == pytest.approx(0.2828, abs=1e-4)
    # Seed 1 of the warm S-Net is missing: the verdict does not mix seed sets.
    assert 'SP-Net won 1 of 2 seeds' in text and 'warm start (warm S-Net' not in text.split(
        '## Verdict')[1].splitlines()[2]
    # CPU seconds: sum over seeds, per arm (2 x 100 s wall per run here).
    assert '| SP-Net | 2 | 200 | 200, 200 | 100 | 100, 100 | own |' in text


def test_unknown_arm_is_refused_naming_the_flag():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'benchmarks', 'reproduce.py'),
                           '--arms=spnet,snet_cold', '--report_only'],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert '--arms=spnet,snet_cold' in proc.stderr and 'snet_warm' in proc.stderr


@pytest.mark.slow
def test_smoke_run_warm_snet_starts_from_spnets_base(tmp_path):
    """A few steps of SP-Net and the warm S-Net through the orchestrator: the warm S-Net's
    x1.0 base is SP-Net's (copied, not retrained), both report, and a rerun runs nothing."""
    out = str(tmp_path / 'study')
    cmd = [sys.executable, os.path.join(ROOT, 'benchmarks', 'reproduce.py'), '--smoke',
           '--smoke_steps=3', '--arms=spnet,snet_warm', f'--out={out}']
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    seed0 = tmp_path / 'study_smoke' / 'seed0'
    assert 'bases copied from SP-Net: base_1.0' in proc.stdout
    warm_log = (seed0 / 'snet_warm' / 'run.log').read_text()
    assert '[base_1.0] finished earlier; skipping.' in warm_log
    timing = json.loads((seed0 / 'snet_warm' / 'timing.json').read_text())
    assert timing['bases_from_spnet'] == ['base_1.0'] and timing['cpu_seconds'] > 0
    text = (tmp_path / 'study_smoke' / 'RESULTS.md').read_text()
    assert '| S-Net warm | 1 |' in text and 'copied from SP-Net (base_1.0)' in text
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0 and 'main.py' not in again.stdout


@pytest.mark.slow
def test_sigterm_stops_the_study_keeping_the_time_and_the_checkpoint(tmp_path):
    """SIGTERM to the orchestrator: the running run checkpoints and stops, its time is
    recorded, nothing else starts; the same command then resumes it."""
    import signal
    import time
    out = str(tmp_path / 'study')
    cmd = [sys.executable, os.path.join(ROOT, 'benchmarks', 'reproduce.py'), '--smoke',
           '--smoke_steps=100000', '--arms=individual', f'--out={out}']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    log = tmp_path / 'study_smoke' / 'seed0' / 'individual_0.25' / 'run.log'
    deadline = time.time() + 300
    while time.time() < deadline and ' step ' not in (log.read_text() if log.exists() else ''):
        time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=300)
    assert 'individual_0.25: stopped after' in stdout and 'rerun the command' in stdout
    assert 'individual_0.5:' not in stdout.split('stopped after')[0]  # nothing else started
    assert not os.path.exists(tmp_path / 'study_smoke' / 'seed0' / 'individual_0.5' /
                              'run.log')
    timing = json.loads((log.parent / 'timing.json').read_text())
    assert timing['seconds'] > 0 and timing['cpu_seconds'] > 0
    assert 'on SIGTERM; the state is checkpointed' in log.read_text()


def test_a_recorded_run_is_not_run_again_and_a_record_of_another_e_is_ignored(tmp_path):
    """A study spans working sessions on fresh machines: a finished run's committed record
    stands for the run (nothing is launched for it); a record of another E does not."""
    records, out = str(tmp_path / 'records'), str(tmp_path / 'out')
    e = CONVERGED.module.EPOCHS
    result = {'rows': [{'top1': 0.9, 'macs': 1, 'params': 2}], 'seconds': 10.0,
              'cpu_seconds': 19.0, 'bases_from_spnet': []}
    reproduce.write_record(records, 0, 'snet', e, result)
    reproduce.write_record(records, 0, 'snet_release', e + 1, result)
    # The orchestrator would launch main.py for a run without a result: --report_only
    # collects only what is finished, so it shows which runs count as done.
    got = reproduce.collect(CONVERGED, out, [0], [], run=False, records=records)
    assert got['snet'][0]['rows'] == result['rows'] and got['snet'][0]['cpu_seconds'] == 19.0
    assert got['snet_release'] == {}
    assert reproduce.run_one(CONVERGED, out, 0, 'snet', [], records=records) == result
    assert not os.path.exists(os.path.join(out, 'seed0', 'snet'))  # nothing was started


def test_with_two_jobs_no_worker_idles_waiting_for_spnets_bases(monkeypatch, tmp_path):
    """While SP-Net trains, the other worker runs an arm that does not need its bases (an arm
    waiting for SP-Net would hold the worker idle for SP-Net's whole run)."""
    import threading

    other_started, started = threading.Event(), []

    def run_one(study, out, seed, name, extra, niceness=0, records=None):
        started.append(name)
        if name == 'spnet':
            assert other_started.wait(timeout=30), 'the second worker sat idle behind SP-Net'
        else:
            other_started.set()
        return _result([0.9] * 4)

    monkeypatch.setattr(reproduce, 'run_one', run_one)
    results = reproduce.collect(CONVERGED, str(tmp_path), [0], [], run=True, jobs=2)
    assert started[:2] == ['spnet', 'snet'] or started[:2] == ['snet', 'spnet']
    assert set(started[-2:]) == set(reproduce.BASES_FROM_SPNET)
    assert all(0 in results[m] for m in CONVERGED.methods)
