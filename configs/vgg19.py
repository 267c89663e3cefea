"""SP-VGGNet (VGG-19 with BN) on ImageNet (SPEC section 4): bases x0.5 and x0.75, keep
ratios 0.557 / 0.7366 plus the full x1.0 network, re-trained from fresh weights with the
pruned structures (the release's ``reinit_params``).

VGG has no residual connections, so no ZPM. Learning rate 0.01 as torchvision's VGG recipe.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'vgg19'
    config.model.full_width = 1.0
    config.base.widths = (0.5, 0.75)
    config.base.epochs = 90.0
    config.base.lr = 0.01
    config.base.lr_boundaries = (30, 60)
    config.base.lr_decay = 0.1
    config.prune.keep_ratios = (0.557, 0.7366)
    config.prune.zpm = False
    config.prune.start = 'reinit'
    # Re-training from scratch: the full base schedule.
    config.slim.epochs = 90.0
    config.slim.lr = 0.01
    config.slim.lr_boundaries = (30, 60)
    config.slim.lr_decay = 0.1
    config.slim.bn_scale_init = 1.0
    return config
