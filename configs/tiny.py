"""A seconds-long smoke run of the whole recipe (tests, checking an install): a thin
ResNet-20 on 256 Fashion-MNIST images, a few steps per stage.

    python main.py --config=configs/tiny.py --workdir=/tmp/tiny
    python main.py --config=configs/tiny.py:snet --workdir=/tmp/tiny_snet

The optional ``:snet`` argument gives the S-Net variant.
"""

from configs import default, fashion_mnist


def get_config(variant: str = ''):
    config = fashion_mnist.get_config()
    config.model.full_width = 0.5
    config.data.num_train_examples = 256
    config.data.num_eval_examples = 64
    config.base.widths = (0.25, 0.5)
    # Pinned here, not inherited from the Fashion-MNIST recipe: two bases, ResNet-50's keep
    # ratios, no label smoothing (the tests' expectations are built on these).
    config.prune.keep_ratios = (0.5484, 0.526)
    config.prune.macs_targets = ()
    config.prune.latency_widths = ()
    # The release's ZPM and exact counts, as when the tests' expectations were written (the
    # Fashion-MNIST recipe moved to 'aligned' with round_to=4 in issue 28).
    config.prune.zpm, config.prune.round_to, config.prune.macs_tolerance = 'release', 1, 0.01
    config.base.label_smoothing = config.slim.label_smoothing = 0.0
    config.base.lr, config.slim.lr = 0.1, 0.05
    config.eval.latency_batch = 32
    config.base.update(dict(num_steps=4, batch_size=32, schedule='constant', warmup_epochs=0.0))
    config.slim.update(dict(num_steps=4, batch_size=32, schedule='constant', warmup_epochs=0.0))
    config.eval.batch_size = 32
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    if variant == 'snet':
        config = default.to_snet(config, (0.25, 0.5), inplace_distillation=True)
        config.slim.num_steps = 4
    elif variant:
        raise ValueError(f'configs/tiny.py: unknown variant {variant!r}; use "snet" or none.')
    return config
