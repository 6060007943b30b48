"""Suite-wide settings: float64 on, strict dtype and rank promotion, bounded hypothesis examples.

Every test file may rely on these (and on the helpers in ``tests/helpers.py``):

- ``jax_enable_x64``: float64 makes VJP-vs-autodiff comparisons exact to ~1e-12. The library's
  default mode, float32 with x64 off, is tested in ``test_float32.py``, which turns x64 off
  around each of its tests (``jaxcnn._compat.enable_x64(False)``).
- ``jax_numpy_dtype_promotion="strict"``: no implicit promotion between dtypes (float32 with
  float64, an int array with a float array): a mixed-dtype operation fails loudly, in the tests
  and in the library, instead of silently computing in another precision (as Equinox's suite).
- ``jax_numpy_rank_promotion="raise"``: silent broadcasting fails loudly (as Equinox's suite).
- hypothesis profile ``ci``: 15 examples, no deadline (the first call of a shape compiles).
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

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          print_blob=True)
settings.load_profile("ci")


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
