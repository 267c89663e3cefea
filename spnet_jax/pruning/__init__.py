"""SP-Net pruning as pure functions over pytrees.

Each step is its own module and reads architectures only through their `ChannelTable`:
`importance`, `threshold`, `multibase` (the plan of counts, orders and masks), `scs`, `zpm`,
`targets` (MACs bisection), `subnets` (choosing sub-networks of a network); `recipe` runs the
whole chain on trained bases (`prune`) from the config's ``prune`` section (`PruneSettings`).
"""

from spnet_jax.pruning.importance import IMPORTANCE
from spnet_jax.pruning.multibase import Plan, plan
from spnet_jax.pruning.recipe import (
    PruneSettings,
    check_base_variables,
    prune,
    slimmable_variables,
)

__all__ = ['IMPORTANCE', 'Plan', 'PruneSettings', 'check_base_variables', 'plan', 'prune',
           'slimmable_variables']
