r"""Export one sub-network of a slimmable network as a standalone network.

    python -m spnet_jax.export --workdir=W --subnet=0 --out=DIR     # index, or a width label
    python -m spnet_jax.export --workdir=W --all --out=DIR          # DIR/subnet_<k>/ for each k
    python -m spnet_jax.export --workdir=W --switchable --out=DIR   # one artifact, every width

What ``DIR`` holds: see `spnet_jax.workdir.export`.
"""

from __future__ import annotations

import os

from absl import flags

from spnet_jax.core.errors import ConfigError
from spnet_jax.workdir.export import (
    ARTIFACT,
    PLATFORMS,
    export_all,
    export_subnet,
    export_switchable,
)

FLAGS = flags.FLAGS
READS_ONLY = True  # never writes into the workdir it reads (entry keeps error.log out of it)


def parse_subnet(text: str | None) -> int | float:
    if text is None or not text.strip():
        raise ConfigError('give --subnet=K (an index, 0 = smallest, -1 = full, or a width) '
                          'or --all.')
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ConfigError(f'--subnet={text!r} is neither an index nor a width; e.g. --subnet=0.')


def main(argv) -> None:
    del argv  # entry.run refuses positional arguments
    if not FLAGS.workdir or not FLAGS.out:
        raise ConfigError('give --workdir=W (the network) and --out=DIR (where to write).')
    if sum([FLAGS.all, FLAGS.subnet is not None, FLAGS.switchable]) > 1:
        raise ConfigError('give one of --subnet=K, --all and --switchable.')
    kw = dict(overwrite=FLAGS.overwrite, image_size=FLAGS.image_size, platforms=FLAGS.platforms)
    if FLAGS.switchable:
        info = export_switchable(FLAGS.workdir, FLAGS.out, serving_batch=FLAGS.serving_batch,
                                 saved_model=FLAGS.saved_model, tflite=FLAGS.tflite, **kw)
        print(f'{info["arch"]}: {info["num_subnets"]} sub-networks in one artifact -> '
              f'{os.path.join(FLAGS.out, ARTIFACT)} ({info["weight_bytes"] / 1e6:.2f} MB of '
              'weights, stored once); call exported.call(images, np.int32(k))')
        for row in info['subnets']:
            print(f'  sub-network {row["subnet"]}: {row["macs"] / 1e6:.1f}M MACs, '
                  + ', '.join(f'{ms:.3g} ms at batch {b}' for b, ms in row['latency_ms'].items()))
        for what in ('saved_model', 'tflite'):
            if what in info:
                print(f'  {what}: {os.path.join(FLAGS.out, info[what]["folder"])}')
        return
    if FLAGS.saved_model or FLAGS.tflite:
        raise ConfigError('--saved_model and --tflite go with --switchable.')
    if FLAGS.all:
        infos = export_all(FLAGS.workdir, FLAGS.out, **kw)
        where = [os.path.join(FLAGS.out, f'subnet_{i["subnet"]}') for i in infos]
    else:
        infos = [export_subnet(FLAGS.workdir, parse_subnet(FLAGS.subnet), FLAGS.out, **kw)]
        where = [FLAGS.out]
    for info, folder in zip(infos, where, strict=True):
        print(f'{info["arch"]} sub-network {info["subnet"]}: {info["macs"] / 1e6:.1f}M MACs, '
              f'{info["params"] / 1e6:.3f}M params -> {folder} ({ARTIFACT}, input '
              f'{info["input_shape"]})')


def define_flags() -> None:
    flags.DEFINE_string('workdir', None, 'Workdir (or stage folder) of the network to export.')
    flags.DEFINE_string('subnet', None, 'Sub-network: index (0 = smallest, -1 = full) or width.')
    flags.DEFINE_bool('all', False, 'Export every sub-network, into OUT/subnet_<k>/.')
    flags.DEFINE_bool('switchable', False, 'One artifact for every sub-network, chosen at run '
                      'time: exported.call(images, np.int32(k)).')
    flags.DEFINE_bool('saved_model', False, 'With --switchable: also a TF SavedModel '
                      '(signature serving_default(images, subnet)) in OUT/saved_model.')
    flags.DEFINE_bool('tflite', False, 'With --switchable: also a TFLite flatbuffer per '
                      'sub-network (batch 1) in OUT/tflite.')
    flags.DEFINE_integer('serving_batch', 32, 'With --switchable: the batch (besides 1) each '
                         "width's latency is measured at, into export.json.")
    flags.DEFINE_string('out', None, 'Folder to write the export to (new or empty).')
    flags.DEFINE_bool('overwrite', False, 'Replace an earlier export in --out.')
    flags.DEFINE_integer('image_size', None, 'Input height/width of the artifact (default: the '
                         "network's config, else 224).")
    flags.DEFINE_list('platforms', list(PLATFORMS), 'Platforms the artifact may run on.')
