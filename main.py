"""Runs the SP-Net recipe into a workdir (see `spnet_jax.cli.train`):

    python main.py --config=configs/fashion_mnist.py --workdir=/tmp/fm_run
    python main.py --config=configs/resnet50.py --workdir=/ckpt/sp_resnet50 \\
        --config.data.manual_dir=/data/imagenet_tars

Rerunning the same command resumes an interrupted run and skips finished stages.
"""

import spnet_jax  # noqa: F401  (quiets TensorFlow's start-up lines before anything loads it)
from spnet_jax.cli import entry, train

if __name__ == '__main__':
    entry.run(train)
