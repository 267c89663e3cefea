"""S-Net baseline of `fashion_mnist.py`: slimmable ResNet-20 x0.5 / 0.75 / 1.0 trained from
scratch (switchable BN, in-place distillation) on all 60,000 Fashion-MNIST images, with the
base recipe, for 1.5 epochs: about the SP-Net recipe's wall time on 2 CPU cores (its 3 base
epochs run at about 440 images/s, the three-width slimmable step at about 160).

    python main.py --config=configs/fashion_mnist_snet.py --workdir=/tmp/fm_snet
"""

from configs import default, fashion_mnist


def get_config():
    config = default.to_snet(fashion_mnist.get_config(), (0.5, 0.75, 1.0),
                             inplace_distillation=True)
    config.slim.epochs = 1.5
    config.slim.batch_size = 128
    return config
