"""Training: the stages of the SP-Net recipe, the all-sub-network step, the settings.

``train_and_evaluate(config, workdir)`` runs a config end to end; ``evaluate_workdir``
re-evaluates a finished run; `Settings` is a config parsed and checked once.
"""

from spnet_jax.train.settings import Settings
from spnet_jax.train.stages import evaluate_workdir, train_and_evaluate

__all__ = ['Settings', 'evaluate_workdir', 'train_and_evaluate']
