"""Tests for jaxcnn/transpose.py's conv_transpose: shapes, forward, the adjoint identity, the seed
formula, bad input. Its hand-written VJP, higher derivatives and transformations:
test_transpose_transforms.py; convolve: test_transpose_convolve.py.

References: PyTorch's ``conv_transpose{1,2,3}d``; ``jaxcnn.reference`` (an ``lhs_dilation``
conv, or ``jax.vjp`` of the reference conv); the adjoint identity with ``conv``; a numpy scatter
loop. Everything in float64: forwards agree to ~1e-12.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxcnn
from jaxcnn import reference
from jaxcnn._args import conv_transpose_output_size
from helpers import (IMPLS, TOL, TRANSPOSE_CASES, assert_close, kernel_to_layout, random_array,
                     sample, shape_of, to_layout, vdot)

pytestmark = pytest.mark.x64

F64 = TOL["float64"]
MODES = ("zeros", "reflect", "replicate", "circular")
CASE_IMPL = [(name, IMPLS[i % 2]) for i, name in enumerate(TRANSPOSE_CASES)]


# ----------------------------------------------------------------------------- shape helpers


def test_output_size_formula_by_hand():
    # PyTorch's ConvTranspose1d docs: (L − 1)·s − 2p + d·(K − 1) + output_padding + 1.
    assert conv_transpose_output_size(5, 3, 1, 1, 0, 0, 0) == 7
    assert conv_transpose_output_size(4, 3, 2, 1, 1, 1, 1) == 3 * 2 - 2 + 2 + 1 + 1
    assert conv_transpose_output_size(4, 2, 2, 3, 1, 2, 2) == 6 - 3 + 3 + 2 + 1
    assert conv_transpose_output_size(1, 1, 1, 1, 1, 1, 0) == -1


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_round_trip_shapes(stride):
    """conv maps M samples to L; conv_transpose with output_padding = the remainder gives M;
    with "SAME", conv maps L·s to L and conv_transpose L back to L·s."""
    for length in range(4, 9):
        for kernel, dilation, pad in [(1, 1, 0), (2, 1, 1), (3, 2, 2), (3, 1, 0)]:
            w, kw = (3, 2, kernel), dict(stride=stride, dilation=dilation)
            y = shape_of(jaxcnn.conv, (1, 2, length), w, padding=pad, **kw)
            remainder = (length + 2 * pad - dilation * (kernel - 1) - 1) % stride
            z = shape_of(jaxcnn.conv_transpose, y, w, padding=pad, output_padding=remainder, **kw)
            assert z == (1, 2, length), (length, kernel, dilation, pad)
            y_same = shape_of(jaxcnn.conv, (1, 2, length * stride), w, padding="SAME", **kw)
            z_same = shape_of(jaxcnn.conv_transpose, y_same, w, padding="same", **kw)
            assert y_same == (1, 3, length) and z_same == (1, 2, length * stride)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("name, impl", CASE_IMPL)
def test_forward_matches_torch(name, impl, rng):
    """PyTorch takes symmetric padding only: run it unpadded and crop (lo, hi) per axis, which
    is what its ``padding`` does (``output_padding`` extends the high end before the crop);
    where the case is symmetric, also with PyTorch's own ``padding``."""
    torch = pytest.importorskip("torch")
    case = TRANSPOSE_CASES[name]
    x, w, b = case.arrays(rng)
    actual = jaxcnn.conv_transpose(x, w, b, impl=impl, **case.kwargs())
    fn = getattr(torch.nn.functional, f"conv_transpose{case.n}d")
    run = lambda padding: fn(*(torch.tensor(np.asarray(a)) for a in (x, w, b)), stride=case.stride,
                             padding=padding, output_padding=case.output_padding,
                             groups=case.groups, dilation=case.dilation).numpy()
    full = run(0)
    crop = tuple(slice(lo, size - hi) for (lo, hi), size in zip(case.padding, full.shape[2:]))
    assert_close(actual, full[(slice(None), slice(None)) + crop], F64, name)
    if all(lo == hi for lo, hi in case.padding):
        assert_close(actual, run(tuple(lo for lo, _ in case.padding)), F64, name)


@pytest.mark.parametrize("name", TRANSPOSE_CASES)
def test_reference_routes_agree(name, rng):
    """The oracle's lhs_dilation formula equals autodiff's transpose of the reference conv."""
    case = TRANSPOSE_CASES[name]
    x, w, _ = case.arrays(rng, with_bias=False)
    z = reference.conv_transpose(x, w, **case.kwargs())
    conv = lambda u: reference.conv(u, w, stride=case.stride, padding=case.padding,
                                    dilation=case.dilation, groups=case.groups)
    y, pullback = jax.vjp(conv, jnp.zeros(z.shape))
    widths = [(0, 0), (0, 0)] + [(0, full - size) for full, size in zip(y.shape[2:], x.shape[2:])]
    assert_close(z, pullback(jnp.pad(x, widths))[0], F64, name)


def test_same_padding_output_is_input_times_stride(rng):
    """TensorFlow's conv2d_transpose SAME: output L·s; and the adjoint of conv's SAME."""
    x = random_array(rng, (1, 3, 4, 5))
    w = random_array(rng, (3, 2, 3, 2))
    for stride, dilation in [((2, 3), (1, 1)), ((1, 2), (2, 1))]:
        z = jaxcnn.conv_transpose(x, w, stride=stride, dilation=dilation, padding="SAME")
        assert z.shape == (1, 2, 4 * stride[0], 5 * stride[1])
        u = random_array(rng, z.shape)
        y = jaxcnn.conv(u, w, stride=stride, dilation=dilation, padding="same")
        assert_close(vdot(y, x), vdot(u, z), F64, f"SAME adjoint {stride}, {dilation}")


# ----------------------------------------------------------------------------- the adjoint identity

ADJOINT_CONFIGS = {  # (x sizes, kernel, stride, dilation, (lo, hi) per axis, groups)
    1: ((7,), (3,), (2,), (1,), ((2, 1),), 1),
    2: ((5, 6), (2, 3), (2, 3), (2, 1), ((1, 0), (2, 2)), 2),
    3: ((4, 3, 5), (2, 1, 2), (1, 2, 2), (1, 1, 2), ((1, 1), (0, 2), (1, 0)), 1),
}


@pytest.mark.parametrize("mode, n, impl", sample([(mode, n, IMPLS[(i + n) % 2])   # each value once
                                                  for i, mode in enumerate(MODES) for n in (1, 2, 3)],
                                                 strength=1))
def test_adjoint_identity(mode, n, impl, rng):
    """⟨conv(x, w), y⟩ = ⟨x, conv_transpose(y, w)⟩, same w, for every padding_mode."""
    sizes, kernel, stride, dilation, pads, groups = ADJOINT_CONFIGS[n]
    channels_last = n == 2
    x = random_array(rng, (2, 2 * groups, *sizes))
    w = random_array(rng, (3 * groups, 2, *kernel))
    kw = dict(stride=stride, dilation=dilation, padding=pads, groups=groups, padding_mode=mode,
              channels_last=channels_last, impl=impl)
    xl, wl = to_layout(x, channels_last), kernel_to_layout(w, channels_last)
    remainder = tuple((m + lo + hi - d * (k - 1) - 1) % s
                      for m, (lo, hi), d, k, s in zip(sizes, pads, dilation, kernel, stride))
    u = random_array(rng, shape_of(jaxcnn.conv, xl.shape, wl.shape, **kw))

    @jax.jit
    def run(x, w, u):
        return (jaxcnn.conv(x, w, **kw),
                jaxcnn.conv_transpose(u, w, output_padding=remainder, **kw),
                reference.conv_transpose(u, w, output_padding=remainder, **kw))

    y, z, z_ref = run(xl, wl, u)
    assert z.shape == xl.shape
    lhs, rhs = vdot(y, u), vdot(xl, z)
    scale = float(vdot(jnp.abs(y), jnp.abs(u)))  # the sum of |products|: rounding's yardstick
    assert abs(float(lhs - rhs)) <= F64 * scale, (float(lhs), float(rhs))
    assert_close(z, z_ref, F64, mode)


# ----------------------------------------------------------------------------- the seed formula


def scatter_reference(x, w, stride, dilation, padding, output_padding, groups):
    """``z[n, c, j] = Σ_o Σ_{i, k : i·s + k·d = j + lo} w[o, c, k] · x[n, o, i]`` by loops in
    numpy: every input sample scattered through the kernel, then cropped (channels first)."""
    x, w = np.asarray(x), np.asarray(w)
    c_in, out_per_group, *kernel = w.shape
    sizes = x.shape[2:]
    full = [(l - 1) * s + d * (k - 1) + 1 + p for l, s, d, k, p
            in zip(sizes, stride, dilation, kernel, output_padding)]
    z = np.zeros((x.shape[0], out_per_group * groups, *full))
    in_per_group = c_in // groups
    for o in range(c_in):
        g = o // in_per_group
        for i in np.ndindex(*sizes):
            for k in np.ndindex(*kernel):
                j = tuple(a * s + b * d for a, b, s, d in zip(i, k, stride, dilation))
                z[(slice(None), slice(g * out_per_group, (g + 1) * out_per_group)) + j] += (
                    x[(slice(None), o) + i][:, None] * w[(o, slice(None)) + k][None, :])
    crop = tuple(slice(lo, f - hi) for (lo, hi), f in zip(padding, full))
    return z[(slice(None), slice(None)) + crop]


@given(data=st.data())
def test_matches_seed_formula(data):
    """Random small configurations against the scatter loops above."""
    n = data.draw(st.integers(1, 2), label="n")
    stride = tuple(data.draw(st.integers(1, 3), label="stride") for _ in range(n))
    dilation = tuple(data.draw(st.integers(1, 2), label="dilation") for _ in range(n))
    kernel = tuple(data.draw(st.integers(1, 3), label="kernel") for _ in range(n))
    sizes = tuple(data.draw(st.integers(1, 4), label="size") for _ in range(n))
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1), label="output_padding")
                           for s, d in zip(stride, dilation))
    full = [(l - 1) * s + d * (k - 1) + 1 + p
            for l, s, d, k, p in zip(sizes, stride, dilation, kernel, output_padding)]
    padding = tuple((data.draw(st.integers(0, (f - 1) // 2), label="lo"),
                     data.draw(st.integers(0, (f - 1) // 2), label="hi")) for f in full)
    groups = data.draw(st.sampled_from([1, 2]), label="groups")
    impl = data.draw(st.sampled_from(IMPLS), label="impl")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    x = random_array(rng, (2, 2 * groups, *sizes))
    w = random_array(rng, (2 * groups, 1, *kernel))
    z = jaxcnn.conv_transpose(x, w, stride=stride, dilation=dilation, padding=padding,
                              output_padding=output_padding, groups=groups, impl=impl)
    assert_close(z, scatter_reference(x, w, stride, dilation, padding, output_padding, groups),
                 F64, "seed formula")


# ----------------------------------------------------------------------------- bad input

BAD_TRANSPOSE = {  # name: (changes to x (1, 4, 5), w (4, 3, 3), b None and kwargs, error, argument)
    "output_padding_ge_stride": (dict(stride=2, output_padding=2), ValueError, "output_padding"),
    "output_padding_ge_dilation": (dict(dilation=3, output_padding=3), ValueError,
                                   "output_padding"),
    "output_padding_negative": (dict(output_padding=-1), ValueError, "output_padding"),
    "output_padding_length": (dict(stride=2, output_padding=(1, 1)), ValueError, "output_padding"),
    "output_padding_with_same": (dict(stride=2, padding="SAME", output_padding=1), ValueError,
                                 "output_padding"),
    "non_positive_output": (dict(x=(1, 4, 1), w=(4, 3, 1), padding=1), ValueError, "padding"),
    "w_rank": (dict(w=(4, 3)), ValueError, "w"),
    "x_rank": (dict(x=(4, 5)), ValueError, "x"),
    "channels_mismatch": (dict(w=(3, 3, 3)), ValueError, "w"),
    "groups_not_dividing": (dict(groups=3), ValueError, "groups"),
    "groups_zero": (dict(groups=0), ValueError, "groups"),
    "groups_float": (dict(groups=1.5), TypeError, "groups"),
    "bias_shape": (dict(b=(4,)), ValueError, "b"),
    "unknown_mode": (dict(padding_mode="mirror"), ValueError, "padding_mode"),
    "reflect_too_wide": (dict(padding=3, padding_mode="reflect"), ValueError, "padding"),
    "negative_padding": (dict(padding=-1), ValueError, "padding"),
    "unknown_padding": (dict(padding="BIG"), ValueError, "padding"),
    "stride_zero": (dict(stride=0), ValueError, "stride"),
    "impl": (dict(impl="cuda"), ValueError, "impl"),
    "channels_last_str": (dict(channels_last="yes"), TypeError, "channels_last"),
    "empty_kernel": (dict(w=(4, 3, 0)), ValueError, "w"),
    "empty_input": (dict(x=(1, 4, 0)), ValueError, "x"),
}


@pytest.mark.parametrize("name", BAD_TRANSPOSE)
def test_bad_input(name):
    changes, error, argument = BAD_TRANSPOSE[name]
    kw = dict(changes)
    x, w, b = kw.pop("x", (1, 4, 5)), kw.pop("w", (4, 3, 3)), kw.pop("b", None)
    with pytest.raises(error, match=argument):
        jaxcnn.conv_transpose(jnp.zeros(x), jnp.zeros(w), None if b is None else jnp.zeros(b), **kw)


def test_bad_dtypes():
    with pytest.raises(TypeError, match="x"):
        jaxcnn.conv_transpose(jnp.zeros((1, 4, 5), jnp.int32), jnp.zeros((4, 3, 3)))
    with pytest.raises(TypeError, match="w"):
        jaxcnn.conv_transpose(jnp.zeros((1, 4, 5)), jnp.zeros((4, 3, 3), jnp.float32))
