"""spnet_jax: Slimmable Pruned Neural Networks (SP-Net) in JAX/Flax.

    net = spnet_jax.load('/ckpt/run')     # a workdir of main.py or prune
    logits = net(images_nhwc, subnet=0)    # any sub-network, smallest first
"""

from spnet_jax.loading import SlimmableNetwork, load

__all__ = ['SlimmableNetwork', 'load']
