"""Tests of jaxcnn/_shapes.py: every shape formula, on ints and tuples, no arrays (as JAX tests
``_conv_general_vjp_lhs_padding``).

Three kinds of reference, each independent of the code under test:

- hand-worked values (tables);
- the formulas PyTorch and TensorFlow document, written out here:
  - PyTorch ``torch.nn.Conv1d`` (and 2d/3d, per axis), "Shape":
    ``L_out = floor((L_in + 2·padding − dilation·(kernel_size − 1) − 1) / stride + 1)``
    https://pytorch.org/docs/stable/generated/torch.nn.Conv1d.html
  - PyTorch ``torch.nn.ConvTranspose1d``, "Shape":
    ``L_out = (L_in − 1)·stride − 2·padding + dilation·(kernel_size − 1) + output_padding + 1``
    https://pytorch.org/docs/stable/generated/torch.nn.ConvTranspose1d.html
  - PyTorch ``torch.nn.MaxPool1d``, "Shape": as Conv1d, ``ceil`` instead of ``floor`` with
    ``ceil_mode`` (and a last window that would start in the right padding is dropped, the
    note under ``MaxPool2d``)
    https://pytorch.org/docs/stable/generated/torch.nn.MaxPool1d.html
  - TensorFlow, "Convolution" (``tf.nn.convolution``, the padding notes):
    ``"VALID"``: ``out = ceil((L − (K − 1)·d) / s)``; ``"SAME"``: ``out = ceil(L / s)`` with
    ``pad_total = max((out − 1)·s + (K − 1)·d + 1 − L, 0)``, ``pad_lo = pad_total // 2``
    https://www.tensorflow.org/api_docs/python/tf/nn#notes_on_padding_2
- brute-force enumeration of the index sets the formulas describe: for one spatial axis of a
  conv with input size ``L``, kernel ``K``, stride ``s``, dilation ``d`` and padding
  ``(lo, hi)``, the forward reads ``x[j]`` for tap ``k`` of output ``i`` iff
  ``j = i·s + k·d − lo``. Each VJP is a correlation that must visit exactly those triples
  ``(i, k, j)``, no more (a read outside ``x`` lands in zero padding) and no less, and produce
  exactly the right number of outputs.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from jaxcnn._args import ConvSpec
from jaxcnn._shapes import (conv_output_shape, conv_output_size, conv_transpose_output_size,
                            dilated_size, input_grad_padding, is_int, kernel_sizes, kernel_to_channels_last,
                            output_sizes,
                            pool_output_size, pool_padding, resolve_padding, spatial_sizes,
                            tap_placement, weight_grad_padding)

# ----------------------------------------------------------------------------- hand-worked values


@pytest.mark.parametrize("length,kernel,stride,dilation,lo,hi,expected", [
    pytest.param(28, 3, 1, 1, 0, 0, 26, id="28x3-valid"),        # the seed notes' example
    pytest.param(7, 3, 2, 1, 1, 1, 4, id="stride2-pad1"),         # (7 + 2 − 3) // 2 + 1
    pytest.param(10, 3, 3, 2, 0, 0, 2, id="dilated"),             # extent 5: (10 − 5) // 3 + 1
    pytest.param(6, 2, 4, 3, 2, 1, 2, id="uneven-pads"),          # extent 4: (6 + 3 − 4) // 4 + 1
    pytest.param(5, 5, 1, 1, 0, 0, 1, id="kernel-equals-input"),
    pytest.param(1, 1, 4, 1, 0, 0, 1, id="one-sample"),
    pytest.param(4, 5, 1, 1, 0, 0, 0, id="kernel-too-large"),     # never below zero
])
def test_conv_output_size(length, kernel, stride, dilation, lo, hi, expected):
    assert conv_output_size(length, kernel, stride, dilation, lo, hi) == expected


@given(length=st.integers(0, 20), kernel=st.integers(1, 5), stride=st.integers(1, 4),
       dilation=st.integers(1, 3), lo=st.integers(0, 3), hi=st.integers(0, 3))
def test_conv_output_size_counts_windows(length, kernel, stride, dilation, lo, hi):
    """The number of positions i·stride whose dilated window fits in the padded input."""
    extent = dilation * (kernel - 1) + 1
    count = sum(1 for i in range(length + lo + hi + 1) if i * stride + extent <= length + lo + hi)
    assert conv_output_size(length, kernel, stride, dilation, lo, hi) == count


# (L, K, stride, dilation) -> (lo, hi), worked by hand: out = ceil(L / s), total =
# max((out − 1)·s + d·(K − 1) + 1 − L, 0), the odd extra at the high end.
SAME_TABLE = [
    ((5, 3, 1, 1), (1, 1)), ((5, 4, 1, 1), (1, 2)), ((5, 1, 1, 1), (0, 0)),
    ((5, 2, 1, 3), (1, 2)),                                   # extent 4
    ((7, 3, 2, 1), (1, 1)), ((8, 3, 2, 1), (0, 1)), ((8, 4, 2, 1), (1, 1)),
    ((7, 4, 2, 1), (1, 2)), ((5, 1, 2, 1), (0, 0)), ((6, 3, 2, 2), (1, 2)),  # extent 5: 4 + 5 − 6
    ((7, 3, 3, 1), (1, 1)), ((9, 2, 3, 1), (0, 0)), ((10, 5, 3, 1), (2, 2)),
    ((7, 4, 3, 1), (1, 2)), ((4, 3, 3, 1), (1, 1)), ((6, 2, 3, 1), (0, 0)),
]


@pytest.mark.parametrize("spelling", ["SAME", "same", "Same"])
@pytest.mark.parametrize("case,expected", SAME_TABLE, ids=[str(c) for c, _ in SAME_TABLE])
def test_resolve_same(case, expected, spelling):
    length, kernel, stride, dilation = case
    assert resolve_padding(spelling, (length,), (kernel,), (stride,), (dilation,)) == (expected,)


def test_resolve_same_per_axis():
    assert resolve_padding("same", (8, 7, 5), (4, 3, 2), (2, 1, 3), (1, 2, 1)) == (
        (1, 1), (2, 2), (0, 0))


@pytest.mark.parametrize("padding,expected", [
    pytest.param(2, ((2, 2), (2, 2)), id="int"),
    pytest.param((1, 0), ((1, 1), (0, 0)), id="per-axis-ints"),
    pytest.param(((0, 1), (2, 3)), ((0, 1), (2, 3)), id="pairs"),
    pytest.param([[0, 1], (2, 3)], ((0, 1), (2, 3)), id="pairs-as-lists"),
    pytest.param("VALID", ((0, 0), (0, 0)), id="valid"),
    pytest.param("vAlId", ((0, 0), (0, 0)), id="valid-mixed-case"),
    pytest.param("FULL", ((2, 2), (4, 4)), id="full"),                # extents 3 and 5
    pytest.param("full", ((2, 2), (4, 4)), id="full-lower"),
    pytest.param("CAUSAL", ((2, 0), (4, 0)), id="causal"),
    pytest.param("Causal", ((2, 0), (4, 0)), id="causal-capitalised"),
])
def test_resolve_padding_forms(padding, expected):
    """Two axes: kernel 3 (dilation 1) and kernel 3 with dilation 2 (extent 5)."""
    assert resolve_padding(padding, (6, 9), (3, 3), (1, 2), (1, 2)) == expected


@given(length=st.integers(1, 30), kernel=st.integers(1, 6), stride=st.integers(1, 5),
       dilation=st.integers(1, 3))
def test_same_gives_ceil_of_length_over_stride(length, kernel, stride, dilation):
    ((lo, hi),) = resolve_padding("SAME", (length,), (kernel,), (stride,), (dilation,))
    assert 0 <= lo <= hi <= lo + 1
    assert conv_output_size(length, kernel, stride, dilation, lo, hi) == math.ceil(length / stride)



# ----------------------------------------------------------------------------- brute force

axis = st.fixed_dictionaries(dict(
    length=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 3),
    lo=st.integers(0, 4), hi=st.integers(-2, 4)))   # hi < 0: conv_transpose's output_padding


def _geometry(a) -> tuple:
    """``(stride, dilation, padding)`` of one axis, as the per-axis tuples the helpers take."""
    return (a["s"],), (a["d"],), ((a["lo"], a["hi"]),)


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
    assert output_sizes((a["length"],), (a["k"],), *_geometry(a)) == (_out(a),)
    assert conv_output_size(a["length"], a["k"], a["s"], a["d"], a["lo"], a["hi"]) == _out(a)


@given(axis)
def test_input_grad_padding_visits_exactly_the_forward_triples(a):
    """dx = correlation of the s-dilated dy, padded by (before, after), with the flipped
    kernel (dilation d, stride 1): dx[j] takes flipped tap k' at dilated position
    t = j + k'·d − before, an output i = t / s when s divides t and 0 ≤ i < out."""
    out = _out(a)
    assume(out >= 1)
    (before, after), = input_grad_padding((a["length"],), (a["k"],), (out,), *_geometry(a))
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
    (lo, hi), = weight_grad_padding((a["length"],), (a["k"],), (out,), *_geometry(a))
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




# ----------------------------------------------------------------------------- documented formulas
# Exhaustive small grids: every formula below is the documentation's, written out here.

def _torch_conv_out(length, kernel, stride, dilation, padding):
    """torch.nn.Conv1d: floor((L + 2p − d(K − 1) − 1) / s + 1)."""
    return math.floor((length + 2 * padding - dilation * (kernel - 1) - 1) / stride + 1)


def _torch_conv_transpose_out(length, kernel, stride, dilation, padding, output_padding):
    """torch.nn.ConvTranspose1d: (L − 1)s − 2p + d(K − 1) + output_padding + 1."""
    return (length - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


def _torch_pool_out(length, kernel, stride, dilation, padding, ceil_mode):
    """torch.nn.MaxPool1d: floor or ceil of (L + 2p − d(K − 1) − 1) / s, + 1; in ceil mode the
    last window must start inside the input or the left padding."""
    rounding = math.ceil if ceil_mode else math.floor
    out = rounding((length + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1
    if ceil_mode and (out - 1) * stride >= length + padding:
        out -= 1
    return out


GRID = list(itertools.product(range(1, 10), range(1, 5), range(1, 4), range(1, 4), range(0, 3)))


def test_conv_output_size_is_pytorchs_conv_formula():
    for length, kernel, stride, dilation, padding in GRID:
        expected = _torch_conv_out(length, kernel, stride, dilation, padding)
        got = conv_output_size(length, kernel, stride, dilation, padding, padding)
        assert got == max(expected, 0), (length, kernel, stride, dilation, padding)


def test_conv_transpose_output_size_is_pytorchs_formula():
    for (length, kernel, stride, dilation, padding), output_padding in itertools.product(GRID, range(3)):
        expected = _torch_conv_transpose_out(length, kernel, stride, dilation, padding, output_padding)
        got = conv_transpose_output_size(length, kernel, stride, dilation, padding, padding,
                                         output_padding)
        assert got == expected, (length, kernel, stride, dilation, padding, output_padding)


def test_conv_transpose_output_size_inverts_the_conv_output_size():
    """The transpose's output, convolved again, gives back the transpose's input: the
    ``output_padding < stride`` extra samples are the ones the conv's floor drops."""
    for (length, kernel, stride, dilation, padding), output_padding in itertools.product(GRID, range(3)):
        if output_padding >= stride:
            continue
        size = conv_transpose_output_size(length, kernel, stride, dilation, padding, padding,
                                          output_padding)
        if size >= 1:
            assert conv_output_size(size, kernel, stride, dilation, padding, padding) == length


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_pool_output_size_is_pytorchs_pool_formula(ceil_mode):
    for length, kernel, stride, dilation, padding in GRID:
        if padding > dilated_size(kernel, dilation) // 2:
            continue
        expected = _torch_pool_out(length, kernel, stride, dilation, padding, ceil_mode)
        assert pool_output_size(length, kernel, stride, dilation, padding, ceil_mode) == expected


def test_valid_and_same_are_tensorflows():
    """TensorFlow's notes on padding: VALID gives ceil((L − (K − 1)d) / s), SAME ceil(L / s)
    with pad_total = max((out − 1)s + (K − 1)d + 1 − L, 0) and pad_lo = pad_total // 2."""
    for length, kernel, stride, dilation, _ in GRID:
        extent = (kernel - 1) * dilation + 1
        ((lo, hi),) = resolve_padding("VALID", (length,), (kernel,), (stride,), (dilation,))
        if length >= extent:
            assert conv_output_size(length, kernel, stride, dilation, lo, hi) == math.ceil(
                (length - (kernel - 1) * dilation) / stride)
        out = math.ceil(length / stride)
        total = max((out - 1) * stride + extent - length, 0)
        same = resolve_padding("SAME", (length,), (kernel,), (stride,), (dilation,))
        assert same == ((total // 2, total - total // 2),)
        assert conv_output_size(length, kernel, stride, dilation, *same[0]) == out


@given(length=st.integers(1, 15), k=st.integers(1, 5), d=st.integers(1, 3))
def test_full_and_causal_paddings(length, k, d):
    """Stride 1: FULL gives every position a tap overlaps (L + extent − 1 outputs); CAUSAL
    keeps L outputs, output i seeing inputs up to i only."""
    extent = dilated_size(k, d)
    ((lo, hi),) = resolve_padding("FULL", (length,), (k,), (1,), (d,))
    assert conv_output_size(length, k, 1, d, lo, hi) == length + extent - 1
    ((lo, hi),) = resolve_padding("CAUSAL", (length,), (k,), (1,), (d,))
    assert hi == 0 and conv_output_size(length, k, 1, d, lo, hi) == length
    last_read = [i + (k - 1) * d - lo for i in range(length)]   # the newest input output i reads
    assert last_read == list(range(length))


# ----------------------------------------------------------------------------- more brute force


@given(axis)
def test_output_size_is_never_negative(a):
    """Where no window fits, 0 outputs (the abstract eval relies on it), never a negative size."""
    assert output_sizes((a["length"],), (a["k"],), *_geometry(a)) == (max(_out(a), 0),)


def test_dilated_size_is_the_last_tap_plus_one():
    for size, dilation in itertools.product(range(0, 6), range(1, 4)):
        taps = [k * dilation for k in range(size)]
        assert dilated_size(size, dilation) == (taps[-1] + 1 if taps else 0)


@given(axis, st.integers(0, 4))
def test_tap_placement_puts_each_sample_where_the_tap_read_it(a, k):
    """Placing tap k's ``out`` values with (before, after) and s − 1 between gives exactly the
    padded size, sample i at k·d + i·s: the positions ``window`` reads."""
    assume(k < a["k"])
    out = _out(a)
    assume(out >= 1)
    padded = a["length"] + a["lo"] + a["hi"]
    ((before, after),) = tap_placement((k,), (out,), (a["s"],), (a["d"],), (padded,))
    positions = [before + i * a["s"] for i in range(out)]
    assert positions == [k * a["d"] + i * a["s"] for i in range(out)]
    assert before + (out - 1) * a["s"] + 1 + after == padded and after >= 0


@given(length=st.integers(1, 12), k=st.integers(1, 5), s=st.integers(1, 4), d=st.integers(1, 3),
       p=st.integers(0, 3), ceil_mode=st.booleans())
def test_pool_padding_is_the_least_that_fits_every_window(length, k, s, d, p, ceil_mode):
    """The high side grows by ceil_mode's overhang only: the least hi ≥ p under which every
    one of the ``out`` windows fits the padded input."""
    assume(p <= dilated_size(k, d) // 2)
    out = pool_output_size(length, k, s, d, p, ceil_mode)
    assume(out >= 1)
    lo, hi = pool_padding(length, k, s, d, p, out)
    least = next(h for h in range(p, 64) if (out - 1) * s + dilated_size(k, d) <= length + p + h)
    assert (lo, hi) == (p, least)
    assert conv_output_size(length, k, s, d, lo, hi) == out


@pytest.mark.parametrize("channels_last", [False, True], ids=["channels_first", "channels_last"])
def test_conv_output_shape_in_either_layout(channels_last):
    """x (2, 3, 9, 7) / (2, 9, 7, 3), w (5, 3, 3, 2) / (3, 2, 3, 5), stride (2, 1), padding
    ((1, 1), (0, 1)): sizes (9 + 2 − 3) // 2 + 1 = 5 and (7 + 1 − 2) + 1 = 7."""
    spec = ConvSpec((2, 1), ((1, 1), (0, 1)), (1, 1), 1, channels_last)
    x_shape = (2, 9, 7, 3) if channels_last else (2, 3, 9, 7)
    w_shape = (3, 2, 3, 5) if channels_last else (5, 3, 3, 2)
    assert spatial_sizes(x_shape, spec) == (9, 7)
    assert kernel_sizes(w_shape, spec) == (3, 2)
    assert conv_output_shape(x_shape, w_shape, spec) == ((2, 5, 7, 5) if channels_last else (2, 5, 5, 7))


@pytest.mark.parametrize("value,expected", [
    (3, True), (np.int64(3), True), (-1, True), (True, False), (np.bool_(True), False),
    (3.0, False), ("3", False), (None, False), ((3,), False),
])
def test_is_int(value, expected):
    assert is_int(value) is expected


def test_kernel_to_channels_last_by_hand():
    """``(O, I, K1, K2)`` → ``(K1, K2, I, O)``; 1D ``(O, I, K)`` → ``(K, I, O)``."""
    assert kernel_to_channels_last(2) == (2, 3, 1, 0)
    assert kernel_to_channels_last(1) == (2, 1, 0)
    assert kernel_to_channels_last(3) == (2, 3, 4, 1, 0)
