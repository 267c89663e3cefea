"""Acceptance: one slimmable fine-tuning step equals the PyTorch release's, in float64.

The reference (``mobilenet_v2_multibase_zpm``, see ../shared/reference/README.md, "One training
step") is the release's fine-tuning step run once from the pruned SP-MobileNetV2 on a batch
of two 224 px images, in float64: the full network on the labels, then each smaller
sub-network by in-place distillation, one SGD (Nesterov) update with the cosine schedule's
first lr and the ``sgd_no_bias_decay`` groups, and the running statistics updated with the
unbiased batch variance. Here the same step goes through the project's own pieces:
`configs/mobilenet_v2.py`'s ``slim`` section, `optim.make_optimizer` and
`loop.jit_train_step`, with the model built for float64.

The structure and ZPM masks come from pruning the reference's two bases (as
tests/test_reference.py does, which checks them against the release); the starting weights
are the release's ``pruned_state_dict.npz``. The float64 step runs in a subprocess with JAX's
x64 mode on (``python tests/test_release_step.py STRUCTURE MASKS OUT``), since JAX fixes
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
from flax import traverse_util
from helpers import needs_reference, reference_case

from spnet_jax.models import get_arch
from spnet_jax.workdir import convert_torch

ROOT = Path(__file__).resolve().parents[1]
CASE = reference_case('mobilenet_v2_multibase_zpm')
sys.path.insert(0, str(ROOT))
from configs import mobilenet_v2 as recipe  # noqa: E402

pytestmark = needs_reference('mobilenet_v2_multibase_zpm')

NUM_SUBNETS = 3
ARCH = dict(name='mobilenet_v2', full_width=1.3)


def float64_step(structure_file: str, masks_file: str, out_file: str) -> None:
    """The float64 step (run in a process with x64 on); saves the new params, running
    statistics, metrics and the schedule's first lr to ``out_file``."""
    from spnet_jax.core import sharding
    from spnet_jax.core.structure import Structure
    from spnet_jax.train import loop, optim
    from spnet_jax.train import state as state_lib

    assert jax.config.read('jax_enable_x64'), 'run with JAX_ENABLE_X64=1'
    config = recipe.get_config()
    arch = get_arch(**ARCH)
    structure = Structure.load(structure_file)
    with np.load(masks_file) as m:
        masks = traverse_util.unflatten_dict({tuple(k.split('/')): jnp.asarray(m[k])
                                              for k in m.files})
    start = convert_torch.convert(dict(np.load(CASE / 'pruned_state_dict.npz')), arch,
                                  num_subnets=NUM_SUBNETS)
    variables = {**jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), start), 'masks': masks}
    model = arch.module(structure, dtype=loop.dtype_of('float64'))
    tx, schedule = optim.make_optimizer(config.slim, steps_per_epoch=1,
                                        num_steps=int(config.slim.epochs),
                                        table=arch.table(zpm=structure.zpm))
    mesh = sharding.make_mesh()
    state = state_lib.create_state(variables, tx)
    step = loop.jit_train_step(model, structure.num_subnets, tx, schedule, mesh,
                               label_smoothing=config.slim.label_smoothing,
                               distillation=(config.slim.kd_alpha, config.slim.kd_temperature))
    with np.load(CASE / 'io.npz') as io:
        batch = {'image': io['x'].transpose(0, 2, 3, 1),  # NCHW -> NHWC
                 'label': io['targets'].astype(np.int32)}
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    out = {'lr': np.asarray(schedule(jnp.zeros((), jnp.int32)))}
    for name, tree in (('params', state.params), ('batch_stats', state.batch_stats),
                       ('metrics', metrics)):
        for key, x in traverse_util.flatten_dict(sharding.to_host(tree)).items():
            out[f'{name}:' + '/'.join(key)] = np.asarray(x)
    np.savez(out_file, **out)


def convert_float64(state, arch):
    """`convert_torch.convert` (which returns float32) without losing float64 precision:
    the sum of the conversions of the float32 value and of its float32 remainder."""
    high = {k: np.asarray(v).astype(np.float32) for k, v in state.items()}
    low = {k: (np.asarray(v) - high[k]).astype(np.float32) for k, v in state.items()}
    return jax.tree.map(lambda a, b: a.astype(np.float64) + b.astype(np.float64),
                        convert_torch.convert(high, arch, num_subnets=NUM_SUBNETS),
                        convert_torch.convert(low, arch, num_subnets=NUM_SUBNETS))


@pytest.fixture(scope='module')
def release():
    """The release's moves (float64, our layouts) and its starting network (ours)."""
    before = dict(np.load(CASE / 'pruned_state_dict.npz'))
    with np.load(CASE / 'train_step_f64_after.npz') as after:
        moves = {k: after[k] - before[k].astype(np.float64) for k in after.files}
    arch = get_arch(**ARCH)
    flat = lambda tree: traverse_util.flatten_dict(tree, sep='/')
    want = convert_float64(moves, arch)
    start = convert_torch.convert(before, arch, num_subnets=NUM_SUBNETS)
    info = json.loads((CASE / 'widths.json').read_text())['train_step']
    return {'params': flat(want['params']), 'batch_stats': flat(want['batch_stats']),
            'start': {'params': flat(start['params']),
                      'batch_stats': flat(start['batch_stats'])}, 'info': info}


@pytest.fixture(scope='module')
def ours(tmp_path_factory):
    """Prune the bases here (float32, as the prune command does), then step in float64."""
    from spnet_jax.train.settings import Settings
    from spnet_jax.train.stages import prune_bases
    from spnet_jax.workdir.loading import load_base

    work = tmp_path_factory.mktemp('release_step')
    settings = Settings.from_config(recipe.get_config())
    arch = settings.arch
    bases = [load_base(str(CASE / f'base_{w}.npz'), arch, w) for w in settings.base.widths]
    structure, variables, _ = prune_bases(settings, bases, settings.data.image_size, 3)
    structure.save(str(work / 'structure.json'))
    np.savez(work / 'masks.npz', **{k: np.asarray(v) for k, v in traverse_util.flatten_dict(
        variables['masks'], sep='/').items()})
    # x64 for the float64 step; LLVM's expensive passes off halve the compile time on CPU
    # (the step then runs in seconds either way). Not conftest's lowest optimization level:
    # XLA:CPU's float64 convolutions are LLVM loops, which run twice as long unoptimized.
    flags = [f for f in os.environ.get('XLA_FLAGS', '').split()
             if not f.startswith('--xla_backend_optimization_level')]
    flags = dict.fromkeys(flags + ['--xla_llvm_disable_expensive_passes=true'])
    env = {**os.environ, 'JAX_ENABLE_X64': '1', 'JAX_PLATFORMS': 'cpu',
           'XLA_FLAGS': ' '.join(flags)}
    out = work / 'step.npz'
    done = subprocess.run([sys.executable, __file__, str(work / 'structure.json'),
                           str(work / 'masks.npz'), str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def test_step_ran_in_float64(ours):
    dtypes = {k.partition(':')[0]: set() for k in ours}
    for key, x in ours.items():
        dtypes[key.partition(':')[0]].add(x.dtype)
    assert dtypes['params'] == {np.dtype('float64')}
    assert dtypes['batch_stats'] == {np.dtype('float64')}


def test_parameter_updates_equal_the_release(release, ours):
    assert sorted(k.partition(':')[2] for k in ours if k.startswith('params:')) == sorted(
        release['params'])
    for key, want in release['params'].items():
        got = ours[f'params:{key}'] - release['start']['params'][key].astype(np.float64)
        error = np.abs(got - want).max()
        assert error <= 1e-6 * np.abs(want).max() + 1e-14, (key, error, np.abs(want).max())


def test_running_statistics_equal_the_release(release, ours):
    """Shared statistics = the full network's, ``bn.<k>`` = sub-network k's; the running
    variance moved towards the unbiased batch variance, as PyTorch's BN does."""
    assert sorted(k.partition(':')[2] for k in ours if k.startswith('batch_stats:')) == sorted(
        release['batch_stats'])
    for key, want in release['batch_stats'].items():
        got = ours[f'batch_stats:{key}'] - release['start']['batch_stats'][key]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-14, err_msg=key)


def test_losses_and_learning_rate_equal_the_release(release, ours):
    info = release['info']
    np.testing.assert_allclose(ours['lr'], info['lr_used_f64'], rtol=1e-15)
    for k in range(NUM_SUBNETS):
        np.testing.assert_allclose(ours[f'metrics:loss/subnet_{k}'],
                                   info['loss_per_width_idx_f64'][str(k)], rtol=1e-12,
                                   err_msg=f'sub-network {k}')


if __name__ == '__main__':
    float64_step(*sys.argv[1:])
