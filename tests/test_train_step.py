"""The all-sub-network training step: the loss formula, the update, and sharding.

Run as a script (``python tests/test_train_step.py OUT.npz``) this file does one step on a
mesh of all the process's devices and saves the results; the multi-device test runs it with
8 fake CPU devices in a subprocess (JAX picks its device count once per process).
"""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from helpers import host_devices_flags

from spnet_jax.core import layers, sharding
from spnet_jax.core.errors import ConfigError
from spnet_jax.models import get_arch
from spnet_jax.train import loop, optim
from spnet_jax.train import state as state_lib
from spnet_jax.train import step as step_lib

WIDTHS = (0.25, 0.5)
BATCH, SIZE, CLASSES = 16, 8, 10
KD_ALPHA, KD_TEMPERATURE = 0.7, 2.0


def section():
    return ml_collections.ConfigDict(dict(
        lr=0.1, schedule='constant', lr_boundaries=(), lr_decay=0.1, warmup_epochs=0.0,
        weight_decay=1e-4, optimizer='sgd', momentum=0.9, nesterov=True, sparsity=1e-3,
        label_smoothing=0.0, kd_alpha=KD_ALPHA, kd_temperature=KD_TEMPERATURE))


def build():
    """(model, structure, variables, batch, tx, schedule) of a small S-Net; deterministic."""
    arch = get_arch('resnet20', num_classes=CLASSES, full_width=WIDTHS[-1], stem='small')
    structure = arch.snet_structure(WIDTHS)
    model = arch.module(structure, bn_scale_init=0.5)
    variables = jax.jit(lambda r: state_lib.init_variables(model, r, (SIZE, SIZE, 1)))(
        jax.random.key(0, impl='rbg'))
    rng = np.random.default_rng(0)
    batch = {'image': rng.normal(size=(BATCH, SIZE, SIZE, 1)).astype(np.float32),
             'label': rng.integers(0, CLASSES, size=BATCH).astype(np.int32)}
    tx, schedule = optim.make_optimizer(section(), steps_per_epoch=10, num_steps=10,
                                        table=arch.table())
    return model, structure, variables, batch, tx, schedule


def run_step(case=None):
    """One jitted step (as the training loop does it) on a mesh of all devices."""
    mesh = sharding.make_mesh()
    model, structure, variables, batch, tx, schedule = build() if case is None else case
    create = jax.jit(lambda v: state_lib.create_state(v, tx),
                     out_shardings=sharding.replicated(mesh))
    state = create(variables)
    step = loop.jit_train_step(model, structure.num_subnets, tx, schedule, mesh,
                               label_smoothing=0.0, distillation=(KD_ALPHA, KD_TEMPERATURE))
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    return sharding.to_host({'params': state.params, 'batch_stats': state.batch_stats,
                             'metrics': metrics, 'step': state.step})


def flatten(tree):
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope='module')
def case():
    return build()


@pytest.fixture(scope='module')
def one_device_step(case):
    return run_step(case)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_inplace_distillation_matches_the_formula():
    rng = np.random.default_rng(1)
    student = rng.normal(size=(6, 5)) * 3
    teacher = rng.normal(size=(6, 5)) * 3
    labels = rng.integers(0, 5, size=6)
    for alpha, t in ((0.9, 1.0), (0.7, 2.0), (0.0, 3.0), (1.0, 0.5)):
        p_teacher = np.exp(_log_softmax(teacher / t))
        kd = -(p_teacher * _log_softmax(student / t)).sum(-1).mean()
        hard = -_log_softmax(student)[np.arange(6), labels].mean()
        expect = alpha * t * t * kd + (1 - alpha) * hard
        got = step_lib.inplace_distillation_loss(
            jnp.asarray(student, jnp.float32), jnp.asarray(teacher, jnp.float32),
            jnp.asarray(labels), alpha=alpha, temperature=t)
        np.testing.assert_allclose(float(got), expect, rtol=1e-5)


def test_distillation_gradient_does_not_reach_the_teacher():
    student = jnp.array([[1.0, 2.0, 0.5]])
    labels = jnp.array([1])
    grad = jax.grad(lambda t: step_lib.inplace_distillation_loss(
        student, jax.lax.stop_gradient(t), labels, alpha=0.9, temperature=1.0))(student * 2)
    np.testing.assert_array_equal(grad, 0.0)


def test_step_equals_independent_computation(case, one_device_step):
    """Losses, summed gradients, one SGD update and per-sub-network BN statistics."""
    model, structure, variables, batch, tx, schedule = case
    params, stats = variables['params'], variables['batch_stats']
    x, y = jnp.asarray(batch['image']), jnp.asarray(batch['label'])
    ce = lambda logits: -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(BATCH), y])

    def losses(params):
        full, full_stats = model.apply({'params': params, 'batch_stats': stats}, x, subnet=1,
                                       train=True, mutable=['batch_stats'])
        small, small_stats = model.apply({'params': params, 'batch_stats': stats}, x, subnet=0,
                                         train=True, mutable=['batch_stats'])
        t = KD_TEMPERATURE
        soft = jax.nn.softmax(jax.lax.stop_gradient(full) / t)
        kd = -jnp.mean(jnp.sum(soft * jax.nn.log_softmax(small / t), -1))
        small_loss = KD_ALPHA * t * t * kd + (1 - KD_ALPHA) * ce(small)
        return ce(full) + small_loss, (ce(full), small_loss, full_stats, small_stats)

    @jax.jit
    def reference(params):
        grads, aux = jax.grad(losses, has_aux=True)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        return optax.apply_updates(params, updates), aux

    expect_params, (full_loss, small_loss, full_stats, small_stats) = reference(params)

    out = one_device_step
    np.testing.assert_allclose(out['metrics']['loss/subnet_1'], full_loss, rtol=1e-5)
    np.testing.assert_allclose(out['metrics']['loss/subnet_0'], small_loss, rtol=1e-5)
    np.testing.assert_allclose(out['metrics']['loss'], full_loss + small_loss, rtol=1e-5)
    assert int(out['step']) == 1
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-6),
                 out['params'], sharding.to_host(expect_params))
    # Each sub-network updated only its own running statistics.
    for path, value in flatten(out['batch_stats']).items():
        source = full_stats if path.endswith("_1']") else small_stats
        expect = flatten(source['batch_stats'])[path]
        np.testing.assert_allclose(value, expect, rtol=1e-5, atol=1e-6, err_msg=path)
    moved = [p for p, v in flatten(out['batch_stats']).items()
             if not np.allclose(v, flatten(stats)[p])]
    assert any(p.endswith("_0']") for p in moved) and any(p.endswith("_1']") for p in moved)


def test_step_on_8_devices_equals_one_device(one_device_step, tmp_path):
    out_file = tmp_path / 'eight.npz'
    env = dict(os.environ, XLA_FLAGS=host_devices_flags(8),
               JAX_PLATFORMS='cpu')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(out_file)], env=env,
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    eight = dict(np.load(out_file))
    assert int(eight.pop('num_devices')) == 8
    one = flatten(one_device_step)
    assert sorted(eight) == sorted(one)
    for key, value in one.items():
        np.testing.assert_allclose(eight[key], value, rtol=1e-4, atol=1e-6, err_msg=key)


def _bn_inputs(model, variables, x, subnet):
    """Each `SlimBatchNorm`'s input in a training-mode pass, by its batch_stats path."""
    inputs = {}

    def record(call, args, kwargs, context):
        if isinstance(context.module, layers.SlimBatchNorm) and context.method_name == '__call__':
            inputs[tuple(context.module.path)] = np.asarray(args[0], np.float64)
        return call(*args, **kwargs)

    with nn.intercept_methods(record):
        model.apply(variables, x, subnet=subnet, train=True, mutable=['batch_stats'])
    return inputs


def test_batch_statistics_are_each_layers_batch_mean_and_unbiased_variance(case):
    """BN calibration's per-batch statistics: every layer's batch mean and *unbiased*
    variance (as PyTorch's BN calibration accumulates them), computed from the layer's input
    in a training-mode pass; the other sub-network's leaves are left alone."""
    model, structure, variables, batch, _, _ = case
    x = jnp.asarray(batch['image'])
    for k in range(structure.num_subnets):
        stats = jax.jit(step_lib.bind(step_lib.batch_statistics, model=model, subnet=k))(
            variables, x)
        calibrated = flatten(step_lib.replace_subnet_stats(variables['batch_stats'], stats, k))
        inputs = _bn_inputs(model, variables, x, k)
        assert len(inputs) == len(calibrated) // (2 * structure.num_subnets)
        for module, values in inputs.items():
            prefix = ''.join(f"['{name}']" for name in module)
            axes = tuple(range(values.ndim - 1))
            np.testing.assert_allclose(calibrated[f"{prefix}['mean_{k}']"], values.mean(axes),
                                       rtol=1e-4, atol=1e-5, err_msg=prefix)
            np.testing.assert_allclose(calibrated[f"{prefix}['var_{k}']"],
                                       values.var(axes, ddof=1), rtol=1e-4, err_msg=prefix)
        other = 1 - k  # the other sub-network's statistics are untouched
        for path, value in calibrated.items():
            if path.endswith(f"_{other}']"):
                np.testing.assert_array_equal(value, flatten(variables['batch_stats'])[path])


def test_batch_norm_matches_pytorch_in_training_mode():
    """Output (biased batch variance) and running statistics (momentum 0.1, *unbiased*
    variance) of two training-mode passes, per sub-network, as torch.nn.BatchNorm2d."""
    rng = np.random.default_rng(2)
    counts = (3, 5)
    bn = layers.SlimBatchNorm(counts=counts)
    gamma, beta = rng.uniform(0.5, 1.5, 5), rng.normal(size=5)
    variables = {'params': {'scale': jnp.asarray(gamma, jnp.float32),
                            'bias': jnp.asarray(beta, jnp.float32)},
                 'batch_stats': bn.init(jax.random.key(0), jnp.zeros((1, 1, 1, 3)), 0,
                                        False)['batch_stats']}
    for k, n in enumerate(counts):
        ref = torch.nn.BatchNorm2d(n, eps=1e-5, momentum=0.1).double()
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(gamma[:n]))
            ref.bias.copy_(torch.from_numpy(beta[:n]))
        stats = variables['batch_stats']
        for _ in range(2):
            x = rng.normal(1.0, 2.0, size=(2, 3, 2, n)).astype(np.float32)  # 12 per channel
            y, new = bn.apply({**variables, 'batch_stats': stats}, jnp.asarray(x), k, True,
                              mutable=['batch_stats'])
            stats = new['batch_stats']
            want = ref(torch.from_numpy(x.astype(np.float64).transpose(0, 3, 1, 2)))
            np.testing.assert_allclose(y, want.detach().numpy().transpose(0, 2, 3, 1),
                                       rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(stats[f'mean_{k}'], ref.running_mean.numpy(), rtol=1e-5)
            np.testing.assert_allclose(stats[f'var_{k}'], ref.running_var.numpy(), rtol=1e-5)
        other = 1 - k
        for name in (f'mean_{other}', f'var_{other}'):
            np.testing.assert_array_equal(stats[name], variables['batch_stats'][name])



def test_mixup_loss_mixes_the_two_labels_losses():
    """The release's mixup criterion: ``lam * CE(y) + (1 - lam) * CE(y_partner)``, each with
    label smoothing; in-place distillation mixes only its hard part."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(6, 5)) * 3
    labels, partner = rng.integers(0, 5, size=6), rng.integers(0, 5, size=6)
    for lam, smoothing in ((0.3, 0.0), (0.8, 0.1), (1.0, 0.1)):
        def ce(y, smoothing=smoothing):
            target = np.eye(5)[y] * (1 - smoothing) + smoothing / 5
            return -(target * _log_softmax(logits)).sum(-1).mean()
        expect = lam * ce(labels) + (1 - lam) * ce(partner)
        mixup = (jnp.float32(lam), jnp.asarray(partner))
        got = step_lib.cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels),
                                     smoothing, mixup)
        np.testing.assert_allclose(float(got), expect, rtol=1e-5)
        teacher = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
        args = (jnp.asarray(logits, jnp.float32), teacher, jnp.asarray(labels))
        kd_only = step_lib.inplace_distillation_loss(*args, alpha=1.0, temperature=1.0)
        mixed = step_lib.inplace_distillation_loss(*args, alpha=0.6, temperature=1.0,
                                                   label_smoothing=smoothing, mixup=mixup)
        np.testing.assert_allclose(float(mixed), 0.6 * float(kd_only) + 0.4 * expect,
                                   rtol=1e-5)


def test_mix_batch_pairs_each_image_with_one_partner():
    images = jnp.broadcast_to(jnp.arange(8.0)[:, None, None, None], (8, 2, 2, 1))
    labels = jnp.arange(8) * 10
    mixed, (lam, partner_labels) = step_lib.mix_batch(jax.random.key(3), images, labels, 0.2)
    lam = float(lam)
    assert 0.0 < lam < 1.0
    partner = (np.asarray(mixed)[:, 0, 0, 0] - lam * np.arange(8)) / (1 - lam)
    np.testing.assert_allclose(np.sort(partner), np.arange(8), atol=1e-3)  # a permutation
    np.testing.assert_array_equal(partner_labels, np.round(partner).astype(int) * 10)
    # lam ~ Beta(alpha, alpha): mean 1/2, variance 1 / (4 (2 alpha + 1)).
    lams = np.array([float(step_lib.mix_batch(jax.random.key(i), images, labels, 0.2)[1][0])
                     for i in range(400)])
    assert abs(lams.mean() - 0.5) < 0.05 and abs(lams.var() - 1 / (4 * 1.4)) < 0.03


def _step_metrics(case, runs=1, **kw):
    """The metrics of ``runs`` first steps from the same state, one compiled step."""
    model, structure, variables, batch, tx, schedule = case
    mesh = sharding.make_mesh()
    step = loop.jit_train_step(model, structure.num_subnets, tx, schedule, mesh,
                               label_smoothing=0.0, distillation=(KD_ALPHA, KD_TEMPERATURE),
                               **kw)
    out = []
    for _ in range(runs):
        state = jax.jit(lambda v: state_lib.create_state(v, tx))(variables)
        out.append(jax.device_get(step(state, sharding.global_batch(batch, mesh))[1]))
    return out


def test_mixup_step_draws_from_the_seed_and_step(case, one_device_step):
    """The same (seed, step) mixes the same way (a resumed run repeats an unbroken one);
    another seed mixes differently; both differ from the plain step (alpha 0, the default
    that `test_step_equals_independent_computation` checks)."""
    first, again = _step_metrics(case, runs=2, mixup_alpha=0.2, seed=0)
    (other,) = _step_metrics(case, mixup_alpha=0.2, seed=5)
    plain = one_device_step['metrics']
    assert first['loss'] == again['loss'] and first['params_finite'] == 1.0
    assert first['loss'] != other['loss'] and first['loss'] != plain['loss']

def test_float64_without_x64_is_refused_with_one_sentence():
    assert not jax.config.read('jax_enable_x64')  # the test processes run without x64
    with pytest.raises(ConfigError, match='x64'):
        loop.dtype_of('float64')
    bn = layers.SlimBatchNorm(counts=(2,), dtype=jnp.float64)
    with pytest.raises(ValueError, match='x64'):
        bn.init(jax.random.key(0), jnp.zeros((1, 2)), 0, False)
    assert loop.dtype_of('float32') == jnp.float32 and loop.dtype_of('bfloat16') == jnp.bfloat16


def test_bfloat16_compute_runs_convs_in_bfloat16_with_float32_params():
    arch = get_arch('resnet20', num_classes=CLASSES, full_width=0.25, stem='small')
    structure = arch.plain_structure(0.25)
    model = arch.module(structure, dtype=jnp.bfloat16)
    shapes = jax.eval_shape(lambda: state_lib.init_variables(model, jax.random.key(0),
                                                             (SIZE, SIZE, 1)))
    tx, schedule = optim.make_optimizer(section(), steps_per_epoch=10, num_steps=10,
                                        table=arch.table())
    state = jax.eval_shape(lambda v: state_lib.create_state(v, tx), shapes)
    batch = {'image': jax.ShapeDtypeStruct((BATCH, SIZE, SIZE, 1), jnp.float32),
             'label': jax.ShapeDtypeStruct((BATCH,), jnp.int32)}
    step = loop.jit_train_step(model, 1, tx, schedule, sharding.make_mesh(),
                               label_smoothing=0.0)
    lowered = step.lower(state, batch)
    new_state, metrics = jax.eval_shape(step, state, batch)
    assert {x.dtype for x in jax.tree.leaves(new_state.params)} == {jnp.dtype('float32')}
    assert metrics['loss/subnet_0'].dtype == jnp.float32
    convs = [line for line in lowered.as_text().splitlines() if 'convolution' in line]
    assert convs and all('bf16' in line for line in convs)


if __name__ == '__main__':
    np.savez(sys.argv[1], num_devices=jax.device_count(), **flatten(run_step()))
