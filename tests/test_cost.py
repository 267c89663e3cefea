"""MACs and params per sub-network: the published figures, and XLA's own count."""

import jax
import jax.numpy as jnp
import pytest

from spnet_jax.core import layers
from spnet_jax.core.cost import call_arguments, subnet_costs
from spnet_jax.models import get_arch

G, M = 1e9, 1e6

# (model, S-Net widths, published MACs per width, published params {width: params}), 224 px.
PUBLISHED = [
    ('resnet50', (0.5, 0.75, 1.0), (1.1 * G, 2.3 * G, 4.1 * G), {1.0: 25.6 * M}),
    ('vgg19', (0.25, 0.5, 1.0), (1.2 * G, 4.9 * G, 19.6 * G), {1.0: 20.5 * M}),
    ('mobilenet_v1', (0.5, 0.75, 1.0), (150 * M, 325 * M, 569 * M), {1.0: 4.2 * M}),
    ('mobilenet_v2', (0.75, 1.0, 1.3), (209 * M, 301 * M, 509 * M), {1.3: 5.4 * M, 1.0: 3.5 * M}),
]


def within_published(value: float, published: float) -> bool:
    """Within 2%, or equal at the precision the paper printed (two significant digits).

    ResNet-50 x0.5 is 1.052G MACs with floor-rounded widths: "1.1G" in the papers, 4.3% away.
    """
    digits = 2 if published < 10 * G and published >= G else 3
    rounded = float(f'{value:.{digits}g}')
    return abs(value - published) <= 0.02 * published or rounded == published


@pytest.mark.parametrize('name,widths,macs,params', PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_published_macs_and_params(name, widths, macs, params):
    arch = get_arch(name, full_width=widths[-1])
    costs = subnet_costs(arch, arch.snet_structure(widths), image_size=224)
    for c, w, published in zip(costs, widths, macs, strict=True):
        assert within_published(c.macs, published), (name, w, c.macs, published)
    for w, published in params.items():
        c = costs[widths.index(w)]
        assert abs(c.params - published) <= 0.02 * published, (name, w, c.params, published)


def test_resnet50_exact_counts():
    # Independent arithmetic for the full ResNet-50: torchvision's 25,557,032 parameters.
    arch = get_arch('resnet50')
    (full,) = subnet_costs(arch, arch.plain_structure(), image_size=224)
    assert full.params == 25_557_032
    assert full.macs == 4_089_184_256


def _valid_taps(n_in: int, n_out: int, k: int, s: int) -> int:
    """Kernel taps landing inside the input (XLA does not count taps on the zero padding)."""
    p = k // 2
    return sum(sum(1 for t in range(k) if 0 <= o * s - p + t < n_in) for o in range(n_out))


def _macs_without_padding(cost) -> int:
    total = 0
    for layer in cost.layers:
        if layer.kind == 'conv':
            (h, w, _), (ho, wo, cout) = layer.in_shape, layer.out_shape
            k, s = layer.kernel_size, layer.strides
            per_tap = layer.params // (k * k * cout)  # input channels per group
            total += _valid_taps(h, ho, k, s) * _valid_taps(w, wo, k, s) * per_tap * cout
        elif layer.kind == 'dense':
            total += layer.macs
    return total


@pytest.mark.parametrize('name,widths,size', [
    ('resnet50', (0.5, 1.0), 64), ('resnetd50', (0.5, 1.0), 64), ('resnet20', (0.5, 1.0), 32),
    ('vgg19', (0.25, 1.0), 32),
    ('mobilenet_v1', (0.5, 1.0), 64), ('mobilenet_v2', (0.75, 1.3), 64),
    ('efficientnet_b0', (0.5, 1.0), 64)])
def test_macs_agree_with_xla_cost_analysis(name, widths, size):
    arch = get_arch(name, full_width=widths[-1])
    structure = arch.snet_structure(widths)
    model = arch.module(structure)
    x = jnp.zeros((1, size, size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    for cost in subnet_costs(arch, structure, size):
        fn = jax.jit(lambda v, x, k=cost.subnet: model.apply(v, x, subnet=k))
        analysis = fn.lower(variables, x).compile().cost_analysis()
        analysis = analysis[0] if isinstance(analysis, list) else analysis
        xla_macs = analysis['flops'] / 2
        conv_macs = _macs_without_padding(cost)
        activations = sum(
            int(jnp.prod(jnp.array(layer.out_shape))) for layer in cost.layers
            if layer.kind == 'bn')
        # XLA also counts BN, ReLU, adds, pooling and layout copies: a few flops per
        # activation, far fewer than a conv layer (>= 9 MACs per activation) would add.
        extra = xla_macs - conv_macs
        assert 0.5 * activations <= extra <= 6 * activations, (cost.subnet, extra, activations)
        # Swish, the SE's gates and its sigmoid are several flops per activation: beside
        # EfficientNet's depthwise convs (9 or 25 MACs per activation) that is ~10%.
        slack = 1.15 if name.startswith('efficientnet') else 1.05
        assert conv_macs <= xla_macs <= slack * conv_macs
        # Our MACs differ from XLA's convs only by the padding taps.
        assert cost.macs >= conv_macs


def test_layer_calls_are_read_by_argument_name():
    """How a layer is called (positions or keywords) does not change what the count reads."""
    conv = layers.SlimConv(in_features=4, features=6, kernel_size=1)
    x, index = jnp.ones((1, 2, 2, 4)), jnp.arange(6)
    positional = call_arguments(conv, (x, 3, None, index), {})
    keywords = call_arguments(conv, (x,), {'n_out': 3, 'out_index': index})
    assert positional.keys() == keywords.keys() == {'self', 'x', 'n_out', 'in_index',
                                                    'out_index'}
    assert positional['n_out'] == keywords['n_out'] == 3 and keywords['in_index'] is None
    assert keywords['out_index'] is index
    bn = layers.SlimBatchNorm(counts=(2, 4))
    assert call_arguments(bn, (x,), {'subnet': 1, 'train': False})['out_index'] is None
