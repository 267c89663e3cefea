"""SP-MobileNetV1 on CIFAR-100, the release's recipe (``apps/sp_mobilenet_v1_cifar100_{train,
finetune}.yml``): the ImageNet recipe's bases, keep ratios and x1.5 scaffold, with the CIFAR
schedule (120 epochs, lr 0.1, x0.2 at 60/90/110) and weight decay 1e-4 on everything but the
depthwise kernels (``sgd_dw``).

Variants (comma-separated): ``release`` runs at 224 px as the release does (default 32 px);
``snet`` is the release's S-Net (``s_mobilenet_v1_cifar100.yml``: x0.5 / 0.75 / 1.0).
"""

from configs import default, mobilenet_v1


def get_config(variant: str = ''):
    variants = default.cifar_variant(variant, 'mobilenet_v1_cifar100')
    config = default.to_cifar(mobilenet_v1.get_config(), 'cifar100',
                              release_resolution='release' in variants)
    config.base.update(dict(optimizer='sgd_dw', label_smoothing=0.0))
    # Re-training from scratch: the base schedule, sparsity on, in-place distillation.
    default.retrain_with_base_recipe(config)
    if 'snet' in variants:
        config = default.to_snet(config, (0.5, 0.75, 1.0))
    return config
