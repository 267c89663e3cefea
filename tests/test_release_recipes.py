"""Every config reproduces its release recipe (``apps/*.yml``) field by field.

The release's settings are data (``tests/data/release_recipes.json``, from
``../shared/release_recipes.md``); `expected` maps a recipe's keys to this project's config
fields the way the release's code reads them (a key absent from a recipe takes
``default_setting.yml``). The only differences allowed are the deliberate ones listed in
``DELIBERATE`` (and in the README's config table).
"""

import importlib
import json
import os
import sys

import pytest

from spnet_jax.data import specs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

with open(os.path.join(ROOT, 'tests', 'data', 'release_recipes.json')) as fh:
    RELEASE = json.load(fh)['recipes']

# (config file, variant) -> (base training recipe, slimmable recipe). The CIFAR configs'
# ``release`` variant runs at the release's 224 px; their default differs only there.
SPNET = {
    ('resnet50', ''): ('sp_resnet_imagenet_train', 'sp_resnet_imagenet_finetune'),
    ('resnet50_cifar10', 'release'): ('sp_resnet_cifar10_train', 'sp_resnet_cifar10_finetune'),
    ('resnet50_cifar100', 'release'): ('sp_resnet_cifar100_train',
                                       'sp_resnet_cifar100_finetune'),
    ('vgg19', ''): ('sp_vgg_imagenet_train', 'sp_vgg_imagenet_finetune'),
    ('vgg19_cifar10', 'release'): ('sp_vgg_cifar10_train', 'sp_vgg_cifar10_finetune'),
    ('vgg19_cifar100', 'release'): ('sp_vgg_cifar100_train', 'sp_vgg_cifar100_finetune'),
    ('mobilenet_v1', ''): ('sp_mobilenet_v1_imagenet_train', 'sp_mobilenet_v1_imagenet_finetune'),
    ('mobilenet_v1_cifar100', 'release'): ('sp_mobilenet_v1_cifar100_train',
                                           'sp_mobilenet_v1_cifar100_finetune'),
    ('mobilenet_v2', ''): ('sp_mobilenet_v2_imagenet_train', 'sp_mobilenet_v2_imagenet_finetune'),
    ('resnetd50', ''): ('sp_resnetd_imagenet_train', 'sp_resnetd_imagenet_finetune'),
    ('efficientnet_b2', ''): ('sp_efficientnet_imagenet_train',
                              'sp_efficientnet_imagenet_finetune'),
}
SNET = {
    ('resnet50_snet', ''): 's_resnet_imagenet',
    ('vgg19_snet', ''): 's_vgg_imagenet',
    ('mobilenet_v1_snet', ''): 's_mobilenet_v1_imagenet',
    ('mobilenet_v2_snet', ''): 's_mobilenet_v2_imagenet',
    ('resnet50_cifar10', 'release,snet'): 's_resnet_cifar10',
    ('resnet50_cifar100', 'release,snet'): 's_resnet_cifar100',
    ('vgg19_cifar10', 'release,snet'): 's_vgg_cifar10',
    ('vgg19_cifar100', 'release,snet'): 's_vgg_cifar100',
    ('mobilenet_v1_cifar100', 'release,snet'): 's_mobilenet_v1_cifar100',
}
# Deliberate differences: (config file, variant, field) -> (this project's value, why).
DELIBERATE = {
    ('mobilenet_v1', '', 'slim.drop_scaffold'): (
        True, 'the published MobileNetV1 has its x1.5 scaffold eliminated; the yml has '
        'eliminate_width commented out and the release applied it when loading the model'),
    ('mobilenet_v1_cifar100', 'release', 'slim.drop_scaffold'): (True, 'as mobilenet_v1'),
}
DATASETS = {'imagenet': 'imagenet2012', 'imagenet_randaug': 'imagenet2012',
            'cifar10': 'cifar10', 'cifar100': 'cifar100'}
SCHEDULES = {'multistep': 'multistep', 'cosine_decaying': 'cosine'}


def recipe(name):
    return {**RELEASE['default_setting']['settings'], **RELEASE[name]['settings']}


def model_name(r):
    name = r['model'].removeprefix('models.sp_')
    if name in ('resnet', 'resnetd'):
        return f'{name}{r["depth"]}'
    if name == 'efficientnet':
        return f'efficientnet_{r["type"]}'
    return 'vgg19' if name == 'vgg' else name  # the release's VGG is VGG-19 with BN


def training(r, prefix):
    """A recipe's training settings as this project's section fields."""
    out = {
        'batch_size': r['batch_size'], 'optimizer': r['optimizer'], 'momentum': r['momentum'],
        'nesterov': r['nesterov'], 'weight_decay': r['weight_decay'], 'lr': r['lr'],
        'schedule': SCHEDULES[r['lr_scheduler']], 'epochs': float(r['num_epochs']),
        'warmup_epochs': float(r['warmup_epochs']), 'label_smoothing': r['label_smoothing'],
        'mixup_alpha': r['mixup_alpha'] if r['mixup'] else 0.0,
        'ema_decay': r['EMA_decay'] if r['enable_EMA'] else 0.0,
        # update_BN switches the L1 sub-gradient on; its rate is slimming_sparsity_rate.
        'sparsity': r['slimming_sparsity_rate'] if r['update_BN'] else 0.0,
        # reset_parameters: SP-Net BNs start at init_bn_val, the S-Net's switchable ones at 1.
        'bn_scale_init': r['init_bn_val'] if r['sp_model'] else 1.0,
    }
    if out['schedule'] == 'multistep':
        out['lr_boundaries'] = tuple(r['multistep_lr_milestones'])
        out['lr_decay'] = r['multistep_lr_gamma']
    return {f'{prefix}.{k}': v for k, v in out.items()}


def common(r):
    randaug = r['dataset'] == 'imagenet_randaug'
    out = {'model.name': model_name(r), 'data.name': DATASETS[r['dataset']],
           'data.image_size': r['image_size'],
           # The release's RandAugment runs only in its 'imagenet_randaug' dataset, whose
           # torchvision pipeline (RandomResizedCrop, RandAugment) has no flip; every other
           # dataset's albumentations pipeline has HorizontalFlip(p=0.5) after the crop.
           'data.randaugment_ops': r['randaug_N'] if randaug else 0,
           'data.random_flip': not randaug,
           # Both pipelines' eval resize the shorter side to max_image_size and center-crop
           # image_size (SmallestMaxSize / Resize, then CenterCrop): the parsed value, as an
           # unset data.eval_resize reads as image_size + 32.
           'settings:eval_resize': r['max_image_size']}
    if out['data.randaugment_ops']:
        out['data.randaugment_magnitude'] = float(r['randaug_M'])
    if out['model.name'].startswith('efficientnet'):  # only its model reads this key
        out['model.stochastic_depth'] = r['stochastic_depth_prob']
    return out


def slimmable(r):
    out = training(r, 'slim')
    out['slim.kd_alpha'] = r['kd_alpha'] if r['inplace_kd'] else 0.0
    out['slim.kd_temperature'] = float(r['kd_T'])
    return out


def expected_spnet(train_name, finetune_name):
    train, tune = recipe(train_name), recipe(finetune_name)
    assert train['width_mult_list'] == [1.0]  # edited per base when training the bases
    assert tune['multi_base_pruning'] and tune['slimmable_training']
    assert tune['multi_base_model_path'] == tune['base_width_mult_list']
    want = {**common(train), **common(tune), **training(train, 'base'), **slimmable(tune)}
    want.update({
        'method': 'spnet',
        'base.widths': tuple(tune['base_width_mult_list']),
        'prune.keep_ratios': tuple(tune['width_mult_list'][:-1]),
        'model.full_width': float(tune['width_mult_list'][-1]),
        'prune.zpm': 'release' if tune['zpm_pruning'] else 'none',  # the variant named
        'prune.min_channels_ratio': tune['min_size_ratio'],
        'prune.importance': 'l1' if tune['l1_based_pruning'] else 'bn',
        'prune.start': 'reinit' if tune['reinit_params'] else 'finetune',
        'slim.drop_scaffold': tune['eliminate_width'],
    })
    assert tune['set_pretrained_base'] != tune['reinit_params']
    return want


def expected_snet(name):
    r = recipe(name)
    assert r['slimmable_training'] and not r['sp_model']
    want = {**common(r), **slimmable(r)}
    want.update({'method': 'snet', 'slim.widths': tuple(r['width_mult_list']),
                 'model.full_width': float(r['width_mult_list'][-1]),
                 'slim.drop_scaffold': False})
    return want


def field(config, dotted):
    if dotted.startswith('settings:'):  # the data section as the pipeline reads it
        return getattr(specs.parse_settings(config.data), dotted.removeprefix('settings:'))
    value = config
    for part in dotted.split('.'):
        value = value[part]
    return tuple(value) if isinstance(value, list | tuple) else value


def load(name, variant):
    module = importlib.import_module(f'configs.{name}')
    return module.get_config(variant) if variant else module.get_config()


def check(name, variant, want):
    config = load(name, variant)
    differs = {}
    for key, value in want.items():
        got = field(config, key)
        ok = got == value if not isinstance(value, float) else abs(got - value) < 1e-12
        if (name, variant, key) in DELIBERATE:
            assert got == DELIBERATE[(name, variant, key)][0], (name, key, got)
        elif not ok:
            differs[key] = (got, value)
    assert not differs, f'{name}:{variant} differs from the release (ours, release): {differs}'


@pytest.mark.parametrize('name,variant', sorted(SPNET))
def test_spnet_config_is_the_release_recipe(name, variant):
    check(name, variant, expected_spnet(*SPNET[(name, variant)]))


@pytest.mark.parametrize('name,variant', sorted(SNET))
def test_snet_config_is_the_release_recipe(name, variant):
    check(name, variant, expected_snet(SNET[(name, variant)]))


@pytest.mark.parametrize('name', ['resnet50_cifar10', 'resnet50_cifar100', 'vgg19_cifar10',
                                  'vgg19_cifar100', 'mobilenet_v1_cifar100'])
def test_cifar_default_differs_from_the_release_only_in_resolution(name):
    """32 px with the small 3x3/1 stem and pad-crop augmentation, or the release's 224 px."""
    release, ours = load(name, 'release'), load(name, '')
    assert (ours.data.image_size, ours.model.stem, ours.data.preprocessing) == (
        32, 'small', 'small')
    assert (release.data.image_size, release.model.stem, release.data.preprocessing) == (
        224, 'imagenet', 'imagenet')
    for section in ('base', 'prune', 'slim', 'eval', 'method', 'seed'):
        assert ours[section] == release[section], section


def test_every_release_recipe_of_these_architectures_has_a_config():
    covered = {n for pair in SPNET.values() for n in pair} | set(SNET.values())
    wanted = {n for n in RELEASE if n != 'default_setting'}
    assert wanted == covered, sorted(wanted ^ covered)


def test_an_unknown_variant_is_refused_with_its_name():
    with pytest.raises(ValueError, match="unknown variant 'huge'"):
        load('resnet50_cifar10', 'huge')
