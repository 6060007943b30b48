"""The test tiers' sampling (``helpers.sample``): a pairwise cover (or each value once) by
default, the whole grid in the full tier, k cases under ``JAXCNN_TEST_CASES=k``."""
from __future__ import annotations

import itertools

import pytest

from helpers import CASES_ENV, cover, pairwise_cover, product, sample

GRID = product((1, 2, 3), {"first": False, "last": True}, ("lax", "manual"),
               ("zeros", "reflect", "replicate", "circular"))


def _pairs(cases) -> set:
    return {pair for case in cases
            for pair in itertools.combinations(enumerate(map(repr, case.values)), 2)}


def _values(cases) -> set:
    return {value for case in cases for value in enumerate(map(repr, case.values))}


def test_default_tier_meets_every_pair_in_fewer_cases(monkeypatch):
    monkeypatch.delenv(CASES_ENV, raising=False)
    chosen = sample(GRID)
    assert _pairs(chosen) == _pairs(GRID) and len(chosen) < len(GRID) // 3
    assert chosen == sample(GRID)                       # deterministic
    assert [c.id for c in chosen] == [c.id for c in GRID if c in chosen]   # the grid's order


def test_strength_one_meets_every_value_in_fewer_cases_still(monkeypatch):
    monkeypatch.delenv(CASES_ENV, raising=False)
    chosen = sample(GRID, strength=1)
    assert _values(chosen) == _values(GRID) and len(chosen) == 4    # the widest factor's 4 values
    assert _pairs(chosen) < _pairs(GRID)
    assert cover(GRID, 2) == pairwise_cover(GRID)
    with pytest.raises(ValueError, match="strength"):
        cover(GRID, 3)


def test_a_key_says_what_must_meet(monkeypatch):
    """The cover is of what ``key`` returns: pairs of (rank, impl) only, whatever the modes."""
    monkeypatch.delenv(CASES_ENV, raising=False)
    chosen = sample(GRID, key=lambda case: (case.values[0], case.values[2]))
    assert {(c.values[0], c.values[2]) for c in chosen} == {(n, i) for n in (1, 2, 3) for i in ("lax", "manual")}
    assert len(chosen) == 6


def test_among_keeps_the_costly_cases_for_the_full_tier(monkeypatch):
    monkeypatch.delenv(CASES_ENV, raising=False)
    cheap = lambda case: case.values[0] < 3      # noqa: E731
    chosen = sample(GRID, among=cheap)
    assert all(cheap(c) for c in chosen)
    assert _pairs(chosen) == _pairs([c for c in GRID if cheap(c)])
    monkeypatch.setenv(CASES_ENV, "all")
    assert sample(GRID, among=cheap) == GRID


def test_constrained_grid_needs_only_the_pairs_it_holds():
    cases = [(n, mode) for n in (1, 2, 3) for mode in ("zeros", "reflect") if (n, mode) != (3, "reflect")]
    assert pairwise_cover(cases) == list(range(len(cases)))     # two factors: every case
    assert pairwise_cover([dict(a=1), dict(a=1), dict(a=2)]) == [0, 2]


@pytest.mark.parametrize("setting, count", [("all", 48), ("30", 30), ("1", None)])
def test_the_setting_scales_the_grid(monkeypatch, setting, count):
    monkeypatch.setenv(CASES_ENV, setting)
    cover_size = len(pairwise_cover(GRID))
    chosen = sample(GRID, seed=3)
    assert len(chosen) == (count or cover_size) and _pairs(chosen) == _pairs(GRID)
    assert len(sample(GRID, full=20)) == (20 if setting == "all" else len(chosen))
    assert len(sample(GRID, strength=1)) == (48 if setting == "all" else max(int(setting), 4))


def test_a_bad_setting_is_refused(monkeypatch):
    monkeypatch.setenv(CASES_ENV, "some")
    with pytest.raises(ValueError, match=CASES_ENV):
        sample(GRID)
