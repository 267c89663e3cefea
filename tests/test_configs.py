"""Every config: the paper's numbers, a valid config, its model and input pipeline, one step;
and bad configs stopped with one sentence before any work."""

import glob
import importlib
import os
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import needs_fashion_mnist

from spnet_jax import data as data_lib
from spnet_jax.core import sharding
from spnet_jax.core.errors import ConfigError
from spnet_jax.models import arch_from_config
from spnet_jax.train import loop, optim, train_and_evaluate, validate
from spnet_jax.train import settings as settings_lib
from spnet_jax.train import state as state_lib
from spnet_jax.train.settings import parse_stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NAMES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'configs', '*.py'))
               if not p.endswith('__init__.py'))
TFDS_NAMES = [n for n in NAMES if not n.startswith(('fashion_mnist', 'tiny'))]
# One step of this compiles in ~15 s on 2 CPU cores; the others (20-50 s each) are `slow`.
FAST_STEP = ('vgg19_cifar10',)

# (model, full width, base widths, keep ratios, start, zpm) from SPEC section 4.
RECIPES = {
    'resnet50': ('resnet50', 1.0, (0.75, 1.0), (0.5484, 0.526), 'finetune', 'release'),
    'resnet50_cifar10': ('resnet50', 1.0, (0.75, 1.0), (0.494, 0.7835), 'finetune', 'release'),
    'resnet50_cifar100': ('resnet50', 1.0, (0.75, 1.0), (0.6166, 0.7628), 'finetune', 'release'),
    'vgg19': ('vgg19', 1.0, (0.5, 0.75), (0.557, 0.7366), 'reinit', 'none'),
    'vgg19_cifar10': ('vgg19', 1.0, (0.5, 0.75), (0.6453, 0.8202), 'reinit', 'none'),
    'vgg19_cifar100': ('vgg19', 1.0, (0.5, 0.75), (0.6453, 0.8202), 'reinit', 'none'),
    'mobilenet_v2': ('mobilenet_v2', 1.3, (1.0, 1.3), (0.6725, 0.6357), 'finetune', 'release'),
    'mobilenet_v1': ('mobilenet_v1', 1.5, (0.75, 1.0, 1.3), (0.648, 0.7419, 0.7635), 'reinit',
                     'none'),
}
SNET_WIDTHS = {'resnet50_snet': (0.5, 0.75, 1.0), 'vgg19_snet': (0.25, 0.5, 1.0),
               'mobilenet_v1_snet': (0.5, 0.75, 1.0), 'mobilenet_v2_snet': (0.75, 1.0, 1.3),
               'fashion_mnist_snet': (0.5, 0.75, 1.0)}


def load(name):
    return importlib.import_module(f'configs.{name}').get_config()


@pytest.fixture(scope='module')
def imagenet_manual_dir(tmp_path_factory):
    """A manual dir with the two tar files' names: enough for the checks under mock data."""
    d = tmp_path_factory.mktemp('imagenet_manual')
    for f in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'):
        (d / f).write_bytes(b'')
    return str(d)


def runnable(name, manual_dir):
    """The config with small images and batches, unlocked for the test's overrides."""
    config = load(name)
    if config.data.name == 'imagenet2012':
        config.data.manual_dir = manual_dir
    config.data.image_size = 32
    for section in (config.base, config.slim):
        section.batch_size = 2
    config.eval.batch_size = 2
    return config


def test_recipes_follow_the_paper():
    for name, (model, full, widths, ratios, start, zpm) in RECIPES.items():
        c = load(name)
        assert c.method == 'spnet' and c.stages == 'base,prune,slim,eval', name
        assert (c.model.name, c.model.full_width, tuple(c.base.widths)) == (model, full, widths)
        assert (tuple(c.prune.keep_ratios), c.prune.start, c.prune.zpm) == (ratios, start, zpm)
        # The release's VGG on CIFAR trains its bases with s = 1e-4 (sp_vgg_cifar*_train.yml).
        sparsity = 1e-4 if name.startswith('vgg19_cifar') else 1e-5
        assert c.base.sparsity == sparsity and c.base.bn_scale_init == 0.5 and c.base.nesterov
        assert (c.slim.kd_alpha, c.slim.kd_temperature) == (
            0.9, 2.0 if model == 'mobilenet_v1' else 1.0)
    r = load('resnet50')
    assert (r.base.lr, r.base.batch_size, r.base.epochs, tuple(r.base.lr_boundaries),
            r.base.lr_decay, r.base.weight_decay) == (0.1, 256, 90, (30, 50, 70, 80), 0.2, 1e-4)
    assert (r.slim.lr, r.slim.epochs, tuple(r.slim.lr_boundaries), r.slim.lr_decay) == (
        0.01, 60, (30, 45), 0.1)
    c10 = load('resnet50_cifar10')
    assert (c10.slim.lr, c10.slim.epochs, tuple(c10.slim.lr_boundaries)) == (0.1, 60, (50,))
    for name in ('mobilenet_v1', 'mobilenet_v2'):
        c = load(name)
        assert (c.base.schedule, c.base.warmup_epochs) == ('cosine', 5.0)
    assert load('mobilenet_v2').slim.label_smoothing == 0.1
    for name, widths in SNET_WIDTHS.items():
        c = load(name)
        assert (c.method, tuple(c.slim.widths), c.stages) == ('snet', widths, 'slim,eval')
        assert c.model.full_width == widths[-1] and c.slim.sparsity == 0.0


@pytest.mark.parametrize('name', TFDS_NAMES)
def test_config_validates_and_builds_model_and_mock_pipeline(name, imagenet_manual_dir):
    config = runnable(name, imagenet_manual_dir)
    with tfds.testing.mock_data(num_examples=8):
        settings = validate.check_config(config)
        assert settings.stages == parse_stages(config.stages)
        info = data_lib.dataset_info(config.data)
        batch = next(iter(data_lib.train_batches(config.data, global_batch_size=2, seed=0)))
        eval_batch = next(iter(data_lib.eval_batches(config.data, global_batch_size=2)))
    assert info.num_classes == config.model.num_classes
    assert batch['image'].shape == (2, 32, 32, 3) and eval_batch['mask'].dtype == bool
    arch = arch_from_config(config.model)
    if config.method == 'snet':
        structures = [arch.snet_structure(tuple(config.slim.widths))]
    else:
        structures = [arch.plain_structure(w) for w in config.base.widths]
    for structure in structures:
        model = arch.module(structure)
        shapes = jax.eval_shape(lambda m=model: state_lib.init_variables(
            m, jax.random.key(0), (32, 32, 3)))
        logits = jax.eval_shape(lambda v, m=model: m.apply(v, batch['image'], subnet=0), shapes)
        assert logits.shape == (2, config.model.num_classes)


def _one_step(name, manual_dir):
    config = runnable(name, manual_dir)
    arch = arch_from_config(config.model)
    if config.method == 'snet':
        section, structure = config.slim, arch.snet_structure(tuple(config.slim.widths))
    else:  # the largest base network (the pruned network's steps are the slimmable ones)
        section, structure = config.base, arch.plain_structure(config.base.widths[-1])
    model = arch.module(structure, bn_scale_init=section.bn_scale_init)
    mesh = sharding.make_mesh()
    tx, schedule = optim.make_optimizer(section, steps_per_epoch=10, num_steps=10,
                                        table=arch.table(zpm=structure.zpm))
    variables = jax.jit(lambda r: state_lib.init_variables(model, r, (32, 32, 3)))(
        jax.random.key(0, impl='rbg'))
    state = jax.jit(lambda v: state_lib.create_state(v, tx))(variables)
    with tfds.testing.mock_data(num_examples=8):
        batch = next(iter(data_lib.train_batches(config.data, global_batch_size=2, seed=0)))
    step = loop.jit_train_step(model, structure.num_subnets, tx, schedule, mesh,
                               label_smoothing=section.label_smoothing,
                               mixup_alpha=section.mixup_alpha, seed=config.seed)
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    metrics = jax.device_get(metrics)
    assert int(state.step) == 1 and metrics['params_finite'] == 1.0
    for k in range(structure.num_subnets):
        assert np.isfinite(metrics[f'loss/subnet_{k}']) and metrics[f'loss/subnet_{k}'] > 0


@pytest.mark.parametrize('name', [
    n if n in FAST_STEP else pytest.param(n, marks=pytest.mark.slow) for n in TFDS_NAMES])
def test_config_runs_one_training_step_on_mock_data(name, imagenet_manual_dir):
    _one_step(name, imagenet_manual_dir)


def _set(config, key, value):
    section, _, field = key.rpartition('.')
    target = config
    for part in filter(None, section.split('.')):
        target = target[part]
    target[field] = value


BAD = [
    ('resnet50', 'model.name', 'resnet51', 'model.name'),
    ('resnet50_cifar10', 'data.name', 'mnist', 'data.name'),
    ('resnet50', 'stages', 'base,train', 'stages'),
    ('resnet50', 'method', 'slimmable', 'method'),
    ('resnet50', 'base.widths', (1.0, 0.75), 'ascending'),
    ('resnet50', 'base.widths', (0.75, 1.5), 'model.full_width'),
    ('resnet50', 'prune.keep_ratios', (0.5, 1.2), '(0, 1]'),
    ('resnet50', 'prune.keep_ratios', (0.0, 0.5), '(0, 1]'),
    ('resnet50', 'prune.keep_ratios', (0.5, 0.5, 0.5), 'one keep ratio per base'),
    ('resnet50', 'prune.keep_ratios', (), 'set prune.keep_ratios'),
    ('resnet50', 'prune.macs_targets', (2e9, 1e9), 'ascending'),
    ('resnet50', 'prune.macs_targets', (1e9, 2e9, 3e9), 'one MACs target per base'),
    # VGG-19 at 32 px: the x0.5 base costs 100M MACs, x0.75 225M; 500M is out of reach.
    ('vgg19_cifar10', 'prune.macs_targets', (5e7, 5e8), '[1]=5e+08 is not below the'),
    ('resnet50', 'prune.keep_ratios', (-0.5, 0.5), '(0, 1]'),
    ('resnet50', 'slim.batch_size', -8, 'slim.batch_size'),
    ('resnet50', 'eval.batch_size', 0, 'eval.batch_size'),
    ('resnet50', 'keep_checkpoints', 0, 'keep_checkpoints'),
    ('resnet50', 'prune.start', 'scratch', 'prune.start'),
    ('resnet50', 'prune.min_channels_ratio', 1.0, 'prune.min_channels_ratio'),
    ('vgg19', 'base.widths', (0.5, 1.25), 'model.full_width'),
    ('resnet50', 'base.widths', (0.5, 0.75), "prune.start='finetune'"),
    ('resnet50', 'prune.importance', 'taylor', 'prune.importance'),
    ('vgg19', 'prune.zpm', 'aligned', 'no residual'),
    ('resnet50', 'prune.zpm', 'fast', "prune.zpm='fast' is unknown; choose one of 'release'"),
    ('resnet50', 'compute_dtype', 'float16', 'compute_dtype'),
    ('resnet50', 'model.num_classes', 10, 'model.num_classes'),
    ('resnet50', 'base.batch_size', 0, 'base.batch_size'),
    ('resnet50', 'base.lr_boundaries', (50, 30), 'base.lr_boundaries'),
    ('resnet50', 'slim.kd_alpha', 1.5, 'slim.kd_alpha'),
    ('resnet50', 'slim.schedule', 'step', 'slim.schedule'),
    ('resnet50_snet', 'slim.widths', (0.75, 0.5, 1.0), 'ascending'),
    ('resnet50_snet', 'stages', 'base,slim', "method='snet'"),
    ('resnet50_snet', 'slim.widths', (0.5, 0.75), 'make them equal'),
    ('resnet50', 'model.stem', 'huge', 'model.stem'),
    ('resnet50', 'slim.drop_scaffold', True, "prune.zpm='none'"),
    ('resnet50', 'slim.optimizer', 'adam', 'slim.optimizer'),
    ('fashion_mnist', 'data.data_dir', '/nonexistent/fashion', 'data_dir'),
    ('resnet50', 'data.manual_dir', '/nonexistent/tars', 'manual_dir'),
    ('efficientnet_b2', 'prune.zpm', 'release',
     "ZPM (prune.zpm='release' or 'aligned') is not supported for efficientnet_b2"),
    ('fashion_mnist_converged', 'prune.round_to', 64,
     'prune.round_to=64 cannot meet prune.macs_targets'),
    ('resnet50', 'model.stochastic_depth', 0.2, 'EfficientNet only'),
    ('efficientnet_b2', 'model.dropout', 1.5, 'model.dropout=1.5 must be in [0, 1)'),
    ('resnet50', 'base.mixup_alpha', -0.2, 'base.mixup_alpha'),
    ('resnet50', 'slim.ema_decay', 1.0, 'slim.ema_decay=1.0 must be in [0, 1)'),
    ('efficientnet_b2', 'data.randaugment_magnitude', 45.0, 'data.randaugment_magnitude'),
    ('fashion_mnist', 'data.randaugment_ops', 2, 'data.randaugment_ops=2 needs a TFDS dataset'),
    ('efficientnet_b2', 'data.eval_resize', 200,
     'data.eval_resize=200 is smaller than data.image_size=256'),
]


@pytest.mark.parametrize('name,key,value,fragment', BAD,
                         ids=[f'{b[1]}={b[2]!r}' for b in BAD])
def test_bad_config_stops_with_one_sentence_before_any_work(name, key, value, fragment,
                                                            tmp_path, imagenet_manual_dir):
    config = load(name)
    if config.data.name == 'imagenet2012':
        config.data.manual_dir = imagenet_manual_dir
    _set(config, key, value)
    workdir = tmp_path / 'run'
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(config, str(workdir))
    message = str(error.value)
    assert fragment in message
    assert '\n' not in message and message.endswith('.'), message
    assert not workdir.exists()


def test_bases_can_be_trained_one_width_per_job(imagenet_manual_dir):
    """Side by side: each job trains one base; the prune stage later checks them together."""
    config = load('resnet50')
    config.data.manual_dir = imagenet_manual_dir
    config.stages = 'base'
    config.base.widths = (0.75,)
    assert validate.check_config(config).stages == ('base',)
    config.stages = 'base,prune'
    config.prune.keep_ratios = (0.5,)  # one per base, as a whole recipe would have
    with pytest.raises(ConfigError, match="prune.start='finetune' starts from the largest"):
        validate.check_config(config)


def test_keep_ratios_need_not_ascend(imagenet_manual_dir):
    config = load('resnet50')
    config.data.manual_dir = imagenet_manual_dir
    config.prune.keep_ratios = (0.8, 0.3)  # a small cut of the small base, a big of the big
    assert validate.check_config(config).stages == ('base', 'prune', 'slim', 'eval')


def _one_sentence(error):
    message = str(error.value)
    assert '\n' not in message and message.endswith('.'), message
    return message


def test_batch_size_not_divisible_by_the_devices_is_refused(monkeypatch, imagenet_manual_dir):
    config = load('resnet50')
    config.data.manual_dir = imagenet_manual_dir
    config.base.batch_size = 250
    monkeypatch.setattr(settings_lib.jax, 'device_count', lambda: 8)
    with pytest.raises(ConfigError) as error:
        validate.check_config(config)
    message = _one_sentence(error)
    assert 'base.batch_size=250' in message and 'multiple of the 8 devices' in message
    assert 'e.g. 248' in message


def test_data_dir_without_the_files_is_refused(tmp_path):
    config = load('fashion_mnist')
    config.data.data_dir = str(tmp_path)  # exists, but holds no IDX files
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(config, str(tmp_path / 'run'))
    message = _one_sentence(error)
    assert 'data_dir' in message and str(tmp_path) in message
    assert not (tmp_path / 'run').exists()


@needs_fashion_mnist
def test_unwritable_workdir_is_refused(tmp_path):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(load('tiny'), str(blocker / 'run'))
    message = _one_sentence(error)
    assert f'--workdir={blocker / "run"} is not writable' in message


@needs_fashion_mnist
def test_base_widths_that_do_not_match_the_base_checkpoints_are_refused(tmp_path):
    """A finished base folder holding another width (or another model) than base.widths."""
    from spnet_jax.workdir import checkpoint

    config = load('tiny')
    config.stages = 'prune,slim,eval'
    arch = arch_from_config(config.model)
    for width in config.base.widths:  # base_0.25 holds a x0.5 network
        os.makedirs(checkpoint.base_dir(str(tmp_path), width))
        arch.plain_structure(0.5).save(os.path.join(checkpoint.base_dir(str(tmp_path), width),
                                                    checkpoint.STRUCTURE))
        checkpoint.mark_done(checkpoint.base_dir(str(tmp_path), width), {'step': 4})
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(config, str(tmp_path))
    message = _one_sentence(error)
    assert message.startswith('base.widths has 0.25, but ') and 'base_0.25' in message
    assert 'not resnet20 at x0.25' in message
    vgg = arch_from_config(load('vgg19_cifar10').model)
    vgg.plain_structure(0.25).save(os.path.join(checkpoint.base_dir(str(tmp_path), 0.25),
                                                checkpoint.STRUCTURE))
    with pytest.raises(ConfigError, match='holds a vgg19, not resnet20 at x0.25'):
        train_and_evaluate(config, str(tmp_path))
    assert not os.path.exists(checkpoint.stage_dir(str(tmp_path), 'pruned'))


@needs_fashion_mnist
def test_pruned_network_of_another_model_is_refused(tmp_path):
    from spnet_jax.workdir import checkpoint

    config = load('tiny')
    config.stages = 'slim,eval'
    pruned = checkpoint.stage_dir(str(tmp_path), 'pruned')
    os.makedirs(pruned)
    arch_from_config(load('vgg19_cifar10').model).plain_structure(0.25).save(
        os.path.join(pruned, checkpoint.STRUCTURE))
    checkpoint.mark_done(pruned, {'step': 0})
    with pytest.raises(ConfigError) as error:
        train_and_evaluate(config, str(tmp_path))
    assert "holds a vgg19 network that is not model.name='resnet20'" in _one_sentence(error)
