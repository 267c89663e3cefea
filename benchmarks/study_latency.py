"""Measured latency of every deployed sub-network of the converged study, and top-1 at equal
latency (`benchmarks/reproduce.py --latency`).

MACs are not time: ZPM's gathers and scatters, odd channel counts and small layers cost what
MACs do not count. So each arm's sub-networks are timed as they would be deployed (the
standalone network `spnet_jax.export` writes: sub-network k's channels and nothing else), all
of them in one process, interleaved:

* every distinct network (a structure and its architecture; S-Net x0.5 and the individual
  x0.5 network are one network) is built with random weights (time does not depend on the
  values), its eval-mode forward jitted with the weights as arguments (so XLA folds nothing
  away) and compiled for each batch size;
* then ``repeats`` rounds: each round times every (network, batch) once, each call to
  ``block_until_ready``, the round starting one network further along (each network visits
  every position), so a load change on the shared machine slows all networks alike;
* the median over rounds is the network's time; the spread across rounds (interquartile
  range over median) says how noisy that was.

The comparison at equal latency then asks, per seed: what top-1 would the baseline (S-Net,
warm S-Net, the individual networks) reach at the time this SP-Net sub-network takes? The
baseline's measured (ms, top-1) points of its widths, same seed, are joined by straight lines
(`top1_at`); outside their range the nearest width stands in, and the row says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

BATCHES = (32, 256)
# SP-Net's pruning variants, and what each is compared with at equal latency.
VARIANTS = ('spnet', 'spnet_aligned', 'spnet_nozpm', 'spnet_latency')
BASELINES = ('snet', 'snet_warm', 'individual')


# ------------------------------------------------------------------ the networks
def deployed(arch: dict, structure: dict) -> list[dict]:
    """One ``{'arch', 'structure'}`` per sub-network of a slimmable network: the standalone
    network its export deploys (the structure as JSON, the architecture as its spec)."""
    from spnet_jax.core.structure import Structure
    from spnet_jax.pruning.subnets import standalone_structure

    s = Structure.from_json(json.dumps(structure))
    return [{'arch': arch, 'structure': json.loads(standalone_structure(s, k).to_json())}
            for k in range(s.num_subnets)]


def network_key(network: dict) -> str:
    """What makes two deployed networks the same program: the structure without its width
    label, the architecture without its full width (the model reads its channels from the
    structure), and without a stream order where it has no ZPM streams to order."""
    arch = {k: v for k, v in network['arch'].items() if k != 'full_width'}
    ignored = ('widths',) if network['structure'].get('junctions') else ('widths', 'stream_order')
    structure = {k: v for k, v in network['structure'].items() if k not in ignored}
    text = json.dumps({'arch': arch, 'structure': structure}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def network_cost(network: dict, input_shape: Sequence[int]):
    """A deployed network's `SubnetCost` (its only sub-network) at ``input_shape`` (H, W, C)."""
    from spnet_jax.core.cost import subnet_costs
    from spnet_jax.core.structure import Structure
    from spnet_jax.models import arch_from_spec

    structure = Structure.from_json(json.dumps(network['structure']))
    return subnet_costs(arch_from_spec(network['arch']), structure, input_shape[0],
                        input_shape[2])[0]


def _forwards(network: dict, input_shape: Sequence[int], batches: Sequence[int]):
    """``({batch: call}, macs, params)``: a compiled eval forward of ``network`` per batch
    size, on random images (random weights, passed as arguments), and its cost."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from spnet_jax.core.structure import Structure
    from spnet_jax.models import arch_from_spec

    arch = arch_from_spec(network['arch'])
    structure = Structure.from_json(json.dumps(network['structure']))
    model = arch.module(structure)
    shape = tuple(input_shape)
    variables = jax.jit(lambda r: model.init(r, jnp.zeros((1, *shape)), train=False))(
        jax.random.key(0))
    forward = jax.jit(lambda v, x: model.apply(v, x, subnet=0, train=False))
    calls = {}
    for batch in batches:
        images = jnp.asarray(np.random.default_rng(0).normal(size=(batch, *shape)), jnp.float32)
        compiled = forward.lower(variables, images).compile()
        calls[batch] = lambda c=compiled, x=images: c(variables, x).block_until_ready()
    cost = network_cost(network, shape)
    return calls, cost.macs, cost.params


# ------------------------------------------------------------------ timing
def time_interleaved(calls: dict, repeats: int, warmup: int = 2,
                     clock: Callable[[], float] = time.perf_counter,
                     log: list | None = None) -> dict:
    """Seconds of each call per round: ``repeats`` rounds over all ``calls`` (name ->
    function that runs to completion), round r starting at the r-th call. ``warmup`` untimed
    calls of each first. ``log`` (optional) gets the names in the order they ran."""
    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict = {name: [] for name in names}
    for r in range(repeats):
        start = r % len(names)
        for name in names[start:] + names[:start]:
            t = clock()
            calls[name]()
            times[name].append(clock() - t)
            if log is not None:
                log.append(name)
    return times


def spread(times: Sequence[float]) -> float:
    """Interquartile range over the median (`spnet_jax.pruning.latency.spread`)."""
    from spnet_jax.pruning.latency import spread as iqr_over_median

    return iqr_over_median(times)


def measure(networks: dict, input_shape: Sequence[int], batches: Sequence[int] = BATCHES,
            repeats: int = 30, warmup: int = 2, build=_forwards,
            clock: Callable[[], float] = time.perf_counter) -> dict:
    """Times every network (key -> ``{'arch', 'structure'}``) at every batch size,
    interleaved (`time_interleaved`); returns what ``latency.json`` keeps. ``build(network,
    input_shape, batches)`` gives ``({batch: call}, macs, params)`` (`_forwards`)."""
    import jax

    start, load_before = time.time(), os.getloadavg()
    calls, info = {}, {}
    for key, network in networks.items():
        per_batch, macs, params = build(network, input_shape, batches)
        for batch in batches:
            calls[f'{key}@{batch}'] = per_batch[batch]
        info[key] = {**network, 'macs': macs, 'params': params}
    compile_s = time.time() - start
    times = time_interleaved(calls, repeats, warmup, clock)
    for key in networks:
        per_batch = {str(b): [1e3 * t for t in times[f'{key}@{b}']] for b in batches}
        info[key]['ms'] = {b: statistics.median(t) for b, t in per_batch.items()}
        info[key]['spread'] = {b: spread(t) for b, t in per_batch.items()}
        info[key]['times_ms'] = {b: [round(x, 4) for x in t] for b, t in per_batch.items()}
    device = jax.local_devices()[0]
    return {'date': time.strftime('%Y-%m-%d %H:%M'), 'device': device.device_kind,
            'backend': jax.default_backend(), 'jax': jax.__version__,
            'machine': platform.machine(), 'cpus': os.cpu_count(),
            'load_average_before': list(load_before), 'load_average_after': list(os.getloadavg()),
            'batches': list(batches), 'repeats': repeats, 'warmup': warmup,
            'input_shape': list(input_shape), 'build_seconds': compile_s,
            'seconds': time.time() - start, 'networks': info}


# ------------------------------------------------------------------ comparisons
def run_ms(latency: dict | None, run: dict, batch: int) -> list[float] | None:
    """Measured ms of each sub-network of one run (a method's seed), None when the run's
    networks are not known or not all measured."""
    networks = run.get('networks')
    if not latency or not networks:
        return None
    # Keyed again here: each entry keeps its network, so a file from before a change of
    # `network_key` still reads.
    measured = {network_key(n): n for n in latency['networks'].values()}
    keys = [network_key(n) for n in networks]
    if any(k not in measured or str(batch) not in measured[k]['ms'] for k in keys):
        return None
    return [measured[k]['ms'][str(batch)] for k in keys]


def top1_at(points: Sequence[tuple[float, float]], ms: float) -> tuple[float, str]:
    """The top-1 of a baseline at ``ms``: straight lines between its (ms, top-1) points taken
    in order of ms; outside them the nearest point's top-1, with ``'faster'`` (``ms`` below
    every point) or ``'slower'`` (above every point), else ``''``."""
    pts = sorted(points)
    if ms <= pts[0][0]:
        return pts[0][1], ('faster' if ms < pts[0][0] else '')
    if ms >= pts[-1][0]:
        return pts[-1][1], ('slower' if ms > pts[-1][0] else '')
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= ms <= x1:
            return (y0 if x1 == x0 else y0 + (y1 - y0) * (ms - x0) / (x1 - x0)), ''
    raise AssertionError('unreachable')


def equal_latency(results: dict, latency: dict | None, a: str, b: str, batch: int) -> list[dict]:
    """``a``'s sub-networks minus ``b`` at the same measured ms (top-1 points), per seed both
    finished and have measured; like `paired` rows, plus the ms and where ``b`` ran out."""
    seeds = []
    for s in sorted(set(results.get(a, {})) & set(results.get(b, {}))):
        if run_ms(latency, results[a][s], batch) and run_ms(latency, results[b][s], batch):
            seeds.append(s)
    if not seeds:
        return []
    rows = []
    for k in range(len(results[a][seeds[0]]['rows'])):
        diffs, ms, outside = [], [], []
        for s in seeds:
            t = run_ms(latency, results[a][s], batch)[k]
            curve = list(zip(run_ms(latency, results[b][s], batch),
                             [100 * r['top1'] for r in results[b][s]['rows']], strict=True))
            value, where = top1_at(curve, t)
            diffs.append(100 * results[a][s]['rows'][k]['top1'] - value)
            ms.append(t)
            outside.append(where)
        rows.append({'subnet': k, 'seeds': seeds, 'diffs': diffs,
                     'diff_mean': statistics.fmean(diffs), 'diff_min': min(diffs),
                     'diff_max': max(diffs), 'wins': sum(d > 0 for d in diffs), 'ms': ms,
                     'outside': outside})
    return rows


def summarise(results: dict, latency: dict | None, methods: Sequence[str],
              batches: Sequence[int] = BATCHES) -> dict:
    """Per method and sub-network the measured ms over seeds; the equal-latency rows of every
    variant against every baseline, per batch; the measurement's noise."""
    out: dict = {'ms': {}, 'pairs': [], 'missing': []}
    for method in methods:
        for seed, run in sorted(results.get(method, {}).items()):
            if run_ms(latency, run, batches[0]) is None:
                out['missing'].append(f'{method} (seed {seed})')
        for batch in batches:
            per_seed = {s: run_ms(latency, r, batch) for s, r in results.get(method, {}).items()}
            per_seed = {s: v for s, v in sorted(per_seed.items()) if v}
            if per_seed:
                n = len(next(iter(per_seed.values())))
                out['ms'].setdefault(method, {})[str(batch)] = [
                    {'seeds': list(per_seed), 'ms': [v[k] for v in per_seed.values()],
                     'ms_mean': statistics.fmean(v[k] for v in per_seed.values())}
                    for k in range(n)]
    for a in VARIANTS:
        for b in BASELINES:
            for batch in batches:
                rows = equal_latency(results, latency, a, b, batch)
                if rows:
                    out['pairs'].append({'a': a, 'b': b, 'batch': batch, 'subnets': rows})
    if latency:
        out['noise'] = {str(b): sorted(n['spread'][str(b)] for n in latency['networks'].values())
                        for b in latency['batches']}
    return out


# ------------------------------------------------------------------ report
def _cell(row: dict) -> str:
    cell = (f'{row["diff_mean"]:+.2f} [{row["diff_min"]:+.2f}, {row["diff_max"]:+.2f}] '
            f'{row["wins"]}/{len(row["seeds"])}')
    marks = sorted({w for w in row['outside'] if w})
    return cell + (f' ({", ".join(marks)})' if marks else '')


def verdict(by: dict, labels: dict, widths: Sequence[float], where: str) -> list[str]:
    """One computed line per variant: at which widths it beat S-Net and warm S-Net in every
    seed, and where not (each baseline's wins and mean difference). ``by``: (a, b) -> rows
    of paired differences (at equal MACs, or at equal latency: ``where`` says which)."""
    lines = []
    for a in VARIANTS:
        present = [b for b in ('snet', 'snet_warm') if by.get((a, b))]
        if not present:
            continue
        yes, no = [], []
        for k, w in enumerate(widths):
            rows = [by[(a, b)][k] for b in present]
            if all(r['diff_min'] > 0 for r in rows):
                yes.append(f'x{w:g}')
            else:
                no.append(f'x{w:g} (' + '; '.join(
                    f'{labels[b]} {r["wins"]}/{len(r["seeds"])} seeds, {r["diff_mean"]:+.2f}'
                    for b, r in zip(present, rows, strict=True)) + ')')
        names = ' and '.join(labels[b] for b in present)
        text = (f'* {labels[a]}, {where}: beats {names} in every seed at '
                + (', '.join(yes) if yes else 'no width') + ('; not at ' + ', '.join(no)
                                                             if no else ''))
        if len(present) < 2:
            text += ' (S-Net warm: not finished or not measured)'
        lines.append(text + '.')
    return lines


def markdown(latency_summary: dict, latency: dict | None, labels: dict, methods: Sequence[str],
             widths: Sequence[float], png: str, command: str) -> list[str]:
    """The report's latency section (computed)."""
    lines = ['## Measured latency and top-1 at equal latency', '']
    if not latency:
        return lines + [f'Not measured yet: run `{command} --latency`.', '']
    noise = latency_summary['noise']
    lines += [
        f'Measured {latency["date"]} by `{command} --latency` on {latency["device"]} '
        f'({latency["backend"]}, {latency["cpus"]} CPUs, load average '
        f'{latency["load_average_before"][0]:.1f} before and '
        f'{latency["load_average_after"][0]:.1f} after), in one process: each sub-network as '
        'deployed (the standalone network of its channels), eval-mode forward, jitted, random '
        f'weights; {len(latency["networks"])} distinct networks (S-Net\'s and the individual '
        'networks\' are the same ones), timed round-robin at batch '
        + ' and '.join(str(b) for b in latency['batches'])
        + f', {latency["repeats"]} rounds, median per network. Noise: spread across rounds '
        '(interquartile range / median) ' + '; '.join(
            f'batch {b}: median {statistics.median(v):.0%}, max {max(v):.0%}'
            for b, v in noise.items()) + '.', '']
    if latency_summary['missing']:
        lines += ['Not measured (no structure, or measured before it was recorded): '
                  + ', '.join(latency_summary['missing']) + '.', '']
    if latency.get('without_structure'):
        lines += ['Why without a structure: ' + '; '.join(latency['without_structure']) + '.',
                  '']
    batches = [str(b) for b in latency['batches']]
    lines += ['ms per batch, mean over seeds (each seed\'s SP-Net structure is its own):', '',
              '| arm | ' + ' | '.join(f'x{w:g}' for w in widths) + ' | batch |',
              '|---|' + '---:|' * len(widths) + '---:|']
    for method in methods:
        for b in batches:
            rows = latency_summary['ms'].get(method, {}).get(b)
            if rows:
                lines.append(f'| {labels[method]} | '
                             + ' | '.join(f'{r["ms_mean"]:.2f}' for r in rows) + f' | {b} |')
    lines += ['', 'Top-1 points at equal latency, the SP-Net variant minus the baseline at the '
              'same measured ms (its widths joined by straight lines, same seed): mean [min, '
              'max] over seeds, then in how many seeds the variant won; "faster" / "slower": '
              'the variant ran outside the baseline\'s range in some seed and the nearest '
              'width stood in.', '',
              '| a - b | batch | ' + ' | '.join(f'x{w:g}' for w in widths) + ' |',
              '|---|---:|' + '---|' * len(widths)]
    for p in latency_summary['pairs']:
        lines.append(f'| {labels[p["a"]]} - {labels[p["b"]]} | {p["batch"]} | '
                     + ' | '.join(_cell(r) for r in p['subnets']) + ' |')
    lines += ['', f'![top-1 vs measured ms]({png})', '', '### Verdict at equal latency '
              '(computed)', '']
    for b in latency['batches']:
        by = {(p['a'], p['b']): p['subnets'] for p in latency_summary['pairs']
              if p['batch'] == b}
        lines += verdict(by, labels, widths, f'equal latency at batch {b}')
    return lines + ['']


def plot(summary: dict, latency_summary: dict, labels: dict, styles: dict, path: str,
         title: str) -> None:
    """Top-1 (mean over seeds) against measured ms (mean over seeds), one panel per batch."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    batches = sorted({b for m in latency_summary['ms'].values() for b in m}, key=int)
    fig, axes = plt.subplots(1, max(len(batches), 1), figsize=(6 * max(len(batches), 1), 4.5))
    axes = axes if len(batches) > 1 else [axes]
    for ax, b in zip(axes, batches, strict=False):
        for method, per_batch in latency_summary['ms'].items():
            if b not in per_batch or method not in summary['methods']:
                continue
            xs = [r['ms_mean'] for r in per_batch[b]]
            ys = [s['top1_mean'] for s in summary['methods'][method]['subnets']]
            fmt, color = styles[method]
            ax.plot(xs, ys, fmt, color=color, label=labels[method])
        ax.set_xscale('log')
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f'{v:g}')
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.set_xlabel(f'measured ms per batch of {b} (log scale)')
        ax.set_ylabel('top-1 accuracy on the 10k test images (%)')
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
