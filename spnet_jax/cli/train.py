"""Runs the SP-Net recipe (or the stages named in the config) into a workdir (``main.py``).

    python main.py --config=configs/fashion_mnist.py --workdir=/tmp/fm_run
    python main.py --config=configs/resnet50.py --workdir=/ckpt/sp_resnet50 \\
        --config.data.manual_dir=/data/imagenet_tars --config.stages=base

Rerunning the same command resumes an interrupted run and skips finished stages. A bad
config stops before any work with one sentence (exit status 2); a non-finite loss stops
training with the step and sub-network named (exit status 1).
"""

from __future__ import annotations

import jax
from absl import flags
from ml_collections import config_flags

from spnet_jax.cli import entry
from spnet_jax.core.errors import ConfigError
from spnet_jax.train import report, train_and_evaluate
from spnet_jax.train.settings import Settings

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and the report.')
    config_flags.DEFINE_config_file(
        'config', None, 'Training configuration file (configs/*.py).', lock_config=True)
    # Multi-process runs outside a cluster that JAX detects by itself (SLURM, GKE, Cloud TPU):
    # all three given (or JAX_COORDINATOR_ADDRESS set) start `jax.distributed` explicitly.
    flags.DEFINE_string('coordinator_address', None,
                        'host:port of process 0 for a multi-process run (implies distributed).')
    flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
    flags.DEFINE_integer('process_id', None, "This process's index in [0, num_processes).")


def main(argv) -> None:
    del argv  # entry.run refuses positional arguments
    config = entry.load_config()
    if config is None or not FLAGS.workdir:
        raise ConfigError('give --config=configs/<name>.py and --workdir=DIR.')
    # Both before JAX starts its backend (parsing the settings counts the devices):
    # jax.distributed must come first, and JAX fixes an array's dtype when it is made.
    if config.compute_dtype == 'float64':
        jax.config.update('jax_enable_x64', True)
    explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if config.distributed is True or any(v is not None for v in explicit):
        # Cross-process collectives of the CPU backend (ignored by TPU/GPU devices).
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        # Unset values come from the cluster's environment.
        jax.distributed.initialize(*explicit)
    settings = Settings.from_config(config)  # every field checked before any work
    # Keep TensorFlow (used by the TFDS input pipeline only) off the accelerators.
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], 'GPU')
    except (ImportError, RuntimeError):
        pass
    summary = train_and_evaluate(settings, FLAGS.workdir)
    if 'report' in summary and jax.process_index() == 0:
        print(report.markdown_table(summary['report']), end='')
