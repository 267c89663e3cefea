"""SP-VGGNet (VGG-19-BN) on CIFAR-10, the release's recipe (``apps/sp_vgg_cifar10_{train,
finetune}.yml``): bases x0.5 / 0.75 trained 120 epochs with s = 1e-4, keep ratios 0.6453 /
0.8202 plus the full network, re-trained from scratch with the same schedule.

Variants (comma-separated): ``release`` runs at 224 px as the release does (default 32 px);
``snet`` is the release's S-Net (``s_vgg_cifar10.yml``: x0.25 / 0.5 / 1.0 from scratch).
"""

from configs import default, vgg19


def get_config(variant: str = ''):
    return cifar_vgg19('cifar10', variant)


def cifar_vgg19(dataset: str, variant: str):
    variants = default.cifar_variant(variant, f'vgg19_{dataset}')
    config = default.to_cifar(vgg19.get_config(), dataset,
                              release_resolution='release' in variants)
    config.base.sparsity = 1e-4
    config.prune.keep_ratios = (0.6453, 0.8202)
    # Re-training from scratch: the base schedule, sparsity on, in-place distillation.
    default.retrain_with_base_recipe(config)
    if 'snet' in variants:
        config = default.to_snet(config, (0.25, 0.5, 1.0))
    return config
