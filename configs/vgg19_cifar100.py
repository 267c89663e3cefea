"""SP-VGGNet (VGG-19-BN) on CIFAR-100, the release's recipe (``apps/sp_vgg_cifar100_{train,
finetune}.yml``): as `vgg19_cifar10` (the same keep ratios 0.6453 / 0.8202). Variants
``release`` (224 px) and ``snet`` (``s_vgg_cifar100.yml``) as there.
"""

from configs.vgg19_cifar10 import cifar_vgg19


def get_config(variant: str = ''):
    return cifar_vgg19('cifar100', variant)
