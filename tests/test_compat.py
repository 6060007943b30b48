"""Tests of jaxcnn/_compat.py: what jaxcnn takes from JAX beyond its public promises.

Independent references: ``jax.lax`` itself (does it accept a ``precision``?) and a count of
the traces a jitted function made. ``make_primitive`` is tested in test_primitives.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn._compat import DOT_ALGORITHM_TYPES, enable_x64, is_lax_precision, jit_cache_size

P = jax.lax.Precision
CANDIDATES = {
    "none": None, "enum": P.HIGHEST, "name": "high", "alias-float32": "float32",
    "alias-bfloat16_3x": "bfloat16_3x", "alias-fastest": "fastest",
    "enum-pair": (P.DEFAULT, P.HIGHEST), "name-pair": ("default", "highest"),
    "upper-case": "HIGHEST", "unknown-name": "bogus", "int": 2, "float": 1.0, "bytes": b"high",
    "mixed-pair": ("high", P.HIGH), "one": (P.HIGH,), "three": (P.HIGH,) * 3,
    "unknown-in-pair": ("bogus", "high"), "none-pair": (None, None),
}
if DOT_ALGORITHM_TYPES:  # releases after 0.4.30: presets by value and by name
    CANDIDATES.update({"preset": jax.lax.DotAlgorithmPreset.F32_F32_F32,
                       "preset-name": "F32_F32_F32",
                       "preset-in-pair": ("F32_F32_F32", "high")})


def _lax_takes(precision) -> bool:
    try:
        jax.make_jaxpr(lambda a: jax.lax.dot(a, a, precision=precision))(jnp.ones((2, 2)))
    except (ValueError, TypeError):
        return False
    return True


@pytest.mark.parametrize("precision", list(CANDIDATES.values()), ids=list(CANDIDATES))
def test_is_lax_precision_agrees_with_lax(precision):
    assert is_lax_precision(precision) == _lax_takes(precision)


@pytest.mark.parametrize("precision", list(CANDIDATES.values()), ids=list(CANDIDATES))
def test_conv_takes_the_precisions_lax_takes(precision):
    """``conv``'s front door (``_args``) accepts what lax accepts, lists as tuples, and refuses
    every other ``precision`` with a message naming it, before any tracing."""
    x, w = jnp.ones((1, 2, 5)), jnp.ones((2, 2, 3))
    if _lax_takes(precision):
        np.testing.assert_array_equal(jaxcnn.conv(x, w, precision=precision), jaxcnn.conv(x, w))
        if isinstance(precision, tuple):
            jaxcnn.conv(x, w, precision=list(precision))
    else:
        with pytest.raises(ValueError, match=r"^precision: expected.*got "):
            jaxcnn.conv(x, w, precision=precision)


def test_jit_cache_size_counts_compiled_signatures():
    traces = []

    @jax.jit
    def double(x):
        traces.append(x.shape)
        return 2 * x

    assert jit_cache_size(double) == 0
    double(jnp.ones(3))
    double(jnp.ones(3))
    assert jit_cache_size(double) == 1
    double(jnp.ones(4))
    assert jit_cache_size(double) == len(traces) == 2


@pytest.mark.parametrize("enabled", [False, True])
def test_enable_x64_sets_the_flag_inside_only(enabled):
    before = jax.config.read("jax_enable_x64")
    with enable_x64(enabled):
        assert jax.config.read("jax_enable_x64") == enabled
        assert jnp.ones(2).dtype == (jnp.float64 if enabled else jnp.float32)
    assert jax.config.read("jax_enable_x64") == before


def test_distributed_is_initialized_agrees_with_jax():
    """The suite is one process that never joined a run; where JAX has the public function, the
    two agree."""
    from jaxcnn._compat import distributed_is_initialized
    assert distributed_is_initialized() is False and jax.process_count() == 1
    public = getattr(jax.distributed, "is_initialized", None)
    if public is not None:
        assert distributed_is_initialized() == public()


@pytest.mark.multidevice
def test_varying_types_against_jax_own_primitive():
    """Inside a checked ``shard_map``, ``to_varying`` types a replicated operand as a split one,
    as JAX does before its own primitives (``x + w`` is the reference type); ``varying_like``
    gives a result that type on another shape, ``invariant`` strips it. Outside ``shard_map``
    (and on releases without varying types) all three change nothing."""
    from jax.sharding import PartitionSpec as Spec
    from jaxcnn._compat import (VARYING_TYPES, invariant, make_mesh, shard_map, to_varying,
                                varying_axes, varying_like)
    x, w = jnp.ones((4, 3)), jnp.ones((1, 3))
    assert to_varying((x, w)) == (x, w)
    if not VARYING_TYPES:
        pytest.skip("no varying types in this JAX (its shard_map has check_rep)")
    seen = {}

    def body(x, w):
        xs, ws = to_varying((x, w))
        want = jax.typeof(x + w)
        seen["axes"] = [varying_axes(jax.typeof(a)) for a in (x, w, xs, ws, x + w)]
        other = varying_like(jax.core.ShapedArray((2,), jnp.float32), (jax.typeof(w), want))
        seen["other"] = (other.shape, other.dtype, varying_axes(other))
        seen["stripped"] = varying_axes(invariant(want))
        return xs + ws
    jax.jit(shard_map(body, make_mesh((4,), ("data",)), (Spec("data"), Spec()), Spec("data")))(x, w)
    data = frozenset({"data"})
    assert seen["axes"] == [data, frozenset(), data, data, data]
    assert seen["other"] == ((2,), jnp.float32, data)
    assert seen["stripped"] == frozenset()
