"""SP-ResNet-50 on CIFAR-10: the ImageNet recipe's structure (bases x0.75 / 1.0, ZPM,
fine-tuning) with the release's CIFAR-10 keep ratios (SPEC section 4) and the CIFAR schedule."""

from configs import default, resnet50


def get_config():
    config = default.to_cifar(resnet50.get_config(), 'cifar10')
    config.prune.keep_ratios = (0.494, 0.7835)
    return config
