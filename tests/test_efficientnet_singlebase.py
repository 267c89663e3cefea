"""EfficientNet single-base pruning without ZPM (one base x1.0, keep ratios as widths: how the
shared reference case ``efficientnet_b0_singlebase`` was built) on the other types and
settings, against what the release's own code produced (tests/data/
release_efficientnet_singlebase.json, written by benchmarks/release_efficientnet_multibase.py
``--which=singlebase``): B1-B7, 32-96 px, 10-1000 classes, two or three pruned sub-networks,
keep ratios where the 10% floor decides; per layer and sub-network the channels each conv,
squeeze-and-excitation FC and the classifier run with, the thresholds, B5-B7's BN eps and
momentum, and the logits of every sub-network (`release_efficientnet.check_case`)."""

import pytest
import release_efficientnet

DATA = release_efficientnet.load('singlebase')


@pytest.mark.parametrize('name', sorted(DATA['cases']))
def test_counts_and_logits_equal_the_releases(name):
    S, info, diffs = release_efficientnet.check_case(name, DATA['cases'][name])
    print(name, 'max relative logit difference per sub-network', diffs)
    # One base: every count is the one pruning found (nothing kept at a built width).
    assert 'pruned_counts' not in info or [list(c) for c in S.counts[:-1]] == [
        [c[g] for g in S.groups] for c in info['pruned_counts']]
