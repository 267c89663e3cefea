"""Load a saved slimmable network and run any sub-network:

    net = spnet_jax.load('/ckpt/run')          # a workdir, or one stage folder in it
    logits = net(images_nhwc, subnet=0)         # smallest; subnet=-1 is the full network
    net.subnets                                 # [{'subnet', 'macs', 'params', ...}, ...]

Needs nothing but the directory: the structure, config and weights are read from it.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from spnet_jax.cost import subnet_costs
from spnet_jax.errors import ConfigError
from spnet_jax.models import get_arch

# Stage folders of a workdir, most finished first.
STAGES = ('slim', 'pruned')


def _stage_folder(path: str) -> str:
    if not os.path.isdir(path):
        raise ConfigError(f'{path} is not a directory; give a workdir or a stage folder.')
    if os.path.exists(os.path.join(path, 'structure.json')):
        return path
    for stage in STAGES:
        folder = os.path.join(path, stage)
        if os.path.exists(os.path.join(folder, 'structure.json')):
            return folder
    raise ConfigError(f'{path} holds no spnet_jax network (no structure.json in it or in its '
                      f'{"/".join(STAGES)} folders); give a workdir written by main.py or prune.')


class SlimmableNetwork:
    """A loaded network: ``net(images, subnet=k)`` runs sub-network k (jitted per k)."""

    def __init__(self, arch, structure, variables, config=None, image_size: int = 224):
        self.arch, self.structure, self.variables, self.config = (
            arch, structure, variables, config)
        self.image_size = image_size
        self.model = arch.module(structure)
        self._compiled = {}

    @functools.cached_property
    def subnets(self) -> list[dict]:
        """Per sub-network (smallest first): index, MACs and params at ``image_size``."""
        in_channels = self.arch.input_channels(self.variables['params'])
        return [{'subnet': c.subnet, 'macs': c.macs, 'params': c.params, 'channels': c.channels}
                for c in subnet_costs(self.arch, self.structure, self.image_size, in_channels)]

    def __call__(self, images, subnet: int | float = -1):
        k = self.structure.subnet_index(subnet)
        if k not in self._compiled:  # one jitted program per sub-network
            self._compiled[k] = jax.jit(lambda v, x: self.model.apply(v, x, subnet=k))
        return self._compiled[k](self.variables, jnp.asarray(images, jnp.float32))

    def __repr__(self):
        return (f'SlimmableNetwork({self.arch.name}, {self.structure.num_subnets} sub-networks, '
                f'method={self.structure.method}, zpm={self.structure.zpm})')


def load(path: str) -> SlimmableNetwork:
    """The network saved at ``path`` (a workdir, or one of its stage folders)."""
    from spnet_jax.train import checkpoint

    folder = _stage_folder(path)
    structure, variables, config = checkpoint.load_network(folder)
    params = variables['params']
    num_classes = int(params['head']['kernel'].shape[1])
    stem = None
    if structure.arch.startswith('resnet'):
        stem = 'imagenet' if params['stem_conv']['kernel'].shape[0] == 7 else 'small'
    arch = _arch_for(structure, num_classes, stem, config)
    image_size = 224
    if config is not None and 'data' in config:
        image_size = int(config.data.image_size)
    return SlimmableNetwork(arch, structure, variables, config, image_size)


def _arch_for(structure, num_classes: int, stem, config):
    """The architecture at the full width the structure was built for."""
    candidates = [structure.widths[-1]] if structure.widths else []
    if config is not None:
        candidates += [config.model.get('full_width', 1.0)]
        if 'base' in config and config.base.get('widths'):
            candidates.append(config.base.widths[-1])
    candidates.append(1.0)
    for width in candidates:
        arch = get_arch(structure.arch, num_classes=num_classes, stem=stem,
                        full_width=float(width))
        table = arch.table(zpm=structure.zpm)
        if tuple(g.size for g in table.groups) == structure.full:
            structure.validate(table)
            return arch
        if _is_exported_subnet(structure, table):
            return arch
    raise ConfigError(f'the saved structure matches {structure.arch} at none of the widths '
                      f'{candidates}; the checkpoint and its structure.json disagree.')


def _is_exported_subnet(structure, table) -> bool:
    """A sub-network exported as a standalone network (`spnet_jax.export`): one sub-network
    with the architecture's layers, none wider than at this width."""
    return (structure.num_subnets == 1 and structure.groups == table.group_names
            and all(c <= g.size for c, g in zip(structure.full, table.groups, strict=True)))
