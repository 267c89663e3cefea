"""The release's `torch.save({'model': state_dict, ...})` checkpoints read into our trees."""


import numpy as np
import torch
from helpers import needs_reference, reference_case

from spnet_jax.models import get_arch
from spnet_jax.pruning import check_base_variables
from spnet_jax.workdir import convert_torch

CASE = reference_case('mobilenet_v2_multibase_zpm')
needs_mbv2 = needs_reference('mobilenet_v2_multibase_zpm')


@needs_mbv2
def test_pt_checkpoint_reads_like_the_npz_and_converts_to_our_layout(tmp_path):
    with np.load(CASE / 'base_1.3.npz') as f:
        state = {k: f[k] for k in f.files}
    # As the release saves it, from a DataParallel-wrapped model (keys start with 'module.').
    torch.save({'model': {f'module.{k}': torch.from_numpy(v) for k, v in state.items()},
                'epoch': 150}, tmp_path / 'base.pt')
    read = convert_torch.read_state_dict(str(tmp_path / 'base.pt'))
    assert read.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(read[k], state[k])
    arch = get_arch('mobilenet_v2', full_width=1.3)
    variables = convert_torch.convert(read, arch)
    check_base_variables(arch, variables, 1.3, 'base')  # the right tree and shapes
    # OIHW -> HWIO, (out, in) -> (in, out), BN weight -> scale, statistics of the one network.
    np.testing.assert_array_equal(variables['params']['block2']['expand_conv']['kernel'],
                                  state['features.2.body.0.weight'].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(variables['params']['head']['kernel'],
                                  state['classifier.0.weight'].T)
    np.testing.assert_array_equal(variables['params']['block3']['dw_bn']['scale'],
                                  state['features.3.body.4.weight'])
    np.testing.assert_array_equal(variables['batch_stats']['last_bn']['var_0'],
                                  state['features.18.1.running_var'])


def test_snet_switchable_batch_norm_becomes_each_widths_private_batch_norm():
    """The release's S-Net BN holds one BatchNorm per width (``<bn>.bn.<k>.*``, the last width
    included): width k's weight, bias and statistics become scale_k, bias_k, mean_k, var_k."""
    arch = get_arch('vgg19', num_classes=10, full_width=0.25)
    structure = arch.snet_structure((0.125, 0.25))
    rng = np.random.default_rng(0)
    state = {'classifier.0.weight': rng.normal(size=(10, 128)).astype(np.float32),
             'classifier.0.bias': rng.normal(size=10).astype(np.float32)}
    stem = structure.counts_of('conv0')
    state['features.0.weight'] = rng.normal(size=(stem[1], 3, 3, 3)).astype(np.float32)
    for k, n in enumerate(stem):
        for leaf in ('weight', 'bias', 'running_mean', 'running_var'):
            state[f'features.1.bn.{k}.{leaf}'] = rng.normal(size=n).astype(np.float32)
        state[f'features.1.bn.{k}.num_batches_tracked'] = np.asarray(3)
    v = convert_torch.convert(state, arch)
    bn, stats = v['params']['bn0'], v['batch_stats']['bn0']
    for k in (0, 1):
        np.testing.assert_array_equal(bn[f'scale_{k}'], state[f'features.1.bn.{k}.weight'])
        np.testing.assert_array_equal(bn[f'bias_{k}'], state[f'features.1.bn.{k}.bias'])
        np.testing.assert_array_equal(stats[f'mean_{k}'], state[f'features.1.bn.{k}.running_mean'])
        np.testing.assert_array_equal(stats[f'var_{k}'], state[f'features.1.bn.{k}.running_var'])
    assert 'scale' not in bn and set(stats) == {'mean_0', 'var_0', 'mean_1', 'var_1'}
    # release_shapes is the inverse for shapes.
    want = {k: v.shape for k, v in state.items() if not k.endswith('num_batches_tracked')}
    assert convert_torch.release_shapes(arch, v, 2, method='snet') == want


@needs_mbv2
def test_release_shapes_of_the_sorted_spnet_are_the_release_checkpoints():
    arch = get_arch('mobilenet_v2', full_width=1.3)
    with np.load(CASE / 'pruned_state_dict.npz') as f:
        state = {k: f[k] for k in f.files}
    variables = convert_torch.convert(state, arch, num_subnets=3)
    want = {k: v.shape for k, v in state.items() if not k.endswith('num_batches_tracked')}
    assert convert_torch.release_shapes(arch, variables, 3) == want
