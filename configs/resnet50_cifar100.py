"""SP-ResNet-50 on CIFAR-100: the ImageNet recipe's structure (bases x0.75 / 1.0, ZPM,
fine-tuning) with the release's CIFAR-100 keep ratios (SPEC section 4) and the CIFAR schedule."""

from configs import default, resnet50


def get_config():
    config = default.to_cifar(resnet50.get_config(), 'cifar100')
    config.prune.keep_ratios = (0.6166, 0.7628)
    return config
