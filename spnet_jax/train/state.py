"""The training state: variables of a slimmable network plus its optimizer state.

`TrainState` is a plain pytree (no module, no apply function inside), so it checkpoints,
shards and donates like any array tree. Its variables mirror the model's collections:
``params``; ``batch_stats`` (the private running statistics of every sub-network); ``masks``
(the ZPM index arrays, empty without ZPM). ``ema`` is the moving average of ``params``
and ``batch_stats`` when the stage keeps one (``ema_decay`` > 0), else empty.
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from spnet_jax.core import layers
from spnet_jax.workdir.checkpoint import EMA_ITEM

COLLECTIONS = ('params', layers.BATCH_STATS, layers.MASKS)


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    masks: Any
    opt_state: optax.OptState
    ema: Any  # {'params', 'batch_stats'} averaged, or {} (no weight EMA)

    @property
    def variables(self) -> dict[str, Any]:
        """The model's variables, as ``model.apply`` takes them."""
        return network_variables(self.params, self.batch_stats, self.masks)

    @property
    def network(self) -> dict[str, Any]:
        """The variables the stage hands on: the EMA network when there is one."""
        if not self.ema:
            return self.variables
        return network_variables(self.ema['params'], self.ema[layers.BATCH_STATS], self.masks)

    def to_checkpoint(self) -> dict[str, dict[str, Any]]:
        """The checkpoint items: the network (loadable alone), the optimizer, and with weight
        EMA the averaged network (``EMA_ITEM``, loadable alone too)."""
        items = {'variables': self.variables,
                 'train': {'step': self.step, 'opt_state': self.opt_state}}
        if self.ema:
            items[EMA_ITEM] = self.network
        return items

    @classmethod
    def from_checkpoint(cls, items: dict[str, dict[str, Any]]) -> TrainState:
        v, t = items['variables'], items['train']
        ema = {}
        if EMA_ITEM in items:
            e = items[EMA_ITEM]
            ema = {'params': e['params'], layers.BATCH_STATS: e.get(layers.BATCH_STATS, {})}
        return cls(step=t['step'], params=v['params'],
                   batch_stats=v.get(layers.BATCH_STATS, {}), masks=v.get(layers.MASKS, {}),
                   opt_state=t['opt_state'], ema=ema)


def network_variables(params: Any, batch_stats: Any, masks: Any) -> dict[str, Any]:
    """``{'params', 'batch_stats', 'masks'}`` without the empty collections."""
    out = {'params': params, layers.BATCH_STATS: batch_stats, layers.MASKS: masks}
    return {k: v for k, v in out.items() if k == 'params' or v}


def create_state(variables: dict[str, Any], tx: optax.GradientTransformation, *,
                 ema: bool = False) -> TrainState:
    """A fresh state at step 0 around ``variables`` (pure; jit it to place it on devices).
    With ``ema`` the weight EMA starts as a copy of the starting weights."""
    params = variables['params']
    batch_stats = variables.get(layers.BATCH_STATS, {})
    average = {}
    if ema:  # copies: the state is donated to the step, the EMA must not alias the weights
        average = jax.tree.map(jnp.copy, {'params': params, layers.BATCH_STATS: batch_stats})
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      masks=variables.get(layers.MASKS, {}), opt_state=tx.init(params),
                      ema=average)


def update_ema(ema: Any, params: Any, batch_stats: Any, decay: float) -> Any:
    """``decay * ema + (1 - decay) * weights`` for the parameters and BN statistics (optax's
    `incremental_update`, the EMA of target networks)."""
    return optax.incremental_update({'params': params, layers.BATCH_STATS: batch_stats}, ema,
                                    step_size=1.0 - decay)


def init_variables(model, rng: jax.Array, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Fresh variables of ``model`` for images of ``input_shape`` (H, W, C)."""
    x = jnp.zeros((1, *input_shape), jnp.float32)
    variables = model.init(rng, x, subnet=-1, train=False)
    return {k: v for k, v in flax.core.unfreeze(variables).items() if k in COLLECTIONS}
