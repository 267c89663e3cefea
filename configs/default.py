"""Shared defaults: SP-ResNet-50 on ImageNet, the paper's recipe (SPEC sections 2-4, 8).

Every other config imports this one and overrides a few fields. Any field can be changed on
the command line, e.g. ``--config.base.epochs=1 --config.stages=base``.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def training_section(**overrides) -> ml_collections.ConfigDict:
    """The recipe of one training stage (``base`` or ``slim``)."""
    section = ml_collections.ConfigDict()
    section.epochs = 90.0
    section.num_steps = -1  # > 0 overrides epochs (tests, smoke runs)
    section.batch_size = 256  # global, over all devices and processes
    section.lr = 0.1  # for batch_size; scale it yourself when changing the batch
    section.schedule = 'multistep'  # 'multistep' | 'cosine' | 'constant'
    section.lr_boundaries = (30, 50, 70, 80)  # epochs (multistep)
    section.lr_decay = 0.2  # factor at each boundary (multistep)
    section.warmup_epochs = 0.0
    section.weight_decay = 1e-4
    section.momentum = 0.9
    section.nesterov = True
    section.sparsity = 1e-5  # s in grad(gamma) += s * sign(gamma) (network slimming)
    section.label_smoothing = 0.0
    section.bn_scale_init = 0.5  # initial BN gamma of freshly initialised networks
    section.update(overrides)
    return section


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = 'spnet'  # 'spnet' | 'snet' (uniform widths, switchable BN, from scratch)
    config.stages = 'base,prune,slim,eval'  # comma-separated subset, run in this order
    config.seed = 0
    config.compute_dtype = 'float32'  # 'float32' | 'bfloat16' (params stay float32)
    config.log_every_steps = 100
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    config.prefetch = 2  # host batches prepared ahead of the devices
    config.distributed = False  # jax.distributed.initialize() for multi-process jobs

    config.model = ml_collections.ConfigDict()
    config.model.name = 'resnet50'
    config.model.num_classes = 1000
    config.model.stem = 'imagenet'  # 'imagenet' (7x7/2 + max-pool) | 'small' (3x3/1)
    config.model.full_width = 1.0  # width multiplier of the full (largest) network

    config.data = ml_collections.ConfigDict()
    config.data.name = 'imagenet2012'
    config.data.data_dir = placeholder(str)  # TFDS data dir / Fashion-MNIST IDX folder
    config.data.manual_dir = placeholder(str)  # ImageNet's two ILSVRC2012 tar files
    config.data.image_size = 224
    config.data.preprocessing = 'imagenet'  # 'imagenet' | 'small'
    config.data.crop_padding = 4  # 'small': zero padding before the random crop
    config.data.num_train_examples = placeholder(int)  # use only the first N (None: all)
    config.data.num_eval_examples = placeholder(int)

    # Stage 1: base networks with the L1 sub-gradient on BN scales.
    config.base = training_section()
    config.base.widths = (0.75, 1.0)

    # Stage 2: multi-base pruning (one keep ratio or MACs target per base), SCS, ZPM.
    config.prune = ml_collections.ConfigDict()
    config.prune.keep_ratios = (0.5484, 0.526)
    config.prune.macs_targets = ()  # MACs per pruned sub-network; when set, replaces keep_ratios
    config.prune.zpm = True
    config.prune.min_channels_ratio = 0.1
    config.prune.importance = 'bn'  # 'bn' (|gamma|) | 'l1' (filter L1 norm)
    config.prune.start = 'finetune'  # 'finetune' (largest base's weights) | 'reinit'

    # Stage 3: slimmable training of every sub-network with in-place distillation.
    config.slim = training_section(epochs=60.0, lr=0.01, lr_boundaries=(30, 45), lr_decay=0.1,
                                   bn_scale_init=1.0)
    config.slim.widths = (0.25, 0.5, 0.75, 1.0)  # S-Net widths (method='snet' only)
    config.slim.kd_alpha = 0.9
    config.slim.kd_temperature = 1.0

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 512
    config.eval.bn_calibration_batches = 0  # > 0: recompute BN statistics before eval
    config.eval.eval_bases = True  # evaluate each base network when it finishes
    # Latency in the report: median of latency_runs jitted forward passes (after
    # latency_warmup) of a batch of latency_batch images on one device; 0 skips it.
    config.eval.latency_batch = 32
    config.eval.latency_runs = 10
    config.eval.latency_warmup = 2
    # A finished baseline run (e.g. configs/*_snet.py) drawn beside this one in the report.
    config.eval.baseline_workdir = placeholder(str)
    return config


def to_snet(config: ml_collections.ConfigDict, widths) -> ml_collections.ConfigDict:
    """The S-Net baseline of an SP-Net config: the same data, model and base recipe, trained
    from scratch as a slimmable network of uniform ``widths`` with switchable BatchNorm.

    No sparsity penalty and BN scales start at 1 (nothing is pruned); in-place distillation
    stays on, as in the SP-Net fine-tuning, so the two differ only in the structures.
    """
    config.method = 'snet'
    config.stages = 'slim,eval'
    base = config.base
    config.slim = training_section(
        epochs=base.epochs, num_steps=base.num_steps, batch_size=base.batch_size, lr=base.lr,
        schedule=base.schedule, lr_boundaries=base.lr_boundaries, lr_decay=base.lr_decay,
        warmup_epochs=base.warmup_epochs, weight_decay=base.weight_decay,
        momentum=base.momentum, label_smoothing=base.label_smoothing, sparsity=0.0,
        bn_scale_init=1.0)
    config.slim.widths = tuple(widths)
    config.slim.kd_alpha = 0.9
    config.slim.kd_temperature = 1.0
    config.model.full_width = float(max(widths))
    return config


def to_cifar(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """A CIFAR-10/100 variant: 32x32 images, pad-crop + flip, the small 3x3/1 stem.

    The release ran CIFAR at 224x224 through the ImageNet stem; to do that, override
    ``data.image_size=224 data.preprocessing=imagenet model.stem=imagenet``. Base recipe as
    network slimming's CIFAR runs (160 epochs, lr 0.1, x0.1 at 80/120, batch 128); the
    slimmable fine-tuning as SPEC section 8 (lr 0.1, 60 epochs, x0.1 at 50).
    """
    config.data.name = name
    config.data.image_size = 32
    config.data.preprocessing = 'small'
    config.model.num_classes = {'cifar10': 10, 'cifar100': 100}[name]
    config.model.stem = 'small'
    config.base.update(dict(epochs=160.0, batch_size=128, lr=0.1, schedule='multistep',
                            lr_boundaries=(80, 120), lr_decay=0.1, warmup_epochs=0.0))
    config.slim.update(dict(epochs=60.0, batch_size=128, lr=0.1, schedule='multistep',
                            lr_boundaries=(50,), lr_decay=0.1, warmup_epochs=0.0))
    config.eval.batch_size = 500
    return config
