"""The release's `torch.save({'model': state_dict, ...})` checkpoints read into our trees."""

from pathlib import Path

import numpy as np
import torch

from spnet_jax import convert_torch
from spnet_jax.models import get_arch
from spnet_jax.pruning import check_base_variables

CASE = Path(__file__).resolve().parents[2] / 'shared' / 'reference' / 'mobilenet_v2_multibase_zpm'


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
