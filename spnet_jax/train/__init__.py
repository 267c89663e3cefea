"""Training: the stages of the SP-Net recipe, the all-sub-network step, checkpoints.

``train_and_evaluate(config, workdir)`` runs a config end to end; `save_network` /
`load_network` write and read a finished network in the workdir's stage layout.
"""

from spnet_jax.train.checkpoint import load_network, save_network
from spnet_jax.train.pipeline import train_and_evaluate

__all__ = ['load_network', 'save_network', 'train_and_evaluate']
