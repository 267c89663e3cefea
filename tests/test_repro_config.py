"""The reproduction config (`configs/fashion_mnist_repro.py`): SP-Net's MACs targets are the
S-Net's, every method's config validates, and the budget rule holds."""

import os
import sys

import pytest

from spnet_jax.cli.profile import profile_config
from spnet_jax.train import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import fashion_mnist_repro as repro  # noqa: E402


def test_spnet_targets_are_the_snet_macs():
    _, rows, _ = profile_config(repro.get_config('snet'))
    macs = [r['macs'] for r in rows]
    assert tuple(macs) == repro.SNET_MACS and macs == sorted(macs)
    config = repro.get_config('spnet')
    assert config.prune.macs_targets == tuple(float(m) for m in macs[:-1])
    assert tuple(config.base.widths) == repro.SPNET_BASES
    assert config.base.epochs + config.slim.epochs == repro.EPOCHS


@pytest.mark.parametrize('method', ['spnet', 'snet', 'individual_0.25', 'individual_1'])
def test_every_method_validates(method):
    config = repro.get_config(method)
    validate.check_config(config)
    assert config.data.num_train_examples == repro.NUM_TRAIN_EXAMPLES
    if method != 'spnet':
        assert config.method == 'snet' and config.slim.epochs == repro.EPOCHS
    if method.startswith('individual_'):
        assert tuple(config.slim.widths) == (float(method.split('_')[1]),)


def test_quickstart_recipe_aims_at_the_snet_x05_and_x075_macs():
    """The first README command's pruned sub-networks aim at S-Net's x0.5 / x0.75 costs, and
    its S-Net baseline config trains exactly those widths plus x1.0."""
    from configs import fashion_mnist, fashion_mnist_snet

    _, rows, _ = profile_config(fashion_mnist_snet.get_config())
    assert [r['width'] for r in rows] == [0.5, 0.75, 1.0]
    assert fashion_mnist.get_config().prune.macs_targets == tuple(
        float(r['macs']) for r in rows[:2])
