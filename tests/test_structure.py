"""`Structure`: data, JSON, hashing, and one clear sentence for every malformed one."""

import dataclasses

import pytest

from spnet_jax.core.errors import ConfigError
from spnet_jax.core.structure import Structure
from spnet_jax.models import get_arch


@pytest.fixture
def resnet20():
    arch = get_arch('resnet20', num_classes=10)
    return arch, arch.snet_structure((0.25, 0.5, 1.0))


def test_snet_counts_use_the_release_rounding(resnet20):
    _, s = resnet20
    assert s.count('layer1_0/conv1', 0) == 4  # floor(16 * 0.25)
    assert s.count('stage3', 1) == 32  # floor(64 * 0.5)
    assert s.counts[-1] == s.full
    arch = get_arch('mobilenet_v2', full_width=1.3)
    mb = arch.snet_structure((0.75, 1.0, 1.3))
    # make-divisible by 8: 32 * 0.75 = 24, 32 * 1.3 = 41.6 -> 40; last conv 1280 * 1.3 = 1664
    assert mb.counts_of('stem_conv') == (24, 32, 40)
    assert mb.counts_of('last_conv') == (1280, 1280, 1664)


def test_json_round_trip_and_hashable(resnet20, tmp_path):
    arch, s = resnet20
    again = Structure.from_json(s.to_json())
    assert again == s and hash(again) == hash(s)
    s.save(str(tmp_path / 'structure.json'))
    assert Structure.load(str(tmp_path / 'structure.json')).validate(arch.table()) == s


def test_subnet_by_index_or_width(resnet20):
    _, s = resnet20
    assert s.subnet_index(-1) == 2 and s.subnet_index(0.5) == 1
    with pytest.raises(ConfigError, match='subnet=3 is out of range.*0..2'):
        s.subnet_index(3)
    with pytest.raises(ConfigError, match='matches no sub-network'):
        s.subnet_index(0.3)


def _with_count(s, k, group, value):
    g = s.groups.index(group)
    row = list(s.counts[k])
    row[g] = value
    counts = list(s.counts)
    counts[k] = tuple(row)
    return dataclasses.replace(s, counts=tuple(counts))


@pytest.mark.parametrize('edit,match', [
    (lambda s: _with_count(s, 0, 'stage2', 0), "layer 'stage2' of sub-network 0 has 0 channels"),
    (lambda s: _with_count(s, 1, 'stage2', 65), 'between 1 and the full network'),
    (lambda s: dataclasses.replace(s, counts=s.counts[::-1]), 'must be the full network'),
    (lambda s: dataclasses.replace(s, groups=s.groups[:-1] + ('bogus',)), 'unknown groups'),
    (lambda s: dataclasses.replace(s, method='other'), 'method must be'),
    (lambda s: dataclasses.replace(s, full=(8,) + s.full[1:]), 'made for another width'),
])
def test_malformed_structures_are_refused(resnet20, edit, match):
    arch, s = resnet20
    with pytest.raises(ConfigError, match=match):
        edit(s).validate(arch.table())


def test_bad_json_and_unknown_models_are_one_sentence():
    with pytest.raises(ConfigError, match='Malformed structure JSON'):
        Structure.from_json('{"arch": "resnet20"}')
    with pytest.raises(ConfigError, match="model.name='resnet7' is unknown"):
        get_arch('resnet7')
    with pytest.raises(ConfigError, match='model.stem'):
        get_arch('resnet50', stem='huge')
