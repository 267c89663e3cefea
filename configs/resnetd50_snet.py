"""S-Net baseline for `resnetd50.py`: slimmable ResNet-50-D x0.5 / 0.75 / 1.0 from scratch with
the ResNet-D base recipe (200 epochs, cosine lr 0.1), switchable BN, no in-place
distillation (``--config.slim.kd_alpha=0.9`` adds it). The release ships no S-Net recipe for
ResNet-D; this is its ResNet-50 S-Net (``s_resnet_imagenet.yml``) applied to ResNet-D's
recipe."""

from configs import default, resnetd50


def get_config():
    return default.to_snet(resnetd50.get_config(), (0.5, 0.75, 1.0))
