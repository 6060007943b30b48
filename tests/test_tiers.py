"""The test tiers' promises (tests/conftest.py, ``helpers.sample``): the default tier's grids
meet every pair of values (or every value), the whole grid runs in the full tier and k cases
under ``JAXCNN_TEST_CASES=k``; a test runs in float32 with x64 off unless it is marked ``x64``, compiled fast in the default
tier unless it is marked ``users_compile``;
a test that builds a mesh is marked ``multidevice`` and runs in the process with eight devices,
and fails, never skips, without them; every module has tests in the default tier; expected
failures are strict."""
from __future__ import annotations

import collections
import inspect
import itertools
import os
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from helpers import (CASES_ENV, DEVICES, FAST_XLA_FLAG, cover, full_tier, pairwise_cover, product,
                     random_array, sample, xla_knows)

GRID = product((1, 2, 3), {"first": False, "last": True}, ("lax", "manual"),
               ("zeros", "reflect", "replicate", "circular"))


def _pairs(cases) -> set:
    return {pair for case in cases
            for pair in itertools.combinations(enumerate(map(repr, case.values)), 2)}


def _values(cases) -> set:
    return {value for case in cases for value in enumerate(map(repr, case.values))}


# ----------------------------------------------------------------------------- sampling

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


# ----------------------------------------------------------------------------- the float mode

class _Item:
    """What the hooks read of a test: its marks."""

    def __init__(self, *marks: str):
        self.marks = {name: getattr(pytest.mark, name).mark for name in marks}

    def get_closest_marker(self, name: str):
        return self.marks.get(name)


def _teardown(item) -> None:
    hook = conftest.pytest_runtest_teardown(item, None)
    next(hook)                                  # the test's own teardown runs here
    with pytest.raises(StopIteration):
        next(hook)


def test_an_unmarked_test_runs_in_float32_with_x64_off_compiled_fast_in_the_default_tier_only():
    assert not jax.config.read("jax_enable_x64")
    assert jnp.ones(2).dtype == jnp.float32 and jnp.asarray(np.ones(2)).dtype == jnp.float32
    assert jax.config.read("jax_disable_most_optimizations") == (not full_tier())


@pytest.mark.users_compile
def test_the_users_compile_mark_compiles_as_users_compile_in_every_tier():
    assert not jax.config.read("jax_disable_most_optimizations")


def test_the_default_tier_compiles_with_the_fast_xla_flag_where_xla_knows_it():
    """In ``XLA_FLAGS`` (set by conftest before JAX started) in the default tier where this XLA
    parses it, never in the full tier; a made-up flag is not known (XLA would abort on it)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    assert (FAST_XLA_FLAG in flags) == (not full_tier() and xla_knows(FAST_XLA_FLAG))
    assert not xla_knows("--xla_cpu_a_flag_no_xla_has=true")


@pytest.mark.x64
def test_the_x64_mark_turns_x64_on_for_its_test_compiled_fast():
    assert jax.config.read("jax_enable_x64")
    assert jnp.ones(2).dtype == jnp.float64 and jnp.asarray(np.ones(2)).dtype == jnp.float64
    assert jax.config.read("jax_disable_most_optimizations")


def test_the_fast_compile_fixture_compiles_fast_in_the_default_mode(fast_compile):
    assert jax.config.read("jax_disable_most_optimizations") and not jax.config.read("jax_enable_x64")


def test_the_float_mode_is_set_before_each_test_and_reset_after():
    """Before any fixture: on for a marked test, off for an unmarked one even after a test
    that turned it on and left it so (pytest-xdist runs many modules in one worker); off after
    every test."""
    flags = ("jax_enable_x64", "jax_disable_most_optimizations")
    try:
        conftest.pytest_runtest_setup(_Item("x64"))
        assert all(jax.config.read(flag) for flag in flags)
        _teardown(_Item("x64"))
        assert not any(jax.config.read(flag) for flag in flags)
        for flag in flags:
            jax.config.update(flag, True)          # a test that leaks the flags
        conftest.pytest_runtest_setup(_Item("users_compile"))
        assert not any(jax.config.read(flag) for flag in flags)
        conftest.pytest_runtest_setup(_Item())
        assert not jax.config.read("jax_enable_x64")
        assert jax.config.read("jax_disable_most_optimizations") == (not full_tier())
    finally:
        for flag in flags:
            jax.config.update(flag, False)


def test_a_64_bit_array_without_the_mark_is_an_error(rng):
    with pytest.raises(RuntimeError, match="mark the test x64"):
        random_array(rng, (2,))
    with pytest.raises(UserWarning, match="Explicitly requested dtype .*float64"):
        jnp.asarray(np.ones(2), jnp.float64)
    assert random_array(rng, (2,), jnp.float32).dtype == jnp.float32


# ----------------------------------------------------------------------------- the devices

def test_a_multidevice_test_without_its_devices_fails_and_does_not_skip(monkeypatch):
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    assert conftest.missing_devices(_Item()) is None
    reason = conftest.missing_devices(_Item("multidevice"))
    assert f"needs {DEVICES} devices" in reason and "--xla_force_host_platform_device_count=8" in reason
    with pytest.raises(pytest.fail.Exception, match="needs 8 devices"):
        conftest.pytest_runtest_setup(_Item("multidevice"))
    conftest.pytest_runtest_setup(_Item())      # an unmarked test runs on one device
    monkeypatch.setattr(jax, "device_count", lambda: DEVICES)
    assert conftest.missing_devices(_Item("multidevice")) is None


def test_the_one_device_run_has_one_device():
    """No test forces devices on the others (the multi-device run sets the flag itself)."""
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        assert jax.device_count() == 1


@pytest.mark.multidevice
def test_the_multidevice_run_has_its_devices():
    assert jax.device_count() >= DEVICES and len(jax.devices()) >= DEVICES


# Calls that build a mesh (or place on one), in a test or in a function of its module it calls.
BUILDS_A_MESH = re.compile(r"\b(make_mesh|Mesh|set_mesh|shard_map|NamedSharding|data_parallel)\(|"
                           r"\bdevices\(\)\[")


def _sources(function, module, seen) -> list[str]:
    """``function``'s source and those of the functions of ``module`` it names, transitively."""
    if function in seen or not isinstance(function, types.FunctionType):
        return []
    seen.add(function)
    try:
        sources = [inspect.getsource(function)]
    except (OSError, TypeError):
        return []
    codes = [function.__code__]
    names = set()
    while codes:
        code = codes.pop()
        names |= set(code.co_names)
        codes += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    for name in names:
        value = getattr(module, name, None)
        if getattr(value, "__module__", None) == module.__name__:
            sources += _sources(value, module, seen)
    return sources


def test_every_test_that_builds_a_mesh_is_marked_multidevice(request):
    """The split is total: a test whose code (or a helper of its module it calls) builds a mesh
    runs in the multi-device process (where its devices are; on one device such a mesh fails)."""
    unmarked = []
    for item in request.config.stash[conftest.COLLECTED]:
        function = getattr(item, "function", None)
        if function is None or item.get_closest_marker("multidevice"):
            continue
        if any(BUILDS_A_MESH.search(source) for source in _sources(function, item.module, set())):
            unmarked.append(item.nodeid)
    assert not unmarked, f"build a mesh but are not marked multidevice: {unmarked}"


def test_the_mesh_pattern_finds_what_it_must():
    call = "("      # (spelled apart: this test's own source builds no mesh)
    assert BUILDS_A_MESH.search("mesh = make_mesh" + call + "(4,), ('data',))")
    assert BUILDS_A_MESH.search("Mesh" + call + "np.array(jax.devices" + "()[:4]), ('d',))")
    assert not BUILDS_A_MESH.search('"shard_map (auto) check_vma"')     # a path's name, not a call


# ----------------------------------------------------------------------------- every module, strict xfails

def test_every_collected_module_has_tests_in_the_default_tier(request):
    """No module leaves the default tier whole: each keeps a test that is not ``slow``."""
    by_module = collections.defaultdict(list)
    for item in request.config.stash[conftest.COLLECTED]:
        by_module[item.nodeid.split("::")[0]].append(item.get_closest_marker("slow") is None)
    assert by_module and all(any(kept) for kept in by_module.values()), [
        module for module, kept in by_module.items() if not any(kept)]


def test_expected_failures_are_strict(request):
    """An expected failure that passes fails the run: ``xfail_strict`` on, and no mark (in the
    collection or in a test's source, where a test adds it itself) turns it off."""
    assert request.config.getini("xfail_strict") is True
    for item in request.config.stash[conftest.COLLECTED]:
        for mark in item.iter_markers("xfail"):
            assert mark.kwargs.get("strict", True) is True, item.nodeid
    here = os.path.dirname(__file__)
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), encoding="utf-8") as file:
                assert not re.search(r"strict\s*=\s*False", file.read()), name
