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
    # Which parameters weight decay applies to (the release's `optimizer` field): 'sgd' all of
    # them; 'sgd_no_bias_decay' only conv kernels that are not depthwise and the classifier's
    # kernel; 'sgd_dw' all but depthwise conv kernels.
    section.optimizer = 'sgd'
    section.momentum = 0.9
    section.nesterov = True
    section.sparsity = 1e-5  # s in grad(gamma) += s * sign(gamma) (network slimming)
    section.label_smoothing = 0.0
    # Mixup (the release's mixup / mixup_alpha): each batch is mixed with a random
    # permutation of itself, lam ~ Beta(alpha, alpha); 0 turns it off.
    section.mixup_alpha = 0.0
    # Weight EMA (the release's enable_EMA / EMA_decay): an exponential moving average of the
    # parameters and BN statistics, ema = decay * ema + (1 - decay) * weights after every
    # step, starting from the stage's starting weights; the stage then hands on (evaluates,
    # prunes, exports) the averaged network. 0 turns it off.
    section.ema_decay = 0.0
    section.bn_scale_init = 0.5  # initial BN gamma of freshly initialised networks
    section.update(overrides)
    return section


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.method = 'spnet'  # 'spnet' | 'snet' (uniform widths, switchable BN, from scratch)
    config.stages = 'base,prune,slim,eval'  # comma-separated subset, run in this order
    config.seed = 0
    # 'float32' | 'bfloat16' (params stay float32) | 'float64' (params, statistics and losses
    # in float64, with jax_enable_x64: for comparisons with the release, not for speed)
    config.compute_dtype = 'float32'
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
    # EfficientNet only: classifier dropout and the stochastic depth of the last block
    # (None: the variant's dropout, 0.2 / 0.2-0.5, and 0.2, as torchvision and the release).
    config.model.dropout = placeholder(float)
    config.model.stochastic_depth = placeholder(float)

    config.data = ml_collections.ConfigDict()
    config.data.name = 'imagenet2012'
    config.data.data_dir = placeholder(str)  # TFDS data dir / Fashion-MNIST IDX folder
    config.data.manual_dir = placeholder(str)  # ImageNet's two ILSVRC2012 tar files
    config.data.image_size = 224
    config.data.preprocessing = 'imagenet'  # 'imagenet' | 'small'
    config.data.crop_padding = 4  # 'small': zero padding before the random crop
    # Mirror training images left-right with probability 1/2 after the crop (both
    # preprocessings); every release recipe but imagenet_randaug (EfficientNet) does.
    config.data.random_flip = True
    # 'imagenet' eval: resize the shorter side to this, take the central image_size square
    # (the release's max_image_size); None: image_size + 32 (256 at 224, as the release).
    config.data.eval_resize = placeholder(int)
    config.data.num_train_examples = placeholder(int)  # use only the first N (None: all)
    config.data.num_eval_examples = placeholder(int)
    # Split names (TFDS split syntax for TFDS datasets; None: the dataset's train / test or
    # validation split) and the TFDS training stream's shuffle buffer (None: the dataset's).
    config.data.train_split = placeholder(str)
    config.data.eval_split = placeholder(str)
    config.data.shuffle_buffer = placeholder(int)
    # RandAugment after the training crop (and flip, if on), before normalisation (the
    # release's randaug_N / randaug_M, M on the paper's 0-30 scale); 0 operations: off. TFDS
    # datasets only. Keras's op set, not torchvision's: see preprocess.rand_augment.
    config.data.randaugment_ops = 0
    config.data.randaugment_magnitude = 10.0

    # Stage 1: base networks with the L1 sub-gradient on BN scales.
    config.base = training_section()
    config.base.widths = (0.75, 1.0)

    # Stage 2: multi-base pruning (one keep ratio or MACs target per base), SCS, ZPM.
    config.prune = ml_collections.ConfigDict()
    config.prune.keep_ratios = (0.5484, 0.526)
    config.prune.macs_targets = ()  # MACs per pruned sub-network; when set, replaces keep_ratios
    # How residual streams are pruned (`spnet_jax.pruning.zpm.VARIANTS`): 'release' (the
    # release's zero-padding-match: each block end and shortcut keeps its own top channels,
    # the stream is their union), 'aligned' (ZPM whose branches keep prefixes of one channel
    # order per stream, scored jointly: a stream is as wide as its widest branch, a junction
    # is a zero-pad and an add; the fast one, README "Pruning options"), 'none' (one channel
    # set per stream, as without residual pruning). A saved config's True / False reads as
    # 'release' / 'none'.
    config.prune.zpm = 'release'
    config.prune.min_channels_ratio = 0.1
    config.prune.importance = 'bn'  # 'bn' (|gamma|) | 'l1' (filter L1 norm)
    config.prune.start = 'finetune'  # 'finetune' (largest base's weights) | 'reinit'
    # Each pruned layer's channel count a multiple of this (1: the release's exact counts; 8
    # suits CPU/GPU vector widths). With MACs targets, a step too coarse for their tolerance
    # is refused before any work starts.
    config.prune.round_to = 1
    config.prune.macs_tolerance = 0.01  # how close each MACs target must be met (fraction)
    # Prune to measured time instead (they replace MACs targets and keep ratios): ms per batch
    # of eval.latency_batch images on the backend that prunes, one per pruned sub-network,
    # ascending; or latency_widths: each target is the measured time of the uniform network
    # (S-Net's sub-network) at that width, timed in the same process. Needs prune.zpm
    # 'aligned' or 'none'. Each met within latency_tolerance (README "Latency targets").
    config.prune.latency_targets = ()
    config.prune.latency_widths = ()
    config.prune.latency_tolerance = 0.05

    # Stage 3: slimmable training of every sub-network with in-place distillation.
    config.slim = training_section(epochs=60.0, lr=0.01, lr_boundaries=(30, 45), lr_decay=0.1,
                                   bn_scale_init=1.0)
    config.slim.widths = (0.25, 0.5, 0.75, 1.0)  # S-Net widths (method='snet' only)
    config.slim.kd_alpha = 0.9
    config.slim.kd_temperature = 1.0
    # After training, drop the last sub-network (a training scaffold, e.g. MobileNetV1's x1.5)
    # so the published network ends at the largest pruned one (the release's eliminate_width).
    config.slim.drop_scaffold = False
    # S-Net only: start from the trained base of the full width (stages base,slim,...; each
    # width its prefix) instead of from scratch: the warm-start ablation of SP-Net.
    config.slim.init_from_base = False

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


def to_snet(config: ml_collections.ConfigDict, widths, *,
            inplace_distillation: bool = False) -> ml_collections.ConfigDict:
    """The S-Net baseline of an SP-Net config, as the release's ``s_*.yml`` train it: the same
    data, model and base recipe, trained from scratch as a slimmable network of uniform
    ``widths`` with switchable BatchNorm (scales start at 1), no sparsity penalty.

    The release's S-Net has no in-place distillation (``inplace_kd`` is off in every
    ``s_*.yml``): ``slim.kd_alpha = 0`` trains each width on the labels alone.
    ``inplace_distillation=True`` gives this project's baseline that differs from the SP-Net
    fine-tuning only in the structures (KD alpha 0.9, T 1).
    """
    config.method = 'snet'
    config.stages = 'slim,eval'
    base = config.base
    config.slim = training_section(
        epochs=base.epochs, num_steps=base.num_steps, batch_size=base.batch_size, lr=base.lr,
        schedule=base.schedule, lr_boundaries=base.lr_boundaries, lr_decay=base.lr_decay,
        warmup_epochs=base.warmup_epochs, weight_decay=base.weight_decay,
        momentum=base.momentum, label_smoothing=base.label_smoothing,
        mixup_alpha=base.mixup_alpha, ema_decay=base.ema_decay, sparsity=0.0,
        bn_scale_init=1.0, optimizer=base.optimizer)
    config.slim.widths = tuple(widths)
    config.slim.kd_alpha = 0.9 if inplace_distillation else 0.0
    config.slim.kd_temperature = 1.0
    config.slim.drop_scaffold = False
    config.slim.init_from_base = False
    config.model.full_width = float(max(widths))
    return config


def to_cifar(config: ml_collections.ConfigDict, name: str, *,
             release_resolution: bool = False) -> ml_collections.ConfigDict:
    """A CIFAR-10/100 variant with the base recipe of the release's CIFAR ``*_train.yml``
    (batch 128, lr 0.1, 120 epochs, x0.2 at 60/90/110, weight decay 1e-4); the model's config
    sets the slimmable stage.

    The release runs CIFAR at 224x224 through the ImageNet stem (images upsampled by its
    random-resized crop); here the default is the data's own 32x32 with pad-crop + flip and
    the small 3x3/1 stem (49x fewer MACs). ``release_resolution=True`` is the release's way.
    """
    config.data.name = name
    config.model.num_classes = {'cifar10': 10, 'cifar100': 100}[name]
    if release_resolution:
        config.data.image_size = 224
        config.data.preprocessing = 'imagenet'
        config.model.stem = 'imagenet'
    else:
        config.data.image_size = 32
        config.data.preprocessing = 'small'
        config.model.stem = 'small'
    config.base.update(dict(epochs=120.0, batch_size=128, lr=0.1, schedule='multistep',
                            lr_boundaries=(60, 90, 110), lr_decay=0.2, warmup_epochs=0.0,
                            weight_decay=1e-4, label_smoothing=0.0))
    config.eval.batch_size = 500
    return config


def retrain_with_base_recipe(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Re-train recipes (``prune.start='reinit'``) train the slimmable network with the
    bases' schedule, optimizer and sparsity, as the release's VGG and MobileNetV1 CIFAR
    recipes do; the slim section keeps its own distillation and BN-scale init."""
    config.slim.update({k: config.base[k] for k in (
        'epochs', 'batch_size', 'lr', 'schedule', 'lr_boundaries', 'lr_decay', 'warmup_epochs',
        'weight_decay', 'optimizer', 'label_smoothing', 'sparsity')})
    return config


CIFAR_VARIANTS = ('release', 'snet')


def cifar_variant(variant: str, config_file: str) -> set[str]:
    """The comma-separated variant of a CIFAR config (``configs/<file>.py:release,snet``):
    ``release`` runs at the release's 224 px, ``snet`` gives the S-Net baseline."""
    names = {v.strip() for v in variant.split(',') if v.strip()}
    unknown = sorted(names - set(CIFAR_VARIANTS))
    if unknown:
        raise ValueError(f'configs/{config_file}.py: unknown variant {unknown[0]!r}; use any of '
                         f'{", ".join(CIFAR_VARIANTS)} (comma-separated), or none.')
    return names
