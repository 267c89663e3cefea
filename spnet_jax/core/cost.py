"""MACs and parameters of each sub-network, read off the model itself.

The model is traced abstractly (`jax.eval_shape`, no compute) with a Flax method
interceptor that records every slimmable layer's call: the shapes that sub-network really
uses. So the count follows the code and needs no second description of the architecture.

Convention (the papers'): "FLOPs" are multiply-accumulates (MACs) of convolutions and the
classifier; parameters count conv kernels, BN scale/bias and the classifier's weights and
bias of that sub-network (one BN affine set, as a deployed sub-network has).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from spnet_jax.core import layers
from spnet_jax.core.structure import Structure


@dataclasses.dataclass(frozen=True)
class LayerCost:
    path: str
    kind: str  # 'conv', 'bn', 'dense'
    macs: int
    params: int
    in_shape: tuple[int, ...] = ()  # per image, e.g. (H, W, C)
    out_shape: tuple[int, ...] = ()
    kernel_size: int = 0
    strides: int = 0


@dataclasses.dataclass(frozen=True)
class SubnetCost:
    subnet: int
    macs: int
    params: int
    channels: int
    layers: tuple[LayerCost, ...]


def call_arguments(module: nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """A call of ``module`` (its ``__call__``'s ``args`` and ``kwargs``) as its arguments by
    parameter name, defaults included: how the call was written does not matter."""
    bound = inspect.signature(type(module).__call__).bind(module, *args, **kwargs)
    bound.apply_defaults()
    return bound.arguments


def layer_costs(arch, structure: Structure, subnet: int, image_size: int,
                in_channels: int = 3) -> tuple[LayerCost, ...]:
    model = arch.module(structure)
    records: list[LayerCost] = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        mod = context.module
        if context.method_name != '__call__':
            return out
        path = '/'.join(mod.path)
        if not isinstance(mod, layers.SlimConv | layers.SlimBatchNorm | layers.SlimDense):
            return out
        arg = call_arguments(mod, args, kwargs)
        if isinstance(mod, layers.SlimConv):
            x = arg['x']
            cin, cout = x.shape[-1], out.shape[-1]
            if arg['out_index'] is not None:
                # A ZPM junction's conv writes the stream layout: its zero columns are
                # placement, not computation; the sub-network's conv has n_out outputs.
                cout = arg['n_out']
            k = mod.kernel_size
            per_out = k * k * (1 if mod.depthwise else cin)
            params = per_out * cout
            records.append(LayerCost(path, 'conv', params * out.shape[1] * out.shape[2], params,
                                     x.shape[1:], out.shape[1:-1] + (cout,), k, mod.strides))
        elif isinstance(mod, layers.SlimBatchNorm):
            n = mod.counts[arg['subnet']]
            records.append(LayerCost(path, 'bn', 0, 2 * n, out.shape[1:-1] + (n,),
                                     out.shape[1:-1] + (n,)))
        elif isinstance(mod, layers.SlimDense):
            cin, cout = arg['x'].shape[-1], out.shape[-1]
            records.append(LayerCost(path, 'dense', cin * cout, cin * cout + cout, (cin,),
                                     (cout,)))
        return out

    x = jax.ShapeDtypeStruct((1, image_size, image_size, in_channels), jnp.float32)
    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x, subnet=subnet), x)
    return tuple(records)


def subnet_costs(arch, structure: Structure, image_size: int,
                 in_channels: int = 3) -> list[SubnetCost]:
    """One `SubnetCost` per sub-network, smallest first."""
    out = []
    for k in range(structure.num_subnets):
        lc = layer_costs(arch, structure, k, image_size, in_channels)
        out.append(SubnetCost(k, sum(c.macs for c in lc), sum(c.params for c in lc),
                              structure.total_channels(k), lc))
    return out
