"""S-Net baseline: slimmable MobileNetV1 x0.5 / 0.75 / 1.0 on ImageNet, from scratch."""

from configs import default, mobilenet_v1


def get_config():
    return default.to_snet(mobilenet_v1.get_config(), (0.5, 0.75, 1.0))
