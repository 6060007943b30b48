"""Tests for jaxcnn/pool.py: max_pool, avg_pool, global_avg_pool.

References: ``jaxcnn.reference`` (``lax.reduce_window`` differentiated by JAX autodiff) on
continuous random data (no ties), PyTorch's ``max_pool{1,2,3}d`` / ``avg_pool{1,2,3}d`` /
``adaptive_avg_pool`` (forward and backward), central finite differences, and hand-worked
examples for ties, NaNs, −∞ and the avg divisor. Float64 throughout: ~1e-12 forward,
≤ 1e-10 for VJPs against autodiff.
"""
from __future__ import annotations

import dataclasses
import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxcnn
from jaxcnn import reference
from jaxcnn._args import normalize_pool
from jaxcnn._shapes import pool_output_size
from jaxcnn._pool import max_pool_argmax, max_pool_argmax_loop
from helpers import TOL, VJP_TOL, assert_close, random_array, sample, vdot

pytestmark = pytest.mark.x64

F64 = TOL["float64"]


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass(frozen=True)
class Case:
    """A pooling configuration; ``shape`` is channels first ``(N, C, *S)``."""

    shape: tuple[int, ...]
    window: tuple[int, ...]
    stride: tuple[int, ...] | None = None
    padding: int | tuple[int, ...] = 0
    dilation: int | tuple[int, ...] = 1
    ceil_mode: bool = False

    @property
    def n(self) -> int:
        return len(self.shape) - 2

    def max_kwargs(self) -> dict:
        return dict(window=self.window, stride=self.stride, padding=self.padding,
                    dilation=self.dilation, ceil_mode=self.ceil_mode)

    def avg_kwargs(self) -> dict:
        return dict(window=self.window, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode)

    def torch_kwargs(self) -> dict:
        return dict(kernel_size=self.window, stride=self.stride, padding=self.padding,
                    ceil_mode=self.ceil_mode)


# Each case runs in one layout (both for a few): the layout is a transpose at the front door,
# and the 2 shared CPU cores bound the suite's time.
MAX_CASES = {  # name: (case, channels_last)
    "1d_pad": (Case((2, 3, 9), (3,), (2,), 1), False),
    "1d_dilation_ceil": (Case((2, 2, 10), (3,), (2,), 1, 2, True), True),
    "2d_default_stride": (Case((2, 2, 6, 4), (2, 2)), True),
    "2d_asym": (Case((1, 3, 7, 6), (3, 2), (2, 1), (1, 0)), False),
    "2d_ceil_overhang": (Case((1, 2, 7, 8), (2, 2), (2, 2), 1, 1, True), False),
    "2d_ceil_overhang_cl": (Case((1, 2, 7, 8), (2, 2), (2, 2), 1, 1, True), True),
    "2d_dilation_pad_beyond_torch": (Case((1, 2, 8, 7), (2, 3), (1, 2), (2, 1), (3, 1)), False),
    "3d_ceil_dilation": (Case((1, 2, 5, 5, 6), (3, 2, 2), (2, 2, 2), 1, (1, 2, 1), True), True),
}
AVG_CASES = {  # name: (case, channels_last, count_include_pad)
    "1d_pad": (Case((2, 3, 9), (3,), (2,), 1), False, False),
    "1d_ceil": (Case((2, 2, 5), (3,), (2,), 1, ceil_mode=True), True, True),
    "2d_default_stride": (Case((2, 2, 6, 4), (2, 2)), False, True),
    "2d_asym": (Case((1, 3, 7, 6), (3, 2), (2, 1), (1, 1)), True, False),
    "2d_ceil_overhang": (Case((1, 2, 7, 8), (2, 3), (2, 2), 1, ceil_mode=True), False, True),
    "2d_ceil_overhang_exclude": (Case((1, 2, 7, 8), (2, 3), (2, 2), 1, ceil_mode=True), True, False),
    "3d_ceil": (Case((1, 2, 5, 5, 6), (3, 2, 2), (2, 2, 2), 1, ceil_mode=True), False, True),
}


def to_layout(x, channels_last):
    return jnp.moveaxis(x, 1, -1) if channels_last else x


def from_layout(y, channels_last):
    return jnp.moveaxis(y, -1, 1) if channels_last else y


def pool_pair(kind, case, channels_last, count_include_pad=True):
    """``(jaxcnn op, reference op)`` as functions of x for one configuration."""
    if kind == "max":
        kw = dict(case.max_kwargs(), channels_last=channels_last)
    else:
        kw = dict(case.avg_kwargs(), channels_last=channels_last, count_include_pad=count_include_pad)
    op = getattr(jaxcnn, f"{kind}_pool")
    ref = getattr(reference, f"{kind}_pool")
    return (lambda x: op(x, **kw)), (lambda x: ref(x, **kw))


def params(cases):
    return [pytest.param(*value, id=name) for name, value in cases.items()]


@partial(jax.jit, static_argnums=0)
def derivatives(f, x, c, v):
    """``f(x)``, its VJP with ``c`` and a second order ``∂/∂x ⟨v, ∇_x ⟨c, f(x)²⟩⟩``, compiled once."""
    y, vjp = jax.vjp(f, x)
    grad = jax.grad(lambda z: jnp.sum(c * f(z) ** 2))
    return y, vjp(c)[0], jax.grad(lambda z: vdot(v, grad(z)))(x)


@partial(jax.jit, static_argnums=0)
def forward_and_vjp(f, x, c):
    y, vjp = jax.vjp(f, x)
    return y, vjp(c)[0]


def check_against_reference(op, ref, x, rng):
    """Forward, VJP and grad-of-grad of ``op`` against JAX autodiff of ``ref``."""
    c = random_array(rng, jax.eval_shape(op, x).shape)
    v = random_array(rng, x.shape)
    ours, theirs = derivatives(op, x, c, v), derivatives(ref, x, c, v)
    for what, a, b, tol in zip(("forward", "vjp", "grad of grad"), ours, theirs, (F64, VJP_TOL, VJP_TOL)):
        assert_close(a, b, tol, what)


# ----------------------------------------------------------------------------- vs the reference


@pytest.mark.parametrize("case, channels_last", params(MAX_CASES))
def test_max_pool_matches_reference(case, channels_last, rng):
    op, ref = pool_pair("max", case, channels_last)
    check_against_reference(op, ref, to_layout(random_array(rng, case.shape), channels_last), rng)


@pytest.mark.parametrize("case, channels_last, count_include_pad", params(AVG_CASES))
def test_avg_pool_matches_reference(case, channels_last, count_include_pad, rng):
    op, ref = pool_pair("avg", case, channels_last, count_include_pad)
    check_against_reference(op, ref, to_layout(random_array(rng, case.shape), channels_last), rng)


@pytest.mark.parametrize("shape, channels_last", [((2, 3, 5), False), ((2, 3, 4, 3), True),
                                                  ((1, 2, 3, 2, 4), False)], ids=["1d", "2d_cl", "3d"])
def test_global_avg_pool_is_the_mean(shape, channels_last, rng):
    x = to_layout(random_array(rng, shape), channels_last)
    y = jaxcnn.global_avg_pool(x, channels_last=channels_last)
    assert y.shape == shape[:2]
    assert_close(y, np.mean(np.asarray(from_layout(x, channels_last)), axis=tuple(range(2, len(shape)))),
                 F64, "mean")
    check_against_reference(lambda z: jaxcnn.global_avg_pool(z, channels_last=channels_last),
                            lambda z: reference.global_avg_pool(z, channels_last=channels_last), x, rng)


@pytest.mark.parametrize("kind", ["max", "avg", "global"])
def test_hessian_forward_over_reverse(kind, rng):
    case = Case((1, 2, 5), (2,), (1,), 1)
    if kind == "global":
        op, ref = jaxcnn.global_avg_pool, reference.global_avg_pool
    else:
        op, ref = pool_pair(kind, case, False)
    x = random_array(rng, case.shape)
    hess = [jax.jit(jax.hessian(lambda z: jnp.sum(f(z) ** 3)))(x) for f in (op, ref)]
    assert_close(hess[0], hess[1], VJP_TOL, "hessian")


# ----------------------------------------------------------------------------- vs PyTorch


def torch_pool(kind, case, x, dy, count_include_pad=True):
    """PyTorch's output and input gradient for a channels-first float64 ``x``."""
    torch = pytest.importorskip("torch")
    fn = getattr(torch.nn.functional, f"{kind}_pool{case.n}d")
    kw = case.torch_kwargs()
    kw.update(dilation=case.dilation) if kind == "max" else kw.update(count_include_pad=count_include_pad)
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    yt = fn(xt, **kw)
    yt.backward(torch.tensor(np.asarray(dy)))
    return yt.detach().numpy(), xt.grad.numpy()


def torch_accepts(case):
    """PyTorch asks padding ≤ window // 2 (jaxcnn: ≤ half the *dilated* window, looser)."""
    pads = np.broadcast_to(case.padding, (case.n,))
    return all(p <= k // 2 for p, k in zip(pads, case.window))


def check_against_torch(kind, case, channels_last, rng, count_include_pad=True):
    if not torch_accepts(case):
        pytest.skip("padding beyond PyTorch's window // 2")
    op, _ = pool_pair(kind, case, channels_last, count_include_pad)
    x = random_array(rng, case.shape)
    y_shape = jax.eval_shape(op, to_layout(x, channels_last)).shape
    dy = random_array(rng, (y_shape[0], y_shape[-1], *y_shape[1:-1]) if channels_last else y_shape)
    y, dx = forward_and_vjp(op, to_layout(x, channels_last), to_layout(dy, channels_last))
    y_torch, dx_torch = torch_pool(kind, case, x, dy, count_include_pad)
    assert_close(from_layout(y, channels_last), y_torch, F64, "forward vs torch")
    assert_close(from_layout(dx, channels_last), dx_torch, F64, "gradient vs torch")


@pytest.mark.parametrize("case, channels_last", params(MAX_CASES))
def test_max_pool_matches_torch(case, channels_last, rng):
    check_against_torch("max", case, channels_last, rng)


@pytest.mark.parametrize("case, channels_last, count_include_pad", params(AVG_CASES))
def test_avg_pool_matches_torch(case, channels_last, count_include_pad, rng):
    check_against_torch("avg", case, channels_last, rng, count_include_pad)


def test_global_avg_pool_matches_torch_adaptive(rng):
    torch = pytest.importorskip("torch")
    x = random_array(rng, (2, 3, 4, 3, 2))
    expected = torch.nn.functional.adaptive_avg_pool3d(torch.tensor(np.asarray(x)), 1).numpy()
    assert_close(jaxcnn.global_avg_pool(x), expected.reshape(2, 3), F64, "vs adaptive_avg_pool3d")


def test_output_size_matches_torch():
    """The shape-only helper against PyTorch's output sizes (None: PyTorch refuses)."""
    torch = pytest.importorskip("torch")
    grid = itertools.product(range(1, 8), (1, 2, 3), (1, 2, 3), (1, 2), (0, 1), (False, True))
    for length, window, stride, dilation, padding, ceil_mode in grid:
        if padding > window // 2:
            continue
        ours = pool_output_size(length, window, stride, dilation, padding, ceil_mode)
        try:
            theirs = torch.nn.functional.max_pool1d(torch.zeros(1, 1, length), window, stride,
                                                    padding, dilation, ceil_mode).shape[-1]
        except RuntimeError:  # PyTorch: "Output size is too small"
            theirs = None
        assert (ours if ours >= 1 else None) == theirs, (length, window, stride, dilation, padding,
                                                         ceil_mode)


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


# ----------------------------------------------------------------------------- transformations


@pytest.mark.parametrize("kind", ["max", "avg", "global"])
def test_vmap_and_jit_match_the_plain_op(kind, rng):
    if kind == "global":
        op = jaxcnn.global_avg_pool
    else:
        op, _ = pool_pair(kind, Case((2, 3, 5, 4), (2, 2), (1, 2), 1), True)
    xs = random_array(rng, (3, 2, 5, 4, 3))  # a mapped axis of 3, channels last

    def value_and_grad(x):
        return op(x), jax.grad(lambda z: jnp.sum(jnp.sin(op(z))))(x)
    looped = [value_and_grad(x) for x in xs]  # eager, one example at a time
    mapped = jax.jit(jax.vmap(value_and_grad))(xs)
    for i, (y, g) in enumerate(looped):
        assert_close(mapped[0][i], y, F64, "jit of vmap: forward")
        assert_close(mapped[1][i], g, F64, "jit of vmap: grad")


@pytest.mark.parametrize("kind", ["max", "avg", "global"])
def test_empty_batch(kind):
    x = jnp.zeros((0, 3, 5, 4))
    op = jaxcnn.global_avg_pool if kind == "global" else pool_pair(kind, Case(x.shape, (2, 2), None, 1), False)[0]
    expected = (0, 3) if kind == "global" else (0, 3, 3, 3)
    assert op(x).shape == expected
    grad = jax.grad(lambda z: jnp.sum(op(z)))(x)
    assert grad.shape == x.shape and grad.dtype == x.dtype


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_low_precision_dtypes(dtype, rng):
    # Max pooling selects: exact in any dtype. Average pooling sums: the dtype's tolerance.
    case = Case((2, 3, 6, 5), (3, 2), (2, 2), 1, ceil_mode=True)
    x = random_array(rng, case.shape, dtype)
    for kind, tol in (("max", 0.0), ("avg", TOL[dtype])):
        op, ref = pool_pair(kind, case, False)
        ones = jnp.ones(jax.eval_shape(op, x).shape, x.dtype)
        (y, dx), (y_ref, dx_ref) = forward_and_vjp(op, x, ones), forward_and_vjp(ref, x, ones)
        assert y.dtype == dx.dtype == x.dtype
        assert_close(y, y_ref, tol, f"{kind} {dtype}")
        assert_close(dx, dx_ref, tol, f"{kind} {dtype} grad")


# ----------------------------------------------------------------------------- property


@given(kind=st.sampled_from(["max", "avg"]), n=st.integers(1, 2), window=st.integers(1, 3),
       stride=st.integers(1, 3), dilation=st.integers(1, 2), ceil_mode=st.booleans(),
       channels_last=st.booleans(), count_include_pad=st.booleans(), extra=st.integers(0, 3),
       data=st.data())
@settings(max_examples=10)
def test_random_configurations_match_reference(kind, n, window, stride, dilation, ceil_mode,
                                               channels_last, count_include_pad, extra, data):
    dilation = dilation if kind == "max" else 1
    extent = dilation * (window - 1) + 1
    padding = data.draw(st.integers(0, extent // 2 if kind == "max" else window // 2))
    case = Case((2, 2) + (max(extent - 2 * padding, 1) + extra,) * n, (window,) * n, (stride,) * n,
                padding, dilation if kind == "max" else 1, ceil_mode)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    op, ref = pool_pair(kind, case, channels_last, count_include_pad)
    x = to_layout(random_array(rng, case.shape), channels_last)
    c = random_array(rng, jax.eval_shape(op, x).shape)
    y, dx = forward_and_vjp(op, x, c)
    y_ref, dx_ref = forward_and_vjp(ref, x, c)
    assert_close(y, y_ref, F64, "forward")
    assert_close(dx, dx_ref, VJP_TOL, "vjp")


# ----------------------------------------------------------------------------- bad input

X2 = np.zeros((1, 2, 4, 4))
BAD = {  # name: (function, args, kwargs, exception, the argument named in the message)
    "padding_beyond_half_window": ("max_pool", (X2, 2), dict(padding=2), ValueError, "padding"),
    "padding_beyond_half_dilated": ("max_pool", (X2, 3), dict(padding=3, dilation=2), ValueError, "padding"),
    "avg_padding_beyond_half": ("avg_pool", (X2, 3), dict(padding=2), ValueError, "padding"),
    "negative_padding": ("max_pool", (X2, 2), dict(padding=-1), ValueError, "padding"),
    "string_padding": ("avg_pool", (X2, 2), dict(padding="same"), TypeError, "padding"),
    "pair_padding": ("max_pool", (X2, 2), dict(padding=((1, 1), (1, 1))), TypeError, "padding"),
    "output_too_small": ("max_pool", (np.zeros((1, 1, 3)), 5), {}, ValueError, "window"),
    "output_too_small_dilated": ("max_pool", (np.zeros((1, 1, 4)), 3), dict(dilation=2), ValueError, "window"),
    # Dilation 3 steps the 2-tap window over a 2-long input: output 0 reads -1 and 2, both padding.
    "window_entirely_in_padding": ("max_pool", (np.zeros((1, 1, 2)), 2), dict(stride=1, padding=1, dilation=3),
                                   ValueError, "dilation"),
    "zero_stride": ("max_pool", (X2, 2), dict(stride=0), ValueError, "stride"),
    "zero_window": ("avg_pool", (X2, 0), {}, ValueError, "window"),
    "window_length": ("max_pool", (X2, (2, 2, 2)), {}, ValueError, "window"),
    "zero_dilation": ("max_pool", (X2, 2), dict(dilation=0), ValueError, "dilation"),
    "rank_too_low": ("max_pool", (np.zeros((4, 4)), 2), {}, ValueError, "x"),
    "integer_dtype": ("max_pool", (np.zeros((1, 2, 4), np.int32), 2), {}, TypeError, "x"),
    "complex_dtype": ("avg_pool", (np.zeros((1, 2, 4), np.complex64), 2), {}, TypeError, "x"),
    "ceil_mode_not_bool": ("max_pool", (X2, 2), dict(ceil_mode=1), TypeError, "ceil_mode"),
    "count_include_pad_not_bool": ("avg_pool", (X2, 2), dict(count_include_pad="no"), TypeError,
                                   "count_include_pad"),
    "channels_last_not_bool": ("avg_pool", (X2, 2), dict(channels_last=None), TypeError, "channels_last"),
    "global_rank": ("global_avg_pool", (np.zeros((2, 3)),), {}, ValueError, "x"),
    "global_empty_spatial": ("global_avg_pool", (np.zeros((2, 3, 0)),), {}, ValueError, "x"),
    "global_integer": ("global_avg_pool", (np.zeros((2, 3, 4), np.int64),), {}, TypeError, "x"),
}


@pytest.mark.parametrize("module", [jaxcnn, reference], ids=["jaxcnn", "reference"])
@pytest.mark.parametrize("name", BAD)
def test_bad_input_names_the_argument(module, name):
    function, args, kwargs, exception, argument = BAD[name]
    with pytest.raises(exception, match=rf"^{argument}:"):
        getattr(module, function)(*args, **kwargs)


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
