"""Acceptance: one slimmable fine-tuning step equals the PyTorch release's, in float64.

The references (``mobilenet_v2_multibase_zpm`` and every ``efficientnet_*`` case, see
../shared/reference/README.md, "One training step") are the release's fine-tuning step run
once from the pruned network on a batch of two images, in float64: the full network on the
labels, then each smaller sub-network by in-place distillation, one SGD (Nesterov) update
with the cosine schedule's first lr and the ``sgd_no_bias_decay`` groups, and the running
statistics updated with the unbiased batch variance. Here the same step goes through the
project's own pieces: the recipe's ``slim`` section (`configs/mobilenet_v2.py`;
`configs/efficientnet_b2.py` set to the case's settings, `release_cases`),
`optim.make_optimizer` and `loop.jit_train_step`, with the model built for float64.

The structure and ZPM masks come from pruning the reference's bases (as
tests/test_reference.py does, which checks them against the release); the starting weights
are the release's ``pruned_state_dict.npz``. The float64 step runs in a subprocess with JAX's
x64 mode on (``python tests/test_release_step.py CASE STRUCTURE MASKS OUT``), since JAX fixes
dtypes per process.

What is compared, all as moves from the starting network (the release's are ``after -
before`` in float64, converted to our layouts in float64):

* every parameter's update, per tensor: ``max|got - want| <= 1e-6 * max|want| + 1e-14``.
  The absolute 1e-14 is for the BN biases whose gradient is exactly zero because a
  train-mode BN follows them (e.g. every ``project_bn/bias``: the residual stream ends in
  BNs that subtract the batch mean); both sides' updates there are rounding noise of a few
  ulp (< 1e-15);
* every running statistic's move, element by element, within 1e-6 relative: the shared
  statistics are the full network's (``*_2``), ``bn.<k>`` sub-network k's (``*_k``);
* each sub-network's loss, and the lr of the first step (iteration 1 of the cosine schedule).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import release_cases
from flax import traverse_util
from helpers import needs_reference, reference_case

from spnet_jax.workdir import convert_torch

ROOT = Path(__file__).resolve().parents[1]
MBV2 = 'mobilenet_v2_multibase_zpm'
sys.path.insert(0, str(ROOT))
from configs import mobilenet_v2  # noqa: E402

# MobileNetV2's step (85-144 s to set up on CI's 2 cores) runs with the slow tests.
CASES = [pytest.param(MBV2, id=MBV2, marks=[needs_reference(MBV2), pytest.mark.slow]),
         *release_cases.case_params()]


def case_setup(name: str):
    """``(folder, config, bases)`` of reference case ``name``: its folder, the recipe set to
    its settings, and its ``(width, base file)`` pairs."""
    if name == MBV2:
        config = mobilenet_v2.get_config()
        folder = reference_case(MBV2)
        return folder, config, [(w, folder / f'base_{w}.npz') for w in config.base.widths]
    case = release_cases.read_case(name)
    return case.folder, case.config(), case.bases


def float64_step(name: str, structure_file: str, masks_file: str, out_file: str) -> None:
    """The float64 step (run in a process with x64 on); saves the new params, running
    statistics, metrics and the schedule's first lr to ``out_file``."""
    from spnet_jax.core import sharding
    from spnet_jax.core.structure import Structure
    from spnet_jax.train import loop, optim
    from spnet_jax.train import state as state_lib
    from spnet_jax.train.settings import Settings

    assert jax.config.read('jax_enable_x64'), 'run with JAX_ENABLE_X64=1'
    folder, config, _ = case_setup(name)
    arch = Settings.from_config(config).arch
    structure = Structure.load(structure_file)
    variables = {}
    if masks_file != '-':
        with np.load(masks_file) as m:
            variables['masks'] = traverse_util.unflatten_dict(
                {tuple(k.split('/')): jnp.asarray(m[k]) for k in m.files})
    start = convert_torch.convert(dict(np.load(folder / 'pruned_state_dict.npz')), arch,
                                  num_subnets=structure.num_subnets)
    variables.update(jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), start))
    model = arch.module(structure, dtype=loop.dtype_of('float64'))
    tx, schedule = optim.make_optimizer(config.slim, steps_per_epoch=1,
                                        num_steps=int(config.slim.epochs),
                                        table=arch.table(zpm=structure.zpm))
    mesh = sharding.make_mesh()
    state = state_lib.create_state(variables, tx)
    step = loop.jit_train_step(model, structure.num_subnets, tx, schedule, mesh,
                               label_smoothing=config.slim.label_smoothing,
                               distillation=(config.slim.kd_alpha, config.slim.kd_temperature))
    with np.load(folder / 'io.npz') as io:
        batch = {'image': io['x'].transpose(0, 2, 3, 1),  # NCHW -> NHWC
                 'label': io['targets'].astype(np.int32)}
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    out = {'lr': np.asarray(schedule(jnp.zeros((), jnp.int32)))}
    for part, tree in (('params', state.params), ('batch_stats', state.batch_stats),
                       ('metrics', metrics)):
        for key, x in traverse_util.flatten_dict(sharding.to_host(tree)).items():
            out[f'{part}:' + '/'.join(key)] = np.asarray(x)
    np.savez(out_file, **out)


def convert_float64(state, arch, num_subnets):
    """`convert_torch.convert` (which returns float32) without losing float64 precision:
    the sum of the conversions of the float32 value and of its float32 remainder."""
    high = {k: np.asarray(v).astype(np.float32) for k, v in state.items()}
    low = {k: (np.asarray(v) - high[k]).astype(np.float32) for k, v in state.items()}
    return jax.tree.map(lambda a, b: a.astype(np.float64) + b.astype(np.float64),
                        convert_torch.convert(high, arch, num_subnets=num_subnets),
                        convert_torch.convert(low, arch, num_subnets=num_subnets))


@pytest.fixture(scope='module', params=CASES)
def step_case(request, tmp_path_factory):
    """``(release, ours)``: the release's moves (float64, our layouts), its starting network
    (ours), its step's settings; and our step's results: the bases pruned here (float32, as
    the prune command does), then one step in float64."""
    from spnet_jax.train.release_import import read_base
    from spnet_jax.train.settings import Settings
    from spnet_jax.train.stages import prune_bases

    name = request.param
    folder, config, bases = case_setup(name)
    settings = Settings.from_config(config)
    arch = settings.arch
    work = tmp_path_factory.mktemp('release_step')
    variables = [read_base(str(path), arch, w) for w, path in bases]
    structure, pruned, _ = prune_bases(settings, variables, settings.data.image_size, 3)
    structure.save(str(work / 'structure.json'))
    masks = '-'
    if 'masks' in pruned:
        masks = str(work / 'masks.npz')
        np.savez(masks, **{k: np.asarray(v) for k, v in traverse_util.flatten_dict(
            pruned['masks'], sep='/').items()})
    # x64 for the float64 step; LLVM's expensive passes off halve the compile time on CPU
    # (the step then runs in seconds either way). Not conftest's lowest optimization level:
    # XLA:CPU's float64 convolutions are LLVM loops, which run twice as long unoptimized.
    flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
             if not f.startswith('--xla_backend_optimization_level')]
    flags = dict.fromkeys(flags + ['--xla_llvm_disable_expensive_passes=true'])
    # PYTHONPATH: the script's own folder comes first on its path, not this checkout.
    env = {**os.environ, 'JAX_ENABLE_X64': '1', 'JAX_PLATFORMS': 'cpu',
           'XLA_FLAGS': ' '.join(flags), 'PYTHONPATH': str(ROOT)}
    out = work / 'step.npz'
    done = subprocess.run([sys.executable, __file__, name, str(work / 'structure.json'), masks,
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as f:
        ours = {k: f[k] for k in f.files}

    before = dict(np.load(folder / 'pruned_state_dict.npz'))
    with np.load(folder / 'train_step_f64_after.npz') as after:
        moves = {k: after[k] - before[k].astype(np.float64) for k in after.files}
    flat = lambda tree: traverse_util.flatten_dict(tree, sep='/')
    n = structure.num_subnets
    want = convert_float64(moves, arch, n)
    start = convert_torch.convert(before, arch, num_subnets=n)
    info = json.loads((folder / 'widths.json').read_text())['train_step']
    release = {'params': flat(want['params']), 'batch_stats': flat(want['batch_stats']),
               'start': {'params': flat(start['params']),
                         'batch_stats': flat(start['batch_stats'])}, 'info': info,
               'num_subnets': n}
    return release, ours


def test_step_ran_in_float64(step_case):
    _, ours = step_case
    dtypes = {k.partition(':')[0]: set() for k in ours}
    for key, x in ours.items():
        dtypes[key.partition(':')[0]].add(x.dtype)
    assert dtypes['params'] == {np.dtype('float64')}
    assert dtypes['batch_stats'] == {np.dtype('float64')}


def test_parameter_updates_equal_the_release(step_case):
    release, ours = step_case
    assert sorted(k.partition(':')[2] for k in ours if k.startswith('params:')) == sorted(
        release['params'])
    for key, want in release['params'].items():
        got = ours[f'params:{key}'] - release['start']['params'][key].astype(np.float64)
        error = np.abs(got - want).max()
        assert error <= 1e-6 * np.abs(want).max() + 1e-14, (key, error, np.abs(want).max())


def test_running_statistics_equal_the_release(step_case):
    """Shared statistics = the full network's, ``bn.<k>`` = sub-network k's; the running
    variance moved towards the unbiased batch variance, as PyTorch's BN does."""
    release, ours = step_case
    assert sorted(k.partition(':')[2] for k in ours if k.startswith('batch_stats:')) == sorted(
        release['batch_stats'])
    for key, want in release['batch_stats'].items():
        got = ours[f'batch_stats:{key}'] - release['start']['batch_stats'][key]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-14, err_msg=key)


def test_losses_and_learning_rate_equal_the_release(step_case):
    release, ours = step_case
    info = release['info']
    np.testing.assert_allclose(ours['lr'], info['lr_used_f64'], rtol=1e-15)
    for k in range(release['num_subnets']):
        np.testing.assert_allclose(ours[f'metrics:loss/subnet_{k}'],
                                   info['loss_per_width_idx_f64'][str(k)], rtol=1e-12,
                                   err_msg=f'sub-network {k}')


if __name__ == '__main__':
    float64_step(*sys.argv[1:])
