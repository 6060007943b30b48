"""Tests for jaxcnn/pool.py worked by hand: ties, NaNs, −∞ and padding, the avg divisor, finite
differences, and the argmax tap loop against the unrolled scan (the cases and helpers of
``test_pool.py``). Float64 throughout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn._args import normalize_pool
from jaxcnn._pool import max_pool_argmax, max_pool_argmax_loop
from helpers import assert_close, random_array, sample, vdot
from test_pool import F64, Case, from_layout, pool_pair, to_layout, torch_pool

pytestmark = pytest.mark.x64


# ----------------------------------------------------------------------------- hand-worked


def test_max_pool_tie_gradient_goes_to_first_maximum():
    # Window [[2, 1], [2, 2]]: three maxima; row-major, the first is (0, 0).
    x = jnp.array([[[[2.0, 1.0], [2.0, 2.0]]]])
    assert jaxcnn.max_pool(x, 2).tolist() == [[[[2.0]]]]
    grad = jax.jit(jax.grad(lambda z: jnp.sum(jaxcnn.max_pool(z, 2))))(x)
    np.testing.assert_array_equal(grad, [[[[1.0, 0.0], [0.0, 0.0]]]])
    # Overlapping 1D windows [3, 3], [3, 1], [1, 3] (stride 1): first maxima at 0, 1, 3.
    x1 = jnp.array([[[3.0, 3.0, 1.0, 3.0]]])
    weights = jnp.arange(1.0, 4.0).reshape(1, 1, 3)
    grad1 = jax.jit(jax.grad(lambda z: jnp.sum(weights * jaxcnn.max_pool(z, 2, 1))))(x1)
    np.testing.assert_array_equal(grad1, [[[1.0, 2.0, 0.0, 3.0]]])
    # Channels last and 3D give the same first maximum.
    x3 = jnp.full((1, 2, 2, 2, 1), 5.0)
    grad3 = jax.jit(jax.grad(lambda z: jnp.sum(jaxcnn.max_pool(z, 2, channels_last=True))))(x3)
    assert grad3.ravel().tolist() == [1.0] + [0.0] * 7


@pytest.mark.parametrize("case, channels_last", [
    (Case((2, 2, 6, 5), (3, 2), (1, 2), 1), False),     # overlapping windows, padding
    (Case((2, 2, 6, 4), (2, 2)), False),                 # windows tiling the input (one select)
    (Case((2, 3, 4, 6, 4), (1, 2, 2)), True),
    (Case((1, 2, 4, 4, 6), (2, 2, 3)), False),
    (Case((2, 3, 8), (4,)), True),
], ids=["overlapping", "tiled_2d", "tiled_3d_cl", "tiled_3d", "tiled_1d_cl"])
def test_max_pool_ties_match_torch(case, channels_last, rng):
    x = jnp.asarray(rng.integers(0, 3, case.shape).astype(np.float64))  # many ties
    kw = dict(case.max_kwargs(), channels_last=channels_last)
    dy = random_array(rng, jaxcnn.max_pool(to_layout(x, channels_last), **kw).shape)
    y, vjp = jax.vjp(lambda z: jaxcnn.max_pool(z, **kw), to_layout(x, channels_last))
    y_torch, dx_torch = torch_pool("max", case, x, from_layout(dy, channels_last))
    assert_close(from_layout(y, channels_last), y_torch, F64, "forward vs torch")
    assert_close(from_layout(vjp(dy)[0], channels_last), dx_torch, F64, "tie gradients vs torch")


NAN = float("nan")


@pytest.mark.parametrize("values, expected_grad", [
    ([1.0, NAN, 3.0, 0.0], [0, 1, 0, 0]),   # one NaN: it is the max and takes the gradient
    ([NAN, 5.0, 2.0, 7.0], [1, 0, 0, 0]),   # a NaN beats any later value
    ([1.0, NAN, 3.0, NAN], [0, 0, 0, 1]),   # several: PyTorch's scan keeps the last NaN
], ids=["one_nan", "nan_first", "two_nans"])
def test_max_pool_nan_propagates_and_takes_gradient(values, expected_grad):
    x = jnp.array([[values]])
    assert np.isnan(jaxcnn.max_pool(x, 4)).all()
    grad = jax.grad(lambda z: jnp.sum(jaxcnn.max_pool(z, 4)))(x)  # the sum is NaN, not its gradient
    np.testing.assert_array_equal(grad, [[expected_grad]])
    dy = jnp.ones((1, 1, 1))
    _, vjp = jax.vjp(lambda z: jaxcnn.max_pool(z, 4), x)
    y_torch, dx_torch = torch_pool("max", Case((1, 1, 4), (4,)), x, dy)
    assert np.isnan(y_torch).all()
    np.testing.assert_array_equal(vjp(dy)[0], dx_torch)


def test_max_pool_minus_infinity_and_padding():
    # Windows (pad, −∞, −∞), (−∞, −∞, 0), (−∞, 0, pad): padding never wins, the first real
    # sample starts the running max, so the first window's gradient goes to x[0] (PyTorch).
    x = jnp.array([[[-jnp.inf, -jnp.inf, 0.0]]])
    assert jaxcnn.max_pool(x, 3, 1, 1).tolist() == [[[-np.inf, 0.0, 0.0]]]
    weights = jnp.array([[[1.0, 10.0, 100.0]]])
    grad = jax.grad(lambda z: jnp.sum(weights * jaxcnn.max_pool(z, 3, 1, 1)))(x)
    np.testing.assert_array_equal(grad, [[[1.0, 0.0, 110.0]]])


@pytest.mark.parametrize("count_include_pad, expected", [
    # L = 6, window 3, stride 2, padding 1, ceil_mode: windows [-1, 2), [1, 4), [3, 6), [5, 8);
    # the last holds x[5], padding at 6 and ceil_mode's overhang at 7. x = 1..6: sums 3, 9,
    # 15, 6; divisors: padding counts, overhang not (3, 3, 3, 2), or real samples (2, 3, 3, 1).
    (True, [3 / 3, 9 / 3, 15 / 3, 6 / 2]),
    (False, [3 / 2, 9 / 3, 15 / 3, 6 / 1]),
], ids=["count_pad", "exclude_pad"])
def test_avg_pool_divisor_by_hand(count_include_pad, expected):
    x = jnp.arange(1.0, 7.0).reshape(1, 1, 6)
    y = jaxcnn.avg_pool(x, 3, 2, 1, ceil_mode=True, count_include_pad=count_include_pad)
    assert_close(y, np.array([[expected]]), F64, "divisor")


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("kind, case", [
    ("max", Case((1, 2, 6, 5), (3, 2), (2, 1), 1, (1, 2), True)),
    ("avg", Case((1, 2, 6, 5), (3, 2), (2, 2), 1, ceil_mode=True)),
], ids=["max", "avg"])
def test_vjp_matches_finite_differences(kind, case, rng):
    # ⟨vjp(c), t⟩ against (⟨c, f(x + εt)⟩ − ⟨c, f(x − εt)⟩) / 2ε. Both ops are piecewise linear
    # and random data keeps every argmax ≫ ε from a switch, so the only error is float64
    # rounding, ~1e-16·|f| / ε ≈ 1e-10 with ε = 1e-6: a 1e-8 relative tolerance.
    op, _ = pool_pair(kind, case, False, count_include_pad=False)
    x, t = random_array(rng, case.shape), random_array(rng, case.shape)
    c = random_array(rng, op(x).shape)
    eps = 1e-6
    numeric = (vdot(c, op(x + eps * t)) - vdot(c, op(x - eps * t))) / (2 * eps)
    analytic = vdot(jax.vjp(op, x)[1](c)[0], t)
    assert_close(analytic, numeric, 1e-8, "vjp vs finite differences")


# The argmax as a tap loop (what the VJP reads) against the unrolled scan, on ties, NaNs,
# −∞ inputs, padding, dilation and ceil_mode, both layouts (the default tier: each case in one).
ARGMAX_CASES = {
    "2d": ((2, 3, 9, 8), (3, 3), (2, 2), 1, 1, False),
    "2d_dilation_ceil": ((2, 3, 10, 7), (2, 3), (2, 1), (1, 1), (2, 1), True),
    "1d_ceil": ((1, 2, 11), (4,), (3,), 2, 1, True),
    "3d": ((1, 2, 5, 6, 4), (2, 3, 2), (1, 2, 2), (1, 1, 0), 1, False),
}


@pytest.mark.parametrize("shape,window,stride,padding,dilation,ceil_mode,channels_last", sample(
    [pytest.param(*case, channels_last, id=f"{name}-{channels_last}")
     for name, case in ARGMAX_CASES.items() for channels_last in (False, True)],
    key=lambda p: (p.id.rsplit("-", 1)[0], p.values[-1]), strength=1))
def test_argmax_loop_equals_unrolled_scan(shape, window, stride, padding, dilation, ceil_mode,
                                          channels_last, rng):
    x = np.round(np.asarray(random_array(rng, shape)) * 2) / 2     # many ties
    x.flat[::7], x.flat[3::11] = np.nan, -np.inf
    x = jnp.asarray(np.moveaxis(x, 1, -1) if channels_last else x)
    _, spec = normalize_pool(x, window, stride, padding, dilation=dilation, ceil_mode=ceil_mode,
                             channels_last=channels_last)
    want = max_pool_argmax(x, spec)[1]
    got = jax.jit(max_pool_argmax_loop, static_argnums=1)(x, spec)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
