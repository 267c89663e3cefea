"""SP-MobileNetV1 on ImageNet, the release's recipe field by field (SPEC section 4;
``apps/sp_mobilenet_v1_imagenet_{train,finetune}.yml``): bases x0.75 / 1.0 / 1.3, keep ratios
0.648 / 0.7419 / 0.7635, and a full x1.5 network that only serves as a training scaffold;
re-trained from fresh weights with the pruned structures.

After training the scaffold is dropped (``slim.drop_scaffold``, the release's
``eliminate_width``), so the published network, its report, `spnet_jax.load` and export
have the three pruned sub-networks; ``--config.slim.drop_scaffold=False`` keeps it.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'mobilenet_v1'
    config.model.full_width = 1.5
    # sp_mobilenet_v1_imagenet_train.yml: SGD lr 0.05, cosine with 5 warm-up epochs, 150
    # epochs, decay 4e-5 on conv/classifier kernels only, label smoothing 0.1, s = 1e-5.
    config.base.widths = (0.75, 1.0, 1.3)
    config.base.update(dict(
        epochs=150.0, batch_size=256, lr=0.05, schedule='cosine', lr_boundaries=(),
        warmup_epochs=5.0, weight_decay=4e-5, optimizer='sgd_no_bias_decay',
        label_smoothing=0.1, sparsity=1e-5, bn_scale_init=0.5))
    # sp_mobilenet_v1_imagenet_finetune.yml.
    config.prune.keep_ratios = (0.648, 0.7419, 0.7635)
    config.prune.zpm = 'none'
    config.prune.min_channels_ratio = 0.1
    config.prune.start = 'reinit'
    # Re-training: lr 0.08 cosine (its warm-up and label smoothing are commented out in the
    # yml), 150 epochs, s = 1e-5 on, fresh BN scales 0.5, in-place distillation T=2.
    config.slim.update(dict(
        epochs=150.0, batch_size=256, lr=0.08, schedule='cosine', lr_boundaries=(),
        warmup_epochs=0.0, weight_decay=4e-5, optimizer='sgd_no_bias_decay',
        label_smoothing=0.0, sparsity=1e-5, bn_scale_init=0.5, kd_alpha=0.9,
        kd_temperature=2.0, drop_scaffold=True))
    return config
