"""S-Net baseline, the release's ``apps/s_mobilenet_v1_imagenet.yml``: slimmable MobileNetV1
x0.5 / 0.75 / 1.0 on ImageNet from scratch with the base recipe (lr 0.05 cosine, 5 warm-up
epochs, 150 epochs, label smoothing 0.1), switchable BN, no in-place distillation."""

from configs import default, mobilenet_v1


def get_config():
    return default.to_snet(mobilenet_v1.get_config(), (0.5, 0.75, 1.0))
