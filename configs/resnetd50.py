"""SP-ResNet-50-D on ImageNet, the release's recipe (``apps/sp_resnetd_imagenet_{train,
finetune}.yml``): deep 3x3 stem and average-pool shortcuts; bases x0.75 and x1.0 trained
200 epochs (cosine lr 0.1, 5 warm-up epochs, label smoothing 0.1, BN penalty s = 1e-5,
gamma_0 = 0.5, mixup alpha 0.2); keep ratios 0.5484 / 0.526 plus the full network, ZPM;
fine-tuning from the x1.0 base, 200 epochs, cosine lr 0.1, mixup, in-place distillation T=1,
alpha 0.9.

    python main.py --config=configs/resnetd50.py --workdir=/ckpt/sp_resnetd50 \\
        --config.data.manual_dir=/data/imagenet_tars

``zero_gamma`` is a no-op in the release (see README). ``--config.model.name=resnetd101`` or
``resnetd152`` gives the deeper ResNet-D (the release's ``depth``).
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'resnetd50'
    config.model.full_width = 1.0
    config.base.widths = (0.75, 1.0)
    config.base.update(dict(
        epochs=200.0, batch_size=256, lr=0.1, schedule='cosine', lr_boundaries=(),
        warmup_epochs=5.0, weight_decay=1e-4, optimizer='sgd', label_smoothing=0.1,
        mixup_alpha=0.2, sparsity=1e-5, bn_scale_init=0.5))
    config.prune.keep_ratios = (0.5484, 0.526)
    # The release's ZPM, as the yml. The faster variant: prune.zpm='aligned' with
    # prune.round_to=8, whose ResNet-50 sub-networks ran 0.96-0.98x S-Net's time at equal MACs
    # where the release's ran 1.08-1.52x (benchmarks/BENCHMARKS.md, "Aligned ZPM").
    config.prune.zpm = 'release'
    config.prune.min_channels_ratio = 0.1
    config.prune.start = 'finetune'
    config.slim.update(dict(
        epochs=200.0, batch_size=256, lr=0.1, schedule='cosine', lr_boundaries=(),
        warmup_epochs=0.0, weight_decay=1e-4, optimizer='sgd', label_smoothing=0.1,
        mixup_alpha=0.2, sparsity=1e-5, bn_scale_init=0.5, kd_alpha=0.9, kd_temperature=1.0))
    return config
