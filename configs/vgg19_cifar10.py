"""SP-VGGNet (VGG-19-BN) on CIFAR-10: bases x0.5 / 0.75, keep ratios 0.6453 / 0.8202 plus the
full network (SPEC section 4), re-trained from scratch with the base schedule."""

from configs import default, vgg19


def get_config():
    config = default.to_cifar(vgg19.get_config(), 'cifar10')
    config.prune.keep_ratios = (0.6453, 0.8202)
    # Re-training from scratch takes the full base schedule, not the fine-tuning one.
    config.slim.update(dict(epochs=160.0, lr_boundaries=(80, 120)))
    return config
