r"""Import a network trained by the original PyTorch release into a workdir.

    # a fine-tuned SP-Net: the bases it was pruned from give its channel counts (and ZPM masks)
    python -m spnet_jax.import_release --config=configs/mobilenet_v2.py \
        --checkpoint=finetuned.pt --bases=1.0=base_1.0.pt,1.3=base_1.3.pt --workdir=OUT
    # an S-Net: its channel counts come from the config's slim.widths
    python -m spnet_jax.import_release --config=configs/resnet50_snet.py \
        --checkpoint=snet.pt --workdir=OUT

``--checkpoint`` is the release's ``torch.save({'model': state_dict, ...})`` (``.pt``/``.pth``,
read with torch) or an ``.npz`` of the same keys. The network goes to ``OUT/slim`` as a
finished stage, so ``spnet_jax.load(OUT)``, ``python -m spnet_jax.evaluate --workdir=OUT``
and ``python -m spnet_jax.export --workdir=OUT`` take it as a trained run. The bases
(``--bases=WIDTH=PATH,...``, release files or Orbax stage folders, one per ``base.widths``)
are pruned exactly as ``python -m spnet_jax.prune`` does; see
`spnet_jax.train.release_import` for what comes from where.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from spnet_jax.cli import entry
from spnet_jax.core.cost import subnet_costs
from spnet_jax.core.errors import ConfigError
from spnet_jax.train.release_import import import_release

FLAGS = flags.FLAGS


def summary(arch, written: dict, image_size: int, in_channels: int = 3) -> str:
    lines = []
    for name, structure in written.items():
        lines.append(f'{name}: {structure.num_subnets} sub-networks')
        lines.append('  subnet  width   channels        MACs    params')
        for c in subnet_costs(arch, structure, image_size, in_channels):
            w = '-' if structure.widths is None else f'{structure.widths[c.subnet]:g}'
            lines.append(f'  {c.subnet:<7} {w:<7} {c.channels:<9} {c.macs / 1e6:>9.1f}M '
                         f'{c.params / 1e6:>7.3f}M')
    return '\n'.join(lines)


def main(argv) -> None:
    del argv  # entry.run refuses positional arguments
    config = entry.load_config()
    if config is None or not FLAGS.workdir:
        raise ConfigError('give --config=configs/<model>.py, --checkpoint=PATH and '
                          '--workdir=OUT.')
    done = import_release(config, FLAGS.checkpoint, FLAGS.workdir, FLAGS.bases)
    kind = 'S-Net' if config.method == 'snet' else 'SP-Net'
    print(f'Imported the release\'s {kind} {done["arch"].name} from {FLAGS.checkpoint} -> '
          + ', '.join(os.path.join(FLAGS.workdir, name) for name in done['stages']))
    print(summary(done['arch'], done['stages'], config.data.image_size, done['in_channels']))


def define_flags() -> None:
    config_flags.DEFINE_config_file('config', None, 'Model config file of the network.',
                                    lock_config=True)
    flags.DEFINE_string('checkpoint', None, "The release's checkpoint (.pt/.pth, or .npz of "
                        'its state dict).')
    flags.DEFINE_string('bases', None, 'SP-Net only: comma-separated WIDTH=PATH, the base '
                        'checkpoints it was pruned from, ascending.')
    flags.DEFINE_string('workdir', None, 'Output folder (the network goes to OUT/slim).')
