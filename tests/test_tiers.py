"""The test tiers' sampling (``helpers.sample``): a pairwise cover by default, the whole grid in
the full tier, k cases under ``JAXCNN_TEST_CASES=k``."""
from __future__ import annotations

import itertools

import pytest

from helpers import CASES_ENV, pairwise_cover, product, sample

GRID = product((1, 2, 3), {"first": False, "last": True}, ("lax", "manual"),
               ("zeros", "reflect", "replicate", "circular"))


def _pairs(cases) -> set:
    return {pair for case in cases
            for pair in itertools.combinations(enumerate(map(repr, case.values)), 2)}


def test_default_tier_meets_every_pair_in_fewer_cases(monkeypatch):
    monkeypatch.delenv(CASES_ENV, raising=False)
    chosen = sample(GRID)
    assert _pairs(chosen) == _pairs(GRID) and len(chosen) < len(GRID) // 3
    assert chosen == sample(GRID)                       # deterministic
    assert [c.id for c in chosen] == [c.id for c in GRID if c in chosen]   # the grid's order


def test_constrained_grid_needs_only_the_pairs_it_holds():
    cases = [(n, mode) for n in (1, 2, 3) for mode in ("zeros", "reflect") if (n, mode) != (3, "reflect")]
    assert pairwise_cover(cases) == list(range(len(cases)))     # two factors: every case
    assert pairwise_cover([dict(a=1), dict(a=1), dict(a=2)]) == [0, 2]


@pytest.mark.parametrize("setting, count", [("all", 48), ("30", 30), ("1", None)])
def test_the_setting_scales_the_grid(monkeypatch, setting, count):
    monkeypatch.setenv(CASES_ENV, setting)
    cover = len(pairwise_cover(GRID))
    chosen = sample(GRID, seed=3)
    assert len(chosen) == (count or cover) and _pairs(chosen) == _pairs(GRID)
    assert len(sample(GRID, full=20)) == (20 if setting == "all" else len(chosen))


def test_a_bad_setting_is_refused(monkeypatch):
    monkeypatch.setenv(CASES_ENV, "some")
    with pytest.raises(ValueError, match=CASES_ENV):
        sample(GRID)
