"""The optimizer: the BN-scale L1 sub-gradient (network slimming), SGD, and the lr schedules.

SP-Net trains with SGD (Nesterov momentum 0.9, weight decay on every parameter, as PyTorch's
``SGD(weight_decay=...)``) and adds ``s * sign(gamma)`` to the gradient of every BatchNorm
scale before the optimizer sees it (SPEC section 2). That sub-gradient is an optax
`GradientTransformation` selected by parameter path, so it chains like any other rule:

    chain(bn_scale_sparsity(s), add_decayed_weights(wd), sgd(schedule, 0.9, nesterov=True))
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax

from spnet_jax.errors import ConfigError

# `SlimBatchNorm` names its shared scale 'scale' (SP-Net) and its private ones 'scale_k'
# (S-Net's switchable BN); nothing else in the model zoo is called that.
BN_SCALE_NAME = re.compile(r'^scale(_\d+)?$')
SCHEDULES = ('multistep', 'cosine', 'constant')


def _leaf_name(path) -> str:
    last = path[-1]
    return str(getattr(last, 'key', getattr(last, 'name', last)))


def bn_scale_mask(params: Any) -> Any:
    """A tree of bools mirroring ``params``: True at BatchNorm scales (by path name)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(BN_SCALE_NAME.match(_leaf_name(path))), params)


def bn_scale_sparsity(rate: float) -> optax.GradientTransformation:
    """Adds ``rate * sign(gamma)`` to the gradient of every BN scale; leaves the rest alone.

    This is the sub-gradient of the penalty ``rate * sum(|gamma|)`` of network slimming
    (Liu et al. 2017) with ``sign(0) = 0``, applied to the raw gradient before momentum,
    weight decay and the learning rate (SPEC section 2). ``rate = 0`` is the identity.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if rate == 0:
            return updates, state
        if params is None:
            raise ValueError('bn_scale_sparsity needs the params to take sign(gamma).')
        mask = bn_scale_mask(params)
        updates = jax.tree.map(
            lambda g, p, m: g + rate * jnp.sign(p).astype(g.dtype) if m else g,
            updates, params, mask)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def learning_rate_schedule(section: Any, steps_per_epoch: int,
                           num_steps: int) -> optax.Schedule:
    """The per-step learning rate of a training section (``config.base`` or ``config.slim``).

    * ``multistep``: ``lr`` multiplied by ``lr_decay`` at each epoch in ``lr_boundaries``
      (ResNet: x0.2 at 30/50/70/80, or x0.1 at 30/45);
    * ``cosine``: cosine decay to 0 over the whole run (MobileNets);
    * ``constant``: ``lr`` throughout.

    All take a linear warm-up from 0 over ``warmup_epochs`` first.
    """
    lr = float(section.lr)
    warmup = int(round(float(section.warmup_epochs) * steps_per_epoch))
    warmup = min(warmup, max(num_steps - 1, 0))
    if section.schedule == 'cosine':
        if warmup == 0:
            return optax.cosine_decay_schedule(lr, max(num_steps, 1))
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(num_steps, warmup + 1))
    if section.schedule == 'multistep':
        boundaries = {int(round(float(e) * steps_per_epoch)): float(section.lr_decay)
                      for e in section.lr_boundaries}
        main = optax.piecewise_constant_schedule(lr, boundaries)
    elif section.schedule == 'constant':
        main = optax.constant_schedule(lr)
    else:
        raise ConfigError(f'schedule={section.schedule!r} is unknown; choose one of '
                          f'{list(SCHEDULES)}.')
    if warmup == 0:
        return main
    # The main schedule keeps counting from step 0, so its boundaries stay in epochs.
    ramp = optax.linear_schedule(0.0, lr, warmup)
    return lambda step: jnp.where(step < warmup, ramp(step), main(step))


def make_optimizer(section: Any, steps_per_epoch: int,
                   num_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The training section's optimizer and its schedule (for logging the lr)."""
    schedule = learning_rate_schedule(section, steps_per_epoch, num_steps)
    tx = optax.chain(
        bn_scale_sparsity(float(section.sparsity)),
        optax.add_decayed_weights(float(section.weight_decay)),
        optax.sgd(schedule, momentum=float(section.momentum), nesterov=bool(section.nesterov)),
    )
    return tx, schedule
