"""SP-EfficientNet-B2 on ImageNet, the release's recipe field by field
(``apps/sp_efficientnet_imagenet_{train,finetune}.yml``): 256 px with the release's
``imagenet_randaug`` pipeline (random-resized crop, RandAugment N=2 M=10, no flip; eval: the
shorter side resized to 256, the central 256 square) and mixup (alpha 0.2), stochastic
depth 0.2, label smoothing 0.1; bases x0.75 and x1.0 trained 200 epochs (cosine lr 0.05, 5
warm-up epochs, weight decay 4e-5 on conv and FC kernels only, BN penalty s = 1e-5,
gamma_0 = 0.5); keep ratios 0.5484 / 0.526 plus the full network, without ZPM; fine-tuning
from the x1.0 base, 200 epochs, cosine lr 0.08, in-place distillation T=1, alpha 0.9.
RandAugment is Keras's, whose operations and magnitudes differ from torchvision's (see
`spnet_jax.data.preprocess.rand_augment`).

    python main.py --config=configs/efficientnet_b2.py --workdir=/ckpt/sp_effnet_b2 \\
        --config.data.manual_dir=/data/imagenet_tars

``--config.model.name=efficientnet_b0`` (... ``_b7``) gives the release's other variants
(its ``type``) with this recipe; ``--config.data.image_size`` their native resolution
(`EfficientNetArch.resolution`: 224 ... 600) if wanted, with ``--config.data.eval_resize``
at least as large (the release's ``max_image_size``: 256 here, the whole central square).
The classifier's dropout is the variant's (0.3 for B2, as torchvision's): the release's
recipe does not set it.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.model.name = 'efficientnet_b2'
    config.model.full_width = 1.0
    config.model.stochastic_depth = 0.2
    config.data.image_size = 256
    config.data.randaugment_ops = 2
    config.data.randaugment_magnitude = 10.0
    config.data.random_flip = False  # imagenet_randaug: RandomResizedCrop, RandAugment only
    config.data.eval_resize = 256  # max_image_size: Resize(256), CenterCrop(image_size=256)
    config.base.widths = (0.75, 1.0)
    config.base.update(dict(
        epochs=200.0, batch_size=256, lr=0.05, schedule='cosine', lr_boundaries=(),
        warmup_epochs=5.0, weight_decay=4e-5, optimizer='sgd_no_bias_decay',
        label_smoothing=0.1, mixup_alpha=0.2, sparsity=1e-5, bn_scale_init=0.5))
    config.prune.keep_ratios = (0.5484, 0.526)
    config.prune.zpm = 'none'
    config.prune.min_channels_ratio = 0.1
    config.prune.start = 'finetune'
    # Fine-tuning: no warm-up and no BN-scale sparsity (both commented out in the yml).
    config.slim.update(dict(
        epochs=200.0, batch_size=256, lr=0.08, schedule='cosine', lr_boundaries=(),
        warmup_epochs=0.0, weight_decay=4e-5, optimizer='sgd_no_bias_decay',
        label_smoothing=0.1, mixup_alpha=0.2, sparsity=0.0, bn_scale_init=1.0, kd_alpha=0.9,
        kd_temperature=1.0))
    return config
