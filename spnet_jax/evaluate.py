r"""(Re-)evaluate the slimmable network of a workdir and write its report.

    python -m spnet_jax.evaluate --workdir=/ckpt/sp_r50
    python -m spnet_jax.evaluate --workdir=/ckpt/sp_r50 --baseline_workdir=/ckpt/snet_r50 \
        --latency_batch=1 --data_dir=/data/tfds

Runs the eval stage of ``main.py`` on a finished workdir with the config saved in it
(``slim/config.json``), always, even when that stage finished before: top-1/top-5,
MACs, params and latency of every sub-network, written to ``<workdir>/report.json``,
``report.md`` and ``accuracy_vs_flops.png``; with ``--baseline_workdir`` (a finished run,
e.g. the S-Net baseline) its sub-networks join the table and the plot. The flags override the
saved ``eval.*`` / ``data.*`` fields. (``main.py --config.stages=eval`` does the same from a
config file, but skips an eval stage that has finished.)
"""

from __future__ import annotations

import logging as std_logging
import os
import sys
from typing import Any

import ml_collections
from absl import app, flags, logging

from spnet_jax.errors import ConfigError

FLAGS = flags.FLAGS


def _define_flags() -> None:
    flags.DEFINE_string('workdir', None, 'A workdir of main.py with a finished slim/ stage.')
    flags.DEFINE_string('baseline_workdir', None,
                        'A finished baseline run (e.g. the S-Net) to draw beside this one.')
    flags.DEFINE_integer('latency_batch', None, 'Images per timed forward pass (0: no '
                         'latency); default: the config\'s eval.latency_batch.')
    flags.DEFINE_integer('latency_runs', None, 'Timed forward passes per sub-network (the '
                         'median is reported); default: eval.latency_runs.')
    flags.DEFINE_integer('batch_size', None, 'Evaluation batch (default: eval.batch_size).')
    flags.DEFINE_integer('bn_calibration_batches', None,
                         'Recompute BN statistics on this many training batches first.')
    flags.DEFINE_string('data_dir', None, 'Where the dataset is on this machine (default: '
                        'the data.data_dir the run was trained with).')
    flags.mark_flag_as_required('workdir')


def saved_config(workdir: str) -> ml_collections.ConfigDict:
    """The config that trained ``workdir``'s slimmable network, with the eval options added
    since filled in with their defaults."""
    from spnet_jax.train import checkpoint
    from spnet_jax.train.evaluate import REPORT_OPTIONS

    path = os.path.join(checkpoint.final_network_dir(workdir), checkpoint.CONFIG)
    if not os.path.exists(path):
        raise ConfigError(f'{workdir} has no slimmable network with its config ({path}); '
                          'give the --workdir of a main.py run whose slim stage has finished.')
    config = ml_collections.ConfigDict(checkpoint.read_json(path))
    for name, value in REPORT_OPTIONS.items():
        if name not in config.eval:
            config.eval[name] = value
    return config


def evaluate_workdir(workdir: str, **overrides: Any) -> list[dict[str, Any]]:
    """Evaluates ``workdir``'s finished slimmable network and writes its report; returns the
    report rows. ``overrides``: ``eval.*`` or ``data.*`` fields (``baseline_workdir``,
    ``latency_batch``, ``batch_size``, ``bn_calibration_batches``, ``data_dir``, ...)."""
    import jax

    from spnet_jax.train import pipeline, sharding, validate

    config = saved_config(workdir)
    for name, value in overrides.items():
        if value is None:
            continue
        section = config.data if name in config.data and name not in config.eval else config.eval
        section[name] = value
    config.stages = 'eval'
    validate.check_config(config)
    validate.check_workdir(config, workdir, ('eval',))
    logging.info('Evaluating %s on %d devices.', workdir, jax.device_count())
    return pipeline.run_eval(config, workdir, pipeline.build_arch(config),
                             pipeline.input_shape(config), sharding.make_mesh(), force=True)


class _Quiet(std_logging.Filter):
    """Keeps the terminal to this tool's lines: drops the libraries' INFO chatter (Orbax's
    checkpoint reads and friends); their warnings stay."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or '/spnet_jax/' in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments {argv[1:]}')
    from spnet_jax.train import report

    logging.get_absl_logger().addFilter(_Quiet())

    try:
        rows = evaluate_workdir(
            FLAGS.workdir, baseline_workdir=FLAGS.baseline_workdir,
            latency_batch=FLAGS.latency_batch, latency_runs=FLAGS.latency_runs,
            batch_size=FLAGS.batch_size,
            bn_calibration_batches=FLAGS.bn_calibration_batches, data_dir=FLAGS.data_dir)
    except ConfigError as e:
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
    with open(os.path.join(FLAGS.workdir, report.TABLE)) as fh:
        print(fh.read(), end='')
    print(f'{len(rows)} sub-networks evaluated; report in '
          f'{os.path.join(FLAGS.workdir, report.REPORT)} (+ {report.TABLE}, {report.PLOT}).')

if __name__ == '__main__':
    _define_flags()
    app.run(main)
