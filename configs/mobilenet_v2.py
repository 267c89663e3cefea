"""SP-MobileNetV2 on ImageNet, the release's recipe field by field (SPEC section 4;
``apps/sp_mobilenet_v2_imagenet_{train,finetune}.yml``): bases x1.0 and x1.3, keep ratios
0.6725 / 0.6357 plus the full x1.3 network, ZPM on the linear-bottleneck residuals,
fine-tuned from the x1.3 base.

    python main.py --config=configs/mobilenet_v2.py --workdir=/ckpt/sp_mbv2 \\
        --config.data.manual_dir=/data/imagenet_tars
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'mobilenet_v2'
    config.model.full_width = 1.3
    # sp_mobilenet_v2_imagenet_train.yml: SGD lr 0.05, cosine with 5 warm-up epochs, 150 epochs,
    # decay 4e-5 on conv/classifier kernels only, label smoothing 0.1, s = 1e-5, gamma_0 = 0.5.
    config.base.widths = (1.0, 1.3)
    config.base.update(dict(
        epochs=150.0, batch_size=256, lr=0.05, schedule='cosine', lr_boundaries=(),
        warmup_epochs=5.0, weight_decay=4e-5, optimizer='sgd_no_bias_decay',
        label_smoothing=0.1, sparsity=1e-5, bn_scale_init=0.5))
    # sp_mobilenet_v2_imagenet_finetune.yml.
    config.prune.keep_ratios = (0.6725, 0.6357)
    # The release's ZPM, as the yml; prune.zpm='aligned' is the variant whose streams do not
    # widen (README "Three ways to prune residual streams"; not timed on MobileNetV2).
    config.prune.zpm = 'release'
    config.prune.min_channels_ratio = 0.1
    config.prune.start = 'finetune'
    # Fine-tuning: lr 0.08 cosine (no warm-up), 150 epochs, no BN-scale sparsity (update_BN
    # is off in this yml), label smoothing 0.1, in-place distillation T=1, alpha 0.9.
    config.slim.update(dict(
        epochs=150.0, batch_size=256, lr=0.08, schedule='cosine', lr_boundaries=(),
        warmup_epochs=0.0, weight_decay=4e-5, optimizer='sgd_no_bias_decay',
        label_smoothing=0.1, sparsity=0.0, bn_scale_init=1.0, kd_alpha=0.9,
        kd_temperature=1.0))
    return config
