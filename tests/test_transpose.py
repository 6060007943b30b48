"""Tests for jaxcnn/transpose.py, one section per function.

conv_transpose: shapes, forward, the adjoint identity, the seed formula, the hand-written VJP
and higher derivatives, vmap / jit / an empty batch, bad input. convolve: values and VJP,
bad input.

References: PyTorch's ``conv_transpose{1,2,3}d``; ``jaxcnn.reference`` (an ``lhs_dilation``
conv, or ``jax.vjp`` of the reference conv) and JAX autodiff of it; the adjoint identity with
``conv``; a numpy scatter loop; finite differences; numpy/scipy convolution and a hand-worked
1D case. Everything in float64: forwards agree to ~1e-12, VJPs to ``VJP_TOL`` (1e-10).
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import jaxcnn
from jaxcnn import reference
from jaxcnn._args import conv_transpose_output_size
from helpers import (IMPLS, TOL, TRANSPOSE_CASES, VJP_TOL, assert_close, kernel_to_layout,
                     random_array, sample, shape_of, to_layout, transpose_case, tree_assert_close,
                     value_and_vjp, vdot)

pytestmark = pytest.mark.x64

F64 = TOL["float64"]
MODES = ("zeros", "reflect", "replicate", "circular")
CASE_IMPL = [(name, IMPLS[i % 2]) for i, name in enumerate(TRANSPOSE_CASES)]
LAYOUTS = {"channels_first": False, "channels_last": True}
# Latin pairing instead of full products (2 CPU cores): along the cases, (layout, impl) cycles
# through all four combinations, and impl alternates, so every pair still meets.
LAYOUT_IMPL = [("channels_first", "lax"), ("channels_last", "manual"),
               ("channels_last", "lax"), ("channels_first", "manual")]
CASE_LAYOUT_IMPL = [(name, *LAYOUT_IMPL[(2 * i + j) % 4])
                    for i, name in enumerate(TRANSPOSE_CASES) for j in (0, 1)]


# =============================================================================================
# conv_transpose
# =============================================================================================

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


# ----------------------------------------------------------------------------- derivatives


# The default tier: rank, layout and impl pairwise (strides, groups and output padding meet the
# VJP in test_finite_differences); the full tier every case in two (layout, impl) pairs.
@pytest.mark.parametrize("name, layout, impl", sample(
    CASE_LAYOUT_IMPL, key=lambda case: (TRANSPOSE_CASES[case[0]].n, *case[1:])))
def test_matches_reference(name, layout, impl, rng):
    """Forward and hand-written VJP (x, w, b) vs the oracle and JAX autodiff of it."""
    case, channels_last = TRANSPOSE_CASES[name], LAYOUTS[layout]
    x, w, b = case.arrays(rng)
    args = (to_layout(x, channels_last), kernel_to_layout(w, channels_last), b)
    kw = dict(channels_last=channels_last, **case.kwargs())
    # The oracle in channels-first layout, moved: the layout handling is checked too.
    ref_out = to_layout(reference.conv_transpose(x, w, b, **case.kwargs()), channels_last)
    cotangent = random_array(rng, ref_out.shape)
    _, ref_grads = value_and_vjp(partial(reference.conv_transpose, **kw), args, cotangent)
    out, grads = value_and_vjp(partial(jaxcnn.conv_transpose, impl=impl, **kw), args, cotangent)
    assert out.shape == ref_out.shape
    assert_close(out, ref_out, F64, f"{name} forward")
    tree_assert_close(grads, ref_grads, VJP_TOL, f"{name} vjp")


@pytest.mark.parametrize("mode, impl", [("reflect", "lax"), ("circular", "manual")])
def test_border_modes_forward_and_vjp(mode, impl, rng):
    """Non-zero padding modes (the true adjoint; PyTorch has none) vs autodiff of the oracle."""
    case = transpose_case((5, 4), (3, 2), (2, 1), (1, 2), ((2, 1), (1, 2)), (1, 1), groups=2)
    x, w, b = case.arrays(rng)
    kw = dict(padding_mode=mode, **case.kwargs())
    cotangent = random_array(rng, reference.conv_transpose(x, w, b, **kw).shape)
    args = (x, w, b)
    ref_out, ref_grads = value_and_vjp(partial(reference.conv_transpose, **kw), args, cotangent)
    out, grads = value_and_vjp(partial(jaxcnn.conv_transpose, impl=impl, **kw), args, cotangent)
    assert_close(out, ref_out, F64, mode)
    tree_assert_close(grads, ref_grads, VJP_TOL, f"{mode} vjp")


FD_CASES = {1: "1d_dilation3_op2_groups2", 2: "2d_stride_dilation_asym_pad", 3: "3d"}


@pytest.mark.parametrize("n", FD_CASES)
def test_finite_differences(n, rng):
    """Central differences along a random direction of ⟨conv_transpose(x, w, b), c⟩: the map
    is a quadratic polynomial of (x, w, b) jointly, so the central difference is exact up to
    rounding (~ε·|f|/h), and must match ⟨∇f, direction⟩ from the hand-written VJP."""
    case = TRANSPOSE_CASES[FD_CASES[n]]
    args = case.arrays(rng)
    c = random_array(rng, shape_of(jaxcnn.conv_transpose, *(a.shape for a in args),
                                   **case.kwargs()))
    impl = "manual" if n < 3 else "lax"
    f = jax.jit(lambda *a: vdot(jaxcnn.conv_transpose(*a, impl=impl, **case.kwargs()), c))
    direction = tuple(random_array(rng, a.shape) for a in args)
    h = 1e-3
    plus = f(*(a + h * d for a, d in zip(args, direction)))
    minus = f(*(a - h * d for a, d in zip(args, direction)))
    numeric = (plus - minus) / (2 * h)
    grads = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(*args)
    analytic = sum(vdot(g, d) for g, d in zip(grads, direction))
    # Rounding in f is ~ε·Σ|terms| ≈ 1e-14, divided by h: ~1e-11 of a derivative of order 10.
    assert_close(numeric, analytic, 1e-9, "finite differences")


@pytest.mark.parametrize("n, impl", [(1, "manual"), (2, "lax"), (3, "lax")])
def test_grad_of_grad(n, impl, rng):
    """Hessian-vector products by reverse over reverse, against the oracle's."""
    case = TRANSPOSE_CASES[FD_CASES[n]]
    x, w, b = case.arrays(rng)
    v = random_array(rng, w.shape)

    def hvp(op):
        loss = lambda x, w, b: jnp.sum(jnp.sin(op(x, w, b, **case.kwargs())))
        return jax.jit(jax.grad(lambda x, w, b: vdot(jax.grad(loss, argnums=1)(x, w, b), v),
                                argnums=(0, 1, 2)))(x, w, b)

    tree_assert_close(hvp(lambda *a, **k: jaxcnn.conv_transpose(*a, impl=impl, **k)),
                      hvp(reference.conv_transpose), VJP_TOL, "grad of grad")


@pytest.mark.parametrize("impl", IMPLS)
def test_forward_over_reverse(impl, rng):
    """jax.hessian-style forward-over-reverse and jax.jvp, against the oracle's."""
    case = TRANSPOSE_CASES["1d_dilation3_op2_groups2"]
    x, w, b = case.arrays(rng)
    tangents = tuple(random_array(rng, a.shape) for a in (x, w, b))

    @partial(jax.jit, static_argnums=0)
    def both(op):
        loss = lambda x, w, b: jnp.sum(jnp.sin(op(x, w, b, **case.kwargs())))
        _, hvp = jax.jvp(jax.grad(loss, argnums=(0, 1, 2)), (x, w, b), tangents)
        _, jvp = jax.jvp(lambda *a: op(*a, **case.kwargs()), (x, w, b), tangents)
        return hvp, jvp

    tree_assert_close(both(lambda *a, **k: jaxcnn.conv_transpose(*a, impl=impl, **k)),
                      both(reference.conv_transpose), VJP_TOL, "forward over reverse")


# ----------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("impl", IMPLS)
def test_vmap_and_jit(impl, rng):
    case = TRANSPOSE_CASES["1d_dilation3_op2_groups2"]
    xs = random_array(rng, (3, *case.x_shape()))
    ws = random_array(rng, (3, *case.w_shape()))       # (C, O/g, *K), PyTorch's
    b = random_array(rng, (case.out_channels,))
    op = lambda x, w: jaxcnn.conv_transpose(x, w, b, impl=impl, **case.kwargs())
    ref = lambda x, w: reference.conv_transpose(x, w, b, **case.kwargs())
    ref_grad = jax.grad(lambda x, w: jnp.sum(ref(x, w) ** 2), argnums=1)

    @jax.jit
    def looped(xs, ws):  # the oracle, one example at a time
        return (jnp.stack([ref(x, w) for x, w in zip(xs, ws)]),
                jnp.stack([ref(x, ws[0]) for x in xs]),
                jnp.stack([ref_grad(x, w) for x, w in zip(xs, ws)]))

    both, shared, grads = looped(xs, ws)
    assert_close(jax.vmap(op)(xs, ws), both, F64, "vmap over x and w")
    assert_close(jax.vmap(op, in_axes=(0, None))(xs, ws[0]), shared, F64, "vmap over x")
    assert_close(jax.jit(op)(xs[0], ws[0]), both[0], F64, "jit")
    grad = jax.vmap(jax.grad(lambda x, w: jnp.sum(op(x, w) ** 2), argnums=1))(xs, ws)
    assert_close(grad, grads, VJP_TOL, "vmap of grad")


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch(impl, rng):
    case = dataclasses.replace(TRANSPOSE_CASES["1d_stride2_pad1_op1"], batch=0)
    x, w, b = case.arrays(rng)
    z = jaxcnn.conv_transpose(x, w, b, impl=impl, **case.kwargs())
    assert z.shape == reference.conv_transpose(x, w, b, **case.kwargs()).shape
    assert z.shape[0] == 0
    gx, gw, gb = jax.grad(lambda *a: jnp.sum(jaxcnn.conv_transpose(*a, impl=impl, **case.kwargs())),
                          argnums=(0, 1, 2))(x, w, b)
    assert gx.shape == x.shape and gw.shape == w.shape and gb.shape == b.shape
    assert not jnp.any(gw) and not jnp.any(gb)


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

# =============================================================================================
# convolve
# =============================================================================================

# ----------------------------------------------------------------------------- values and VJP


@pytest.mark.parametrize("impl", IMPLS)
def test_convolve_by_hand(impl):
    # [1, 2, 3, 4] * [0, 1, 0.5]: full[i] = Σ_a f(a) g(i − a), worked by hand:
    #   i=0: 1·0 = 0          i=1: 1·1 + 2·0 = 1          i=2: 1·.5 + 2·1 + 3·0 = 2.5
    #   i=3: 2·.5 + 3·1 + 4·0 = 4    i=4: 3·.5 + 4·1 = 5.5    i=5: 4·.5 = 2
    f = jnp.array([[[1.0, 2.0, 3.0, 4.0]]])
    g = jnp.array([[[0.0, 1.0, 0.5]]])
    full = jnp.array([0.0, 1.0, 2.5, 4.0, 5.5, 2.0])
    assert_close(jaxcnn.convolve(f, g, padding="FULL", impl=impl)[0, 0], full, F64, "full")
    assert_close(jaxcnn.convolve(f, g, impl=impl)[0, 0], full[2:4], F64, "valid")
    # cross-correlation would have read the kernel the other way round: [1·0 + 2·1 + 3·.5, ...]
    assert_close(jaxcnn.conv(f, g, impl=impl)[0, 0], jnp.array([3.5, 5.0]), F64, "conv, unflipped")


@pytest.mark.parametrize("mode, impl", [("valid", "lax"), ("full", "manual")])
def test_convolve_matches_numpy(mode, impl, rng):
    x = random_array(rng, (2, 3, 7))
    w = random_array(rng, (2, 3, 4))
    expected = np.array([[sum(np.convolve(x[n, c], w[o, c], mode) for c in range(3))
                          for o in range(2)] for n in range(2)])
    assert_close(jaxcnn.convolve(x, w, padding=mode.upper(), impl=impl), expected, F64, mode)


@pytest.mark.parametrize("n, impl", [(2, "manual"), (3, "lax")])
def test_convolve_matches_scipy(n, impl, rng):
    signal = pytest.importorskip("scipy.signal")
    x = random_array(rng, (1, 2) + (5, 4, 3)[:n])
    w = random_array(rng, (3, 2) + (2, 3, 2)[:n])
    for mode in ("valid", "full"):
        expected = np.array([[sum(signal.convolve(np.asarray(x[0, c]), np.asarray(w[o, c]), mode)
                                  for c in range(2)) for o in range(3)]])
        assert_close(jaxcnn.convolve(x, w, padding=mode, impl=impl), expected, F64, mode)


@pytest.mark.parametrize("impl", IMPLS)
def test_convolve_commutes_in_full_mode(impl, rng):
    """f * g = g * f (one channel): substitute a → i − a in Σ_a f(a) g(i − a)."""
    f = random_array(rng, (1, 1, 6))
    g = random_array(rng, (1, 1, 3))
    assert_close(jaxcnn.convolve(f, g, padding="FULL", impl=impl),
                 jaxcnn.convolve(g, f, padding="FULL", impl=impl), F64, "commutativity")


CONVOLVE_CASES = {  # (x shape, w shape, kwargs)
    "1d_lax": ((2, 2, 7), (3, 2, 3), dict(stride=2, padding=1, impl="lax")),
    "2d_manual_groups_reflect_last": (
        (1, 6, 5, 4), (4, 3, 3, 2), dict(stride=(1, 2), dilation=(2, 1), padding="SAME",
                                         groups=2, padding_mode="reflect", channels_last=True,
                                         impl="manual")),
    "3d_lax_circular_last": (
        (1, 2, 3, 4, 3), (2, 2, 2, 3, 2), dict(padding=1, padding_mode="circular",
                                               channels_last=True, impl="lax")),
}


@pytest.mark.parametrize("name", CONVOLVE_CASES)
def test_convolve_matches_reference(name, rng):
    x_shape, w_shape, kw = CONVOLVE_CASES[name]
    channels_last = kw.get("channels_last", False)
    x = to_layout(random_array(rng, x_shape), channels_last)
    w = kernel_to_layout(random_array(rng, w_shape), channels_last)
    b = random_array(rng, (w_shape[0],))
    cotangent = random_array(rng, reference.convolve(x, w, b, **kw).shape)
    ref_out, ref_grads = value_and_vjp(partial(reference.convolve, **kw), (x, w, b), cotangent)
    out, grads = value_and_vjp(partial(jaxcnn.convolve, **kw), (x, w, b), cotangent)
    assert_close(out, ref_out, F64, name)
    tree_assert_close(grads, ref_grads, VJP_TOL, f"{name} vjp")


# ----------------------------------------------------------------------------- bad input

def test_convolve_bad_input():
    with pytest.raises(ValueError, match="w"):
        jaxcnn.convolve(jnp.zeros((1, 4, 5)), jnp.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="padding_mode"):
        jaxcnn.convolve(jnp.zeros((1, 3, 5)), jnp.zeros((2, 3, 3)), padding_mode="mirror")
