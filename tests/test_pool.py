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
from jaxcnn._shapes import pool_output_size
from helpers import TOL, VJP_TOL, assert_close, random_array, vdot

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
