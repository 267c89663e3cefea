"""SP-ResNet-50 on ImageNet, the release's recipe field by field (SPEC sections 2-4, 8;
``apps/sp_resnet_imagenet_{train,finetune}.yml``): bases x0.75 and x1.0, keep ratios
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
    # sp_resnet_imagenet_train.yml: SGD lr 0.1, batch 256, 90 epochs, x0.2 at 30/50/70/80,
    # weight decay 1e-4, s = 1e-5, gamma_0 = 0.5.
    config.base.widths = (0.75, 1.0)
    config.base.update(dict(
        epochs=90.0, batch_size=256, lr=0.1, schedule='multistep', lr_boundaries=(30, 50, 70, 80),
        lr_decay=0.2, warmup_epochs=0.0, weight_decay=1e-4, optimizer='sgd', label_smoothing=0.0,
        sparsity=1e-5, bn_scale_init=0.5))
    # sp_resnet_imagenet_finetune.yml.
    config.prune.keep_ratios = (0.5484, 0.526)
    # The release's ZPM, as the yml. The faster variant: prune.zpm='aligned' with
    # prune.round_to=8, whose ResNet-50 sub-networks ran 0.96-0.99x S-Net's time at equal MACs
    # (224 px, batch 8, CPU; quiet: 0.991x / 0.983x) where the release's ran 1.08-1.52x
    # (benchmarks/BENCHMARKS.md, "Aligned ZPM" and "Worth deploying").
    config.prune.zpm = 'release'
    config.prune.min_channels_ratio = 0.1
    config.prune.start = 'finetune'
    # Fine-tuning: lr 0.01, 60 epochs, x0.1 at 30 and 45, s = 1e-5 still on, in-place
    # distillation T=1, alpha 0.9.
    config.slim.update(dict(
        epochs=60.0, batch_size=256, lr=0.01, schedule='multistep', lr_boundaries=(30, 45),
        lr_decay=0.1, warmup_epochs=0.0, weight_decay=1e-4, optimizer='sgd', label_smoothing=0.0,
        sparsity=1e-5, bn_scale_init=0.5, kd_alpha=0.9, kd_temperature=1.0))
    return config
