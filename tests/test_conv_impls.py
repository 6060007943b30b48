"""``jaxcnn.conv_impls``' shape helpers against brute-force enumeration of the index sets they
describe (no arrays: pure integer arithmetic, as JAX tests ``_conv_general_vjp_lhs_padding``).

For one spatial axis of a conv with input size ``L``, kernel ``K``, stride ``s``, dilation
``d`` and padding ``(lo, hi)``, the forward reads ``x[j]`` for tap ``k`` of output ``i`` iff
``j = i·s + k·d − lo``. Each VJP is a correlation that must visit exactly those triples
``(i, k, j)``, no more (a read outside ``x`` lands in zero padding) and no less, and produce
exactly the right number of outputs.
"""
from __future__ import annotations

from hypothesis import assume, given
from hypothesis import strategies as st

from jaxcnn._args import ConvSpec, conv_output_size, pool_output_size, resolve_padding
from jaxcnn.conv_impls import (input_grad_aborts_xla, input_grad_padding, output_sizes,
                               weight_grad_padding)
from jaxcnn.xla_guard import operand_swap_aborts

axis = st.fixed_dictionaries(dict(
    length=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 3),
    lo=st.integers(0, 4), hi=st.integers(-2, 4)))   # hi < 0: conv_transpose's output_padding


def _spec(a) -> ConvSpec:
    return ConvSpec((a["s"],), ((a["lo"], a["hi"]),), (a["d"],), 1, False)


def _out(a) -> int:
    """Brute force: outputs ``i`` whose every tap ``i·s + k·d`` lies in the padded input."""
    extent = a["d"] * (a["k"] - 1) + 1
    return sum(1 for i in range(64) if i * a["s"] + extent <= a["length"] + a["lo"] + a["hi"])


def _forward_triples(a, out) -> set:
    return {(i, k, i * a["s"] + k * a["d"] - a["lo"]) for i in range(out) for k in range(a["k"])
            if 0 <= i * a["s"] + k * a["d"] - a["lo"] < a["length"]}


@given(axis)
def test_output_size_counts_the_windows_that_fit(a):
    assume(_out(a) >= 1)
    assert output_sizes((a["length"],), (a["k"],), _spec(a)) == (_out(a),)
    assert conv_output_size(a["length"], a["k"], a["s"], a["d"], a["lo"], a["hi"]) == _out(a)


@given(axis)
def test_input_grad_padding_visits_exactly_the_forward_triples(a):
    """dx = correlation of the s-dilated dy, padded by (before, after), with the flipped
    kernel (dilation d, stride 1): dx[j] takes flipped tap k' at dilated position
    t = j + k'·d − before, an output i = t / s when s divides t and 0 ≤ i < out."""
    out = _out(a)
    assume(out >= 1)
    (before, after), = input_grad_padding((a["length"],), (a["k"],), (out,), _spec(a))
    dilated = (out - 1) * a["s"] + 1
    assert dilated + before + after - (a["d"] * (a["k"] - 1) + 1) + 1 == a["length"]
    seen = set()
    for j in range(a["length"]):
        for flipped in range(a["k"]):
            t = j + flipped * a["d"] - before
            if t % a["s"] == 0 and 0 <= t // a["s"] < out:
                seen.add((t // a["s"], a["k"] - 1 - flipped, j))
    assert seen == _forward_triples(a, out)


@given(axis)
def test_weight_grad_padding_visits_exactly_the_forward_triples(a):
    """dw = correlation of x padded by (lo, hi') with dy as the kernel (dilation s), stride d:
    dw[k] takes dy[i] against x_pad[k·d + i·s], i.e. x[k·d + i·s − lo]; K outputs exactly."""
    out = _out(a)
    assume(out >= 1)
    (lo, hi), = weight_grad_padding((a["length"],), (a["k"],), (out,), _spec(a))
    assert lo == a["lo"]
    dilated = (out - 1) * a["s"] + 1
    assert (a["length"] + lo + hi - dilated) // a["d"] + 1 == a["k"]
    seen = {(i, k, k * a["d"] + i * a["s"] - lo) for k in range(a["k"]) for i in range(out)
            if 0 <= k * a["d"] + i * a["s"] - lo < a["length"]}
    assert seen == _forward_triples(a, out)


@given(length=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 3),
       p=st.integers(0, 3), ceil_mode=st.booleans())
def test_pool_output_size_counts_windows_as_pytorch(length, k, s, d, p, ceil_mode):
    """Floor mode: windows inside the padded input. Ceil mode: also a last partial window,
    if it starts inside the input or the left padding (start i·s − p < L)."""
    extent = d * (k - 1) + 1
    assume(p <= extent // 2)            # the padding pooling accepts
    if ceil_mode:
        brute = sum(1 for i in range(64) if i * s <= length + 2 * p - extent + s - 1 and i * s - p < length)
    else:
        brute = sum(1 for i in range(64) if i * s + extent <= length + 2 * p)
    got = pool_output_size(length, k, s, d, p, ceil_mode)
    assert max(got, 0) == brute


@given(length=st.integers(1, 15), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 3))
def test_same_padding_is_the_least_that_gives_ceil(length, k, s, d):
    (lo, hi), = resolve_padding("SAME", (length,), (k,), (s,), (d,))
    extent = d * (k - 1) + 1
    wanted = -(-length // s)
    least = next(t for t in range(64) if length + t >= extent and (length + t - extent) // s + 1 >= wanted)
    assert lo + hi == least and lo == least // 2
    assert conv_output_size(length, k, s, d, lo, hi) == wanted


@given(axis, axis)
def test_input_grad_abort_rule_is_the_guard_on_the_emitted_convolution(a, b):
    """``input_grad_aborts_xla`` asks ``xla_guard`` about exactly the convolution that
    ``_lax_input_grad`` emits: dy's sizes, stride 1, the VJP padding, lhs dilation = stride."""
    spec = ConvSpec((a["s"], b["s"]), ((a["lo"], a["hi"]), (b["lo"], b["hi"])), (a["d"], b["d"]), 1, False)
    out = (_out(a), _out(b))
    assume(min(out) >= 1)
    sizes, kernel = (a["length"], b["length"]), (a["k"], b["k"])
    pads = input_grad_padding(sizes, kernel, out, spec)
    assert input_grad_aborts_xla(sizes, kernel, out, spec, "float64") == operand_swap_aborts(
        out, kernel, (1, 1), pads, spec.stride, spec.dilation, dtype="float64")
