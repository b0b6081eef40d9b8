"""SubnetConfig and SearchSpace: values, validation, sampling, vectors (no torch needed)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightshare.space import SearchSpace, SubnetConfig

MBV3 = SearchSpace(5, (2, 3, 4), (3, 4, 6), (3, 5, 7), default_resolution=224)
TINY = SearchSpace(2, (1, 2), (3, 6), (3, 5), width_choices=(0.5, 1.0), resolution_choices=(24, 28))
SPACES = [MBV3, TINY, SearchSpace(4, (1, 2, 3), (0.2, 0.25, 0.35), (3,), width_choices=(0.65, 0.8, 1.0))]
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def test_space_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, weightshare.space; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("space", SPACES)
@settings(max_examples=50, deadline=None)
@given(seed=SEEDS)
def test_json_roundtrip_hash_and_validity(space, seed):
    cfg = space.sample(random.Random(seed))
    space.validate(cfg)
    back = SubnetConfig.from_json(cfg.to_json())
    assert back == cfg and hash(back) == hash(cfg)
    assert space.from_genome(space.to_genome(cfg)) == cfg
    assert len(space.encode(cfg)) == space.encoding_size
    assert len(space.to_genome(cfg)) == len(space.genome_bounds)


@pytest.mark.parametrize("space", SPACES)
@settings(max_examples=30, deadline=None)
@given(seed=SEEDS)
def test_mutate_and_crossover_stay_in_space(space, seed):
    rng = random.Random(seed)
    a, b = space.sample(rng), space.sample(rng)
    for child in (space.mutate(a, rng, 0.3), space.crossover(a, b, rng)):
        space.validate(child)
    assert space.mutate(a, rng, 0.0) == a


def test_crossover_mixes_parents():
    rng = random.Random(0)
    a, b = MBV3.largest(), MBV3.smallest()
    kids = {MBV3.crossover(a, b, rng) for _ in range(20)}
    assert len(kids) > 10 and a not in kids


def test_size_counts_distinct_networks():
    listed = list(TINY.enumerate())
    assert len(listed) == len(set(listed)) == TINY.size()
    encodings = {tuple(TINY.encode(c)) for c in listed}
    assert len(encodings) == TINY.size()  # the encoding tells every SubNet apart


def test_mbv3_space_size_matches_ofa():
    # OFA's count: per unit sum over depth d of (3 expands x 3 kernels)^d, to the 5th power.
    assert MBV3.size() == (9**2 + 9**3 + 9**4) ** 5  # ~2.2 x 10^19, OFA's "10^19"
    fixed_kernel = SearchSpace(5, (2, 3, 4), (3, 4, 6), (7,))
    # With the kernel fixed, 117^5 = 2.2 x 10^10 (REFERENCE.md's "~10^13" overcounts).
    assert fixed_kernel.size() == (3**2 + 3**3 + 3**4) ** 5


def test_largest_smallest_and_corners():
    big, small = MBV3.largest(), MBV3.smallest()
    assert big.depths == (4,) * 5 and set(big.expands) == {6} and set(big.kernels) == {7}
    assert small.depths == (2,) * 5 and set(small.expands) == {3} and set(small.kernels) == {3}
    corners = MBV3.corners()
    assert len(corners) == 4 and len(set(corners)) == 4
    assert {(c.depths[0], c.expands[0]) for c in corners} == {(2, 3), (2, 6), (4, 3), (4, 6)}


@pytest.mark.parametrize(
    "cfg, message",
    [
        (SubnetConfig((5, 2, 2, 2, 2), (3,) * 13, (3,) * 13), r"depths\[0\]=5 .*allowed depths: \[2, 3, 4\]"),
        (SubnetConfig((2,) * 5, (2,) + (3,) * 9, (3,) * 10), r"expands\[0\]=2 .*allowed expand ratios: \[3, 4, 6\]"),
        (SubnetConfig((2,) * 5, (3,) * 10, (3,) * 9 + (4,)), r"kernels\[9\]=4 .*allowed kernel sizes"),
        (SubnetConfig((2,) * 4, (3,) * 8, (3,) * 8), r"depths has 4 values, this space has 5 units"),
        (SubnetConfig((2,) * 5, (3,) * 10, (3,) * 10, widths=(1.0,) * 5), r"widths must be empty"),
        (SubnetConfig((2,) * 5, (3,) * 10, (3,) * 10, resolution=160), r"resolution=160"),
    ],
)
def test_invalid_configs_name_field_and_allowed_values(cfg, message):
    with pytest.raises(ValueError, match=message):
        MBV3.validate(cfg)
    assert not MBV3.contains(cfg)


def test_wrong_number_of_blocks_is_rejected_at_construction():
    with pytest.raises(ValueError, match="depths \\[2, 2\\] make 4 blocks, got 3 expands"):
        SubnetConfig((2, 2), (3, 3, 3), (3, 3, 3, 3))


def test_from_json_errors_are_clear():
    with pytest.raises(ValueError, match="not valid SubnetConfig JSON"):
        SubnetConfig.from_json("{depths")
    with pytest.raises(ValueError, match="unknown SubnetConfig field"):
        SubnetConfig.from_json('{"depths": [1], "expands": [3], "kernels": [3], "colour": 1}')
    with pytest.raises(ValueError, match="missing field"):
        SubnetConfig.from_json('{"depths": [1]}')


def test_config_is_immutable_and_accepts_lists():
    cfg = SubnetConfig([2, 2], [3, 4, 6, 3], [3, 3, 5, 7])
    assert isinstance(cfg.depths, tuple)
    with pytest.raises(AttributeError):
        cfg.depths = (3, 3)  # type: ignore[misc]
    assert SubnetConfig((2,), (3.0, 4.0), (3, 3)).to_json() == '{"depths":[2],"expands":[3,4],"kernels":[3,3]}'


def test_encode_zeroes_skipped_blocks():
    cfg = MBV3.smallest()
    vec = MBV3.encode(cfg)
    assert sum(vec) == 5 + 2 * sum(cfg.depths)


def test_space_dict_roundtrip():
    for space in SPACES:
        assert SearchSpace.from_dict(space.to_dict()) == space
