"""SP-ResNet-50 on CIFAR-100, the release's recipe (``apps/sp_resnet_cifar100_{train,
finetune}.yml``): as `resnet50_cifar10` with keep ratios 0.6166 / 0.7628. Variants
``release`` (224 px) and ``snet`` (``s_resnet_cifar100.yml``) as there.
"""

from configs.resnet50_cifar10 import cifar_resnet50


def get_config(variant: str = ''):
    return cifar_resnet50('cifar100', (0.6166, 0.7628), variant)
