"""The laptop default: the whole SP-Net recipe on real Fashion-MNIST, on CPU in minutes.

A CIFAR-style ResNet-20 (3x3/1 stem) on 28x28 grey images, trained on a 12,000-image
subset: two sparsity-trained bases (x0.75, x1.0), multi-base pruning with ZPM (keep ratios
as ResNet-50's), slimmable fine-tuning of the three sub-networks from the x1.0 base, and
evaluation on the full 10,000-image test split. About 11 minutes on 2 CPU cores
(top-1 87.7% / 87.9% / 88.2% at 6.0M / 10.2M / 31.0M MACs).

    python main.py --config=configs/fashion_mnist.py --workdir=/tmp/fm_run

Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``); set ``--config.data.data_dir`` for another folder.
"""

from configs import default


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
    config.data.num_train_examples = 12_000
    # Flips only: in a run this short, pad-and-crop costs more accuracy than it buys.
    config.data.crop_padding = 0

    config.base.widths = (0.75, 1.0)
    # Batch 32: on 2 CPU cores it trains as many images per second as 128, in 4x the steps.
    config.base.update(dict(epochs=2.0, batch_size=32, lr=0.1, schedule='cosine',
                            warmup_epochs=0.1, lr_boundaries=()))
    config.prune.keep_ratios = (0.5484, 0.526)
    config.prune.zpm = True
    config.prune.start = 'finetune'
    config.slim.update(dict(epochs=2.0, batch_size=32, lr=0.05, schedule='cosine',
                            warmup_epochs=0.0, lr_boundaries=()))

    config.eval.batch_size = 500
    config.log_every_steps = 50
    config.checkpoint_every_steps = 250
    return config
