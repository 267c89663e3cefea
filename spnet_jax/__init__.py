"""spnet_jax: Slimmable Pruned Neural Networks (SP-Net) in JAX/Flax.

    net = spnet_jax.load('/ckpt/run')     # a workdir of main.py or prune
    logits = net(images_nhwc, subnet=0)    # any sub-network, smallest first
"""

import os

# TensorFlow (imported by TFDS and clu) logs C++ lines to stderr at import on some CPUs (the
# oneDNN notice, absl's "before InitializeLog"); they would precede every message of every
# command. Silence them before anything imports TensorFlow. oneDNN only speeds up TF's own
# kernels, which this project uses for input decoding alone.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

from spnet_jax.workdir.loading import SlimmableNetwork, load  # noqa: E402

__all__ = ['SlimmableNetwork', 'load']
