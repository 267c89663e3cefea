r"""Issue 6: do SP-Net's sub-networks beat S-Net's at equal MACs on real Fashion-MNIST, and how
far are both from individually trained networks?

    python benchmarks/reproduce.py                      # 3 seeds, all methods (~80 min, 2 cores)
    python benchmarks/reproduce.py --smoke              # a few steps of everything, 1 seed
    python benchmarks/reproduce.py --report_only        # rewrite RESULTS.md from finished runs

Each (seed, method) is one ``python main.py --config=configs/fashion_mnist_repro.py:<method>``
run in ``<out>/seed<s>/<method>``; a run whose ``report.json`` exists is skipped, and
``main.py`` itself resumes an interrupted one, so rerunning the command continues where it
stopped. The measured numbers go to ``results.json``; ``RESULTS.md`` and ``results.png`` are
generated from them (``benchmarks/`` for the full run, ``<out>`` for ``--smoke``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import fashion_mnist_repro as repro  # noqa: E402
from spnet_jax.cli.profile import profile_config  # noqa: E402

CONFIG = 'configs/fashion_mnist_repro.py'
METHODS = ('snet', 'spnet', 'individual')
LABELS = {'snet': 'S-Net', 'spnet': 'SP-Net', 'individual': 'individual'}


def runs_of(method: str) -> list[str]:
    """The config strings one seed of ``method`` needs."""
    if method == 'individual':
        return [f'individual_{w:g}' for w in repro.SNET_WIDTHS]
    return [method]


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


def run_one(out: str, seed: int, name: str, extra: list[str]) -> dict:
    """Runs (or skips) one pipeline run; returns its report rows, wall and CPU seconds.

    CPU seconds (user + system of the run's process) are the fairer cost on a shared machine:
    wall time depends on what else is running.
    """
    workdir = os.path.join(out, f'seed{seed}', name)
    report = os.path.join(workdir, 'report.json')
    timing = os.path.join(workdir, 'timing.json')
    lock = os.path.join(workdir, 'running.json')
    if not os.path.exists(report):
        os.makedirs(workdir, exist_ok=True)
        other = _wait_for_other(lock)
        if other is not None and os.path.exists(report):
            with open(timing, 'w') as fh:
                json.dump(other, fh)
    if not os.path.exists(report):
        cmd = [sys.executable, 'main.py', f'--config={CONFIG}:{name}', f'--workdir={workdir}',
               f'--config.seed={seed}', *extra]
        print(f'[{time.strftime("%H:%M:%S")}] seed {seed} {name}: {" ".join(cmd[1:])}',
              flush=True)
        previous = {'seconds': 0.0, 'cpu_seconds': 0.0}
        if os.path.exists(timing):  # a resumed run adds to the earlier part
            previous.update(json.load(open(timing)))
        start = time.time()
        # The persistent compilation cache only saves time (seeds share S-Net and individual
        # programs); it does not change what is computed.
        env = {**os.environ, 'JAX_COMPILATION_CACHE_DIR': os.path.join(out, 'jax_cache')}
        with open(os.path.join(workdir, 'run.log'), 'a') as log:
            child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     env=env)
            with open(lock, 'w') as fh:
                json.dump({'pid': child.pid, 'start': start}, fh)
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = rc = os.waitstatus_to_exitcode(status)
        os.remove(lock)
        seconds = {'seconds': previous['seconds'] + time.time() - start,
                   'cpu_seconds': (previous['cpu_seconds'] or 0.0) + usage.ru_utime
                   + usage.ru_stime}
        with open(timing, 'w') as fh:
            json.dump(seconds, fh)
        if rc != 0:
            raise SystemExit(f'seed {seed} {name} failed (exit {rc}); see {workdir}/run.log')
        print(f'[{time.strftime("%H:%M:%S")}] seed {seed} {name}: done in '
              f'{seconds["seconds"]:.0f} s wall, {seconds["cpu_seconds"]:.0f} s CPU', flush=True)
    with open(report) as fh:
        rows = json.load(fh)
    timing_info = json.load(open(timing)) if os.path.exists(timing) else {}
    return {'rows': rows, 'seconds': timing_info.get('seconds'),
            'cpu_seconds': timing_info.get('cpu_seconds')}


def collect(out: str, seeds: list[int], extra: list[str], run: bool, jobs: int = 1) -> dict:
    """Per method and seed: sub-network rows (smallest first) and wall seconds.

    With ``jobs`` > 1, that many runs go at once (in seed order): on a few CPU cores this
    overlaps one run's single-threaded XLA compilation with another's training.
    """
    order = ('spnet', 'snet', 'individual')  # the longest run first in each seed
    tasks = [(seed, name) for seed in seeds for method in order for name in runs_of(method)]
    done: dict = {}
    if run:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_one, out, seed, name, extra): (seed, name)
                       for seed, name in tasks}
            for future in concurrent.futures.as_completed(futures):
                try:
                    done[futures[future]] = future.result()
                except SystemExit as e:
                    print(e, flush=True)
    else:
        for seed, name in tasks:
            if os.path.exists(os.path.join(out, f'seed{seed}', name, 'report.json')):
                done[(seed, name)] = run_one(out, seed, name, extra)
    results: dict = {m: {} for m in METHODS}
    for seed in seeds:
        for method in METHODS:
            names = runs_of(method)
            if all((seed, name) in done for name in names):
                results[method][seed] = {
                    'rows': [row for name in names for row in done[(seed, name)]['rows']],
                    'seconds': sum(done[(seed, name)]['seconds'] or 0.0 for name in names),
                    'cpu_seconds': sum(done[(seed, name)]['cpu_seconds'] or 0.0
                                       for name in names)}
    return results


def _mean(xs):
    return statistics.fmean(xs)


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def summarise(results: dict) -> dict:
    """Mean / std / min / max of top-1 per method and sub-network, paired comparisons."""
    summary: dict = {'methods': {}, 'comparisons': []}
    for method in METHODS:
        per_seed = results[method]
        if not per_seed:
            continue
        seeds = sorted(per_seed)
        n_sub = len(per_seed[seeds[0]]['rows'])
        subnets = []
        for k in range(n_sub):
            top1 = [100 * per_seed[s]['rows'][k]['top1'] for s in seeds]
            macs = [per_seed[s]['rows'][k]['macs'] for s in seeds]
            params = [per_seed[s]['rows'][k]['params'] for s in seeds]
            subnets.append({
                'subnet': k, 'width': repro.SNET_WIDTHS[k] if method != 'spnet' else None,
                'macs_mean': _mean(macs), 'macs_min': min(macs), 'macs_max': max(macs),
                'params_mean': _mean(params), 'top1': top1, 'top1_mean': _mean(top1),
                'top1_std': _std(top1), 'top1_min': min(top1), 'top1_max': max(top1)})
        seconds = [per_seed[s]['seconds'] for s in seeds]
        cpu = [per_seed[s].get('cpu_seconds') or 0.0 for s in seeds]
        summary['methods'][method] = {'seeds': seeds, 'subnets': subnets,
                                      'seconds': seconds, 'seconds_mean': _mean(seconds),
                                      'cpu_seconds': cpu, 'cpu_seconds_mean': _mean(cpu)}
    m = summary['methods']
    if 'spnet' in m and 'snet' in m:
        seeds = sorted(set(m['spnet']['seeds']) & set(m['snet']['seeds']))
        for k, width in enumerate(repro.SNET_WIDTHS):
            sp = {s: 100 * results['spnet'][s]['rows'][k]['top1'] for s in seeds}
            sn = {s: 100 * results['snet'][s]['rows'][k]['top1'] for s in seeds}
            diffs = [sp[s] - sn[s] for s in seeds]
            row = {'width': width, 'seeds': seeds, 'spnet_minus_snet': diffs,
                   'diff_mean': _mean(diffs), 'diff_min': min(diffs), 'diff_max': max(diffs),
                   'spnet_wins': sum(d > 0 for d in diffs),
                   'macs_spnet': m['spnet']['subnets'][k]['macs_mean'],
                   'macs_snet': m['snet']['subnets'][k]['macs_mean']}
            if 'individual' in m:
                ind = m['individual']['subnets'][k]['top1_mean']
                row['individual_mean'] = ind
                row['spnet_gap_to_individual'] = _mean(sp.values()) - ind
                row['snet_gap_to_individual'] = _mean(sn.values()) - ind
            summary['comparisons'].append(row)
    return summary


def training_macs(summary: dict) -> dict:
    """Forward MACs spent on training images per method and seed (the budget check):
    sum over training stages of epochs x examples x MACs of every network trained."""
    n = repro.NUM_TRAIN_EXAMPLES
    e = repro.EPOCHS
    snet = list(repro.SNET_MACS)
    _, rows = profile_config(repro.get_config('snet'))
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


def plot(summary: dict, path: str) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {'snet': ('s-', 'tab:blue'), 'spnet': ('o-', 'tab:red'),
              'individual': ('^--', 'tab:gray')}
    for method, info in summary['methods'].items():
        xs = [s['macs_mean'] / 1e6 for s in info['subnets']]
        ys = [s['top1_mean'] for s in info['subnets']]
        lo = [s['top1_mean'] - s['top1_min'] for s in info['subnets']]
        hi = [s['top1_max'] - s['top1_mean'] for s in info['subnets']]
        fmt, color = styles[method]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt=fmt, color=color, capsize=3,
                    label=f'{LABELS[method]} ({len(info["seeds"])} seeds, min-max)')
    ax.set_xscale('log')
    ticks = [1, 2, 5, 10, 20, 30]
    ax.set_xticks(ticks, [f'{t:g}' for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel('MACs per image (millions, log scale)')
    ax.set_ylabel('top-1 accuracy on the 10k test images (%)')
    ax.set_title('ResNet-20 on Fashion-MNIST: SP-Net vs S-Net vs individual')
    ax.grid(alpha=0.3, which='both')
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(summary: dict, budget: dict, command: str, smoke: bool, png: str) -> str:
    n, e = repro.NUM_TRAIN_EXAMPLES, repro.EPOCHS
    methods = summary['methods']
    lines = ['# Reproduction: SP-Net vs S-Net vs individual networks (Fashion-MNIST, CPU)', '']
    if smoke:
        lines += ['**SMOKE RUN: a few steps per stage; the numbers mean nothing.**', '']
    lines += [
        f'Reproduce with `{command}` (workdirs under `/tmp/repro`, resumable; `--jobs=N` runs '
        'N at once; `--report_only` regenerates this file). Generated '
        f'on {time.strftime("%Y-%m-%d")} from the measured runs (`results.json` next to this '
        'file): everything down to the Discussion is computed, not typed by hand.', '',
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
        + ', '.join(f'{LABELS[k]} {v / 1e12:.2f}' for k, v in budget.items()) + '.', '',
        '## Results', '',
        'top-1 over seeds: mean, std and [min, max]. MACs are per image.', '',
        '| method | sub-network | width | MACs | params | top-1 mean | std | [min, max] |',
        '|---|---:|---:|---:|---:|---:|---:|---|']
    for method in ('snet', 'spnet', 'individual'):
        if method not in methods:
            continue
        for s in methods[method]['subnets']:
            width = '' if s['width'] is None else f'{s["width"]:g}'
            macs = _fmt_macs(s['macs_mean'])
            if s['macs_min'] != s['macs_max']:
                macs += f' ({_fmt_macs(s["macs_min"])}-{_fmt_macs(s["macs_max"])})'
            lines.append(
                f'| {LABELS[method]} | {s["subnet"]} | {width} | {macs} | '
                f'{s["params_mean"] / 1e3:.1f}K | {s["top1_mean"]:.2f}% | {s["top1_std"]:.2f} | '
                f'[{s["top1_min"]:.2f}, {s["top1_max"]:.2f}] |')
    lines += ['', '(SP-Net\'s pruned structures, hence MACs and params, differ slightly by '
              'seed; the range is shown where they do.)', '',
              '| method | seeds | CPU time per seed (s, mean) | each | wall time per seed (s, '
              'mean) | each |', '|---|---:|---:|---|---:|---|']
    for method, info in methods.items():
        lines.append(f'| {LABELS[method]} | {len(info["seeds"])} | '
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='/tmp/repro', help='parent of the workdirs')
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--smoke', action='store_true',
                        help='a few steps per stage, seed 0, workdirs in <out>_smoke')
    parser.add_argument('--smoke_steps', type=int, default=20)
    parser.add_argument('--jobs', type=int, default=2, help='runs at once')
    parser.add_argument('--report_only', action='store_true',
                        help='run nothing; report the runs that finished')
    parser.add_argument('--docs', default=os.path.join(ROOT, 'benchmarks'),
                        help='where results.json, RESULTS.md and results.png go')
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(',')]
    extra: list[str] = []
    out, docs = args.out, args.docs
    command = 'python benchmarks/reproduce.py'
    if args.smoke:
        seeds = seeds[:1]
        out = out.rstrip('/') + '_smoke'
        docs = out
        extra = [f'--config.base.num_steps={args.smoke_steps}',
                 f'--config.slim.num_steps={args.smoke_steps}',
                 '--config.data.num_eval_examples=1000']
        command += ' --smoke'
    start = time.time()
    results = collect(out, seeds, extra, run=not args.report_only, jobs=args.jobs)
    summary = summarise(results)
    budget = training_macs(summary)
    os.makedirs(docs, exist_ok=True)
    payload = {'command': command, 'date': time.strftime('%Y-%m-%d'), 'out': out,
               'num_train_examples': repro.NUM_TRAIN_EXAMPLES, 'epochs': repro.EPOCHS,
               'snet_widths': repro.SNET_WIDTHS, 'spnet_bases': repro.SPNET_BASES,
               'training_forward_macs': budget, 'summary': summary,
               'runs': {m: {str(s): v for s, v in r.items()} for m, r in results.items()}}
    with open(os.path.join(docs, 'results.json'), 'w') as fh:
        json.dump(payload, fh, indent=1)
    plot(summary, os.path.join(docs, 'results.png'))
    text = markdown(summary, budget, command, args.smoke, 'results.png')
    notes = os.path.join(ROOT, 'benchmarks', 'RESULTS_notes.md')
    if not args.smoke and os.path.exists(notes):  # the one hand-written part, marked as such
        text += '\n## Discussion (written by hand after reading the numbers above)\n\n'
        text += open(notes).read()
    with open(os.path.join(docs, 'RESULTS.md'), 'w') as fh:
        fh.write(text)
    print(f'Wrote {docs}/RESULTS.md, results.json, results.png ({time.time() - start:.0f} s).')


if __name__ == '__main__':
    main()
