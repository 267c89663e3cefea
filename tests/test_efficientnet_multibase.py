"""EfficientNet multi-base pruning without ZPM (the release's B2 recipe) against what the
release's own code produced (tests/data/release_efficientnet_multibase.json, written by
benchmarks/release_efficientnet_multibase.py from the release's train.py and models on seeded
bases): per layer and sub-network, the channels each conv, squeeze-and-excitation FC and the
classifier run with, the thresholds, and the logits of every sub-network
(`release_efficientnet.check_case`).

The release sets a block's pruned counts only on the base's own model, so in the slimmable
network every conv inside a block keeps the channels of the network built at the keep ratio
as a width; the stem (and the first block's depthwise conv, which shares its list) and the
last conv are pruned."""

import dataclasses

import pytest
import release_efficientnet

from spnet_jax.models import get_arch
from spnet_jax.pruning import multibase

DATA = release_efficientnet.load('multibase')


@pytest.mark.parametrize('name', sorted(DATA['cases']))
def test_counts_and_logits_equal_the_releases(name):
    S, info, _ = release_efficientnet.check_case(name, DATA['cases'][name])
    # Pruning did find other counts inside the blocks: the release leaves them unused.
    assert any(info['pruned_counts'][k][g] != S.count(g, k)
               for k in range(S.num_subnets - 1) for g in S.groups)


def test_built_counts_only_with_several_bases_and_without_zpm():
    arch = get_arch('efficientnet_b0', num_classes=10)
    table = arch.table()
    pruned = dataclasses.replace(arch.plain_structure(), counts=(
        tuple(max(1, g.size // 3) for g in table.groups), tuple(g.size for g in table.groups)))
    ratios = (0.5484,)
    assert multibase.release_block_counts(arch, pruned, ratios, (1.0,), False) is pruned
    assert multibase.release_block_counts(arch, pruned, ratios, (0.75, 1.0), True) is pruned
    built = multibase.release_block_counts(arch, pruned, ratios, (0.75, 1.0), False)
    at_ratio = {g.name: g.size for g in arch.table(width=0.5484).groups}
    for g, c, p in zip(built.groups, built.counts[0], pruned.counts[0], strict=True):
        assert c == (p if g in ('stem_conv', 'last_conv') else at_ratio[g]), g
    assert built.counts[-1] == pruned.counts[-1]
    # Other architectures prune every group (their release recipes use ZPM).
    mbv2 = get_arch('mobilenet_v2')
    assert mbv2.multibase_block_groups(False) == ()
