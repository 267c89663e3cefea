"""S-Net baseline for `efficientnet_b2.py`: slimmable EfficientNet-B2 x0.5 / 0.75 / 1.0 from
scratch with the EfficientNet base recipe (200 epochs, cosine lr 0.05, RandAugment, mixup,
stochastic depth), switchable BN, no in-place distillation (``--config.slim.kd_alpha=0.9``
adds it). The release ships no S-Net recipe for EfficientNet; this is its MobileNetV2 S-Net
(``s_mobilenet_v2_imagenet.yml``) applied to EfficientNet's recipe."""

from configs import default, efficientnet_b2


def get_config():
    return default.to_snet(efficientnet_b2.get_config(), (0.5, 0.75, 1.0))
