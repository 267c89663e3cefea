"""Runs the SP-Net recipe (or the stages named in the config) into a workdir.

    python main.py --config=configs/fashion_mnist.py --workdir=/tmp/fm_run
    python main.py --config=configs/resnet50.py --workdir=/ckpt/sp_resnet50 \\
        --config.data.manual_dir=/data/imagenet_tars --config.stages=base

Rerunning the same command resumes an interrupted run and skips finished stages. A bad
config stops before any work with one sentence (exit status 2); a non-finite loss stops
training with the step and sub-network named (exit status 1).
"""

import logging as std_logging
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS

flags.DEFINE_string('workdir', None, 'Folder for checkpoints, metrics and the report.')
config_flags.DEFINE_config_file(
    'config', None, 'Training configuration file (configs/*.py).', lock_config=True)
# Multi-process runs outside a cluster that JAX detects by itself (SLURM, GKE, Cloud TPU):
# all three given (or JAX_COORDINATOR_ADDRESS set) start `jax.distributed` explicitly.
flags.DEFINE_string('coordinator_address', None,
                    'host:port of process 0 for a multi-process run (implies distributed).')
flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
flags.DEFINE_integer('process_id', None, "This process's index in [0, num_processes).")
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(std_logging.Filter):
    """Drops the INFO chatter of Orbax and friends from the terminal (warnings stay)."""

    NOISY = ('/orbax/', '/jax/_src/xla_bridge.py', '/clu/metric_writers/logging_writer.py')

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self.NOISY)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError('Too many command-line arguments.')
    config = FLAGS.config
    if config.get('compute_dtype') == 'float64':
        # Before anything builds an array: JAX fixes an array's dtype when it is made.
        jax.config.update('jax_enable_x64', True)
    logging.get_absl_logger().addFilter(_QuietLibraries())
    explicit = (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    if config.distributed or any(v is not None for v in explicit):
        # Cross-process collectives of the CPU backend (ignored by TPU/GPU devices).
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')
        # Unset values come from the cluster's environment.
        jax.distributed.initialize(*explicit)

    # Keep TensorFlow (used by the TFDS input pipeline only) off the accelerators.
    try:
        import tensorflow as tf

        tf.config.set_visible_devices([], 'GPU')
    except (ImportError, RuntimeError):
        pass

    from spnet_jax.errors import ConfigError
    from spnet_jax.train import loop, metrics, report, train_and_evaluate

    logging.info('JAX process: %d / %d', jax.process_index(), jax.process_count())
    logging.info('JAX local devices: %r', jax.local_devices())
    try:
        summary = train_and_evaluate(config, FLAGS.workdir)
    except ConfigError as e:
        print(f'Config error: {e}', file=sys.stderr)
        sys.exit(2)
    except metrics.NonFiniteLossError as e:
        print(f'Training error: {e}', file=sys.stderr)
        sys.exit(1)
    except loop.Preempted as e:
        print(str(e), file=sys.stderr)
        sys.exit(1)
    if 'report' in summary and jax.process_index() == 0:
        print(report.markdown_table(summary['report']), end='')


if __name__ == '__main__':
    app.run(main)
