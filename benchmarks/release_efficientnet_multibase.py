"""Runs the PyTorch release's own EfficientNet pruning on small seeded bases and writes what
it produced: per-layer counts and SE sizes of every sub-network as its forward runs them, the
thresholds, the eval logits of every sub-network with fresh BN statistics (single-base cases
also: train mode's logits and how far it moves each BN's running statistics). Two files:
tests/data/release_efficientnet_multibase.json (`MULTI_BASE`: the B2 recipe's multi-base
pruning, checked by tests/test_efficientnet_multibase.py) and
tests/data/release_efficientnet_singlebase.json (`SINGLE_BASE`: one base x1.0, as the shared
reference case ``efficientnet_b0_singlebase`` was built, on other types and settings; checked
by tests/test_efficientnet_singlebase.py).

How it was made (the JSON in tests/data is this script's output):

    git --git-dir=<fetch of github:hideakikuratsu/SP-Net> ...   # release commit 741dfc6
    /work/main/.venv/bin/python benchmarks/release_efficientnet_multibase.py \\
        --release=/work/.mirror/hideakikuratsu+SP-Net/repo

It needs torch (2.13 CPU was used) and the release's git directory, nothing of this project.
From the release it takes, unmodified: ``models/slimmable_ops.py``, ``models/sp_efficientnet.py``
and train.py's ``set_m_list``, ``prune_model`` and ``sort_model_weight_by_slim_bn`` (exec'd from
their source), and the settings of ``apps/default_setting.yml`` +
``apps/sp_efficientnet_imagenet_finetune.yml`` (the B2 recipe: multi-base, no ZPM,
``set_pretrained_base``, ``min_size_ratio`` 0.1), overridden per case (type, widths, keep
ratios, classes, image size, stochastic depth 0). Stubs: ``utils.config.FLAGS`` (a plain
attribute dict), ``torchvision.ops.StochasticDepth`` (identity: probability 0). The base
networks are the release's ``Model`` at each base width with seeded weights
(`base_weights`: each tensor from its own key's seed, so a test can rebuild them from the
keys and shapes alone, without torch), the multi-base loop is train.py's
``train_val_test`` lines (``FLAGS.width_mult_list = [keep_ratio_k, base_width_k]``, a fresh
``get_model()`` per base, ``prune_model(..., offset=k)``). A case with one base runs that
function's single-base branch instead, with the finetune recipe's ``multi_base_pruning`` and
``set_pretrained_base`` off and ``width_mult_list`` ``[*keep_ratios, 1.0]``:
``model = prune_model(base_model_path, model, model)`` (the shared case's ``yml``).

Only the single-base cases (a few seconds each on CPU):

    /work/main/.venv/bin/python benchmarks/release_efficientnet_multibase.py \\
        --release=/work/.mirror/hideakikuratsu+SP-Net/repo --which=singlebase
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import subprocess
import sys
import tempfile
import types
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / 'tests' / 'data'
OUT = {'multibase': DATA / 'release_efficientnet_multibase.json',
       'singlebase': DATA / 'release_efficientnet_singlebase.json'}
SEED = 2025
# (name, type, image size, classes, base widths, keep ratios): the B2 recipe's bases and keep
# ratios on B0 and on B2 itself (whose first stage repeats a block on the residual stream).
MULTI_BASE = [
    ('b0_multibase', 'b0', 64, 10, (0.75, 1.0), (0.5484, 0.526)),
    ('b2_multibase', 'b2', 64, 10, (0.75, 1.0), (0.5484, 0.526)),
    ('b0_multibase_low', 'b0', 64, 10, (0.75, 1.0), (0.3, 0.45)),
]
# One base x1.0 (the shared efficientnet_b0_singlebase's recipe) on the other types: B1 and
# B2 repeat the first and last stages' blocks (a residual block before the last conv); B5-B7
# use BN eps 1e-3; low keep ratios let the 10% floor decide; three pruned sub-networks.
SINGLE_BASE = [
    ('b1_single', 'b1', 64, 100, (1.0,), (0.4, 0.7)),
    ('b2_single_96px', 'b2', 96, 100, (1.0,), (0.35, 0.6)),
    ('b3_single', 'b3', 64, 10, (1.0,), (0.3, 0.55)),
    ('b4_single_three', 'b4', 64, 10, (1.0,), (0.25, 0.5, 0.75)),
    ('b5_single', 'b5', 64, 10, (1.0,), (0.35, 0.6)),
    ('b6_single_low', 'b6', 32, 10, (1.0,), (0.08, 0.15)),
    ('b7_single', 'b7', 64, 10, (1.0,), (0.45, 0.8)),
    ('b0_single_low', 'b0', 64, 10, (1.0,), (0.05, 0.12)),
]
CASES = {'multibase': MULTI_BASE, 'singlebase': SINGLE_BASE}
# (type, width): plain networks (width_mult_list [w], as the base recipe builds them) around
# the widths where the release's residual test (stride 1 and equal channel lists) would also
# make a stage's first block residual; written to the single-base file as 'release_builds'.
PLAIN_BUILDS = [('b0', 0.25), ('b0', 0.2775), ('b0', 0.28), ('b0', 0.15), ('b0', 0.05),
                ('b3', 0.4), ('b3', 0.3), ('b6', 0.3), ('b7', 0.13), ('b5', 0.19)]


def base_weights(keys_shapes, seed: int) -> dict[str, np.ndarray]:
    """Seeded base weights by release key (``.weight``/``.bias`` of convs, BNs, the
    classifier): each tensor from ``default_rng([seed, crc32(key)])``; BN scales in
    [0.02, 1) squared-ish (distinct, like a sparsity-trained network's), BN biases small."""
    out = {}
    for key, shape in keys_shapes:
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        if len(shape) == 1 and key.endswith('.weight'):  # a BN scale
            x = rng.uniform(0.02, 1.0, shape) ** 2
        elif len(shape) == 1:
            x = rng.normal(0.0, 0.05, shape)
        else:
            fan = int(np.prod(shape[1:]))
            x = rng.normal(0.0, 1.0 / np.sqrt(fan), shape)
        out[key] = x.astype(np.float32)
    return out


def _git_show(release: Path, path: str) -> str:
    return subprocess.run(['git', f'--git-dir={release}', 'show', f'HEAD:{path}'], check=True,
                          capture_output=True, text=True).stdout


def _setup(release: Path, work: Path):
    """The release's modules importable from ``work``, with stubs; returns (FLAGS, fns)."""
    import torch
    import yaml
    from torch import nn

    (work / 'models').mkdir()
    (work / 'models' / '__init__.py').write_text('')
    for f in ('models/slimmable_ops.py', 'models/sp_efficientnet.py'):
        (work / f).write_text(_git_show(release, f))

    class Flags(dict):
        __getattr__ = dict.get

        def __setattr__(self, k, v):
            self[k] = v

    FLAGS = Flags()
    utils = types.ModuleType('utils')
    config = types.ModuleType('utils.config')
    config.FLAGS = FLAGS
    utils.config = config
    tv = types.ModuleType('torchvision')
    ops = types.ModuleType('torchvision.ops')

    class StochasticDepth(nn.Module):
        def __init__(self, p, mode):
            super().__init__()
            assert p == 0.0, 'the cases run without stochastic depth'

        def forward(self, x):
            return x

    ops.StochasticDepth = StochasticDepth
    tv.ops = ops
    sys.modules.update({'utils': utils, 'utils.config': config, 'torchvision': tv,
                        'torchvision.ops': ops})
    sys.path.insert(0, str(work))
    for f in ('apps/default_setting.yml', 'apps/sp_efficientnet_imagenet_finetune.yml'):
        FLAGS.update(yaml.safe_load(_git_show(release, f)))

    # train.py's pruning functions, from their source.
    tree = ast.parse(_git_show(release, 'train.py'))
    wanted = {'set_m_list', 'prune_model', 'sort_model_weight_by_slim_bn', 'get_model'}
    code = ast.Module([n for n in tree.body if isinstance(n, ast.FunctionDef)
                       and n.name in wanted], type_ignores=[])
    from models.slimmable_ops import SConv2d, SPBatchNorm2d, SSqueezeExcitation
    fns = {'torch': torch, 'nn': nn, 'FLAGS': FLAGS, 'SConv2d': SConv2d, 'importlib': importlib,
           'SPBatchNorm2d': SPBatchNorm2d, 'SSqueezeExcitation': SSqueezeExcitation,
           'print': lambda *a, **k: None}
    exec(compile(code, 'train.py', 'exec'), fns)
    return FLAGS, fns


def run_case(FLAGS, fns, work: Path, name, variant, size, classes, base_widths, ratios):
    """The release's pruning of seeded bases: multi-base (the B2 recipe) with several bases,
    its single-base branch (``multi_base_pruning``, ``set_pretrained_base`` off) with one."""
    import torch

    multi = len(base_widths) > 1
    FLAGS.update(type=variant, image_size=size, num_classes=classes, stochastic_depth_prob=0.0,
                 base_width_mult_list=list(base_widths), multi_base_pruning=multi,
                 set_pretrained_base=multi, zpm_pruning=False, reinit_params=False,
                 mask_pruning=False, l1_based_pruning=False, profiling_only=True)
    # Base networks as the base recipe trains them (width_mult_list = [w]).
    paths, bases = [], {}
    for w in base_widths:
        FLAGS.width_mult_list = [w]
        model = fns['get_model']()
        keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()
                if k.endswith(('.weight', '.bias'))]
        state = base_weights(keys, SEED + int(round(w * 1000)))
        bases[w] = state
        full = model.state_dict()
        full.update({k: torch.from_numpy(v) for k, v in state.items()})
        path = work / f'{name}_base_{w}.pt'
        torch.save({'model': full, 'best_val': 0.0}, path)
        paths.append(str(path))
    FLAGS.base_model_path = paths[-1]
    FLAGS.multi_base_model_path = paths

    FLAGS.width_mult_list = [*ratios, base_widths[-1]]
    model = fns['get_model']()
    FLAGS.idx = len(FLAGS.width_mult_list) - 1
    if not multi:  # train.py's train_val_test, single-base branch
        model = fns['prune_model'](FLAGS.base_model_path, model, model)
        return model, bases, [float(t) for t in FLAGS.thresholds]

    # train.py's train_val_test, multi-base branch.
    org_width_mult_list = FLAGS.width_mult_list.copy()
    FLAGS.org_conv_ms, FLAGS.org_bn_ms = FLAGS.conv_ms, FLAGS.bn_ms
    thresholds = []
    for width_idx, (base_width, base_model_path) in enumerate(
            zip(FLAGS.base_width_mult_list, FLAGS.multi_base_model_path)):
        FLAGS.width_mult_list = [org_width_mult_list[width_idx], base_width]
        base_model = fns['get_model']()
        fns['prune_model'](base_model_path, base_model, model, multi_base_pruning=True,
                           offset=width_idx)
        thresholds += [float(t) for t in FLAGS.thresholds]
    FLAGS.width_mult_list = org_width_mult_list.copy()
    FLAGS.conv_ms, FLAGS.bn_ms = FLAGS.org_conv_ms, FLAGS.org_bn_ms
    return model, bases, thresholds


def release_residuals(FLAGS, fns, variant, width):
    """The blocks (``features`` index) the release's plain network at ``width`` makes
    residual, or the error building it raises."""
    FLAGS.update(type=variant, image_size=64, num_classes=10, stochastic_depth_prob=0.0,
                 zpm_pruning=False, reinit_params=False, mask_pruning=False,
                 width_mult_list=[width])
    try:
        model = fns['get_model']()
    except Exception as e:  # noqa: BLE001 (recorded: what the release does there)
        return f'{type(e).__name__}: {e}'
    return [i for i, f in enumerate(model.features) if getattr(f, 'residual_connection', False)]


def describe(model, FLAGS, classes, size, name):
    """Per conv/SE FC: out channels per sub-network as the forward runs them; logits."""
    import torch
    from models.slimmable_ops import SConv2d, SSEConv2d

    model.eval()
    x = np.random.default_rng([SEED, zlib.crc32(name.encode())]).normal(
        size=(2, 3, size, size)).astype(np.float32)
    n = len(FLAGS.width_mult_list)
    shapes = {k: [] for k in range(n)}
    hooks = []
    for mname, m in model.named_modules():
        if isinstance(m, SConv2d | SSEConv2d | torch.nn.Linear):
            hooks.append(m.register_forward_hook(
                lambda m, i, o, mname=mname: shapes[FLAGS.idx].append(
                    (mname, int(i[0].shape[1]), int(o.shape[1])))))
    logits = []
    with torch.no_grad():
        for k in range(n):
            FLAGS.idx = k
            model.apply(lambda m, w=FLAGS.width_mult_list[k]: setattr(m, 'width_mult', w))
            logits.append(model(torch.from_numpy(x)).numpy().astype(np.float64).tolist())
    for h in hooks:
        h.remove()
    FLAGS.idx = n - 1
    layers = [{'name': m, 'in': [shapes[k][i][1] for k in range(n)],
               'out': [shapes[k][i][2] for k in range(n)]} for i, (m, _, _) in
              enumerate(shapes[n - 1])]
    for k in range(n):
        assert [s[0] for s in shapes[k]] == [la['name'] for la in layers]
    return x, layers, logits


def train_mode(model, FLAGS, x):
    """Train mode (batch statistics; every ``nn.Dropout`` the identity) from the as-pruned
    state, sub-network by sub-network: the logits, and per BN (release name) and sub-network
    how far one forward moved its running statistics, as ``[sum(mean), sum(var - 1)]`` over
    the channels (fresh statistics are 0 and 1, so the sums do not depend on the layout);
    and how far the same in float64 is from those logits: train mode on a batch of two is
    ill-conditioned where the maps are small (at 32 px the last stages' are 1x1). Leaves
    ``model`` in eval mode, its running statistics moved."""
    import torch
    from models.slimmable_ops import SPBatchNorm2d

    n = len(FLAGS.width_mult_list)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0

    def forward(k, dtype):
        FLAGS.idx = k
        model.apply(lambda m, w=FLAGS.width_mult_list[k]: setattr(m, 'width_mult', w))
        with torch.no_grad():
            return model(torch.from_numpy(x).to(dtype)).numpy().astype(np.float64)

    model.train()
    logits = [forward(k, torch.float32) for k in range(n)]
    moves = {}
    for name, m in model.named_modules():
        if isinstance(m, SPBatchNorm2d):
            stats = [(b.running_mean, b.running_var) for b in m.bn] + [
                (m.running_mean, m.running_var)]
            moves[name] = [[float(mean.double().sum()), float((var.double() - 1).sum())]
                           for mean, var in stats]
    model.double()  # (float32 -> float64 -> float32 is exact)
    exact = [forward(k, torch.float64) for k in range(n)]
    model.float().eval()
    FLAGS.idx = n - 1
    gap = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(logits, exact))
    return [a.tolist() for a in logits], moves, gap


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--release', required=True, help="the release's git directory")
    p.add_argument('--which', choices=[*CASES, 'all'], default='all',
                   help='which cases (and file) to write')
    p.add_argument('--out', help='the output file (default: per --which, in tests/data)')
    args = p.parse_args()
    import torch
    torch.set_num_threads(1)
    commit = subprocess.run(['git', f'--git-dir={args.release}', 'rev-parse', 'HEAD'],
                            capture_output=True, text=True, check=True).stdout.strip()
    which = list(CASES) if args.which == 'all' else [args.which]
    if args.out and len(which) > 1:
        p.error('--out needs one --which')
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        FLAGS, fns = _setup(Path(args.release), work)
        for kind in which:
            out = {'release_commit': commit, 'torch': torch.__version__, 'seed': SEED,
                   'cases': {}}
            for name, variant, size, classes, widths, ratios in CASES[kind]:
                model, _, thresholds = run_case(FLAGS, fns, work, name, variant, size, classes,
                                                widths, ratios)
                x, layers, logits = describe(model, FLAGS, classes, size, name)
                out['cases'][name] = {
                    'type': variant, 'image_size': size, 'num_classes': classes,
                    'base_widths': list(widths), 'keep_ratios': list(ratios), 'zpm': False,
                    'min_channels_ratio': FLAGS.min_size_ratio, 'thresholds': thresholds,
                    'base_seeds': [SEED + int(round(w * 1000)) for w in widths],
                    'input_seed': [SEED, zlib.crc32(name.encode())], 'layers': layers,
                    'logits_eval_asis': logits}
                if kind == 'singlebase':
                    bn = model.features[0][1]
                    train_logits, moves, gap = train_mode(model, FLAGS, x)
                    out['cases'][name].update(bn_eps=bn.eps, bn_momentum=bn.momentum,
                                              train_mode_float32_vs_float64=gap)
                    if gap < 5e-5:  # else float32 cannot be compared (the release's own)
                        out['cases'][name].update(logits_train_mode=train_logits,
                                                  bn_moves_train_mode=moves)
                    print(name, 'train mode: the release float32 vs float64', gap)
                print(name, 'thresholds', thresholds, flush=True)
            if kind == 'singlebase':
                out['release_builds'] = [
                    {'type': v, 'width': w, 'residual_blocks': release_residuals(FLAGS, fns, v, w)}
                    for v, w in PLAIN_BUILDS]
            path = Path(args.out) if args.out else OUT[kind]
            path.write_text(json.dumps(out, indent=None, separators=(',', ':')) + '\n')
            print('wrote', path)


if __name__ == '__main__':
    main()
