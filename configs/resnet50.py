"""SP-ResNet-50 on ImageNet (SPEC sections 2-4, 8): bases x0.75 and x1.0, keep ratios
0.5484 / 0.526 plus the full network (about 1.1G / 2.3G / 4.1G MACs), ZPM, fine-tuning from
the x1.0 base.

    python main.py --config=configs/resnet50.py --workdir=/ckpt/sp_resnet50 \\
        --config.data.manual_dir=/data/imagenet_tars
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'resnet50'
    config.model.full_width = 1.0
    # Base: SGD lr 0.1, batch 256, 90 epochs, x0.2 at 30/50/70/80, s = 1e-5, gamma_0 = 0.5.
    config.base.widths = (0.75, 1.0)
    config.base.epochs = 90.0
    config.base.lr = 0.1
    config.base.lr_boundaries = (30, 50, 70, 80)
    config.base.lr_decay = 0.2
    config.prune.keep_ratios = (0.5484, 0.526)
    config.prune.zpm = True
    config.prune.min_channels_ratio = 0.1
    config.prune.start = 'finetune'
    # Fine-tuning: lr 0.01, 60 epochs, x0.1 at 30 and 45, in-place distillation T=1, 0.9.
    config.slim.epochs = 60.0
    config.slim.lr = 0.01
    config.slim.lr_boundaries = (30, 45)
    config.slim.lr_decay = 0.1
    return config
