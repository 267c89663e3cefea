"""S-Net baseline: slimmable ResNet-50 x0.5 / 0.75 / 1.0 on ImageNet, trained from scratch
with the base recipe (90 epochs, lr 0.1, x0.2 at 30/50/70/80)."""

from configs import default, resnet50


def get_config():
    return default.to_snet(resnet50.get_config(), (0.5, 0.75, 1.0))
