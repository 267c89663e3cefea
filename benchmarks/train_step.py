"""The slimmable fine-tuning step: throughput, compile time, and what ZPM junctions cost.

    python benchmarks/train_step.py --config=configs/resnet50.py --batch=16 --steps=4
    python benchmarks/train_step.py --config=configs/fashion_mnist.py --batch=32 --steps=20

One jitted step of the config's ``slim`` stage: every sub-network forward and backward
(largest first, in-place distillation for the others), SGD update, state donated, on all
local devices (the batch sharded over them), exactly as `main.py` runs it. The slimmable
network comes from the config's pruning recipe applied to random bases (step time does not
depend on the values).

Three networks are timed side by side in this one process:

* ``zpm``: the recipe as configured, with the release's ZPM (``prune.zpm='release'``);
* ``zpm_gather``: the same network with every junction placed (``fold_slack=0``, the
  ``place`` policy of `junction_choice.py`): a branch narrower than its stream is moved into
  it by an activation gather at the add instead of its last conv writing the stream's width;
* ``no_zpm``: ZPM off, each pruned sub-network aimed (MACs targets, within 1%) at the MACs
  of the ``zpm`` network's, so the two do the same convolution work and the difference is
  the junctions. The ZPM share of the step is ``1 - t(no_zpm) / t(zpm)`` (likewise for
  ``zpm_gather``).

With ``--vs_snet=N`` the networks are instead S-Net (``--snet_widths``, private BN per
width) and SP-Net pruned to S-Net's MACs (all but the widest, within 3%) with each
``prune.zpm`` variant (``zpm``: 'release', ``aligned``, ``no_zpm``: 'none'), each with
``round_to`` 1 and N (issues 16 and 28: the slim step at equal MACs).

    python benchmarks/train_step.py --config=configs/fashion_mnist.py --batch=128 --vs_snet=4

Prints a table and writes JSON (``--out``): per network the sub-networks' MACs, median step
seconds over ``--steps`` (after a warm-up step; the networks' steps interleaved, so load
changes on a shared machine hit all), images/s, compile seconds, and the peak resident
memory of the process.
"""

import argparse
import importlib.util
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from spnet_jax.core import sharding
from spnet_jax.core.cost import subnet_costs
from spnet_jax.data.specs import DATASETS
from spnet_jax.models import get_arch
from spnet_jax.models.common import FOLD_SLACK
from spnet_jax.pruning import prune
from spnet_jax.train import step as step_lib
from spnet_jax.train.optim import make_optimizer
from spnet_jax.train.state import create_state, init_variables


def load_config(path: str):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # configs import configs
    spec = importlib.util.spec_from_file_location('bench_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def random_base(config, width: float, in_channels: int, seed: int) -> dict:
    """A plain network at ``width`` with random weights and distinct random BN scales."""
    arch = get_arch(config.model.name, num_classes=config.model.num_classes,
                    full_width=width, stem=config.model.stem)
    variables = init_variables(arch.module(arch.plain_structure()), jax.random.key(seed),
                               (32, 32, in_channels))
    rng = np.random.default_rng(seed)

    def value(path, leaf):
        if jax.tree_util.keystr(path).endswith("['scale']"):
            return jnp.asarray(rng.uniform(0.05, 1.0, leaf.shape), jnp.float32)
        return leaf

    return jax.tree_util.tree_map_with_path(value, variables)


def compiled_step(arch, structure, variables, config, batch_size, image_size, in_channels,
                  fold_slack=FOLD_SLACK):
    """``(run, compile_s)``: ``run()`` does one step on a fixed batch and returns seconds."""
    model = arch.module(structure, bn_scale_init=config.slim.bn_scale_init,
                        fold_slack=fold_slack)
    tx, schedule = make_optimizer(config.slim, steps_per_epoch=100, num_steps=1000,
                                  table=arch.table(zpm=structure.zpm))
    mesh = sharding.make_mesh()
    fn = step_lib.bind(step_lib.train_step, model=model, num_subnets=structure.num_subnets,
                       tx=tx, schedule=schedule, kd_alpha=float(config.slim.kd_alpha),
                       kd_temperature=float(config.slim.kd_temperature))
    step = jax.jit(fn, donate_argnums=0)
    # A copy: the step donates its state, and pruned trees may share untouched leaves.
    state = sharding.replicate(create_state(jax.tree.map(jnp.array, variables), tx), mesh)
    rng = np.random.default_rng(0)
    batch = sharding.global_batch({
        'image': rng.normal(size=(batch_size, image_size, image_size, in_channels)).astype(
            np.float32),
        'label': rng.integers(0, config.model.num_classes, batch_size).astype(np.int32)}, mesh)
    t = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    holder = {'state': state}

    def run() -> float:
        t = time.perf_counter()
        holder['state'], metrics = compiled(holder['state'], batch)
        jax.block_until_ready(metrics)
        if not np.isfinite(float(metrics['loss'])):
            raise RuntimeError('non-finite loss in the benchmark step')
        return time.perf_counter() - t

    run()  # warm-up
    return run, compile_s


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--config', default='configs/resnet50.py')
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--steps', type=int, default=4)
    parser.add_argument('--out', default=None)
    parser.add_argument('--vs_snet', type=int, default=0,
                        help='N > 0: S-Net against SP-Net at its MACs, round_to 1 and N')
    parser.add_argument('--snet_widths', default='0.5,0.75,1.0')
    args = parser.parse_args()
    config = load_config(args.config)
    image_size = int(config.data.image_size)
    in_channels = DATASETS[config.data.name].channels
    widths = list(config.base.widths)
    arch = get_arch(config.model.name, num_classes=config.model.num_classes,
                    full_width=widths[-1], stem=config.model.stem)
    bases = [random_base(config, w, in_channels, i) for i, w in enumerate(widths)]
    recipe = dict(image_size=image_size, in_channels=in_channels,
                  min_channels_ratio=config.prune.min_channels_ratio,
                  round_to=config.prune.round_to, tolerance=config.prune.macs_tolerance)
    if config.prune.macs_targets:
        recipe['macs_targets'] = list(config.prune.macs_targets)
    else:
        recipe['keep_ratios'] = list(config.prune.keep_ratios)
    if args.vs_snet:  # S-Net against SP-Net at S-Net's MACs, ZPM and not, round_to 1 and N
        snet = arch.snet_structure(tuple(float(w) for w in args.snet_widths.split(',')))
        snet_costs = subnet_costs(arch, snet, image_size, in_channels)
        snet_vars = init_variables(arch.module(snet), jax.random.key(0),
                                   (32, 32, in_channels))
        recipe.pop('keep_ratios', None)
        recipe['macs_targets'] = [c.macs for c in snet_costs[:-1]]
        recipe.pop('round_to'), recipe.pop('tolerance')
        networks = [('snet', snet, snet_vars, snet_costs)]
        for zpm in ('release', 'aligned', 'none'):
            for round_to in (1, args.vs_snet):
                s_, v_, _ = prune(arch, bases, widths, zpm=zpm, round_to=round_to,
                                  tolerance=0.03, **recipe)
                name = {'release': 'zpm', 'aligned': 'aligned', 'none': 'no_zpm'}[zpm]
                networks.append((f'{name}_r{round_to}', s_, v_,
                                 subnet_costs(arch, s_, image_size, in_channels)))
    else:
        structure, variables, _ = prune(arch, bases, widths, zpm='release', **recipe)
        costs = subnet_costs(arch, structure, image_size, in_channels)
        recipe.pop('keep_ratios', None)
        recipe['macs_targets'] = [c.macs for c in costs[:-1]]
        plain_structure, plain_variables, _ = prune(arch, bases, widths, zpm='none', **recipe)
        plain_costs = subnet_costs(arch, plain_structure, image_size, in_channels)
        networks = [('zpm', structure, variables, costs),
                    ('zpm_gather', structure, variables, costs),
                    ('no_zpm', plain_structure, plain_variables, plain_costs)]
    runs = []
    for name, s, v, _ in networks:
        slack = 0.0 if name == 'zpm_gather' else FOLD_SLACK
        runs.append(compiled_step(arch, s, v, config, args.batch, image_size, in_channels,
                                  fold_slack=slack))
    times = [[] for _ in networks]
    for _ in range(args.steps):  # interleaved, so load changes on a shared machine hit all
        for i, (run, _) in enumerate(runs):
            times[i].append(run())
    rows = []
    for (name, _, _, c), (_, compile_s), t in zip(networks, runs, times, strict=True):
        step_s = statistics.median(t)
        rows.append({'network': name, 'subnet_macs': [x.macs for x in c], 'step_s': step_s,
                     'images_per_s': args.batch / step_s, 'compile_s': compile_s})
        if args.vs_snet:
            rows[-1]['over_snet'] = step_s / statistics.median(times[0])
    if args.vs_snet:
        zpm_share = gather_share = None
    else:
        zpm_share = 1 - rows[2]['step_s'] / rows[0]['step_s']
        gather_share = 1 - rows[2]['step_s'] / rows[1]['step_s']
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f'{config.model.name} at {image_size} px, batch {args.batch}, '
          f'{networks[0][1].num_subnets} sub-networks, '
          f'{jax.device_count()} x {jax.default_backend()}')
    print(f'{"network":>10} {"sub-network MACs":>28} {"step ms":>9} {"img/s":>7} {"compile s":>9}')
    for r in rows:
        macs = ' / '.join(f'{m / 1e6:.1f}M' for m in r['subnet_macs'])
        print(f'{r["network"]:>10} {macs:>28} {r["step_s"] * 1e3:>9.1f} '
              f'{r["images_per_s"]:>7.1f} {r["compile_s"]:>9.1f}')
    if args.vs_snet:
        ratios = ', '.join(f'{r["network"]} {r["over_snet"]:.2f}x' for r in rows[1:])
        print(f'step time over S-Net\'s: {ratios}; peak RSS {peak:.0f} MiB')
    else:
        print(f'ZPM share of the step: {zpm_share:.1%} (junctions as gathers: '
              f'{gather_share:.1%}); peak RSS {peak:.0f} MiB')
    suffix = '_vs_snet' if args.vs_snet else ''
    out = args.out or f'benchmarks/train_step_{config.model.name}{suffix}.json'
    with open(out, 'w') as f:
        json.dump({'config': args.config, 'batch': args.batch, 'steps': args.steps,
                   'image_size': image_size, 'rows': rows, 'zpm_share': zpm_share,
                   'zpm_gather_share': gather_share,
                   'peak_rss_mib': round(peak), 'backend': jax.default_backend(),
                   'devices': str(jax.devices()), 'machine': platform.machine(),
                   'date': time.strftime('%Y-%m-%d'), 'jax': jax.__version__}, f, indent=1)


if __name__ == '__main__':
    main()
