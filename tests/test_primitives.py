"""Tests of jaxcnn/_primitives.py: the factory every jaxcnn primitive is made by.

Independent reference: the same computation written directly in ``jnp``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._primitives import ShapedArray, make_primitive


def _shift(x, *, by, platform=None):
    """``x + by``, plus one more where lowered for CPU: which lowering ran is visible."""
    return x + by + (1 if platform == "cpu" else 0)


shift_p = make_primitive("test_shift", _shift,
                         lambda x, *, by: ShapedArray(x.shape, x.dtype), platforms=("cpu",))
concat_p = make_primitive("test_concat", lambda x, *, copies: jnp.concatenate([x] * copies),
                          lambda x, *, copies: ShapedArray((x.shape[0] * copies,), x.dtype))


def test_eager_jit_and_platform_lowering_agree():
    x = jnp.arange(4.0)
    expected = x + 10 + (1 if jax.default_backend() == "cpu" else 0)
    np.testing.assert_array_equal(shift_p.bind(x, by=10), expected)
    np.testing.assert_array_equal(jax.jit(lambda x: shift_p.bind(x, by=10))(x), expected)


def test_abstract_eval_and_name():
    x = jnp.arange(3.0)
    out = jax.eval_shape(lambda x: concat_p.bind(x, copies=3), x)
    assert (out.shape, out.dtype) == ((9,), x.dtype)
    assert "jaxcnn_test_concat" in str(jax.make_jaxpr(lambda x: concat_p.bind(x, copies=3))(x))
    np.testing.assert_array_equal(concat_p.bind(x, copies=3), jnp.tile(x, 3))
