"""Tests for jaxcnn/transpose.py's conv_transpose, its derivatives and transformations: the
hand-written VJP, higher derivatives, vmap / jit / an empty batch. The forward and bad input:
test_transpose.py.

References: ``jaxcnn.reference`` and JAX autodiff of it; finite differences. Everything in
float64: forwards agree to ~1e-12, VJPs to ``VJP_TOL`` (1e-10).
"""
from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn import reference
from helpers import (IMPLS, TOL, TRANSPOSE_CASES, VJP_TOL, assert_close, kernel_to_layout,
                     random_array, sample, shape_of, to_layout, transpose_case, tree_assert_close,
                     value_and_vjp, vdot)

pytestmark = pytest.mark.x64

F64 = TOL["float64"]
LAYOUTS = {"channels_first": False, "channels_last": True}
# Latin pairing instead of full products (2 CPU cores): along the cases, (layout, impl) cycles
# through all four combinations, and impl alternates, so every pair still meets.
LAYOUT_IMPL = [("channels_first", "lax"), ("channels_last", "manual"),
               ("channels_last", "lax"), ("channels_first", "manual")]
CASE_LAYOUT_IMPL = [(name, *LAYOUT_IMPL[(2 * i + j) % 4])
                    for i, name in enumerate(TRANSPOSE_CASES) for j in (0, 1)]


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

