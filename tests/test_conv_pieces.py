"""Tests of jaxcnn/_conv/pieces.py's shared pieces: the accumulation-dtype rule, the choice of the
input gradient's form by XLA's abort rule, and the contraction every manual form runs. The shape formulas the pieces use
are tested in test_shapes.py; the pieces' values in test_conv.py and test_conv_rules.py.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jaxcnn._args import ConvSpec
from jaxcnn._shapes import input_grad_padding
from jaxcnn._conv.pieces import _EINSUM, _dot, input_grad_aborts_xla, output_dtype, sum_dtype
from jaxcnn._conv.xla_guard import operand_swap_aborts

axis = st.fixed_dictionaries(dict(
    length=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 3),
    lo=st.integers(0, 4), hi=st.integers(-2, 4)))   # hi < 0: conv_transpose's output_padding


def _out(a) -> int:
    """Brute force: outputs ``i`` whose every tap ``i·s + k·d`` lies in the padded input."""
    extent = a["d"] * (a["k"] - 1) + 1
    return sum(1 for i in range(64) if i * a["s"] + extent <= a["length"] + a["lo"] + a["hi"])


@given(axis, axis)
def test_input_grad_abort_rule_is_the_guard_on_the_emitted_convolution(a, b):
    """``input_grad_aborts_xla`` asks ``xla_guard`` about exactly the convolution that
    ``lax_input_grad`` emits: dy's sizes, stride 1, the VJP padding, lhs dilation = stride."""
    spec = ConvSpec((a["s"], b["s"]), ((a["lo"], a["hi"]), (b["lo"], b["hi"])), (a["d"], b["d"]), 1, False)
    out = (_out(a), _out(b))
    assume(min(out) >= 1)
    sizes, kernel = (a["length"], b["length"]), (a["k"], b["k"])
    pads = input_grad_padding(sizes, kernel, out, spec.stride, spec.dilation, spec.padding)
    assert input_grad_aborts_xla(sizes, kernel, out, spec, "float64") == operand_swap_aborts(
        out, kernel, (1, 1), pads, spec.stride, spec.dilation, dtype="float64")


@pytest.mark.parametrize("dtype,preferred,returned,summed", [
    pytest.param("float64", None, "float64", "float64", id="float64"),
    pytest.param("float32", None, "float32", "float32", id="float32"),
    pytest.param("bfloat16", None, "bfloat16", "float32", id="bfloat16-sums-in-float32"),
    pytest.param("float16", None, "float16", "float32", id="float16-sums-in-float32"),
    pytest.param("bfloat16", "float32", "float32", "float32", id="bfloat16-preferred-float32"),
    pytest.param("float32", "float64", "float64", "float64", id="float32-preferred-float64"),
])
def test_accumulation_rule(dtype, preferred, returned, summed):
    """As ``lax.conv_general_dilated``: a piece returns ``preferred_element_type`` if set,
    else the operands' dtype; the taps are summed in float32 for half precision."""
    spec = ConvSpec((1,), ((0, 0),), (1,), 1, False,
                    preferred_element_type=None if preferred is None else jnp.dtype(preferred))
    assert jnp.dtype(output_dtype(spec, jnp.dtype(dtype))) == jnp.dtype(returned)
    assert jnp.dtype(sum_dtype(spec, jnp.dtype(dtype))) == jnp.dtype(summed)


_SUBSCRIPTS = [*(s for layout in _EINSUM.values() for s in layout),
               *(s.replace("g", "") for layout in _EINSUM.values() for s in layout),
               "n...c,n...o->nco", "nc...,no...->noc",                  # sample-batched taps
               "n...tgc,n...go->tcgo", "ngct...,ngo...->goct"]          # im2col weight gradient


def _operand_shapes(subscripts: str, spatial: tuple[int, ...]) -> list[tuple[int, ...]]:
    sizes = dict(n=2, g=2, c=3, o=4, t=5)
    return [tuple(s for letter in term for s in (spatial if letter == "." else (sizes[letter],)))
            for term in subscripts.split("->")[0].replace("...", ".").split(",")]


@pytest.mark.x64
@pytest.mark.parametrize("subscripts", _SUBSCRIPTS)
@pytest.mark.parametrize("spatial", [(7,), (3, 4), (2, 3, 4)], ids=["1d", "2d", "3d"])
def test_dot_is_einsum_summing_in_operand_order(subscripts, spatial):
    """``_dot`` is ``jnp.einsum`` (float64, to rounding), and its one ``dot_general`` lists the
    summed and batch axes in the first operand's axis order (what spares XLA the copies)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s) for s in _operand_shapes(subscripts, spatial))
    got = _dot(subscripts, jnp.asarray(a), jnp.asarray(b))
    spelled = subscripts.replace("...", "xyz"[:len(spatial)])   # NumPy's ... is never summed
    np.testing.assert_allclose(got, np.einsum(spelled, a, b), rtol=1e-12, atol=1e-12)
    eqn, = [e for e in jax.make_jaxpr(lambda a, b: _dot(subscripts, a, b))(a, b).eqns
            if e.primitive.name == "dot_general"]
    (summed, _), (batch, _) = eqn.params["dimension_numbers"]
    assert list(summed) == sorted(summed) and list(batch) == sorted(batch)
