r"""(Re-)evaluate the slimmable network of a workdir and write its report.

    python -m spnet_jax.evaluate --workdir=/ckpt/sp_r50
    python -m spnet_jax.evaluate --workdir=/ckpt/sp_r50 --baseline_workdir=/ckpt/snet_r50 \
        --latency_batch=1 --data_dir=/data/tfds

Runs the eval stage of ``main.py`` on a finished workdir with the config saved in it (in
``slim/``, or ``published/``), always, even when that stage finished before: top-1/top-5,
MACs, params and latency of every sub-network, written to ``<workdir>/report.json``,
``report.md`` and ``accuracy_vs_flops.png``; with ``--baseline_workdir`` (a finished run,
e.g. the S-Net baseline) its sub-networks join the table and the plot. The flags override the
saved ``eval.*`` / ``data.*`` fields. (``main.py --config.stages=eval`` does the same from a
config file, but skips an eval stage that has finished.)
"""

from __future__ import annotations

import os

from absl import flags

from spnet_jax.train import report
from spnet_jax.train.stages import evaluate_workdir

FLAGS = flags.FLAGS


def define_flags() -> None:
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


def main(argv) -> None:
    del argv  # entry.run refuses positional arguments
    rows = evaluate_workdir(
        FLAGS.workdir, baseline_workdir=FLAGS.baseline_workdir,
        latency_batch=FLAGS.latency_batch, latency_runs=FLAGS.latency_runs,
        batch_size=FLAGS.batch_size, bn_calibration_batches=FLAGS.bn_calibration_batches,
        data_dir=FLAGS.data_dir)
    with open(os.path.join(FLAGS.workdir, report.TABLE)) as fh:
        print(fh.read(), end='')
    print(f'{len(rows)} sub-networks evaluated; report in '
          f'{os.path.join(FLAGS.workdir, report.REPORT)} (+ {report.TABLE}, {report.PLOT}).')
