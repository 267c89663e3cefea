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
import math
import re
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
    # What the layer computes: more than ``macs`` for a ZPM branch's conv that writes the
    # whole stream's width (its placement folded into its weights, zero columns included).
    executed_macs: int = 0


@dataclasses.dataclass(frozen=True)
class SubnetCost:
    subnet: int
    macs: int
    params: int
    channels: int
    layers: tuple[LayerCost, ...]

    @property
    def executed_macs(self) -> int:
        """The MACs the sub-network's program computes (`LayerCost.executed_macs`): ``macs``
        plus the zero columns of folded ZPM junction convs."""
        return sum(layer.executed_macs for layer in self.layers)


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
            pixels = out.shape[1] * out.shape[2]
            records.append(LayerCost(path, 'conv', params * pixels, params, x.shape[1:],
                                     out.shape[1:-1] + (cout,), k, mod.strides,
                                     per_out * out.shape[-1] * pixels))
        elif isinstance(mod, layers.SlimBatchNorm):
            n = mod.counts[arg['subnet']]
            records.append(LayerCost(path, 'bn', 0, 2 * n, out.shape[1:-1] + (n,),
                                     out.shape[1:-1] + (n,)))
        elif isinstance(mod, layers.SlimDense):
            cin, cout = arg['x'].shape[-1], out.shape[-1]
            records.append(LayerCost(path, 'dense', cin * cout, cin * cout + cout, (cin,),
                                     (cout,), executed_macs=cin * cout))
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


_TENSOR = re.compile(r'tensor<([0-9x]+)x[a-z]+[0-9]*>')


def _dims(text: str) -> list[list[int]]:
    return [[int(d) for d in m.split('x')] for m in _TENSOR.findall(text)]


def executed_macs(lowered_text: str) -> int:
    """MACs of the convolutions and matrix products a lowered program asks for (its
    StableHLO text, ``jax.jit(f).lower(...).as_text()``), every kernel tap counted, as the
    model's own count (`subnet_costs`) counts them.

    XLA's cost analysis folds these into one ``flops`` total with the elementwise work (BN,
    activations, adds) and counts padding taps its own way; this counts only what the cost
    model counts, so ``executed_macs / macs`` is the work a sub-network does beyond its
    logical MACs (e.g. a ZPM junction's conv computing the whole stream's width). A
    convolution's MACs are its output size times its kernel's size over the kernel's output
    features (feature- or batch-grouped convolutions, e.g. a depthwise conv and its weight
    gradient: the kernel's input dimension is already per group), over the
    input dilation (a strided conv's input gradient); a ``dot_general``'s, its output size
    times its contracted sizes.
    """
    total = 0
    for line in lowered_text.splitlines():
        if 'stablehlo.convolution' in line:
            signature = line.rsplit(' : ', 1)[1]
            (_, kernel, out) = _dims(signature)[:3]
            labels = re.search(r'x\[([^\]]*)\]->', line).group(1).replace(' ', '').split(',')
            # A strided conv's input gradient runs over its output gradient dilated by the
            # stride (zeros in between): only 1 tap in prod(lhs_dilate) meets a value.
            dilate = re.search(r'lhs_dilate = \[([0-9, ]*)\]', line)
            spread = math.prod(int(d) for d in dilate.group(1).split(',')) if dilate else 1
            total += math.prod(out) * math.prod(kernel) // kernel[labels.index('o')] // spread
        elif 'stablehlo.dot_general' in line:
            signature = line.rsplit(' : ', 1)[1]
            lhs, _, out = _dims(signature)[:3]
            contracting = re.search(r'contracting_dims = \[([0-9, ]*)\]', line).group(1)
            sizes = [lhs[int(d)] for d in contracting.split(',') if d.strip()]
            total += math.prod(out) * math.prod(sizes)
    return total
