"""SP-MobileNetV2 on ImageNet (SPEC section 4): bases x1.0 and x1.3, keep ratios 0.6725 /
0.6357 plus the full x1.3 network, ZPM on the linear-bottleneck residuals, fine-tuned from
the x1.3 base with label smoothing 0.1. Cosine schedule with 5 warm-up epochs; weight decay
4e-5 as MobileNet training usually has.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'mobilenet_v2'
    config.model.full_width = 1.3
    config.base.widths = (1.0, 1.3)
    config.base.epochs = 150.0
    config.base.lr = 0.1
    config.base.schedule = 'cosine'
    config.base.warmup_epochs = 5.0
    config.base.weight_decay = 4e-5
    config.base.label_smoothing = 0.1
    config.prune.keep_ratios = (0.6725, 0.6357)
    config.prune.zpm = True
    config.prune.start = 'finetune'
    config.slim.epochs = 60.0
    config.slim.lr = 0.01
    config.slim.schedule = 'cosine'
    config.slim.warmup_epochs = 0.0
    config.slim.weight_decay = 4e-5
    config.slim.label_smoothing = 0.1
    return config
