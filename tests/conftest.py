"""Suite-wide settings: the test tier, float64 on, strict dtype and rank promotion, bounded
hypothesis examples.

Every test file may rely on these (and on the helpers in ``tests/helpers.py``):

- the tier (``helpers.sample``, as JAX's ``JAX_NUM_GENERATED_CASES``): by default (``make test``)
  each parametrised grid runs a pairwise-covering subset and tests marked ``slow`` skip;
  ``JAXCNN_TEST_CASES=all`` (``make test-full``) runs every case, the ``slow`` tests and
  hypothesis' ``full`` profile (4× the examples); ``JAXCNN_TEST_CASES=k`` runs up to k cases
  per grid. ``pytest -m slow`` runs the slow tests in any tier.

- ``jax_enable_x64``: float64 makes VJP-vs-autodiff comparisons exact to ~1e-12. The library's
  default mode, float32 with x64 off, is tested in ``test_float32.py``, which turns x64 off
  around each of its tests (``jaxcnn._compat.enable_x64(False)``).
- ``jax_numpy_dtype_promotion="strict"``: no implicit promotion between dtypes (float32 with
  float64, an int array with a float array): a mixed-dtype operation fails loudly, in the tests
  and in the library, instead of silently computing in another precision (as Equinox's suite).
- ``jax_numpy_rank_promotion="raise"``: silent broadcasting fails loudly (as Equinox's suite).
- hypothesis profile ``ci``: 15 examples, no deadline (the first call of a shape compiles);
  ``full`` in the full tier: 60 (a test's own ``@settings(max_examples=...)`` is kept as is).
- eight CPU devices (``--xla_force_host_platform_device_count=8``, unless ``XLA_FLAGS`` already
  names a count): the sharding tests build meshes of 2, 4 and 8 devices; everything else runs
  on device 0 as before. Set before JAX starts its backend, which reads the flag once.
"""
from __future__ import annotations

import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8").strip()

import jax
import numpy as np
import pytest
from hypothesis import settings

from helpers import CASES_ENV, full_tier, test_cases_setting

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          print_blob=True)
settings.register_profile("full", settings.get_profile("ci"), max_examples=60)
settings.load_profile("full" if full_tier() else "ci")


def pytest_report_header(config) -> str:
    setting = test_cases_setting()
    tier = {"": "default (pairwise-sampled grids, no slow tests)",
            "all": "full (every case, slow tests)"}.get(setting, f"up to {setting} cases per grid")
    return f"jaxcnn test tier: {tier}; set {CASES_ENV}=all for the full tier"


def pytest_collection_modifyitems(config, items) -> None:
    """Skip the ``slow`` tests outside the full tier, unless ``-m`` names them."""
    if full_tier() or "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason=f"slow: runs in the full tier ({CASES_ENV}=all, make test-full)")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A numpy Generator seeded from the test's name: reproducible, distinct per test."""
    seed = sum(request.node.nodeid.encode()) * 7919 % (2**32)
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def fast_compile():
    """Compile without XLA's expensive optimisations for one test module (opt in with
    ``pytestmark = pytest.mark.usefixtures("fast_compile")``). Same semantics, about a third
    less compile time; worth it where compiling, not running, dominates (many small shapes)."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)
