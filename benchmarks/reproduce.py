r"""The Fashion-MNIST reproductions of SP-Net vs S-Net vs individual networks at equal MACs.

Two studies, one orchestrator:

* ``--study=converged`` (issue 11, ``benchmarks/RESULTS.md``): all 60,000 training images, the
  paper's protocol scaled down (bases E epochs, slimmable fine-tuning 2/3 E, S-Net and
  individual networks E epochs), with the ablations that say where SP-Net's margin comes from:
  SP-Net re-trained from fresh weights (``prune.start='reinit'``), S-Net as the release trains
  it (no in-place distillation), S-Net with it, and S-Net started from SP-Net's trained x1.0
  base; and SP-Net's pruning variants from the same bases (aligned ZPM, no ZPM). Config:
  ``configs/fashion_mnist_converged.py``. About 4.5 hours of a 2-core machine per seed.
  ``--latency`` then times every finished run's deployed sub-networks, interleaved in one
  process (`study_latency`), and the report compares them at equal measured latency too.
* ``--study=short`` (issue 6, ``benchmarks/RESULTS_short_budget.md``): 6,000 images, 2 epochs,
  3 seeds, about 80 minutes. Config: ``configs/fashion_mnist_repro.py``.

    python benchmarks/reproduce.py --study=converged --out=/work/converged --seeds=0,1
    python benchmarks/reproduce.py --study=converged --smoke   # a few steps of every arm
    python benchmarks/reproduce.py --study=converged --report_only --out=/work/converged
    python benchmarks/reproduce.py --study=converged --report_only --latency --out=/work/converged

Each (seed, run) is one ``python main.py --config=<config>:<run>`` in ``<out>/seed<s>/<run>``;
a run whose ``report.json`` exists is skipped, and ``main.py`` itself resumes an interrupted
one, so rerunning the command continues where it stopped (CPU and wall seconds of the parts
add up in ``timing.json``). The measured numbers go to the study's json; its markdown and
plot are generated from them (``benchmarks/`` for the full run, ``<out>`` for ``--smoke``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import study_latency  # noqa: E402

from configs import fashion_mnist_repro as repro  # noqa: E402
from configs.fashion_mnist import SNET_MACS, SNET_WIDTHS  # noqa: E402
from spnet_jax.cli.profile import profile_config  # noqa: E402
from spnet_jax.core.cost import subnet_costs  # noqa: E402
from spnet_jax.core.structure import Structure  # noqa: E402
from spnet_jax.models import arch_from_config, arch_from_spec  # noqa: E402
from spnet_jax.train.settings import Settings  # noqa: E402
from spnet_jax.workdir import checkpoint  # noqa: E402

BASES_FROM_SPNET = ('spnet_reinit', 'snet_warm', 'spnet_aligned', 'spnet_nozpm',
                    'spnet_latency')
# Set by SIGTERM / Ctrl-C: the running runs are stopped (they checkpoint and exit, and their
# time is recorded), none is started; rerunning the command resumes them.
STOP: dict = {'requested': False, 'children': set()}


def _stop(signum, frame):
    STOP['requested'] = True
    for child in list(STOP['children']):
        child.send_signal(signal.SIGTERM)


@dataclasses.dataclass(frozen=True)
class Study:
    """One reproduction: its config file, its arms (``methods``) in report order, and where
    its generated files go (``<docs>/<stem>.md``, ``<json>.json``, ``<json>.png``)."""
    name: str
    config: str
    methods: tuple[str, ...]
    labels: dict[str, str]
    run_order: tuple[str, ...]  # the longest runs first; SP-Net before the arms sharing its bases
    markdown_stem: str
    json_stem: str
    notes: str
    default_seeds: str
    # Where each finished run's result is kept in the repository (None: nowhere): a working
    # session's machine is fresh, so a study that spans sessions continues from these.
    records: str | None = None

    @property
    def module(self):
        return importlib.import_module(self.config[:-3].replace('/', '.'))

    def runs_of(self, method: str) -> list[str]:
        """The config strings one seed of ``method`` needs."""
        if method == 'individual':
            return [f'individual_{w:g}' for w in SNET_WIDTHS]
        return [method]

    def widths_of(self, method: str):
        """The S-Net width of each sub-network, None for SP-Net's pruned ones."""
        if method.startswith('spnet'):
            return [None] * (len(SNET_WIDTHS) - 1) + [1.0]
        return list(SNET_WIDTHS)


def _cpu_seconds_of(pid: int) -> float | None:
    """user + system CPU seconds of a live process (Linux), None when it is gone."""
    try:
        with open(f'/proc/{pid}/stat') as fh:
            fields = fh.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return None


def _wait_for_other(lock: str) -> dict | None:
    """If another orchestrator's run holds ``lock`` (a live pid), waits for it to end and
    returns its wall and CPU seconds; None when no live run holds it."""
    try:
        with open(lock) as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        return None
    pid, cpu = info['pid'], None
    while (now := _cpu_seconds_of(pid)) is not None:
        cpu = now
        time.sleep(5)
    return {'seconds': time.time() - info['start'], 'cpu_seconds': cpu}


def share_bases(out: str, seed: int, name: str) -> list[str]:
    """The arms that need SP-Net's trained bases (``BASES_FROM_SPNET``) get copies of the
    same seed's finished SP-Net base folders instead of training them again.

    Not only cheaper: the bases' initial weights depend on their index in ``base.widths``, so
    the warm S-Net (one base, x1.0) would otherwise start from a different x1.0 network than
    the one SP-Net fine-tunes from. Returns the folders copied (none when the run has them
    or SP-Net's are not finished)."""
    if name not in BASES_FROM_SPNET:
        return []
    source = os.path.join(out, f'seed{seed}', 'spnet')
    target = os.path.join(out, f'seed{seed}', name)
    copied = []
    for folder in sorted(os.listdir(source)) if os.path.isdir(source) else []:
        if not folder.startswith('base_') or name == 'snet_warm' and folder != 'base_1.0':
            continue
        src, dst = os.path.join(source, folder), os.path.join(target, folder)
        if os.path.exists(os.path.join(src, 'done.json')) and not os.path.exists(dst):
            shutil.copytree(src, dst)
            copied.append(folder)
    return copied


def spnet_bases_missing(study: Study, out: str, seed: int, name: str) -> list[str]:
    """The SP-Net base folders that ``name`` needs and that are not finished in ``out`` (a
    fresh machine after an earlier session recorded SP-Net: its records keep the numbers,
    not the trained bases)."""
    if name not in BASES_FROM_SPNET:
        return []
    widths = (1.0,) if name == 'snet_warm' else study.module.SPNET_BASES
    source = os.path.join(out, f'seed{seed}', 'spnet')
    return [f'base_{float(w)}' for w in widths  # the stage folders' names (checkpoint.base_dir)
            if not os.path.exists(os.path.join(source, f'base_{float(w)}', 'done.json'))]


def rerun_spnet_bases(study: Study, out: str, seed: int, extra: list[str],
                      niceness: int = 0) -> float:
    """Trains the seed's SP-Net bases again (``--config.stages=base``, same config and seed:
    the same networks up to float summation order) so that the arms starting from them start
    from SP-Net's bases rather than from bases of their own. Returns the CPU seconds, which
    are SP-Net's cost and are not added to the dependent arm's."""
    workdir = os.path.join(out, f'seed{seed}', 'spnet')
    os.makedirs(workdir, exist_ok=True)
    cmd = [sys.executable, 'main.py', f'--config={study.config}:spnet', f'--workdir={workdir}',
           f'--config.seed={seed}', '--config.stages=base', *extra]
    print(f'[{time.strftime("%H:%M:%S")}] seed {seed} spnet bases again (recorded earlier, '
          f'not on this machine): {" ".join(cmd[1:])}', flush=True)
    env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': os.path.join(out, 'jax_cache')}
    with open(os.path.join(workdir, 'run.log'), 'a') as log:
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 preexec_fn=lambda: os.nice(niceness))
        STOP['children'].add(child)
        _, status, usage = os.wait4(child.pid, 0)
        STOP['children'].discard(child)
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        raise SystemExit(f'seed {seed} spnet bases failed (exit {rc}); see {workdir}/run.log')
    cpu = usage.ru_utime + usage.ru_stime
    print(f'[{time.strftime("%H:%M:%S")}] seed {seed} spnet bases: done, {cpu:.0f} s CPU',
          flush=True)
    return cpu


def record_path(records: str, seed: int, name: str) -> str:
    return os.path.join(records, f'seed{seed}', f'{name}.json')


def read_record(records: str | None, seed: int, name: str, epochs: float) -> dict | None:
    """A finished run's committed result, None when there is none or it is of another E."""
    path = None if records is None else record_path(records, seed, name)
    if path is None or not os.path.exists(path):
        return None
    with open(path) as fh:
        record = json.load(fh)
    return record if record.get('epochs') == epochs else None


def write_record(records: str | None, seed: int, name: str, epochs: float,
                 result: dict) -> None:
    """Keeps a finished run's rows and seconds (a few hundred bytes) in the repository."""
    if records is None:
        return
    path = record_path(records, seed, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as fh:
        json.dump({'epochs': epochs, **result}, fh, indent=1)


def run_one(study: Study, out: str, seed: int, name: str, extra: list[str],
            niceness: int = 0, records: str | None = None) -> dict:
    """Runs (or skips) one pipeline run; returns its report rows, wall and CPU seconds.

    CPU seconds (user + system of the run's process) are the fairer cost on a shared machine:
    wall time depends on what else is running.
    """
    workdir = os.path.join(out, f'seed{seed}', name)
    report = os.path.join(workdir, 'report.json')
    epochs = study.module.EPOCHS
    kept = read_record(records, seed, name, epochs)
    if kept is not None and not os.path.exists(report):  # finished in an earlier session
        return {k: v for k, v in kept.items() if k != 'epochs'}
    timing = os.path.join(workdir, 'timing.json')
    lock = os.path.join(workdir, 'running.json')
    if not os.path.exists(report):
        os.makedirs(workdir, exist_ok=True)
        other = _wait_for_other(lock)
        if other is not None and os.path.exists(report):
            with open(timing, 'w') as fh:
                json.dump(other, fh)
    if not os.path.exists(report) and STOP['requested']:
        raise SystemExit(f'seed {seed} {name}: not started (stopping)')
    if not os.path.exists(report):
        previous = {'seconds': 0.0, 'cpu_seconds': 0.0, 'bases_from_spnet': []}
        if os.path.exists(timing):  # a resumed run adds to the earlier part
            previous.update(json.load(open(timing)))
        if (spnet_bases_missing(study, out, seed, name)
                and read_record(records, seed, 'spnet', epochs) is not None):
            rerun_spnet_bases(study, out, seed, extra, niceness)
        shared = sorted(set(previous['bases_from_spnet']) | set(share_bases(out, seed, name)))
        cmd = [sys.executable, 'main.py', f'--config={study.config}:{name}',
               f'--workdir={workdir}', f'--config.seed={seed}', *extra]
        print(f'[{time.strftime("%H:%M:%S")}] seed {seed} {name}: {" ".join(cmd[1:])}'
              + (f' (bases copied from SP-Net: {", ".join(shared)})' if shared else ''),
              flush=True)
        start = time.time()
        # The persistent compilation cache only saves time (seeds share S-Net and individual
        # programs); it does not change what is computed.
        env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': os.path.join(out, 'jax_cache')}
        # One device per run: two forced XLA:CPU devices (the quickstart's 1.2x) deadlocked
        # in their all-reduce three times in a niced run beside other jobs (2026-12-01).
        with open(os.path.join(workdir, 'run.log'), 'a') as log:
            child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     env=env, preexec_fn=lambda: os.nice(niceness))
            STOP['children'].add(child)
            with open(lock, 'w') as fh:
                json.dump({'pid': child.pid, 'start': start}, fh)
            while True:
                try:
                    _, status, usage = os.wait4(child.pid, 0)
                    break
                except InterruptedError:
                    continue
            STOP['children'].discard(child)
            child.returncode = rc = os.waitstatus_to_exitcode(status)
        os.remove(lock)
        seconds = {'seconds': previous['seconds'] + time.time() - start,
                   'cpu_seconds': (previous['cpu_seconds'] or 0.0) + usage.ru_utime
                   + usage.ru_stime, 'bases_from_spnet': shared}
        with open(timing, 'w') as fh:
            json.dump(seconds, fh)
        if rc != 0 and STOP['requested']:
            raise SystemExit(f'seed {seed} {name}: stopped after {seconds["seconds"]:.0f} s; '
                             'rerun the command to resume it')
        if rc != 0:
            raise SystemExit(f'seed {seed} {name} failed (exit {rc}); see {workdir}/run.log')
        print(f'[{time.strftime("%H:%M:%S")}] seed {seed} {name}: done in '
              f'{seconds["seconds"]:.0f} s wall, {seconds["cpu_seconds"]:.0f} s CPU', flush=True)
    with open(report) as fh:
        rows = json.load(fh)
    timing_info = json.load(open(timing)) if os.path.exists(timing) else {}
    result = {'rows': rows, 'seconds': timing_info.get('seconds'),
              'cpu_seconds': timing_info.get('cpu_seconds'),
              'bases_from_spnet': timing_info.get('bases_from_spnet', []),
              **(network_of_workdir(workdir) or {})}
    write_record(records, seed, name, epochs, result)
    return result


def network_of_workdir(workdir: str) -> dict | None:
    """The finished network's architecture and structure (what rebuilds it to time it on
    another machine), None when the run has no final network."""
    final = checkpoint.final_network_dir(workdir)
    paths = [os.path.join(final, f) for f in (checkpoint.ARCHITECTURE, checkpoint.STRUCTURE)]
    if not all(os.path.exists(p) for p in paths):
        return None
    arch, structure = (json.load(open(p)) for p in paths)
    return {'arch': arch, 'structure': structure, 'structure_source': 'run'}


def network_from_config(study: Study, name: str) -> dict | None:
    """An S-Net arm's (or individual network's) architecture and structure, as its config
    builds them (the widths alone decide them); None for SP-Net arms, whose structure comes
    from pruning."""
    config = study.module.get_config(name)
    if config.method != 'snet':
        return None
    arch = arch_from_config(Settings.from_config(config).model)
    return {'arch': arch.spec,
            'structure': json.loads(arch.snet_structure(config.slim.widths).to_json()),
            'structure_source': 'config'}


def _own_bases_missing(study: Study, out: str, seed: int, name: str) -> list[str]:
    """The finished bases a prune stage of ``name`` needs and ``out`` lacks (SP-Net's own,
    or SP-Net's for the arms that copy them)."""
    if name == 'spnet':
        workdir = os.path.join(out, f'seed{seed}', 'spnet')
        return [f'base_{float(w)}' for w in study.module.SPNET_BASES
                if not os.path.exists(os.path.join(workdir, f'base_{float(w)}', 'done.json'))]
    return spnet_bases_missing(study, out, seed, name)


def rerun_prune(study: Study, out: str, seed: int, name: str, extra: list[str],
                niceness: int = 0) -> None:
    """Runs only the prune stage of ``name`` (``--config.stages=prune``) in its workdir, on
    the bases found there (copied from SP-Net's first for the arms that share them)."""
    workdir = os.path.join(out, f'seed{seed}', name)
    os.makedirs(workdir, exist_ok=True)
    share_bases(out, seed, name)
    cmd = [sys.executable, 'main.py', f'--config={study.config}:{name}', f'--workdir={workdir}',
           f'--config.seed={seed}', '--config.stages=prune', *extra]
    print(f'[{time.strftime("%H:%M:%S")}] seed {seed} {name}: prune stage only, for its '
          f'structure: {" ".join(cmd[1:])}', flush=True)
    env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': os.path.join(out, 'jax_cache')}
    with open(os.path.join(workdir, 'run.log'), 'a') as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=lambda: os.nice(niceness)).returncode
    if rc != 0:
        raise SystemExit(f'seed {seed} {name}: prune stage failed (exit {rc}); see '
                         f'{workdir}/run.log')


def macs_difference(study: Study, name: str, network: dict, rows: list[dict]) -> float:
    """The largest relative difference between a structure's MACs and a recorded run's
    (0 when the structure is the one that run trained)."""
    data = Settings.from_config(study.module.get_config(name)).data
    arch = arch_from_spec(network['arch'])
    structure = Structure.from_json(json.dumps(network['structure']))
    costs = subnet_costs(arch, structure, data.image_size, data.spec.channels)
    return max(abs(c.macs - r['macs']) / r['macs'] for c, r in zip(costs, rows, strict=True))


def add_structure(study: Study, out: str, seed: int, name: str, records: str | None,
                  extra: list[str], niceness: int = 0) -> str | None:
    """Gives a run recorded before records kept structures its structure: the run's own
    when its workdir is here, from the config for S-Net arms, else (SP-Net arms) the prune
    stage run again on the bases in ``out`` (SP-Net's re-trained bases: the recorded run's
    structure up to float summation order; the MACs difference to the recorded run is kept
    beside it). Returns None when the record has a structure now, else why not."""
    record = read_record(records, seed, name, study.module.EPOCHS)
    if record is None or 'structure' in record:
        return None
    workdir = os.path.join(out, f'seed{seed}', name)
    network = (network_of_workdir(workdir) if os.path.exists(os.path.join(workdir, 'report.json'))
               else None) or network_from_config(study, name)
    if network is None:
        pruned = checkpoint.stage_dir(workdir, 'pruned')
        if not checkpoint.is_done(pruned):  # (an interrupted prune stage resumes)
            missing = _own_bases_missing(study, out, seed, name)
            if missing:
                return (f'{name} (seed {seed}): no structure recorded and SP-Net\'s '
                        f'{", ".join(missing)} not finished in {out}')
            rerun_prune(study, out, seed, name, extra, niceness)
        config = study.module.get_config(name)
        network = {'arch': arch_from_config(Settings.from_config(config).model).spec,
                   'structure': json.load(open(os.path.join(pruned, checkpoint.STRUCTURE))),
                   'structure_source': f'prune stage rerun on the bases in {out}'}
    network['structure_macs_difference'] = macs_difference(study, name, network,
                                                           record['rows'])
    write_record(records, seed, name, study.module.EPOCHS,
                 {**{k: v for k, v in record.items() if k != 'epochs'}, **network})
    print(f'seed {seed} {name}: structure from {network["structure_source"]} (MACs within '
          f'{network["structure_macs_difference"]:.2%} of the recorded run\'s)', flush=True)
    return None


def collect(study: Study, out: str, seeds: list[int], extra: list[str], run: bool,
            jobs: int = 1, niceness: int = 0, arms=None, records: str | None = None) -> dict:
    """Per method and seed: sub-network rows (smallest first), wall and CPU seconds.

    With ``jobs`` > 1, that many runs go at once (in seed order): on a few CPU cores this
    overlaps one run's single-threaded XLA compilation with another's training. A failed
    run is reported and the others go on; its method is left out of the report.
    """
    arms = study.run_order if arms is None else [m for m in study.run_order if m in arms]
    tasks = [(seed, name) for seed in seeds for method in arms for name in study.runs_of(method)]
    if jobs > 1:  # an arm waiting for SP-Net's bases would hold a worker: queue it last
        tasks.sort(key=lambda t: (t[0], t[1] in BASES_FROM_SPNET))
    done: dict = {}
    if run:
        spnet_runs: dict = {}  # seed -> SP-Net's future: the arms sharing its bases wait on it

        def after_spnet(seed, name):
            if name in BASES_FROM_SPNET and seed in spnet_runs:
                try:
                    spnet_runs[seed].result()
                except SystemExit:
                    raise SystemExit(f'seed {seed} {name} not run: it starts from SP-Net\'s '
                                     'bases, and the SP-Net run of this seed failed') from None
            return run_one(study, out, seed, name, extra, niceness, records)

        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {}
            for seed, name in tasks:  # SP-Net is submitted before the arms that wait on it
                futures[pool.submit(after_spnet, seed, name)] = (seed, name)
                if name == 'spnet':
                    spnet_runs[seed] = next(f for f, t in futures.items() if t == (seed, name))
            for future in concurrent.futures.as_completed(futures):
                try:
                    done[futures[future]] = future.result()
                except SystemExit as e:
                    print(e, flush=True)
    else:
        for seed, name in tasks:
            if (os.path.exists(os.path.join(out, f'seed{seed}', name, 'report.json'))
                    or read_record(records, seed, name, study.module.EPOCHS) is not None):
                done[(seed, name)] = run_one(study, out, seed, name, extra, records=records)
    results: dict = {m: {} for m in study.methods}
    for seed in seeds:
        for method in study.methods:
            names = study.runs_of(method)
            if all((seed, name) in done for name in names):
                parts = [done[(seed, name)] for name in names]
                results[method][seed] = {
                    'rows': [row for part in parts for row in part['rows']],
                    'seconds': sum(part['seconds'] or 0.0 for part in parts),
                    'cpu_seconds': sum(part['cpu_seconds'] or 0.0 for part in parts),
                    'bases_from_spnet': sorted({b for part in parts
                                                for b in part['bases_from_spnet']}),
                    # Each sub-network as deployed, when every part's structure is known.
                    'networks': ([n for part in parts for n in study_latency.deployed(
                        part['arch'], part['structure'])]
                        if all('structure' in part for part in parts) else None),
                    'structure_sources': sorted({_source(part) for part in parts
                                                 if 'structure_source' in part})}
    return results


def _source(part: dict) -> str:
    """Where a run's structure came from, with its MACs check when it was rebuilt."""
    if 'structure_macs_difference' not in part:
        return part['structure_source']
    return (f'{part["structure_source"]} (MACs within {part["structure_macs_difference"]:.2%} '
            'of the recorded run\'s)')


def _mean(xs):
    return statistics.fmean(xs)


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def paired(results: dict, a: str, b: str) -> list[dict]:
    """``a`` minus ``b`` in top-1 points per sub-network, paired by seed (the seeds both
    finished); [] when they share none."""
    seeds = sorted(set(results.get(a, {})) & set(results.get(b, {})))
    if not seeds:
        return []
    rows = []
    for k in range(len(results[a][seeds[0]]['rows'])):
        diffs = [100 * (results[a][s]['rows'][k]['top1'] - results[b][s]['rows'][k]['top1'])
                 for s in seeds]
        rows.append({'subnet': k, 'seeds': seeds, 'diffs': diffs, 'diff_mean': _mean(diffs),
                     'diff_min': min(diffs), 'diff_max': max(diffs),
                     'wins': sum(d > 0 for d in diffs)})
    return rows


def summarise(study: Study, results: dict, pairs=()) -> dict:
    """Mean / std / min / max of top-1 per method and sub-network; paired differences for
    each (a, b) in ``pairs``; and, for the short study's report, SP-Net vs S-Net rows."""
    summary: dict = {'methods': {}, 'comparisons': [], 'pairs': []}
    for method in study.methods:
        per_seed = results.get(method)
        if not per_seed:
            continue
        seeds = sorted(per_seed)
        n_sub = len(per_seed[seeds[0]]['rows'])
        widths = study.widths_of(method)
        subnets = []
        for k in range(n_sub):
            top1 = [100 * per_seed[s]['rows'][k]['top1'] for s in seeds]
            macs = [per_seed[s]['rows'][k]['macs'] for s in seeds]
            params = [per_seed[s]['rows'][k]['params'] for s in seeds]
            subnets.append({
                'subnet': k, 'width': widths[k],
                'macs_mean': _mean(macs), 'macs_min': min(macs), 'macs_max': max(macs),
                'params_mean': _mean(params), 'top1': top1, 'top1_mean': _mean(top1),
                'top1_std': _std(top1), 'top1_min': min(top1), 'top1_max': max(top1)})
        seconds = [per_seed[s]['seconds'] for s in seeds]
        cpu = [per_seed[s].get('cpu_seconds') or 0.0 for s in seeds]
        summary['methods'][method] = {
            'seeds': seeds, 'subnets': subnets, 'seconds': seconds,
            'seconds_mean': _mean(seconds), 'cpu_seconds': cpu, 'cpu_seconds_mean': _mean(cpu),
            'bases_from_spnet': sorted({b for s in seeds
                                        for b in per_seed[s].get('bases_from_spnet', [])}),
            'structure_sources': {s: per_seed[s].get('structure_sources', []) for s in seeds}}
    for a, b in pairs:
        rows = paired(results, a, b)
        if rows:
            summary['pairs'].append({'a': a, 'b': b, 'subnets': rows})
    m = summary['methods']
    if study.name == 'short' and 'spnet' in m and 'snet' in m:
        for k, row in enumerate(paired(results, 'spnet', 'snet')):
            comp = {'width': SNET_WIDTHS[k], 'seeds': row['seeds'],
                    'spnet_minus_snet': row['diffs'], 'diff_mean': row['diff_mean'],
                    'diff_min': row['diff_min'], 'diff_max': row['diff_max'],
                    'spnet_wins': row['wins'],
                    'macs_spnet': m['spnet']['subnets'][k]['macs_mean'],
                    'macs_snet': m['snet']['subnets'][k]['macs_mean']}
            if 'individual' in m:
                ind = m['individual']['subnets'][k]['top1_mean']
                seeds = row['seeds']
                comp['individual_mean'] = ind
                comp['spnet_gap_to_individual'] = _mean(
                    [100 * results['spnet'][s]['rows'][k]['top1'] for s in seeds]) - ind
                comp['snet_gap_to_individual'] = _mean(
                    [100 * results['snet'][s]['rows'][k]['top1'] for s in seeds]) - ind
            summary['comparisons'].append(comp)
    return summary


def training_macs(summary: dict) -> dict:
    """The short study's budget check: forward MACs spent on training images per method and
    seed, the sum over training stages of epochs x examples x MACs of every network trained."""
    n = repro.NUM_TRAIN_EXAMPLES
    e = repro.EPOCHS
    snet = list(SNET_MACS)
    _, rows, _ = profile_config(repro.get_config('snet'))
    by_width = {r['width']: r['macs'] for r in rows}
    bases = [by_width[w] for w in repro.SPNET_BASES]
    out = {'snet': e * n * sum(snet), 'individual': e * n * sum(snet)}
    if 'spnet' in summary['methods']:
        sub = [s['macs_mean'] for s in summary['methods']['spnet']['subnets']]
        out['spnet'] = e / 2 * n * sum(bases) + e / 2 * n * sum(sub)
    return out


def _epochs(x: float) -> str:
    return f'{x:g} epoch' + ('' if x == 1 else 's')


def _fmt_macs(x: float) -> str:
    return f'{x / 1e6:.2f}M'


def _subnet_cells(s: dict) -> str:
    """A sub-network's MACs (with the range over seeds where it differs), params and top-1
    mean, std and [min, max], as markdown table cells."""
    macs = _fmt_macs(s['macs_mean'])
    if s['macs_min'] != s['macs_max']:
        macs += f' ({_fmt_macs(s["macs_min"])}-{_fmt_macs(s["macs_max"])})'
    return (f'{macs} | {s["params_mean"] / 1e3:.1f}K | {s["top1_mean"]:.2f}% | '
            f'{s["top1_std"]:.2f} | [{s["top1_min"]:.2f}, {s["top1_max"]:.2f}]')


STYLES = {'snet': ('s-', 'tab:blue'), 'spnet': ('o-', 'tab:red'),
          'individual': ('^--', 'tab:gray'), 'spnet_reinit': ('o:', 'tab:orange'),
          'snet_release': ('s:', 'tab:cyan'), 'snet_warm': ('D-.', 'tab:purple'),
          'spnet_aligned': ('v-', 'tab:green'), 'spnet_nozpm': ('P--', 'tab:brown'),
          'spnet_latency': ('X-', 'tab:olive')}


def plot(study: Study, summary: dict, path: str, title: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, info in summary['methods'].items():
        xs = [s['macs_mean'] / 1e6 for s in info['subnets']]
        ys = [s['top1_mean'] for s in info['subnets']]
        lo = [s['top1_mean'] - s['top1_min'] for s in info['subnets']]
        hi = [s['top1_max'] - s['top1_mean'] for s in info['subnets']]
        fmt, color = STYLES[method]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt=fmt, color=color, capsize=3,
                    label=f'{study.labels[method]} ({len(info["seeds"])} seeds, min-max)')
    ax.set_xscale('log')
    ticks = [1, 2, 5, 10, 20, 30]
    ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel('MACs per image (millions, log scale)')
    ax.set_ylabel('top-1 accuracy on the 10k test images (%)')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_short(study: Study, summary: dict, command: str, smoke: bool,
                   png: str) -> str:
    budget = training_macs(summary)
    n, e = repro.NUM_TRAIN_EXAMPLES, repro.EPOCHS
    methods = summary['methods']
    lines = ['# Reproduction: SP-Net vs S-Net vs individual networks (Fashion-MNIST, CPU)', '']
    if smoke:
        lines += ['**SMOKE RUN: a few steps per stage; the numbers mean nothing.**', '']
    lines += [
        f'Reproduce with `{command}` (resumable; `--jobs=N` runs '
        'N at once; `--report_only` regenerates this file). Generated '
        f'on {time.strftime("%Y-%m-%d")} from the measured runs (`results_short_budget.json` next '
        'to this file): everything down to the Discussion is computed, not typed by hand.', '',
        '## Setup', '',
        f'* CIFAR-style ResNet-20 (3x3/1 stem) on 28x28 Fashion-MNIST, the first {n:,} '
        'training images, top-1 on all 10,000 test images; batch 32, SGD + Nesterov, cosine '
        'schedule; config `configs/fashion_mnist_repro.py`.',
        f'* **S-Net**: slimmable network x{" / x".join(f"{w:g}" for w in repro.SNET_WIDTHS)} '
        f'from scratch (switchable BN, in-place distillation), {_epochs(e)}, lr 0.1.',
        f'* **SP-Net**: bases x{" / x".join(f"{w:g}" for w in repro.SPNET_BASES)} with the BN '
        f'L1 penalty, {_epochs(e / 2)} each (lr 0.1); multi-base pruning with ZPM and SCS to '
        'MACs targets equal to the S-Net\'s x0.25 / x0.5 / x0.75 MACs (computed with '
        '`spnet_jax.core.cost`, bisection within 1%); the unpruned x1.0 base is the 4th '
        'sub-network; '
        f'slimmable fine-tuning of all four with in-place distillation, {_epochs(e / 2)} '
        '(lr 0.05).',
        f'* **Individual**: one plain ResNet-20 per S-Net width, {_epochs(e)} each, the '
        'S-Net\'s recipe (an S-Net of one width: no distillation).',
        f'* **Budget rule: every final sub-network gets {_epochs(e)} of training.** S-Net: '
        f'{_epochs(e)} of joint training; SP-Net: {_epochs(e / 2)} of base training + '
        f'{_epochs(e / 2)} of slimmable training; individual: {_epochs(e)} per network. '
        'Because the three bases cost about what the four sub-networks cost, this also '
        'equalises compute: forward MACs spent on training images per seed (x1e12): '
        + ', '.join(f'{study.labels[k]} {v / 1e12:.2f}' for k, v in budget.items()) + '.', '',
        '## Results', '',
        'top-1 over seeds: mean, std and [min, max]. MACs are per image.', '',
        '| method | sub-network | width | MACs | params | top-1 mean | std | [min, max] |',
        '|---|---:|---:|---:|---:|---:|---:|---|']
    for method in ('snet', 'spnet', 'individual'):
        if method not in methods:
            continue
        for s in methods[method]['subnets']:
            width = '' if s['width'] is None else f'{s["width"]:g}'
            lines.append(f'| {study.labels[method]} | {s["subnet"]} | {width} | '
                         f'{_subnet_cells(s)} |')
    lines += ['', '(SP-Net\'s pruned structures, hence MACs and params, differ slightly by '
              'seed; the range is shown where they do.)', '',
              '| method | seeds | CPU time per seed (s, mean) | each | wall time per seed (s, '
              'mean) | each |', '|---|---:|---:|---|---:|---|']
    for method, info in methods.items():
        lines.append(f'| {study.labels[method]} | {len(info["seeds"])} | '
                     f'{info["cpu_seconds_mean"]:.0f} | '
                     f'{", ".join(f"{x:.0f}" for x in info["cpu_seconds"])} | '
                     f'{info["seconds_mean"]:.0f} | '
                     f'{", ".join(f"{x:.0f}" for x in info["seconds"])} |')
    lines += ['', 'Whole `main.py` runs (start-up, XLA compilation, training, evaluation); '
              'individual = the four networks together. CPU time is user + system of the run\'s '
              'process; wall time depends on what else ran: several runs went at once on a '
              '2-core machine shared with other jobs, so compare CPU times.',
              '', f'![top-1 vs MACs]({png})', '', '## Verdict', '']
    comps = summary['comparisons']
    if comps:
        lines += ['| S-Net width | MACs S-Net / SP-Net | SP-Net - S-Net (mean, [min, max] over '
                  'paired seeds) | SP-Net wins | SP-Net - individual | S-Net - individual |',
                  '|---:|---|---|---:|---:|---:|']
        for c in comps:
            ind = ''
            if 'individual_mean' in c:
                ind = (f'{c["spnet_gap_to_individual"]:+.2f} | '
                       f'{c["snet_gap_to_individual"]:+.2f}')
            lines.append(
                f'| {c["width"]:g} | {_fmt_macs(c["macs_snet"])} / {_fmt_macs(c["macs_spnet"])} '
                f'| {c["diff_mean"]:+.2f} pts [{c["diff_min"]:+.2f}, {c["diff_max"]:+.2f}] | '
                f'{c["spnet_wins"]}/{len(c["seeds"])} | {ind} |')
        lines.append('')
        for c in comps:
            if c['diff_min'] > 0:
                word = 'beat S-Net in every seed'
            elif c['diff_max'] < 0:
                word = 'lost to S-Net in every seed'
            else:
                word = 'neither won nor lost consistently (the paired difference changes sign)'
            lines.append(f'* x{c["width"]:g}: SP-Net {word}: {c["diff_mean"]:+.2f} points on '
                         f'average (paired seeds: {c["diff_min"]:+.2f} to {c["diff_max"]:+.2f}).')
        if 'individual' in methods:
            ind = methods['individual']['subnets']
            lines += ['', 'Individual networks, top-1 mean by width (capacity check: it should '
                      'rise with width): '
                      + ', '.join(f'x{s["width"]:g} {s["top1_mean"]:.2f}%' for s in ind) + '.']
    return '\n'.join(lines) + '\n'


CONVERGED_ARMS = {
    'spnet': 'bases x0.5 / x0.75 / x1.0 with the BN L1 penalty, E epochs each; multi-base '
             'pruning with the release\'s ZPM and SCS to S-Net\'s x0.25 / x0.5 / x0.75 MACs '
             '(bisection within 2%), the x1.0 base the 4th sub-network; slimmable fine-tuning '
             'from the bases with in-place distillation, 2/3 E',
    'spnet_aligned': 'SP-Net\'s bases (copied) pruned with aligned ZPM (`prune.zpm=\'aligned\'`: '
                     'the blocks of a stage share one channel order and each keeps a prefix, so '
                     'the residual streams do not widen), every count a multiple of {round_to}, '
                     'then fine-tuned as SP-Net: only the pruning differs',
    'spnet_nozpm': 'SP-Net\'s bases (copied) pruned without ZPM (`prune.zpm=\'none\'`), every '
                   'count a multiple of {round_to}, then fine-tuned as SP-Net: only the pruning '
                   'differs',
    'spnet_latency': 'SP-Net\'s bases (copied) pruned with aligned ZPM, multiples of 8 '
                     'channels, to S-Net\'s *measured* latency at x0.25 / x0.5 / x0.75 '
                     '(`prune.latency_widths`, timed where it prunes) instead of its MACs, then '
                     'fine-tuned as SP-Net',
    'spnet_reinit': 'the same pruned structures (from the same bases) trained from fresh '
                    'weights (`prune.start=\'reinit\'`) for E epochs with the bases\' recipe '
                    '(BN penalty on), with in-place distillation: the structures without the '
                    'warm start',
    'snet_release': 'S-Net x0.25 / x0.5 / x0.75 / x1.0 from scratch as the release trains it '
                    '(switchable BN, no in-place distillation), E epochs',
    'snet': 'the same with in-place distillation (this project\'s baseline), E epochs',
    'snet_warm': 'S-Net started from SP-Net\'s trained x1.0 base (the very network SP-Net '
                 'fine-tunes from: its folder is copied), fine-tuned 2/3 E with SP-Net\'s '
                 'fine-tuning recipe: the warm start without the pruned structures',
    'individual': 'one plain ResNet-20 per S-Net width from scratch, E epochs each',
}
# (a, b, what a - b measures): the paired differences the verdict reads.
CONVERGED_PAIRS = (
    ('spnet', 'snet', 'the paper\'s claim: SP-Net against S-Net (both with distillation)'),
    ('spnet', 'snet_warm', 'the pruned structures, warm start held equal'),
    ('snet_warm', 'snet', 'the warm start, for S-Net\'s uniform widths'),
    ('spnet', 'spnet_reinit', 'the warm start, for SP-Net\'s structures'),
    ('spnet_reinit', 'snet', 'the pruned structures without a warm start'),
    ('snet', 'snet_release', 'in-place distillation, for S-Net'),
    ('spnet', 'individual', 'SP-Net against individually trained networks'),
    ('spnet_aligned', 'spnet', 'aligned ZPM against the release\'s ZPM'),
    ('spnet_aligned', 'snet', 'aligned ZPM against S-Net'),
    ('spnet_aligned', 'snet_warm', 'aligned ZPM, warm start held equal'),
    ('spnet_aligned', 'individual', 'aligned ZPM against individual networks'),
    ('spnet_nozpm', 'spnet', 'no ZPM against the release\'s ZPM'),
    ('spnet_nozpm', 'snet', 'no ZPM against S-Net'),
    ('spnet_nozpm', 'snet_warm', 'no ZPM, warm start held equal'),
    ('spnet_nozpm', 'individual', 'no ZPM against individual networks'),
    ('spnet_latency', 'snet', 'pruned to S-Net\'s latency, against S-Net'),
    ('spnet_latency', 'snet_warm', 'pruned to S-Net\'s latency, warm start held equal'),
    ('snet', 'individual', 'S-Net against individually trained networks'),
)


def _cell(row: dict) -> str:
    n = len(row['seeds'])
    return (f'{row["diff_mean"]:+.2f} [{row["diff_min"]:+.2f}, {row["diff_max"]:+.2f}] '
            f'{row["wins"]}/{n}')


def markdown_converged(study: Study, summary: dict, command: str, smoke: bool, png: str,
                       seeds: list[int], latency_summary: dict | None = None,
                       latency: dict | None = None, latency_png: str = '') -> str:
    module = study.module
    spnet, snet = module.get_config('spnet'), module.get_config('snet')
    methods = summary['methods']
    widths = ' / '.join(f'x{w:g}' for w in SNET_WIDTHS)
    lines = ['# Reproduction at convergence: SP-Net vs S-Net, with the warm-start ablations '
             '(Fashion-MNIST, CPU)', '']
    if smoke:
        lines += ['**SMOKE RUN: a few steps per stage; the numbers mean nothing.**', '']
    missing = [f'{m} (seed {s})' for s in seeds for m in study.methods
               if s not in summary['methods'].get(m, {}).get('seeds', [])]
    lines += [
        f'Reproduce with `{command}` (resumable: rerun the same command and it continues where '
        'it stopped; `--report_only` regenerates this file from finished runs). Generated on '
        f'{time.strftime("%Y-%m-%d")} from the measured runs (`{study.json_stem}.json` next to '
        'this file): everything down to the Discussion is computed, not typed by hand.', '']
    if missing:
        lines += [f'**Not finished yet** (left out below): {", ".join(missing)}.', '']
    lines += [
        '## Setup', '',
        f'* CIFAR-style ResNet-20 on 28x28 Fashion-MNIST, **all 60,000 training images**, top-1 '
        'on the 10,000 test images; SGD + Nesterov, cosine schedules, label smoothing '
        f'{spnet.base.label_smoothing:g}; plain networks at batch {spnet.base.batch_size} and lr '
        f'{spnet.base.lr:g}, slimmable ones at batch {snet.slim.batch_size} and lr '
        f'{snet.slim.lr:g} (SP-Net\'s fine-tuning lr {spnet.slim.lr:g}); config '
        f'`{study.config}` (one config string per arm).',
        f'* The paper\'s protocol scaled down: **E = {module.EPOCHS:g} epochs** per network '
        f'trained from scratch, fine-tuning {module.FINE_TUNE_EPOCHS:g} epochs (2/3 E, the '
        'paper\'s 90 + 60).',
        f'* Sub-network k of every arm sits at the MACs of S-Net\'s width {widths}.', '']
    lines += [f'* **{study.labels[m]}** (`{m}`): '
              f'{CONVERGED_ARMS[m].format(round_to=module.ROUND_TO)}.' for m in study.methods]
    ms = (latency_summary or {}).get('ms', {})
    lines += ['', '## Results', '', 'top-1 over seeds: mean, std and [min, max]. MACs per '
              'image. ms: measured latency of the deployed sub-network per batch of 32 / 256 '
              '(mean over seeds; how, below).', '',
              '| arm | sub-network | S-Net width | MACs | params | top-1 mean | std | [min, max] '
              '| seeds | ms @32 | ms @256 |',
              '|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|']
    for method in study.methods:
        if method not in methods:
            continue
        info = methods[method]
        for k, s in enumerate(info['subnets']):
            cells = [f'{ms[method][b][k]["ms_mean"]:.2f}' if b in ms.get(method, {}) else ''
                     for b in ('32', '256')]
            lines.append(f'| {study.labels[method]} | {k} | {SNET_WIDTHS[k]:g} | '
                         f'{_subnet_cells(s)} | {len(info["seeds"])} | {" | ".join(cells)} |')
    lines += ['', '## Cost', '',
              '| arm | seeds | CPU s per seed (mean) | each | wall s per seed (mean) | each | '
              'bases |', '|---|---:|---:|---|---:|---|---|']
    total = 0.0
    for method, info in methods.items():
        total += sum(info['cpu_seconds'])
        shared = info['bases_from_spnet']
        lines.append(
            f'| {study.labels[method]} | {len(info["seeds"])} | {info["cpu_seconds_mean"]:.0f} | '
            f'{", ".join(f"{x:.0f}" for x in info["cpu_seconds"])} | {info["seconds_mean"]:.0f} '
            f'| {", ".join(f"{x:.0f}" for x in info["seconds"])} | '
            + (f'copied from SP-Net ({", ".join(shared)}), counted there' if shared else 'own')
            + ' |')
    lines += ['', f'Total: {total:,.0f} CPU seconds ({total / 3600:.1f} CPU hours) for the '
              'finished runs above. Whole `main.py` runs (start-up, XLA compilation, training, '
              'evaluation); CPU time is user + system of the run\'s process (the fairer cost: '
              'wall time depends on what else ran on the shared 2-core machine). Individual = '
              'the four networks together.', '', f'![top-1 vs MACs, every arm]({png})', '',
              '## Paired differences', '',
              'Top-1 points, a minus b on the same seed: mean [min, max] over seeds, then in how '
              'many seeds a won.', '',
              '| a - b | what it measures | '
              + ' | '.join(f'x{w:g} MACs' for w in SNET_WIDTHS) + ' |',
              '|---|---|' + '---|' * len(SNET_WIDTHS)]
    what = {(a, b): text for a, b, text in CONVERGED_PAIRS}
    by_pair = {(p['a'], p['b']): p['subnets'] for p in summary['pairs']}
    for (a, b), rows in by_pair.items():
        lines.append(f'| {study.labels[a]} - {study.labels[b]} | {what[(a, b)]} | '
                     + ' | '.join(_cell(r) for r in rows) + ' |')
    lines += ['', '## Verdict (computed)', '']
    lines += verdict_converged(study, by_pair)
    variants = study_latency.verdict(by_pair, study.labels, SNET_WIDTHS, 'equal MACs')
    if variants:
        lines += ['', 'Each pruning variant against both S-Nets:', ''] + variants
    if latency_summary is not None:
        lines += [''] + study_latency.markdown(
            latency_summary, latency, study.labels, study.methods, SNET_WIDTHS, latency_png,
            command)
        rebuilt = [f'{m} (seed {s}): {src}' for m, info in methods.items()
                   for s, sources in info['structure_sources'].items() for src in sources
                   if not src.startswith(('run', 'config'))]
        if rebuilt:
            lines += ['Structures not from the runs themselves: ' + '; '.join(rebuilt) + '.', '']
    return '\n'.join(lines) + '\n'


def verdict_converged(study: Study, by_pair: dict) -> list[str]:
    """Sentences from the paired differences: does the margin hold, and how much of it does
    the warm start explain (margin = structures with the warm start held equal + warm start)."""
    lines = []
    margin = by_pair.get(('spnet', 'snet'))
    if not margin:
        return ['SP-Net and S-Net have no finished seed in common yet.']
    for k, row in enumerate(margin):
        n = len(row['seeds'])
        if row['diff_min'] > 0:
            word = f'SP-Net beat S-Net in all {n} seeds'
        elif row['diff_max'] < 0:
            word = f'SP-Net lost to S-Net in all {n} seeds'
        else:
            word = f'SP-Net won {row["wins"]} of {n} seeds (the sign changes)'
        text = (f'* x{SNET_WIDTHS[k]:g} MACs: {word}, {row["diff_mean"]:+.2f} points on '
                'average')
        warm = by_pair.get(('snet_warm', 'snet'))
        structure = by_pair.get(('spnet', 'snet_warm'))
        if warm and structure and warm[k]['seeds'] == row['seeds']:
            w, s = warm[k]['diff_mean'], structure[k]['diff_mean']
            text += (f'; of it, the warm start (warm S-Net - S-Net) gives {w:+.2f} and the '
                     f'pruned structures with the warm start held equal (SP-Net - warm S-Net) '
                     f'{s:+.2f}')
        lines.append(text + '.')
    return lines


def measure_latency(study: Study, out: str, seeds: list[int], extra: list[str],
                    niceness: int, records: str | None, path: str, repeats: int) -> dict:
    """The latency step: gives every finished run a structure (`add_structure`), then times
    all their deployed sub-networks in this process (`study_latency.measure`) into ``path``.
    Returns the runs collected again, now with their networks."""
    reasons = []
    for seed in seeds:
        for method in study.methods:
            for name in study.runs_of(method):
                reason = add_structure(study, out, seed, name, records, extra, niceness)
                if reason:
                    reasons.append(reason)
    results = collect(study, out, seeds, extra, run=False, records=records)
    networks = {}
    for per_seed in results.values():
        for run in per_seed.values():
            for network in run['networks'] or []:
                networks.setdefault(study_latency.network_key(network), network)
    shape = Settings.from_config(study.module.get_config('snet')).data
    shape = (shape.image_size, shape.image_size, shape.spec.channels)
    print(f'[{time.strftime("%H:%M:%S")}] latency: {len(networks)} networks, batches '
          f'{study_latency.BATCHES}, {repeats} rounds'
          + (f'; without a structure: {"; ".join(reasons)}' if reasons else ''), flush=True)
    latency = study_latency.measure(networks, shape, repeats=repeats)
    latency['without_structure'] = reasons
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as fh:
        json.dump(latency, fh, indent=1)
    print(f'[{time.strftime("%H:%M:%S")}] latency: {latency["seconds"]:.0f} s, written to '
          f'{path}', flush=True)
    return results


STUDIES = {
    'converged': Study(
        name='converged', config='configs/fashion_mnist_converged.py',
        methods=('spnet', 'spnet_aligned', 'spnet_nozpm', 'spnet_latency', 'spnet_reinit', 'snet',
                 'snet_release', 'snet_warm', 'individual'),
        labels={'spnet': 'SP-Net', 'spnet_aligned': 'SP-Net aligned ZPM',
                'spnet_nozpm': 'SP-Net no ZPM', 'spnet_latency': 'SP-Net at S-Net latency',
                'spnet_reinit': 'SP-Net reinit',
                'snet': 'S-Net', 'snet_release': 'S-Net (release, no KD)',
                'snet_warm': 'S-Net warm', 'individual': 'individual'},
        run_order=('spnet', 'snet_warm', 'spnet_reinit', 'spnet_aligned', 'spnet_nozpm',
                   'spnet_latency',
                   'snet', 'snet_release', 'individual'),
        markdown_stem='RESULTS', json_stem='results', notes='RESULTS_notes.md',
        default_seeds='0,1', records=os.path.join(ROOT, 'benchmarks', 'converged_runs')),
    'short': Study(
        name='short', config='configs/fashion_mnist_repro.py',
        methods=('snet', 'spnet', 'individual'),
        labels={'snet': 'S-Net', 'spnet': 'SP-Net', 'individual': 'individual'},
        run_order=('spnet', 'snet', 'individual'),
        markdown_stem='RESULTS_short_budget', json_stem='results_short_budget',
        notes='RESULTS_short_budget_notes.md', default_seeds='0,1,2'),
}
TITLES = {'converged': 'ResNet-20, Fashion-MNIST, 60k images, E = {e:g}: every arm',
          'short': 'ResNet-20 on Fashion-MNIST: SP-Net vs S-Net vs individual'}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--study', choices=sorted(STUDIES), default='converged')
    parser.add_argument('--out', default=None,
                        help='parent of the workdirs (default /tmp/repro_<study>)')
    parser.add_argument('--seeds', default=None, help='default: 0,1 (converged), 0,1,2 (short)')
    parser.add_argument('--smoke', action='store_true',
                        help='a few steps per stage, seed 0, workdirs in <out>_smoke')
    parser.add_argument('--smoke_steps', type=int, default=20)
    parser.add_argument('--jobs', type=int, default=1,
                        help='runs at once (the arms that start from SP-Net\'s bases queue last)')
    parser.add_argument('--nice', type=int, default=0,
                        help='niceness of the runs (e.g. 19 to leave the machine to others)')
    parser.add_argument('--arms', default=None,
                        help='comma-separated arms to run (default: all of the study\'s)')
    parser.add_argument('--report_only', action='store_true',
                        help='run nothing; report the runs that finished')
    parser.add_argument('--docs', default=os.path.join(ROOT, 'benchmarks'),
                        help='where the study\'s json, markdown and plot go')
    parser.add_argument('--latency', action='store_true',
                        help='converged study: time every finished run\'s sub-networks, '
                        'interleaved in this process (after the runs; with --report_only, '
                        'instead of them), into latency.json beside the records')
    parser.add_argument('--latency_repeats', type=int, default=30,
                        help='rounds over all networks (the median of each is reported)')
    args = parser.parse_args(argv)
    study = STUDIES[args.study]
    arms = None if args.arms is None else args.arms.split(',')
    if args.latency and study.name != 'converged':
        parser.error('--latency is for --study=converged')
    if arms is not None and set(arms) - set(study.methods):
        parser.error(f'--arms={args.arms}: the {study.name} study\'s arms are '
                     f'{",".join(study.methods)}')
    seeds = [int(s) for s in (args.seeds or study.default_seeds).split(',')]
    extra: list[str] = []
    out = args.out or f'/tmp/repro_{study.name}'
    docs = args.docs
    command = f'python benchmarks/reproduce.py --study={study.name}'
    if args.smoke:
        seeds = seeds[:1]
        out = out.rstrip('/') + '_smoke'
        docs = out
        extra = [f'--config.base.num_steps={args.smoke_steps}',
                 f'--config.slim.num_steps={args.smoke_steps}',
                 '--config.data.num_eval_examples=1000']
        command += ' --smoke'
    else:
        command += f' --out={out} --seeds={",".join(map(str, seeds))}'
    start = time.time()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    results = collect(study, out, seeds, extra, run=not args.report_only, jobs=args.jobs,
                      niceness=args.nice, arms=arms,
                      records=None if args.smoke else study.records)
    latency_path = os.path.join(out if args.smoke else study.records or docs, 'latency.json')
    if args.latency:
        results = measure_latency(study, out, seeds, extra, args.nice,
                                  None if args.smoke else study.records, latency_path,
                                  args.latency_repeats)
    latency = None
    if study.name == 'converged' and os.path.exists(latency_path):
        with open(latency_path) as fh:
            latency = json.load(fh)
    pairs = [(a, b) for a, b, _ in CONVERGED_PAIRS] if study.name == 'converged' else []
    summary = summarise(study, results, pairs)
    os.makedirs(docs, exist_ok=True)
    module = study.module
    payload = {'study': study.name, 'command': command, 'date': time.strftime('%Y-%m-%d'),
               'out': out, 'config': study.config, 'epochs': module.EPOCHS,
               'snet_widths': SNET_WIDTHS, 'spnet_bases': module.SPNET_BASES,
               'summary': summary,
               'runs': {m: {str(s): v for s, v in r.items()} for m, r in results.items()}}
    png = f'{study.json_stem}.png'
    latency_png = f'{study.json_stem}_latency.png'
    if study.name == 'short':
        payload['num_train_examples'] = repro.NUM_TRAIN_EXAMPLES
        payload['training_forward_macs'] = training_macs(summary)
        text = markdown_short(study, summary, command, args.smoke, png)
    else:
        latency_summary = study_latency.summarise(results, latency, study.methods)
        payload['latency'] = latency
        payload['latency_summary'] = latency_summary
        text = markdown_converged(study, summary, command, args.smoke, png, seeds,
                                  latency_summary, latency, latency_png)
        if latency_summary['ms']:
            study_latency.plot(summary, latency_summary, study.labels, STYLES,
                               os.path.join(docs, latency_png),
                               TITLES[study.name].format(e=module.EPOCHS) + ': top-1 vs '
                               'measured latency')
    with open(os.path.join(docs, f'{study.json_stem}.json'), 'w') as fh:
        json.dump(payload, fh, indent=1)
    plot(study, summary, os.path.join(docs, png), TITLES[study.name].format(e=module.EPOCHS))
    notes = os.path.join(ROOT, 'benchmarks', study.notes)
    if not args.smoke and os.path.exists(notes):  # the one hand-written part, marked as such
        text += '\n## Discussion (written by hand after reading the numbers above)\n\n'
        text += open(notes).read()
    path = os.path.join(docs, f'{study.markdown_stem}.md')
    with open(path, 'w') as fh:
        fh.write(text)
    print(f'Wrote {path}, {study.json_stem}.json and {png} ({time.time() - start:.0f} s).')


if __name__ == '__main__':
    main()
