"""Suite-wide settings: the test tier, the float mode and the devices of each test, strict
dtype and rank promotion, bounded hypothesis examples.

Every test file may rely on these (and on the helpers in ``tests/helpers.py``):

- the tier (``helpers.sample``, as JAX's ``JAX_NUM_GENERATED_CASES``): by default (``make test``)
  each parametrised grid runs a pairwise-covering subset and tests marked ``slow`` skip;
  ``JAXCNN_TEST_CASES=all`` (``make test-full``) runs every case, the ``slow`` tests and
  hypothesis' ``full`` profile (10× the examples); ``JAXCNN_TEST_CASES=k`` runs up to k cases
  per grid. ``pytest -m slow`` runs the slow tests in any tier.
- the float mode: a test runs in the library's default mode, float32 with ``jax_enable_x64``
  off (the mode users run, and the only one the native kernels take), unless it is marked
  ``x64`` (a module asks with ``pytestmark = pytest.mark.x64``): then with x64 on, where float64
  makes VJP-vs-autodiff comparisons exact to ~1e-12. Set before each test's fixtures and set
  back after it (pytest-xdist runs many modules in one worker); a float64 array asked for
  without the mark is an error (``helpers.random_array``, and jax.numpy's "Explicitly
  requested dtype" warning made an error), not a silent float32 one.
- the compiler: compiling is most of the suite's time (~1,800 tests, each with its own small
  programs). The default tier compiles every test fast: without XLA's backend optimisations
  (``jax_disable_most_optimizations``: LLVM at -O0; the HLO passes, the partitioner and the
  convolution runtime as ever) and, where this XLA knows the flag, with its older CPU fusion
  emitters (``--xla_cpu_use_fusion_emitters=false`` in ``XLA_FLAGS``, set here before JAX
  starts; subprocesses inherit it): the same programs, compiled ~5x faster (~40 % less time in
  all), unless a test is marked ``users_compile`` (it checks what XLA's optimised compile makes:
  compiled memory). The full tier compiles as users' programs compile, but the ``x64`` tests (the
  maths of the rules against references) and those that ask for the ``fast_compile`` fixture
  (many small shapes).
- the devices: a test marked ``multidevice`` builds meshes of up to 8 devices and runs in a
  process of its own with eight CPU devices (``make test`` runs ``pytest -m "not multidevice"``
  on one device, then ``XLA_FLAGS=--xla_force_host_platform_device_count=8 pytest -m
  multidevice``). Run without those devices, a multi-device test fails at its setup, naming
  the flag; on one device, a mesh of more than one fails as loudly.
- ``jax_numpy_dtype_promotion="strict"``: no implicit promotion between dtypes (float32 with
  float64, an int array with a float array): a mixed-dtype operation fails loudly, in the tests
  and in the library, instead of silently computing in another precision (as Equinox's suite).
- ``jax_numpy_rank_promotion="raise"``: silent broadcasting fails loudly (as Equinox's suite).
- hypothesis profile ``ci``: 6 examples, no deadline (the first call of a shape compiles);
  ``full`` in the full tier: 60 (a test's own ``@settings(max_examples=...)`` is kept as is).
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import settings

from helpers import CASES_ENV, DEVICES, fast_xla_flags, full_tier, test_cases_setting

if not full_tier():
    fast_xla_flags()      # before JAX starts its backend, which reads XLA_FLAGS once

jax.config.update("jax_enable_x64", False)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile("ci", max_examples=6, deadline=None, derandomize=True,
                          print_blob=True)
settings.register_profile("full", settings.get_profile("ci"), max_examples=60)
settings.load_profile("full" if full_tier() else "ci")

MULTIDEVICE_RUN = (f'XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES} '
                   'pytest -m multidevice tests (as `make test` runs them)')


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "x64: runs with jax_enable_x64 on (float64); every other "
                            "test runs in the default mode, float32 (tests/conftest.py)")
    config.addinivalue_line("markers", "users_compile: compiles as users' programs compile, with "
                            "XLA's backend optimisations, in every tier (tests/conftest.py)")
    config.addinivalue_line("markers", f"multidevice: builds meshes of up to {DEVICES} devices; "
                            f"runs in a process of its own: {MULTIDEVICE_RUN}")
    # A 64-bit dtype asked of jax.numpy with x64 off is a 32-bit array and a warning: an error
    # here (the test needs the x64 mark), never a float64 test silently run in float32.
    config.addinivalue_line("filterwarnings", "error:Explicitly requested dtype")


def pytest_report_header(config) -> str:
    setting = test_cases_setting()
    tier = {"": "default (pairwise-sampled grids, no slow tests)",
            "all": "full (every case, slow tests)"}.get(setting, f"up to {setting} cases per grid")
    return (f"jaxcnn test tier: {tier}; set {CASES_ENV}=all for the full tier; "
            f"{jax.device_count()} device(s)")


COLLECTED = pytest.StashKey[list]()     # every test collected, before ``-m`` deselects any


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Keep the whole collection (for tests/test_tiers.py); skip the ``slow`` tests outside the
    full tier, unless ``-m`` names them."""
    config.stash[COLLECTED] = list(items)
    if full_tier() or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=f"slow: runs in the full tier ({CASES_ENV}=all, make test-full)")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


def x64_wanted(item) -> bool:
    """Whether ``item`` runs with ``jax_enable_x64`` on: it, its class or its module is marked."""
    return item.get_closest_marker("x64") is not None


def fast_compile_wanted(item) -> bool:
    """Whether ``item`` compiles without XLA's backend optimisations: in the default tier every
    test not marked ``users_compile``; in the full tier an ``x64`` test, or one that asks for
    the ``fast_compile`` fixture."""
    if item.get_closest_marker("users_compile") is not None:
        return False
    return not full_tier() or x64_wanted(item) or "fast_compile" in getattr(item, "fixturenames", ())


def missing_devices(item) -> str | None:
    """Why ``item`` cannot run in this process (a ``multidevice`` test with too few devices),
    or None."""
    if item.get_closest_marker("multidevice") is None or jax.device_count() >= DEVICES:
        return None
    return (f"needs {DEVICES} devices, this process has {jax.device_count()}: run the "
            f"multi-device tests with {MULTIDEVICE_RUN}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """Before any fixture of the test: its float mode and compiler; a multi-device test without
    its devices fails here (an error, never a skip)."""
    jax.config.update("jax_enable_x64", x64_wanted(item))
    jax.config.update("jax_disable_most_optimizations", fast_compile_wanted(item))
    reason = missing_devices(item)
    if reason is not None:
        pytest.fail(reason, pytrace=False)


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    jax.config.update("jax_enable_x64", False)   # the default mode again, whatever the test set
    jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A numpy Generator seeded from the test's name: reproducible, distinct per test."""
    seed = sum(request.node.nodeid.encode()) * 7919 % (2**32)
    return np.random.default_rng(seed)


@pytest.fixture
def fast_compile():
    """Compile without XLA's backend optimisations (set by ``pytest_runtest_setup`` for a test
    that asks for this fixture, as for every ``x64`` test; a module opts in with ``pytestmark =
    pytest.mark.usefixtures("fast_compile")``). Same semantics, about a third less compile time;
    worth it where compiling, not running, dominates (many small shapes)."""
    assert jax.config.read("jax_disable_most_optimizations")
    yield
