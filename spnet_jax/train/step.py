"""One training step for all sub-networks, the eval step, and BN calibration.

The training step (SPEC section 8) runs every sub-network on the same batch, the largest
first. The full network learns from the labels; each smaller one by in-place distillation
from the full network's logits (gradients stopped there). The losses are summed, so the
gradients of all sub-networks accumulate, and the optimizer makes one update. Each
sub-network updates only its own running BN statistics (``mean_k``/``var_k``, see
`layers.subnet_variable`), threaded functionally from one forward pass to the next.

The functions here are pure and unjitted; `spnet_jax.train.loop` jits them with shardings.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from spnet_jax.core import layers
from spnet_jax.train.state import TrainState, network_variables, update_ema


def _loss_dtype(logits: jax.Array):
    """Losses are computed in the wider of the logits' dtype and float32."""
    return layers.statistics_dtype(logits.dtype)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0,
                  mixup: tuple[jax.Array, jax.Array] | None = None):
    """Mean softmax cross-entropy with integer labels (optionally smoothed: the target is
    ``(1 - label_smoothing) * one_hot + label_smoothing / classes``, as the release's).

    ``mixup = (lam, partner_labels)``: the images were mixed ``lam * x + (1 - lam) *
    x_partner``, and so are the (smoothed) targets, which is the release's ``lam *
    CE(y) + (1 - lam) * CE(y_partner)``."""
    dtype = _loss_dtype(logits)

    def targets_of(y):
        t = jax.nn.one_hot(y, logits.shape[-1], dtype=dtype)
        return optax.smooth_labels(t, label_smoothing) if label_smoothing else t

    targets = targets_of(labels)
    if mixup is not None:
        lam, partner = mixup
        targets = lam.astype(dtype) * targets + (1 - lam.astype(dtype)) * targets_of(partner)
    return jnp.mean(optax.softmax_cross_entropy(logits.astype(dtype), targets))


def mix_batch(rng: jax.Array, images: jax.Array, labels: jax.Array, alpha: float):
    """Mixup (Zhang et al. 2018, as the release applies it to a batch): ``lam ~ Beta(alpha,
    alpha)``, each image mixed with a random partner of the same batch. Returns the mixed
    images and ``(lam, partner labels)`` for `cross_entropy`."""
    lam_rng, perm_rng = jax.random.split(rng)
    lam = jax.random.beta(lam_rng, alpha, alpha).astype(jnp.float32)
    partner = jax.random.permutation(perm_rng, images.shape[0])
    mixed = lam.astype(images.dtype) * images + (1 - lam.astype(images.dtype)) * images[partner]
    return mixed, (lam, labels[partner])


def inplace_distillation_loss(student_logits: jax.Array, teacher_logits: jax.Array,
                              labels: jax.Array, *, alpha: float, temperature: float,
                              label_smoothing: float = 0.0,
                              mixup: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """``alpha * T^2 * CE(softmax(teacher / T), student / T) + (1 - alpha) * CE(labels)``.

    The release's in-place distillation (SPEC section 8). ``teacher_logits`` should already
    carry `jax.lax.stop_gradient`; the soft cross-entropy is ``-sum p_teacher log
    p_student`` (it differs from the KL divergence by the teacher's entropy, a constant).
    With ``mixup`` the hard part's targets are mixed (`cross_entropy`); the teacher saw the
    same mixed images.
    """
    t, dtype = temperature, _loss_dtype(student_logits)
    soft = jax.nn.softmax(teacher_logits.astype(dtype) / t, axis=-1)
    kd = jnp.mean(optax.softmax_cross_entropy(student_logits.astype(dtype) / t, soft))
    hard = cross_entropy(student_logits, labels, label_smoothing, mixup)
    return alpha * t * t * kd + (1.0 - alpha) * hard


def _top1_correct(logits, labels):
    return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model, num_subnets: int,
               tx: optax.GradientTransformation, schedule, kd_alpha: float,
               kd_temperature: float, label_smoothing: float = 0.0, mixup_alpha: float = 0.0,
               seed: int = 0, ema_decay: float = 0.0):
    """One update of every sub-network; returns the new state and per-sub-network metrics.

    Randomness comes from ``(seed, state.step)``, so a resumed run draws what an unbroken
    one would: ``mixup_alpha`` > 0 mixes the batch (`mix_batch`); each sub-network's
    forward pass gets a 'dropout' rng of its own (stochastic depth and dropout, in the
    models that have them). With ``ema_decay`` > 0 (the state was created with ``ema``)
    the weight EMA moves towards the updated parameters and BN statistics.

    Metrics (scalars): ``loss/subnet_k`` (each sub-network's loss as trained: labels for the
    full network, in-place distillation for the others), ``top1/subnet_k`` (training-batch
    accuracy, against the unmixed labels), ``loss`` (their sum, what the gradient is of),
    ``lr``, and ``params_finite`` (1 if every updated parameter is finite, else 0).
    """
    images, labels = batch['image'], batch['label']
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    mixup = None
    if mixup_alpha:
        images, mixup = mix_batch(jax.random.fold_in(rng, num_subnets), images, labels,
                                  mixup_alpha)

    def loss_fn(params):
        batch_stats, metrics, total, teacher = state.batch_stats, {}, 0.0, None
        for k in reversed(range(num_subnets)):  # the full network first: it is the teacher
            variables = network_variables(params, batch_stats, state.masks)
            logits, updated = model.apply(variables, images, subnet=k, train=True,
                                          mutable=[layers.BATCH_STATS],
                                          rngs={'dropout': jax.random.fold_in(rng, k)})
            batch_stats = updated[layers.BATCH_STATS]
            if teacher is None:
                loss = cross_entropy(logits, labels, label_smoothing, mixup)
                teacher = jax.lax.stop_gradient(logits)
            else:
                loss = inplace_distillation_loss(logits, teacher, labels, alpha=kd_alpha,
                                                 temperature=kd_temperature,
                                                 label_smoothing=label_smoothing,
                                                 mixup=mixup)
            metrics[f'loss/subnet_{k}'] = loss
            metrics[f'top1/subnet_{k}'] = jnp.mean(_top1_correct(logits, labels))
            total = total + loss
        return total, (batch_stats, metrics)

    (total, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics['loss'] = total
    metrics['lr'] = jnp.asarray(schedule(state.step), jnp.float32)
    # A finite loss can still give an overflowing update; never checkpoint such a state.
    metrics['params_finite'] = jnp.all(jnp.stack(
        [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)])).astype(jnp.float32)
    ema = state.ema
    if ema_decay:
        ema = update_ema(ema, params, batch_stats, ema_decay)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state, ema=ema)
    return new_state, metrics


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], *, model, subnet: int):
    """Sums over the batch's real rows: ``top1``, ``top5`` (correct counts) and ``count``."""
    logits = model.apply(variables, batch['image'], subnet=subnet, train=False)
    labels, mask = batch['label'], batch['mask'].astype(jnp.float32)
    k = min(5, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    top5 = jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)
    return {'top1': jnp.sum(_top1_correct(logits, labels) * mask),
            'top5': jnp.sum(top5 * mask), 'count': jnp.sum(mask)}


def _is_stat_of(path, subnet: int) -> bool:
    """Whether ``path`` (a tree path or a flattened-dict key) ends at ``subnet``'s mean/var."""
    kind_k = layers.subnet_of(str(getattr(path[-1], 'key', path[-1])))
    return kind_k is not None and kind_k[0] in layers.STATISTICS and kind_k[1] == subnet


def batch_statistics(variables: dict[str, Any], images: jax.Array, *, model, subnet: int):
    """This batch's BN mean/variance of every layer of ``subnet``, as a batch_stats tree.

    Runs the sub-network in training mode (each BN normalises with the batch's statistics,
    as during training) and returns what every BN moved its running statistics towards (its
    `layers.BATCH_MOMENTS`): the batch mean and the *unbiased* batch variance, as
    PyTorch's BN calibration accumulates them. Other sub-networks' leaves are returned as
    zeros. Used for BN calibration (SPEC section 7).
    """
    _, updated = model.apply(variables, images, subnet=subnet, train=True,
                             mutable=[layers.BATCH_STATS, layers.BATCH_MOMENTS])
    moments = traverse_util.flatten_dict(updated.get(layers.BATCH_MOMENTS, {}))
    # A layer the sub-network does not run (none in the model zoo) keeps its statistics.
    return traverse_util.unflatten_dict({
        key: moments.get(key, x) if _is_stat_of(key, subnet) else jnp.zeros_like(x)
        for key, x in traverse_util.flatten_dict(variables[layers.BATCH_STATS]).items()})


def replace_subnet_stats(batch_stats: Any, new_stats: Any, subnet: int) -> Any:
    """``batch_stats`` with sub-network ``subnet``'s leaves taken from ``new_stats``."""
    return jax.tree_util.tree_map_with_path(
        lambda p, old, new: new if _is_stat_of(p, subnet) else old, batch_stats, new_stats)


def bind(fn, **static) -> Any:
    """``fn`` with its static (non-array) keyword arguments fixed, ready for `jax.jit`."""
    return functools.partial(fn, **static)
