"""S-Net baseline, the release's ``apps/s_mobilenet_v2_imagenet.yml``: slimmable MobileNetV2
x0.75 / 1.0 / 1.3 on ImageNet from scratch with the base recipe, switchable BN, no in-place
distillation."""

from configs import default, mobilenet_v2


def get_config():
    return default.to_snet(mobilenet_v2.get_config(), (0.75, 1.0, 1.3))
