"""S-Net baseline of `fashion_mnist.py`: slimmable ResNet-20 x0.5 / 0.75 / 1.0 trained from
scratch on the same Fashion-MNIST subset (about as long as the SP-Net recipe)."""

from configs import default, fashion_mnist


def get_config():
    config = default.to_snet(fashion_mnist.get_config(), (0.5, 0.75, 1.0),
                             inplace_distillation=True)
    config.slim.epochs = 3.0
    return config
