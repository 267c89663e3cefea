"""SP-MobileNetV1 on ImageNet (SPEC section 4): bases x0.75 / 1.0 / 1.3, keep ratios
0.648 / 0.7419 / 0.7635, and a full x1.5 network that only serves as a training scaffold;
re-trained from fresh weights with the pruned structures. Cosine schedule with 5 warm-up
epochs (SPEC section 2); weight decay 4e-5 as MobileNet training usually has.

The published model keeps the three pruned sub-networks (0..2); the report also lists the
scaffold (the last sub-network).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'mobilenet_v1'
    config.model.full_width = 1.5
    config.base.widths = (0.75, 1.0, 1.3)
    config.base.epochs = 150.0
    config.base.lr = 0.1
    config.base.schedule = 'cosine'
    config.base.warmup_epochs = 5.0
    config.base.weight_decay = 4e-5
    config.prune.keep_ratios = (0.648, 0.7419, 0.7635)
    config.prune.zpm = False
    config.prune.start = 'reinit'
    config.slim.epochs = 150.0
    config.slim.lr = 0.1
    config.slim.schedule = 'cosine'
    config.slim.warmup_epochs = 5.0
    config.slim.weight_decay = 4e-5
    config.slim.bn_scale_init = 1.0
    return config
