"""The optimizer: the BN-scale L1 sub-gradient (network slimming), SGD, and the lr schedules.

SP-Net trains with SGD (Nesterov momentum 0.9, weight decay as PyTorch's
``SGD(weight_decay=...)`` on the parameter groups the release's ``optimizer`` field names,
see `weight_decay_mask`) and adds ``s * sign(gamma)`` to the gradient of every BatchNorm
scale before the optimizer sees it (SPEC section 2). That sub-gradient is an optax
`GradientTransformation` on the BatchNorm scales the network's `ChannelTable` lists, so it
chains like any other rule:

    chain(bn_scale_sparsity(s, mask), add_decayed_weights(wd, mask), sgd(lr, 0.9, nesterov=True))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from spnet_jax.core import layers
from spnet_jax.core.channels import ChannelTable
from spnet_jax.core.errors import ConfigError

SCHEDULES = ('multistep', 'cosine', 'constant')
# Which parameters weight decay applies to, by the release's name (see `weight_decay_mask`).
OPTIMIZERS = ('sgd', 'sgd_no_bias_decay', 'sgd_dw')


def _key(entry) -> str:
    """One entry of a tree path (a dict key or an attribute name) as a string."""
    return str(getattr(entry, 'key', getattr(entry, 'name', entry)))


def _leaf_name(path) -> str:
    return _key(path[-1])


def bn_scale_mask(params: Any, table: ChannelTable) -> Any:
    """A tree of bools mirroring ``params``: True at the scale (gamma) of every BatchNorm
    of ``table`` (each channel group's ``bns``): its shared ``scale`` (SP-Net) or its
    private ``scale_k`` (S-Net's switchable BN). Raises ValueError when a BatchNorm of the
    table has no scale in ``params`` (a table of another architecture)."""
    bns = {tuple(bn.split('/')) for group in table.groups for bn in group.bns}
    found = set()

    def is_scale(path) -> bool:
        keys = tuple(map(_key, path))
        if keys[:-1] in bns and layers.is_bn_scale(keys[-1]):
            found.add(keys[:-1])
            return True
        return False

    mask = jax.tree_util.tree_map_with_path(lambda path, _: is_scale(path), params)
    if found != bns:
        missing = '/'.join(sorted(bns - found)[0])
        raise ValueError(f'the {table.arch} table\'s BatchNorm {missing!r} has no scale in '
                         'these parameters; is the table of this network?')
    return mask


def bn_scale_sparsity(rate: float, mask: Any | Callable[[Any], Any]
                      ) -> optax.GradientTransformation:
    """Adds ``rate * sign(gamma)`` to the gradient of every BN scale; leaves the rest alone.

    This is the sub-gradient of the penalty ``rate * sum(|gamma|)`` of network slimming
    (Liu et al. 2017) with ``sign(0) = 0``, applied to the raw gradient before momentum,
    weight decay and the learning rate (SPEC section 2). ``rate = 0`` is the identity.
    ``mask`` selects the scales: a tree of bools mirroring the params, or a function of the
    params giving one (e.g. ``lambda p: bn_scale_mask(p, table)``), as optax's masks.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if rate == 0:
            return updates, state
        if params is None:
            raise ValueError('bn_scale_sparsity needs the params to take sign(gamma).')
        selected = mask(params) if callable(mask) else mask
        updates = jax.tree.map(
            lambda g, p, m: g + rate * jnp.sign(p).astype(g.dtype) if m else g,
            updates, params, selected)
        return updates, state

    return optax.GradientTransformation(init_fn, update_fn)


def learning_rate_schedule(section: Any, steps_per_epoch: int,
                           num_steps: int) -> optax.Schedule:
    """The per-step learning rate of a training section (``config.base`` or ``config.slim``),
    as the release sets it before each optimizer step.

    ``schedule(step)`` is the lr of 0-based step ``step`` (optax's count), which the release
    computes for iteration ``i = step + 1`` (its ``current_iter`` counts from 1), with
    ``W = round(warmup_epochs * steps_per_epoch)`` warm-up steps and ``T = num_steps``:

    * warm-up, the first ``W`` steps: ``lr * i / W`` (reaches ``lr`` on step ``W - 1``);
    * ``cosine``: ``lr * (1 + cos(pi * (i - W) / (T - W))) / 2``, so the first step after the
      warm-up already moves off ``lr`` and the last step's lr is 0 (MobileNets; with 150
      epochs of one step the first lr is ``0.08 * (1 + cos(pi / 150)) / 2``);
    * ``multistep``: ``lr * lr_decay ** (boundaries <= epoch)`` with the epochs in
      ``lr_boundaries`` (PyTorch's MultiStepLR stepped once per epoch: the decay starts on
      the boundary epoch's first step; ResNet: x0.2 at 30/50/70/80, or x0.1 at 30/45);
    * ``constant``: ``lr`` throughout.
    """
    lr = float(section.lr)
    warmup = int(round(float(section.warmup_epochs) * steps_per_epoch))
    warmup = min(warmup, max(num_steps - 1, 0))
    if section.schedule == 'cosine':
        # optax's cosine decay at count c is lr * (1 + cos(pi * c / T')) / 2: evaluate it one
        # step ahead, the release's 1-based iteration.
        cosine = optax.cosine_decay_schedule(lr, max(num_steps - warmup, 1))
        main = lambda step: cosine(step + 1)
        if warmup == 0:
            return main
        # join_schedules hands the cosine part its steps counted from the warm-up's end.
        return optax.join_schedules([_warmup_ramp(lr, warmup), main], [warmup])
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
    ramp = _warmup_ramp(lr, warmup)
    return lambda step: jnp.where(step < warmup, ramp(step), main(step))


def _warmup_ramp(lr: float, warmup: int) -> optax.Schedule:
    """The release's linear warm-up: ``current_iter * lr / warmup`` with ``current_iter =
    step + 1`` (never 0)."""
    return lambda step: (step + 1) * lr / warmup


def _is_depthwise_kernel(name: str, x: Any) -> bool:
    return name == 'kernel' and x.ndim == 4 and x.shape[2] == 1


def weight_decay_mask(params: Any, optimizer: str) -> Any:
    """A tree of bools mirroring ``params``: True where weight decay applies, per the
    release's ``optimizer`` field (its parameter groups, by tensor shape):

    * ``sgd``: every parameter (PyTorch's ``SGD(weight_decay=...)``);
    * ``sgd_no_bias_decay``: conv kernels whose input axis per group is not 1 (HWIO
      ``shape[2] != 1``: not depthwise) and 2-D kernels (the classifier); no BN scale/bias,
      bias or depthwise kernel. As in the release the rule is the shape, so a conv with a
      single input channel (a grey-scale stem) gets no decay either;
    * ``sgd_dw``: every parameter but the depthwise conv kernels (HWIO ``shape[2] == 1``).
    """
    if optimizer == 'sgd':
        rule = lambda name, x: True
    elif optimizer == 'sgd_no_bias_decay':
        rule = lambda name, x: name == 'kernel' and (
            (x.ndim == 4 and x.shape[2] != 1) or x.ndim == 2)
    elif optimizer == 'sgd_dw':
        rule = lambda name, x: not _is_depthwise_kernel(name, x)
    else:
        raise ConfigError(f'optimizer={optimizer!r} is unknown; choose one of '
                          f'{list(OPTIMIZERS)}.')
    return jax.tree_util.tree_map_with_path(lambda path, x: rule(_leaf_name(path), x), params)


def make_optimizer(section: Any, steps_per_epoch: int, num_steps: int, table: ChannelTable
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The training section's optimizer and its schedule (for logging the lr).

    ``bn_scale_sparsity(sparsity)`` on the BatchNorm scales of ``table`` (the trained
    network's channel table, `bn_scale_mask`) -> weight decay on the parameters
    `weight_decay_mask` selects for ``section.optimizer`` (default 'sgd': all) -> SGD with
    the lr schedule and (Nesterov) momentum, which is PyTorch's SGD step.
    """
    schedule = learning_rate_schedule(section, steps_per_epoch, num_steps)
    optimizer = section.optimizer
    if optimizer not in OPTIMIZERS:  # fail here, not at the first step
        raise ConfigError(f'optimizer={optimizer!r} is unknown; choose one of '
                          f'{list(OPTIMIZERS)}.')
    tx = optax.chain(
        bn_scale_sparsity(float(section.sparsity),
                          lambda params: bn_scale_mask(params, table)),
        optax.add_decayed_weights(float(section.weight_decay),
                                  mask=lambda params: weight_decay_mask(params, optimizer)),
        optax.sgd(schedule, momentum=float(section.momentum), nesterov=bool(section.nesterov)),
    )
    return tx, schedule

