"""The training state: variables of a slimmable network plus its optimizer state.

`TrainState` is a plain pytree (no module, no apply function inside), so it checkpoints,
shards and donates like any array tree. Its variables mirror the model's collections:
``params``; ``batch_stats`` (the private running statistics of every sub-network); ``masks``
(the ZPM index arrays, empty without ZPM).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from spnet_jax.core import layers

COLLECTIONS = ('params', layers.BATCH_STATS, layers.MASKS)


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    batch_stats: Any
    masks: Any
    opt_state: optax.OptState

    @property
    def variables(self) -> dict[str, Any]:
        """The model's variables, as ``model.apply`` takes them."""
        return network_variables(self.params, self.batch_stats, self.masks)

    def to_checkpoint(self) -> dict[str, dict[str, Any]]:
        """The two checkpoint items: the network (loadable alone) and the optimizer."""
        return {'variables': self.variables,
                'train': {'step': self.step, 'opt_state': self.opt_state}}

    @classmethod
    def from_checkpoint(cls, items: dict[str, dict[str, Any]]) -> TrainState:
        v, t = items['variables'], items['train']
        return cls(step=t['step'], params=v['params'],
                   batch_stats=v.get(layers.BATCH_STATS, {}), masks=v.get(layers.MASKS, {}),
                   opt_state=t['opt_state'])


def network_variables(params: Any, batch_stats: Any, masks: Any) -> dict[str, Any]:
    """``{'params', 'batch_stats', 'masks'}`` without the empty collections."""
    out = {'params': params, layers.BATCH_STATS: batch_stats, layers.MASKS: masks}
    return {k: v for k, v in out.items() if k == 'params' or v}


def create_state(variables: dict[str, Any], tx: optax.GradientTransformation) -> TrainState:
    """A fresh state at step 0 around ``variables`` (pure; jit it to place it on devices)."""
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get(layers.BATCH_STATS, {}),
                      masks=variables.get(layers.MASKS, {}), opt_state=tx.init(params))


def init_variables(model, rng: jax.Array, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Fresh variables of ``model`` for images of ``input_shape`` (H, W, C)."""
    x = jnp.zeros((1, *input_shape), jnp.float32)
    variables = model.init(rng, x, subnet=-1, train=False)
    return {k: v for k, v in flax.core.unfreeze(variables).items() if k in COLLECTIONS}
