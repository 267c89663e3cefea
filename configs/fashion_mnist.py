"""The laptop default: the whole SP-Net recipe on real Fashion-MNIST, on CPU in minutes.

A CIFAR-style ResNet-20 (3x3/1 stem) on 28x28 grey images, all 60,000 training images: one
base (x1.0) trained with the BN sparsity penalty, pruned with aligned ZPM (channel counts in
multiples of 8) to two sub-networks that run as fast as S-Net's x0.5 and x0.75 on the machine
that prunes (``prune.latency_widths``: bisection on measured time, within 5%), slimmable
fine-tuning of the three sub-networks with in-place distillation from the base, and
evaluation on the full 10,000-image test split. ``scripts/quickstart.sh`` runs it on two
XLA CPU devices (data parallel; see the README for the time and the numbers it prints).

    python main.py --config=configs/fashion_mnist.py --workdir=/tmp/fm_run

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``); set ``--config.data.data_dir`` for another folder.
"""

from configs import default

# MACs per image of S-Net's ResNet-20 at these widths on 28x28x1, smallest first
# (tests/test_repro_config.py recomputes them): pruned sub-networks aim at them.
SNET_WIDTHS = (0.25, 0.5, 0.75, 1.0)
SNET_MACS = (1_960_160, 7_783_872, 17_471_136, 31_021_952)


def get_config():
    config = default.get_config()
    config.model.name = 'resnet20'
    config.model.num_classes = 10
    config.model.stem = 'small'
    config.model.full_width = 1.0

    config.data.name = 'fashion_mnist'
    config.data.data_dir = '/usr/share/datasets/fashion-mnist'
    config.data.image_size = 28
    config.data.preprocessing = 'small'
    config.data.num_train_examples = None  # all 60,000
    # Flips only: in a run this short, pad-and-crop costs more accuracy than it buys.
    config.data.crop_padding = 0

    # One base: on 2 CPU cores a second one (x0.75, as ResNet-50's recipe) costs 56% more base
    # time than the 15-minute budget has; 3 epochs of x1.0 reach 91-92% on their own.
    config.base.widths = (1.0,)
    # Batch 64 (32 per CPU device): as many images per second as 128, better per epoch.
    config.base.update(dict(epochs=3.0, batch_size=64, lr=0.1, schedule='cosine',
                            warmup_epochs=0.1, lr_boundaries=(), label_smoothing=0.1))
    config.prune.keep_ratios = ()
    config.prune.macs_targets = tuple(float(m) for m in SNET_MACS[1:3])  # x0.5, x0.75
    # ... but pruned to S-Net's *measured* time at x0.5 / x0.75 instead (issues 28 and 30):
    # each pruned sub-network runs as fast as the S-Net sub-network it replaces on the machine
    # that prunes (within 5%; the search costs 1-8 minutes on 2 CPU cores). At equal MACs no
    # structure pruned from the trained base was as fast as S-Net x0.5 on this CPU: XLA:CPU
    # runs convs of 8 / 16 / 32 / 64 channels at up to 3x the speed per MAC of neighbouring
    # counts, and S-Net's uniform x0.5 hits them all (pruned with aligned ZPM to its MACs:
    # 1.16x its time with round_to=8, 1.66x with 4, quiet machine, batch 256;
    # benchmarks/BENCHMARKS.md, "Worth deploying"). --config.prune.latency_widths='()'
    # prunes to the MACs targets above.
    config.prune.latency_widths = (0.5, 0.75)
    config.prune.latency_tolerance = 0.05
    # ZPM whose streams do not widen, channel counts in multiples of 8: the fast kernels (a
    # step of 8 channels moves ResNet-20's MACs by 1-3%, so MACs targets need 3% tolerance).
    config.prune.zpm = 'aligned'
    config.prune.round_to = 8
    config.prune.macs_tolerance = 0.03
    config.prune.start = 'finetune'
    # Half an epoch of slimmable fine-tuning recovers the pruned sub-networks; the slimmable
    # step (three sub-networks) trains about 160 images/s here against 440 for the base.
    config.slim.update(dict(epochs=0.5, batch_size=128, lr=0.05, schedule='cosine',
                            warmup_epochs=0.0, lr_boundaries=(), label_smoothing=0.1))

    config.eval.batch_size = 500
    # Latency of a batch of 256 (a serving-size batch; at 32 every sub-network times as
    # per-call overhead). On 2 CPU cores they still time alike; the report says so.
    config.eval.latency_batch = 256
    config.log_every_steps = 100
    config.checkpoint_every_steps = 500
    return config
