"""S-Net baseline, the release's ``apps/s_resnet_imagenet.yml``: slimmable ResNet-50 x0.5 / 0.75 /
1.0 on ImageNet from scratch with the base recipe (90 epochs, lr 0.1, x0.2 at 30/50/70/80),
switchable BN, no in-place distillation (``--config.slim.kd_alpha=0.9`` adds it)."""

from configs import default, resnet50


def get_config():
    return default.to_snet(resnet50.get_config(), (0.5, 0.75, 1.0))
