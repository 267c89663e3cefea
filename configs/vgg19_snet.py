"""S-Net baseline, the release's ``apps/s_vgg_imagenet.yml``: slimmable VGG-19-BN x0.25 / 0.5 /
1.0 on ImageNet from scratch with the base recipe, switchable BN, no in-place distillation."""

from configs import default, vgg19


def get_config():
    return default.to_snet(vgg19.get_config(), (0.25, 0.5, 1.0))
