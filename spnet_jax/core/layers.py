"""Slimmable layers: parameters at full width, each call uses a static prefix of them.

Every layer holds its full-width parameters and is called with the sub-network's channel
counts as Python ints, so under `jax.jit` each sub-network is its own static-shaped program:
no masking multiply, no dynamic shapes. A layer whose input is a ZPM residual stream gets an
index array (``in_index``, from the ``masks`` collection) and gathers its kernel's input
rows; that gather touches weights only, never activations.

At a ZPM junction the placement of a branch in the stream is folded into the branch's last
conv and BN the same way (``out_index``: the conv's output columns and the BN's vectors are
gathered, absent positions get zero weights), so the conv writes the stream layout directly
and the junction is a plain add. Only an identity shortcut whose stream grows, and a
stream's entry, still move activations (`ZPMAdd`).

This module also owns the names of the variables a layer keeps one of per sub-network (the
running statistics ``mean_k``/``var_k``, S-Net's private affine ``scale_k``/``bias_k``, the
ZPM masks ``fused_k``/``body_k``/``short_k``) and the collections they live in: the rest of
the package names and finds them only through `subnet_variable`, `subnet_of`,
`is_bn_scale`, `bn_affine` and the constants below. And it defines `Activation`, the value
blocks hand each other.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

Array = jax.Array
Dtype = Any

# ------------------------------------------------------------ per-sub-network variables
# The collections of a network's variables besides Flax's 'params'.
BATCH_STATS = 'batch_stats'  # `SlimBatchNorm`'s running statistics, private per sub-network
MASKS = 'masks'  # `ZPMAdd`'s index arrays, one set per sub-network
# Where `SlimBatchNorm` reports each training-mode call's batch statistics (the values its
# running statistics move towards), when the caller makes the collection mutable.
BATCH_MOMENTS = 'batch_moments'

# The kinds of variable a layer may keep one of per sub-network k, named
# ``subnet_variable(kind, k)``:
MEAN, VAR = 'mean', 'var'  # `SlimBatchNorm`'s statistics (BATCH_STATS and BATCH_MOMENTS)
STATISTICS = (MEAN, VAR)
# `SlimBatchNorm`'s affine: one shared vector named SCALE / BIAS (SP-Net), or private ones
# (S-Net's switchable BN) named ``subnet_variable(SCALE, k)``.
SCALE, BIAS = 'scale', 'bias'
FUSED, BODY, SHORT = 'fused', 'body', 'short'  # `ZPMAdd`'s masks (MASKS)
SUBNET_KINDS = (MEAN, VAR, SCALE, BIAS, FUSED, BODY, SHORT)
# The name the models give a residual block's `ZPMAdd` (its masks sit under
# ``masks[<block path>][JUNCTION]``).
JUNCTION = 'zpm'


def subnet_variable(kind: str, subnet: int) -> str:
    """The name of sub-network ``subnet``'s own variable of ``kind`` (one of
    `SUBNET_KINDS`), e.g. ``subnet_variable(MEAN, 2) == 'mean_2'``."""
    if kind not in SUBNET_KINDS:
        raise ValueError(f'{kind!r} is not a per-sub-network variable; one of {SUBNET_KINDS}.')
    k = operator.index(subnet)
    if k < 0:
        raise ValueError(f'a sub-network index is >= 0, got {subnet!r}.')
    return f'{kind}_{k}'


def subnet_of(name: str) -> tuple[str, int] | None:
    """``(kind, k)`` when ``name`` (a variable's name, the last key of its path) is
    sub-network k's own variable of ``kind`` (the inverse of `subnet_variable`); None for
    any other name (a shared ``scale``, a ``kernel``, a module name such as ``layer1_0``)."""
    kind, sep, k = str(name).rpartition('_')
    if sep and kind in SUBNET_KINDS and k.isdigit() and str(int(k)) == k:
        return kind, int(k)
    return None


def is_bn_scale(name: str) -> bool:
    """Whether a `SlimBatchNorm` parameter named ``name`` is a scale (gamma): the shared
    ``scale`` or a private one."""
    parsed = subnet_of(name)
    return name == SCALE or (parsed is not None and parsed[0] == SCALE)


def bn_affine(bn_params: Mapping[str, Any], kind: str, subnet: int = -1) -> Any:
    """A `SlimBatchNorm`'s ``kind`` (SCALE or BIAS) vector as stored for sub-network
    ``subnet`` (-1: the full network, the last): the shared full-width one, or the
    sub-network's private one. ``bn_params`` is the BN's own parameters (a mapping from
    names to arrays)."""
    if kind not in (SCALE, BIAS):
        raise ValueError(f'a BatchNorm affine is {SCALE!r} or {BIAS!r}, not {kind!r}.')
    if kind in bn_params:
        return bn_params[kind]
    private = sorted(parsed[1] for parsed in map(subnet_of, bn_params)
                     if parsed is not None and parsed[0] == kind)
    if not private:
        raise KeyError(f'no {kind} among the BatchNorm parameters {sorted(bn_params)}.')
    return bn_params[subnet_variable(kind, private[subnet])]


# ------------------------------------------------------------ what blocks hand each other
@struct.dataclass
class Activation:
    """The value one block hands the next: the activation ``x`` (NHWC); ``index``, the
    fused index array of the ZPM stream ``x`` is (its consumers gather their input rows by
    it), or None; and ``rows``, the input rows a consuming layer's kernel holds for it (the
    full network's channel count of ``x``'s group, or for a ZPM stream its size in the
    largest sub-network)."""

    x: Array
    index: Array | None
    rows: int = struct.field(pytree_node=False)


# He-normal on fan_out, as torchvision initialises convs.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _take_inputs(kernel: Array, n_in: int, in_index: Array | None, axis: int) -> Array:
    if in_index is None:
        return jax.lax.slice_in_dim(kernel, 0, n_in, axis=axis)
    return jnp.take(kernel, in_index, axis=axis)


def place(values: Array, index: Array, fill: float = 0) -> Array:
    """``values[..., index]`` along the last axis; an index out of range gives ``fill``."""
    return jnp.take(values, index, axis=-1, mode='fill', fill_value=fill)


class SlimConv(nn.Module):
    """Conv2D (NHWC, HWIO kernel, no bias) whose in/out channels are prefixes of the full ones.

    PyTorch-style symmetric padding ``kernel_size // 2`` so strided convs match the release.
    With ``depthwise=True`` the kernel is (kh, kw, 1, C) and the conv runs one group per
    channel; its channel count is the input's.
    """

    in_features: int
    features: int
    kernel_size: int = 3
    strides: int = 1
    depthwise: bool = False
    dtype: Dtype = jnp.float32
    kernel_init: Any = conv_init

    @nn.compact
    def __call__(self, x: Array, n_out: int | None = None, in_index: Array | None = None,
                 out_index: Array | None = None):
        """``n_out`` output channels (a prefix); with ``out_index`` (ZPM placement) output
        position p is channel ``out_index[p]`` of those, or zero where it is ``>= n_out``."""
        k = self.kernel_size
        if self.depthwise:
            kernel = self.param('kernel', self.kernel_init, (k, k, 1, self.features))
            n = x.shape[-1]
            kernel = kernel[..., :n]
            groups = n
        else:
            kernel = self.param('kernel', self.kernel_init, (k, k, self.in_features, self.features))
            n_out = self.features if n_out is None else n_out
            kernel = _take_inputs(kernel, x.shape[-1], in_index, axis=2)[..., :n_out]
            if out_index is not None:
                kernel = place(kernel, out_index)
            groups = 1
        if k == 1 and groups == 1:
            # A 1x1 conv is a matmul over channels. XLA:CPU runs the conv form's weight
            # gradient several times slower (benchmarks/conv1x1.py); results are identical.
            x = x[:, ::self.strides, ::self.strides]
            return jnp.einsum('nhwc,co->nhwo', x.astype(self.dtype),
                              kernel[0, 0].astype(self.dtype))
        pad = k // 2
        return jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            window_strides=(self.strides, self.strides),
            padding=((pad, pad), (pad, pad)),
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
            feature_group_count=groups,
        )


def statistics_dtype(dtype: Dtype) -> Any:
    """The dtype BatchNorm statistics (and losses) are computed in: the wider of ``dtype`` and
    float32 (float32 for bfloat16/float32 compute, float64 for float64 compute).

    float64 needs JAX's x64 mode (``jax.config.update('jax_enable_x64', True)`` before any
    array is built); without it JAX would silently compute in float32, so this refuses.
    """
    wide = jnp.promote_types(dtype, jnp.float32)
    if wide == jnp.float64 and not jax.config.read('jax_enable_x64'):
        raise ValueError('float64 compute needs JAX x64 mode: call '
                         "jax.config.update('jax_enable_x64', True) before building any array.")
    return wide


class SlimBatchNorm(nn.Module):
    """BatchNorm over the last axis for a slimmable network.

    ``counts[k]`` is the number of channels in sub-network ``k``. Running statistics are
    private to each sub-network (``batch_stats``: ``mean_k``, ``var_k`` of size
    ``counts[k]``). The affine scale/bias are shared and sliced (SP-Net, ``shared=True``),
    or private per sub-network (S-Net's switchable BN, ``shared=False``: ``scale_k``,
    ``bias_k``). ``momentum`` is Flax's (PyTorch's 0.1 is 0.9 here); eps 1e-5 as PyTorch.

    As PyTorch's BatchNorm: training mode normalises with the batch's biased variance and
    moves the running variance towards the *unbiased* one (``var * n / (n - 1)``, ``n`` the
    values per channel, N*H*W). Statistics are computed and kept in `statistics_dtype`
    (float32, or float64 with float64 compute). Each training-mode call also sows the batch
    mean and unbiased variance (channel order, as ``mean_k``/``var_k``) into the
    `BATCH_MOMENTS` collection when the caller makes it mutable (BN calibration reads them).
    """

    counts: tuple[int, ...]
    shared: bool = True
    momentum: float = 0.9
    epsilon: float = 1e-5
    scale_init: float = 1.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, subnet: int, train: bool,
                 out_index: Array | None = None) -> Array:
        """With ``out_index`` (ZPM placement, as `SlimConv`'s), ``x`` holds the channels at
        those positions and zeros elsewhere; the zeros stay zero and each channel's
        statistics are its own, so the result is the placed BN output."""
        n = self.counts[subnet]
        width = n if out_index is None else out_index.shape[0]
        if x.shape[-1] != width:
            raise ValueError(f'{self.name}: got {x.shape[-1]} channels, sub-network {subnet} '
                             f'has {width}.')
        stat_dtype = statistics_dtype(self.dtype)
        const = nn.initializers.constant
        if self.shared:
            full = max(self.counts)
            scale = self.param(SCALE, const(self.scale_init), (full,))[:n]
            bias = self.param(BIAS, nn.initializers.zeros, (full,))[:n]
        else:
            scale = bias = None
            for k, c in enumerate(self.counts):
                s = self.param(subnet_variable(SCALE, k), const(self.scale_init), (c,))
                b = self.param(subnet_variable(BIAS, k), nn.initializers.zeros, (c,))
                if k == subnet:
                    scale, bias = s, b
        stats = [
            (self.variable(BATCH_STATS, subnet_variable(MEAN, k), jnp.zeros, (c,), stat_dtype),
             self.variable(BATCH_STATS, subnet_variable(VAR, k), jnp.ones, (c,), stat_dtype))
            for k, c in enumerate(self.counts)
        ]
        ra_mean, ra_var = stats[subnet]
        if out_index is not None:
            scale, bias = place(scale, out_index), place(bias, out_index)
        if train:
            xf = x.astype(stat_dtype)
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(xf, axes)
            var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
            if not self.is_initializing():
                # PyTorch's running variance takes the unbiased batch variance (Bessel's
                # correction over the n = N*H*W values of a channel); n = 1 has variance 0.
                count = x.size // x.shape[-1]
                new_mean, new_var = mean, var * (count / max(count - 1, 1))
                if out_index is not None:  # back to channel order: channel c sits at where[c]
                    where = jnp.zeros(n, jnp.int32).at[out_index].set(
                        jnp.arange(width, dtype=jnp.int32), mode='drop')
                    new_mean, new_var = new_mean[where], new_var[where]
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1 - m) * new_mean
                ra_var.value = m * ra_var.value + (1 - m) * new_var
                keep_last = lambda _, value: value
                self.sow(BATCH_MOMENTS, subnet_variable(MEAN, subnet), new_mean,
                         reduce_fn=keep_last)
                self.sow(BATCH_MOMENTS, subnet_variable(VAR, subnet), new_var,
                         reduce_fn=keep_last)
        else:
            mean, var = ra_mean.value, ra_var.value
            if out_index is not None:
                mean, var = place(mean, out_index), place(var, out_index, 1)
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        y = x * mul.astype(self.dtype) + (bias - mean * mul).astype(self.dtype)
        return y.astype(self.dtype)


# PyTorch's default for a layer with bias (uniform, bound 1/sqrt(fan_in) up to a constant):
# the squeeze-and-excitation FCs.
fc_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


class SlimDense(nn.Module):
    """A fully connected layer with bias (the classifier, squeeze-and-excitation FCs): input
    rows are a prefix of the full ones, or gathered by ``in_index``; with ``n_out`` the
    outputs (kernel columns and bias) are a prefix too."""

    in_features: int
    features: int
    dtype: Dtype = jnp.float32
    # N(0, 0.01), as the release (and torchvision's MobileNets) initialise the classifier.
    kernel_init: Any = nn.initializers.normal(0.01)

    @nn.compact
    def __call__(self, x: Array, in_index: Array | None = None,
                 n_out: int | None = None) -> Array:
        kernel = self.param('kernel', self.kernel_init, (self.in_features, self.features))
        bias = self.param('bias', nn.initializers.zeros, (self.features,))
        kernel = _take_inputs(kernel, x.shape[-1], in_index, axis=0)
        if n_out is not None:
            kernel, bias = kernel[:, :n_out], bias[:n_out]
        y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
        return y + bias.astype(self.dtype)


class ZPMAdd(nn.Module):
    """Zero-padding-match residual add: place both branches in the stream, add, compact.

    Reads from the ``masks`` collection, for each sub-network ``k``:

    * ``fused_k``: the stream's kept channels, ascending, in the full stream's numbering;
    * ``body_k`` / ``short_k``: for each kept stream position, which channel of the body /
      shortcut goes there, or the branch's channel count (out of range) for "none".

    ``out[..., p] = body[..., body_k[p]] + short[..., short_k[p]]`` (missing = 0) is the
    scatter-add-compact of the release. A branch whose last conv and BN already wrote the
    stream layout (`placement` passed to them as ``out_index``) is added as it is
    (``body_placed`` / ``short_placed``). An identity shortcut whose stream does not grow at
    this junction holds the same channels in the same order, so it is added as it is too:
    the models pass ``short_placed`` when the static stream sizes are equal. With
    ``short_prefix`` the shortcut's channels are the stream's first ones, in order
    (`Structure.stream_order` 'appended'), and it is zero-padded instead of gathered; with
    ``body_prefix`` the body's too ('prefix': ``prune.zpm='aligned'``).
    The default masks (before any pruning) put both branches at the stream's first channels.
    """

    stream_sizes: tuple[int, ...]
    body_counts: tuple[int, ...]
    short_counts: tuple[int, ...]
    # The masks put the shortcut on the stream's first channels, in its order (an identity or
    # entry shortcut of a stream in `Structure.stream_order` 'appended'): zero-pad it.
    short_prefix: bool = False
    # Likewise the body (every branch of a stream in `Structure.stream_order` 'prefix').
    body_prefix: bool = False

    def setup(self):
        def prefix(n, size):
            return lambda: jnp.where(jnp.arange(size) < n, jnp.arange(size), n).astype(jnp.int32)

        self.fused = [
            self.variable(MASKS, subnet_variable(FUSED, k),
                          lambda s=s: jnp.arange(s, dtype=jnp.int32))
            for k, s in enumerate(self.stream_sizes)
        ]
        self.body = [
            self.variable(MASKS, subnet_variable(BODY, k), prefix(b, s))
            for k, (b, s) in enumerate(zip(self.body_counts, self.stream_sizes, strict=True))
        ]
        self.short = [
            self.variable(MASKS, subnet_variable(SHORT, k), prefix(c, s))
            for k, (c, s) in enumerate(zip(self.short_counts, self.stream_sizes, strict=True))
        ]

    def placement(self, subnet: int) -> tuple[Array | None, Array | None]:
        """``(body_k, short_k)``: where each branch's channels go in the stream, for the
        branches' last conv and BN to write it directly (None: leave it to the add)."""
        return self.body[subnet].value, self.short[subnet].value

    def __call__(self, body: Array, short: Array, subnet: int, body_placed: bool = False,
                 short_placed: bool = False) -> tuple[Array, Array]:
        """Returns the compacted stream and its fused index array (for the consumers)."""
        size = self.stream_sizes[subnet]

        def pad(x):  # a prefix of the stream, zeros after it
            return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, size - x.shape[-1])])

        if not body_placed:
            body = pad(body) if self.body_prefix else place(body, self.body[subnet].value)
        if not short_placed:
            short = pad(short) if self.short_prefix else place(short, self.short[subnet].value)
        return body + short, self.fused[subnet].value


def relu6(x: Array) -> Array:
    return jnp.clip(x, 0, 6)
