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
    'spnet_aligned': {0: [0.9, 0.91, 0.92, 0.93], 1: [0.9, 0.91, 0.92, 0.93]},
    'spnet_nozpm': {0: [0.9, 0.91, 0.92, 0.93], 1: [0.9, 0.91, 0.92, 0.93]},
    'spnet_latency': {0: [0.9, 0.91, 0.92, 0.93], 1: [0.9, 0.91, 0.92, 0.93]},
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
    assert set(started[-len(reproduce.BASES_FROM_SPNET):]) == set(reproduce.BASES_FROM_SPNET)
    assert all(0 in results[m] for m in CONVERGED.methods)


# ------------------------------------------------------------------ pruning variants, latency
study_latency = reproduce.study_latency
VARIANTS = ('spnet_aligned', 'spnet_nozpm')


def _zpm_strings_landed() -> bool:
    """prune.zpm takes 'release' / 'aligned' / 'none' once the zpm branch is merged; until
    then the variants' configs cannot be built (a bool field refuses a string)."""
    try:
        CONVERGED.module.get_config('spnet_nozpm')
    except TypeError:
        return False
    return True


needs_zpm_strings = pytest.mark.skipif(not _zpm_strings_landed(),
                                       reason="prune.zpm='aligned' / 'none' not merged yet")


def test_pruning_variants_start_from_spnets_bases(tmp_path):
    out = str(tmp_path)
    for width in ('0.5', '0.75', '1.0'):
        _stage(str(tmp_path / 'seed0' / 'spnet' / f'base_{width}'))
    for arm in VARIANTS:
        assert arm in reproduce.BASES_FROM_SPNET
        assert reproduce.share_bases(out, 0, arm) == ['base_0.5', 'base_0.75', 'base_1.0']
        assert reproduce.spnet_bases_missing(CONVERGED, out, 0, arm) == []
        assert reproduce.spnet_bases_missing(CONVERGED, str(tmp_path / 'x'), 0, arm) == [
            'base_0.5', 'base_0.75', 'base_1.0']
    # They run after SP-Net, and are reported as SP-Net arms (their widths are pruned).
    order = CONVERGED.run_order
    assert all(order.index(arm) > order.index('spnet') for arm in VARIANTS)
    assert CONVERGED.widths_of('spnet_nozpm') == [None, None, None, 1.0]


@needs_zpm_strings
def test_pruning_variants_differ_from_spnet_only_in_pruning():
    module = CONVERGED.module
    spnet = module.get_config('spnet')
    for arm, zpm in (('spnet_aligned', 'aligned'), ('spnet_nozpm', 'none')):
        config = module.get_config(arm)
        assert config.stages == 'prune,slim,eval'
        assert config.prune.zpm == zpm and config.prune.round_to == module.ROUND_TO
        assert config.prune.macs_tolerance == module.MACS_TOLERANCE
        for section in ('base', 'slim', 'data', 'model', 'eval'):
            assert config[section].to_dict() == spnet[section].to_dict(), section
        own = ('zpm', 'round_to', 'macs_tolerance')  # what a variant's pruning is
        prune = {k: v for k, v in config.prune.items() if k not in own}
        assert prune == {k: v for k, v in spnet.prune.items() if k not in own}
        assert config.seed == spnet.seed and config.method == spnet.method == 'spnet'
    # SP-Net itself stays the release's pruning, as its recorded runs were pruned.
    assert (spnet.prune.zpm, spnet.prune.round_to) == ('release', 1)


def test_top1_at_is_a_straight_line_between_the_baselines_widths():
    # (ms, top-1) of four widths, given out of order; between them a straight line.
    points = [(40.0, 92.0), (10.0, 90.0), (20.0, 91.0), (30.0, 91.2)]
    assert study_latency.top1_at(points, 15.0) == (pytest.approx(90.5), '')
    assert study_latency.top1_at(points, 37.5) == (pytest.approx(91.2 + 0.8 * 0.75), '')
    assert study_latency.top1_at(points, 20.0) == (pytest.approx(91.0), '')
    # Outside the measured range the nearest width stands in, and says so.
    assert study_latency.top1_at(points, 5.0) == (90.0, 'faster')
    assert study_latency.top1_at(points, 50.0) == (92.0, 'slower')


def _net(name):
    return {'arch': {'name': 'fake', 'full_width': 1.0}, 'structure': {'id': name}}


def _run(top1s, nets):
    return {**_result(top1s), 'networks': [_net(n) for n in nets]}


def _latency(ms_of: dict) -> dict:
    """A latency.json of fake networks: name -> (ms at batch 32, ms at batch 256)."""
    networks = {study_latency.network_key(_net(n)): {
        **_net(n), 'ms': {'32': a, '256': b}, 'spread': {'32': 0.01, '256': 0.02}}
        for n, (a, b) in ms_of.items()}
    return {'networks': networks, 'batches': [32, 256], 'date': 'd', 'device': 'cpu',
            'backend': 'cpu', 'cpus': 2, 'load_average_before': [1.0], 'load_average_after':
            [1.0], 'repeats': 3, 'seconds': 0.0}


# S-Net's widths take 10 / 20 / 30 / 40 ms at batch 32 (the same networks in both seeds);
# each seed's SP-Net structures are its own networks.
MS = {'u0': (10, 100), 'u1': (20, 200), 'u2': (30, 300), 'u3': (40, 400),
      'p0a': (15, 150), 'p1a': (20, 200), 'p2a': (45, 450), 'p3a': (5, 50),
      'p0b': (12.5, 125), 'p1b': (25, 250), 'p2b': (35, 350), 'p3b': (40, 400)}
UNIFORM = ['u0', 'u1', 'u2', 'u3']


def _latency_results():
    return {
        'spnet': {0: _run([0.90, 0.91, 0.93, 0.93], ['p0a', 'p1a', 'p2a', 'p3a']),
                  1: _run([0.89, 0.915, 0.925, 0.93], ['p0b', 'p1b', 'p2b', 'p3b'])},
        'snet': {0: _run([0.88, 0.90, 0.915, 0.925], UNIFORM),
                 1: _run([0.895, 0.90, 0.92, 0.92], UNIFORM)},
        'snet_warm': {0: _run([0.885, 0.905, 0.91, 0.93], UNIFORM),
                      1: _run([0.88, 0.91, 0.915, 0.935], UNIFORM)},
        'individual': {0: _run([0.89, 0.91, 0.92, 0.934], UNIFORM)},
    }


def test_equal_latency_compares_each_seed_with_the_baseline_at_the_same_ms():
    rows = study_latency.equal_latency(_latency_results(), _latency(MS), 'spnet', 'snet', 32)
    assert [r['seeds'] for r in rows] == [[0, 1]] * 4
    # Worked by hand. Seed 0, S-Net 88 / 90 / 91.5 / 92.5 at 10 / 20 / 30 / 40 ms:
    # x0.25 at 15 ms: 90 - 89 = +1; x0.5 at 20 ms: 91 - 90 = +1; x0.75 at 45 ms (beyond
    # x1.0: its 92.5 stands in): 93 - 92.5 = +0.5; x1.0 at 5 ms (below x0.25): 93 - 88 = +5.
    # Seed 1, S-Net 89.5 / 90 / 92 / 92: x0.25 at 12.5 ms: 89 - 89.625 = -0.625; x0.5 at
    # 25 ms: 91.5 - 91 = +0.5; x0.75 at 35 ms: 92.5 - 92 = +0.5; x1.0 at 40 ms: 93 - 92 = +1.
    expected = [[1.0, -0.625], [1.0, 0.5], [0.5, 0.5], [5.0, 1.0]]
    for row, want in zip(rows, expected, strict=True):
        assert row['diffs'] == pytest.approx(want)
    assert rows[0]['wins'] == 1 and rows[0]['diff_mean'] == pytest.approx(0.1875)
    assert rows[2]['outside'] == ['slower', ''] and rows[3]['outside'] == ['faster', '']
    assert rows[0]['ms'] == [15, 12.5]
    # At batch 256 the ms scale alike: the same comparison.
    rows256 = study_latency.equal_latency(_latency_results(), _latency(MS), 'spnet', 'snet',
                                          256)
    assert [r['diffs'] for r in rows256] == [r['diffs'] for r in rows]
    # Only the seeds both arms finished and had measured are compared.
    assert [r['seeds'] for r in study_latency.equal_latency(
        _latency_results(), _latency(MS), 'spnet', 'individual', 32)] == [[0]] * 4
    # Entries are matched by the networks they keep, not by the key they were stored under.
    stale = _latency(MS)
    stale['networks'] = {f'old-{k}': v for k, v in stale['networks'].items()}
    assert study_latency.equal_latency(_latency_results(), stale, 'spnet', 'snet', 32) == rows
    unmeasured = {k: v for k, v in MS.items() if k != 'p2b'}
    assert [r['seeds'] for r in study_latency.equal_latency(
        _latency_results(), _latency(unmeasured), 'spnet', 'snet', 32)] == [[0]] * 4


def test_report_shows_measured_ms_and_a_computed_verdict_at_equal_latency():
    results = _latency_results()
    latency = _latency(MS)
    pairs = [(a, b) for a, b, _ in reproduce.CONVERGED_PAIRS]
    summary = reproduce.summarise(CONVERGED, results, pairs)
    lat = study_latency.summarise(results, latency, CONVERGED.methods)
    text = reproduce.markdown_converged(CONVERGED, summary, 'cmd', False, 'p.png', [0, 1],
                                        lat, latency, 'l.png')
    # ms columns beside top-1: SP-Net x0.25 took 15 and 12.5 ms at batch 32: mean 13.75.
    assert '| SP-Net | 0 | 0.25 |' in text and '| 2 | 13.75 | 137.50 |' in text
    assert '| S-Net | 3 | 1 |' in text and '| 2 | 40.00 | 400.00 |' in text
    # Seed 0 vs warm S-Net (88.5 / 90.5 / 91 / 93 at 10..40 ms): +0.5, +0.5, +0 (slower:
    # 93 - 93), +4.5 (faster); seed 1 (88 / 91 / 91.5 / 93.5): 89 - 88.75 = +0.25,
    # 91.5 - 91.25 = +0.25, 92.5 - 92.5 = 0, 93 - 93.5 = -0.5.
    warm = next(p for p in lat['pairs'] if (p['a'], p['b'], p['batch']) == (
        'spnet', 'snet_warm', 32))['subnets']
    assert [r['diffs'] for r in warm] == [pytest.approx(d) for d in (
        [0.5, 0.25], [0.5, 0.25], [0.0, 0.0], [4.5, -0.5])]
    # Beats both in every seed only at x0.5 (x0.25 loses a seed to S-Net, x1.0 to warm
    # S-Net, and x0.75 only ties warm S-Net).
    line = next(x for x in text.splitlines()
                if x.startswith('* SP-Net, equal latency at batch 32:'))
    assert line == ('* SP-Net, equal latency at batch 32: beats S-Net and S-Net warm in every '
                    'seed at x0.5; not at x0.25 (S-Net 1/2 seeds, +0.19; S-Net warm 2/2 seeds, '
                    '+0.38), x0.75 (S-Net 2/2 seeds, +0.50; S-Net warm 0/2 seeds, +0.00), x1 '
                    '(S-Net 2/2 seeds, +3.00; S-Net warm 1/2 seeds, +2.00).')
    assert '| SP-Net - S-Net | 32 | +0.19 [-0.62, +1.00] 1/2 |' in text
    assert '+3.00 [+1.00, +5.00] 2/2 (faster) |' in text
    assert 'batch 32: median 1%, max 1%; batch 256: median 2%, max 2%' in text
    # At equal MACs (sub-network k against width k): seed 0 +2 / +1 / +1.5 / +0.5 over
    # S-Net and +1.5 / +0.5 / +2 / 0 over warm S-Net; seed 1 -0.5 / +1.5 / +0.5 / +1 and
    # +1 / +0.5 / +1 / -0.5.
    assert ('* SP-Net, equal MACs: beats S-Net and S-Net warm in every seed at x0.5, x0.75; '
            'not at x0.25 (S-Net 1/2 seeds, +0.75; S-Net warm 2/2 seeds, +1.25), x1 (S-Net '
            '2/2 seeds, +0.75; S-Net warm 0/2 seeds, -0.25).') in text
    # Without warm S-Net the line says so.
    no_warm = {k: v for k, v in results.items() if k != 'snet_warm'}
    lat = study_latency.summarise(no_warm, latency, CONVERGED.methods)
    by = {(p['a'], p['b']): p['subnets'] for p in lat['pairs'] if p['batch'] == 256}
    assert study_latency.verdict(by, CONVERGED.labels, [0.25, 0.5, 0.75, 1.0], 'w') == [
        '* SP-Net, w: beats S-Net in every seed at x0.5, x0.75, x1; not at x0.25 (S-Net 1/2 '
        'seeds, +0.19) (S-Net warm: not finished or not measured).']


def test_latency_rounds_interleave_every_network_and_keep_medians():
    now = [0.0]
    # Each call advances a fake clock by its next duration.
    durations = {'a': iter([9, 1, 2, 3]), 'b': iter([9, 5, 5, 50]), 'c': iter([9, 7, 1, 7])}

    def call(name):
        return lambda: now.__setitem__(0, now[0] + next(durations[name]))

    log = []
    times = study_latency.time_interleaved({n: call(n) for n in 'abc'}, repeats=3, warmup=1,
                                           clock=lambda: now[0], log=log)
    assert log == ['a', 'b', 'c', 'b', 'c', 'a', 'c', 'a', 'b']  # round r starts r further
    assert times == {'a': [1, 2, 3], 'b': [5, 5, 50], 'c': [7, 1, 7]}

    # measure(): every network at every batch in the same rounds; medians in ms.
    now[0], built = 0.0, []
    seconds = {('n1', 2): [0.001, 0.003, 0.002], ('n1', 4): [0.004] * 3,
               ('n2', 2): [0.010, 0.030, 0.020], ('n2', 4): [0.050, 0.040, 0.060]}
    runs = {k: iter(v) for k, v in seconds.items()}

    def build(network, shape, batches):
        name = network['structure']['id']
        built.append((name, tuple(shape), tuple(batches)))
        return {b: (lambda key=(name, b): now.__setitem__(0, now[0] + next(runs[key])))
                for b in batches}, 7, 3

    networks = {'k1': _net('n1'), 'k2': _net('n2')}
    got = study_latency.measure(networks, (8, 8, 1), batches=(2, 4), repeats=3, warmup=0,
                                build=build, clock=lambda: now[0])
    assert built == [('n1', (8, 8, 1), (2, 4)), ('n2', (8, 8, 1), (2, 4))]
    assert got['networks']['k1']['ms'] == {'2': pytest.approx(2.0), '4': pytest.approx(4.0)}
    assert got['networks']['k2']['ms'] == {'2': pytest.approx(20.0), '4': pytest.approx(50.0)}
    assert got['networks']['k2']['spread']['4'] == pytest.approx(10 / 50)  # IQR 45..55
    assert got['networks']['k1']['macs'] == 7 and got['repeats'] == 3
    assert got['batches'] == [2, 4] and len(got['networks']['k2']['times_ms']['2']) == 3


def _real_record(name, structure, source_arch, rows_macs=None):
    from spnet_jax.core.cost import subnet_costs
    costs = subnet_costs(source_arch, structure, 28, 1)
    rows = [{'top1': 0.9, 'macs': (rows_macs or [c.macs for c in costs])[k], 'params': 1}
            for k in range(structure.num_subnets)]
    return {'rows': rows, 'seconds': 1.0, 'cpu_seconds': 1.0, 'bases_from_spnet': []}


def test_latency_step_gives_recorded_runs_structures_and_times_each_network_once(
        tmp_path, monkeypatch):
    """Runs recorded before records kept structures: S-Net arms get theirs from the config,
    SP-Net arms from the prune stage rerun on the bases in ``out`` (or a stated reason when
    they are not there); then every distinct deployed network is timed once, in one call."""
    from spnet_jax.core.structure import uniform_structure
    from spnet_jax.models import arch_from_config
    from spnet_jax.train.settings import Settings

    out, records = str(tmp_path / 'out'), str(tmp_path / 'records')
    module = CONVERGED.module
    e = module.EPOCHS
    arch = arch_from_config(Settings.from_config(module.get_config('snet')).model)
    snet = arch.snet_structure((0.25, 0.5, 0.75, 1.0))
    # A stand-in for a pruned structure: uniform counts, SP-Net's shared BN.
    pruned = uniform_structure(arch.table, (0.25, 0.5, 0.75, 1.0), method='spnet')
    for seed in (0, 1):
        reproduce.write_record(records, seed, 'snet', e, _real_record('snet', snet, arch))
        reproduce.write_record(records, seed, 'spnet', e, _real_record('spnet', pruned, arch))
    for width in (0.25, 0.5, 0.75, 1.0):
        alone = arch.at_width(width)
        reproduce.write_record(records, 0, f'individual_{width:g}', e,
                               _real_record('i', alone.snet_structure((width,)), alone))
    for width in ('0.5', '0.75', '1.0'):  # seed 0's SP-Net bases are here, seed 1's are not
        _stage(os.path.join(out, 'seed0', 'spnet', f'base_{width}'))
    pruned_runs = []

    def rerun_prune(study, out_, seed, name, extra, niceness=0):
        pruned_runs.append((seed, name))
        path = os.path.join(out_, f'seed{seed}', name, 'pruned')
        _stage(path)
        pruned.save(os.path.join(path, 'structure.json'))

    timed = []

    def measure(networks, shape, repeats=30):
        timed.append((sorted(networks), tuple(shape), repeats))
        return _latency({})

    monkeypatch.setattr(reproduce, 'rerun_prune', rerun_prune)
    monkeypatch.setattr(reproduce.study_latency, 'measure', measure)
    path = str(tmp_path / 'latency.json')
    results = reproduce.measure_latency(CONVERGED, out, [0, 1], [], 0, records, path, 5)
    assert pruned_runs == [(0, 'spnet')]
    spnet0 = reproduce.read_record(records, 0, 'spnet', e)
    assert spnet0['structure_source'] == f'prune stage rerun on the bases in {out}'
    assert spnet0['structure_macs_difference'] == 0.0
    assert spnet0['structure'] == json.loads(pruned.to_json())
    assert reproduce.read_record(records, 0, 'snet', e)['structure_source'] == 'config'
    assert 'structure' not in reproduce.read_record(records, 1, 'spnet', e)
    saved = json.loads(open(path).read())
    assert saved['without_structure'] == [
        f"spnet (seed 1): no structure recorded and SP-Net's base_0.5, base_0.75, base_1.0 "
        f'not finished in {out}']
    # S-Net's, the individual networks' and this stand-in's deployed networks are the same
    # four programs: timed once each, all in one call, at 28x28x1.
    assert len(timed) == 1 and len(timed[0][0]) == 4 and timed[0][1:] == ((28, 28, 1), 5)
    keys = [study_latency.network_key(n) for n in results['snet'][0]['networks']]
    assert keys == [study_latency.network_key(n) for n in results['individual'][0]['networks']]
    assert keys == [study_latency.network_key(n) for n in results['spnet'][0]['networks']]
    assert results['spnet'][1]['networks'] is None
    # A second run has nothing left to rebuild for seed 0.
    reproduce.measure_latency(CONVERGED, out, [0], [], 0, records, path, 5)
    assert pruned_runs == [(0, 'spnet')]


def test_a_finished_run_records_its_structure(tmp_path):
    """What re-measures latency on a fresh machine: the record of a finished run keeps the
    network's architecture and structure."""
    out, records = str(tmp_path / 'out'), str(tmp_path / 'records')
    workdir = tmp_path / 'out' / 'seed0' / 'snet'
    (workdir / 'slim').mkdir(parents=True)
    structure = {'arch': 'resnet20', 'counts': [[1]]}
    (workdir / 'slim' / 'structure.json').write_text(json.dumps(structure))
    (workdir / 'slim' / 'architecture.json').write_text(json.dumps({'name': 'resnet20'}))
    (workdir / 'report.json').write_text(json.dumps([{'top1': 0.9, 'macs': 1, 'params': 1}]))
    got = reproduce.run_one(CONVERGED, out, 0, 'snet', [], records=records)
    assert got['structure'] == structure and got['structure_source'] == 'run'
    record = reproduce.read_record(records, 0, 'snet', CONVERGED.module.EPOCHS)
    assert record['arch'] == {'name': 'resnet20'} and record['structure'] == structure


def test_a_real_network_is_built_and_timed(tmp_path):
    """`_forwards` on a deployed ResNet-20 x0.25 (the smallest study network, batch 2)."""
    from spnet_jax.models import arch_from_config
    from spnet_jax.train.settings import Settings

    arch = arch_from_config(Settings.from_config(CONVERGED.module.get_config('snet')).model)
    network = study_latency.deployed(arch.spec, json.loads(
        arch.snet_structure((0.25, 1.0)).to_json()))[0]
    got = study_latency.measure({'n': network}, (28, 28, 1), batches=(2,), repeats=2,
                                warmup=1)
    entry = got['networks']['n']
    assert entry['ms']['2'] > 0 and len(entry['times_ms']['2']) == 2
    assert entry['macs'] == pytest.approx(1.96e6, rel=0.02)  # S-Net x0.25's MACs


@pytest.mark.slow
@needs_zpm_strings
def test_smoke_study_with_the_variants_and_latency(tmp_path):
    """A few steps of SP-Net, its no-ZPM variant and S-Net, then the latency step and the
    report: the variant starts from SP-Net's bases and is timed beside S-Net."""
    out = str(tmp_path / 'study')
    cmd = [sys.executable, os.path.join(ROOT, 'benchmarks', 'reproduce.py'), '--smoke',
           '--smoke_steps=2', '--arms=spnet,spnet_nozpm,snet', '--latency',
           '--latency_repeats=2', f'--out={out}']
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'spnet_nozpm' in proc.stdout and 'bases copied from SP-Net: base_0.5' in proc.stdout
    smoke = tmp_path / 'study_smoke'
    latency = json.loads((smoke / 'latency.json').read_text())
    assert latency['repeats'] == 2 and latency['without_structure'] == []
    text = (smoke / 'RESULTS.md').read_text()
    assert '| SP-Net no ZPM - S-Net | 32 |' in text
    assert '* SP-Net no ZPM, equal latency at batch 256:' in text
    assert '* SP-Net no ZPM, equal MACs:' in text
    assert (smoke / 'results_latency.png').exists()


def test_the_same_program_is_one_network_to_time():
    """S-Net x0.25, the individual x0.25 network and a no-ZPM structure of the same counts
    are the same deployed program; a ZPM stream's order is part of the program."""
    def net(full_width, width, junctions, order):
        return {'arch': {'name': 'resnet20', 'full_width': full_width},
                'structure': {'counts': [[4, 8]], 'widths': [width], 'junctions': junctions,
                              'stream_order': order}}

    key = study_latency.network_key
    assert key(net(1.0, 0.25, [], 'ascending')) == key(net(0.25, 0.25, [], 'appended'))
    assert key(net(1.0, 0.25, ['j'], 'ascending')) != key(net(1.0, 0.25, ['j'], 'appended'))
    assert key(net(1.0, 0.25, [], 'ascending')) != key(net(1.0, 0.25, ['j'], 'ascending'))


def test_the_latency_arm_prunes_spnets_bases_to_snets_measured_time(tmp_path):
    module = CONVERGED.module
    spnet, config = module.get_config('spnet'), module.get_config('spnet_latency')
    assert config.stages == 'prune,slim,eval'
    assert config.prune.latency_widths == (0.25, 0.5, 0.75)
    assert (config.prune.zpm, config.prune.round_to) == ('aligned', 8)
    for section in ('base', 'slim', 'data', 'model', 'eval'):
        assert config[section].to_dict() == spnet[section].to_dict(), section
    from spnet_jax.train.settings import Settings
    source = config.to_dict()
    source['data']['data_dir'] = None
    assert Settings.from_config(source).prune.sizing_field == 'prune.latency_widths'
    for width in ('0.5', '0.75', '1.0'):
        _stage(str(tmp_path / 'seed0' / 'spnet' / f'base_{width}'))
    assert reproduce.share_bases(str(tmp_path), 0, 'spnet_latency') == [
        'base_0.5', 'base_0.75', 'base_1.0']
