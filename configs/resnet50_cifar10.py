"""SP-ResNet-50 on CIFAR-10, the release's recipe (``apps/sp_resnet_cifar10_{train,finetune}
.yml``): bases x0.75 / 1.0 trained 120 epochs, keep ratios 0.494 / 0.7835, ZPM, fine-tuning
60 epochs at lr 0.1 (x0.1 at 50).

    python main.py --config=configs/resnet50_cifar10.py --workdir=W            # 32 px
    python main.py --config=configs/resnet50_cifar10.py:release --workdir=W    # 224 px
    python main.py --config=configs/resnet50_cifar10.py:snet --workdir=W       # S-Net

Variants (comma-separated): ``release`` runs at 224 px through the ImageNet stem as the
release does (the default is 32 px with the small stem); ``snet`` is the release's S-Net
(``s_resnet_cifar10.yml``: x0.5 / 0.75 / 1.0 from scratch).

The data is TFDS's ``cifar10``: downloaded (170 MB) and prepared into ``data.data_dir``
(TFDS's default, ``~/tensorflow_datasets``, when unset) before the first stage writes
anything. On a machine without network, prepare it elsewhere (``tfds build cifar10
--data_dir=DIR``), copy DIR over and pass ``--config.data.data_dir=DIR``.
"""

from configs import default, resnet50


def get_config(variant: str = ''):
    return cifar_resnet50('cifar10', (0.494, 0.7835), variant)


def cifar_resnet50(dataset: str, keep_ratios, variant: str):
    variants = default.cifar_variant(variant, f'resnet50_{dataset}')
    config = default.to_cifar(resnet50.get_config(), dataset,
                              release_resolution='release' in variants)
    config.prune.keep_ratios = tuple(keep_ratios)
    config.slim.update(dict(epochs=60.0, batch_size=128, lr=0.1, schedule='multistep',
                            lr_boundaries=(50,), lr_decay=0.1, sparsity=1e-5))
    if 'snet' in variants:
        config = default.to_snet(config, (0.5, 0.75, 1.0))
    return config
