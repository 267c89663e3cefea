"""Issue 11's reproduction at convergence: the paper's protocol scaled down to Fashion-MNIST.

All 60,000 training images, ResNet-20, the training settings of `fashion_mnist.py` (batch 64
for plain networks, 128 for slimmable ones, label smoothing 0.1, cosine schedules). ``E``
(``EPOCHS``) epochs per network trained from scratch; fine-tuning 2/3 E (the paper's 90 + 60).
One config file, one arm per config string:

    python main.py --config=configs/fashion_mnist_converged.py:spnet --workdir=W

* ``spnet``: bases x0.5 / 0.75 / 1.0 with the BN sparsity penalty, E epochs each; multi-base
  pruning with ZPM to S-Net's x0.25 / 0.5 / 0.75 MACs (the x1.0 base is the 4th sub-network);
  slimmable fine-tuning from the bases, 2/3 E.
* ``spnet_reinit``: the same pruned structures re-trained from fresh weights
  (``prune.start='reinit'``) for E epochs with the base recipe: structures without the warm
  start.
* ``snet_release``: S-Net x0.25 / 0.5 / 0.75 / 1.0 from scratch as the release trains it (no
  in-place distillation), E epochs.
* ``snet``: the same with in-place distillation (this project's baseline), E epochs.
* ``snet_warm``: S-Net started from the trained x1.0 base (``slim.init_from_base``),
  fine-tuned 2/3 E with SP-Net's fine-tuning recipe: the warm start without the pruned
  structures. Its base recipe is SP-Net's, but a base's initial weights depend on its index in
  ``base.widths`` (x1.0 is SP-Net's third base and this arm's only one), so run on its own it
  starts from a different x1.0 network; ``benchmarks/reproduce.py`` copies the seed's SP-Net
  ``base_1.0`` folder into it first, so that it starts from the very network SP-Net
  fine-tunes from (and copies all three bases into ``spnet_reinit``, whose bases are SP-Net's).
* ``spnet_aligned`` / ``spnet_nozpm``: SP-Net's pruning variants, from the very bases SP-Net
  trains (``benchmarks/reproduce.py`` copies them; these arms run only prune, slim and eval),
  pruned with ``prune.zpm='aligned'`` (the blocks of a stage share one channel order and each
  keeps a prefix, so the residual streams do not widen) or ``'none'`` (no ZPM), each layer's
  count a multiple of ``ROUND_TO``, then fine-tuned exactly as ``spnet``: only pruning and
  fine-tuning differ from it.
* ``spnet_latency``: the same bases pruned with aligned ZPM (multiples of 8 channels) to
  **S-Net's measured latency** at x0.25 / x0.5 / x0.75 (``prune.latency_widths``, timed on the
  machine that prunes, at ``eval.latency_batch``) instead of its MACs, fine-tuned as ``spnet``
  (issue 30): compared with S-Net and S-Net warm at equal latency.
* ``individual_<w>``: one plain ResNet-20 x<w> per S-Net width, E epochs.

SP-Net against ``snet_warm`` isolates the structures with the warm start held equal;
``spnet_reinit`` against ``snet`` the structures without it.
"""

from configs import default, fashion_mnist
from configs.fashion_mnist_repro import SNET_MACS, SNET_WIDTHS

EPOCHS = 4.0
FINE_TUNE_EPOCHS = EPOCHS * 2 / 3
SPNET_BASES = (0.5, 0.75, 1.0)
ARMS = ('spnet', 'spnet_reinit', 'spnet_aligned', 'spnet_nozpm', 'spnet_latency',
        'snet_release', 'snet', 'snet_warm')
# prune.zpm of SP-Net's pruning variants (``spnet`` keeps the release's ZPM).
VARIANT_ZPM = {'spnet_aligned': 'aligned', 'spnet_nozpm': 'none'}
# prune.round_to of both variants and the MACs tolerance it needs: the one place to set them.
# The Fashion-MNIST recipe's 3% (configs/fashion_mnist.py), with multiples of 2 channels: its
# multiples of 4 cannot reach the x0.25 target within 3% on seed 0's bases (1.67M or 2.07M
# MACs for 1.96M), multiples of 2 can, with both variants.
ROUND_TO = 2
MACS_TOLERANCE = 0.03
# What SP-Net's fine-tuning stage trains with (the warm S-Net trains with the same).
FINE_TUNE_FIELDS = ('epochs', 'batch_size', 'lr', 'schedule', 'lr_boundaries', 'warmup_epochs',
                    'label_smoothing', 'weight_decay', 'sparsity', 'kd_alpha', 'kd_temperature')


def _common():
    config = fashion_mnist.get_config()
    config.base.epochs = EPOCHS
    config.slim.epochs = FINE_TUNE_EPOCHS
    return config


def _spnet(start: str):
    config = _common()
    config.base.widths = SPNET_BASES
    config.prune.macs_targets = tuple(float(m) for m in SNET_MACS[:-1])
    config.prune.latency_widths = ()  # the study compares at equal MACs; latency measured after
    config.prune.start = start
    # The release's ZPM with exact counts, as the recorded runs of this arm were pruned
    # (fashion_mnist.py's own default is now the aligned variant: `_spnet_variant`).
    config.prune.zpm, config.prune.round_to = 'release', 1
    # Multi-base pruning of these small nets moves MACs in steps of ~1-2% near x0.25 (seed 0's
    # x0.5 base: 1.94M or 2.00M MACs for a 1.96M target), so 1% is not always reachable.
    config.prune.macs_tolerance = 0.02
    if start == 'reinit':  # trained from fresh weights: the base recipe, E epochs
        default.retrain_with_base_recipe(config)
        config.slim.batch_size = 128
    return config


def _spnet_variant(arm: str):
    """SP-Net with another pruning: the same bases (copied from SP-Net's run, so no base
    stage) and the same fine-tuning."""
    config = _spnet('finetune')
    config.prune.zpm = VARIANT_ZPM[arm]
    config.prune.round_to = ROUND_TO
    config.prune.macs_tolerance = MACS_TOLERANCE
    config.stages = 'prune,slim,eval'
    return config


def _spnet_latency():
    """SP-Net pruned to S-Net's measured time: the same bases, aligned ZPM, multiples of 8
    (the fast kernels, configs/fashion_mnist.py), the same fine-tuning."""
    config = _spnet('finetune')
    config.prune.zpm, config.prune.round_to = 'aligned', 8
    config.prune.latency_widths = tuple(SNET_WIDTHS[:-1])
    config.prune.latency_tolerance = 0.05
    config.stages = 'prune,slim,eval'
    return config


def _snet(widths, *, distillation: bool, epochs: float = EPOCHS):
    config = default.to_snet(_common(), widths, inplace_distillation=distillation)
    config.slim.epochs = epochs
    config.slim.batch_size = 128
    return config


def _snet_warm():
    spnet = _spnet('finetune')
    config = _snet(SNET_WIDTHS, distillation=True)
    # SP-Net's fine-tuning recipe, from the x1.0 base that SP-Net trains too.
    config.slim.update({k: spnet.slim[k] for k in FINE_TUNE_FIELDS})
    config.base.widths = (1.0,)
    config.slim.init_from_base = True
    config.stages = 'base,slim,eval'
    return config


def get_config(arm: str = 'spnet'):
    if arm == 'spnet':
        return _spnet('finetune')
    if arm == 'spnet_reinit':
        return _spnet('reinit')
    if arm in VARIANT_ZPM:
        return _spnet_variant(arm)
    if arm == 'spnet_latency':
        return _spnet_latency()
    if arm == 'snet_release':
        return _snet(SNET_WIDTHS, distillation=False)
    if arm == 'snet':
        return _snet(SNET_WIDTHS, distillation=True)
    if arm == 'snet_warm':
        return _snet_warm()
    if arm.startswith('individual_'):
        return _snet((float(arm[len('individual_'):]),), distillation=False)
    raise ValueError(f'unknown arm {arm!r}: one of {ARMS} or individual_<width>')
