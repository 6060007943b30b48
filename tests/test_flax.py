"""``jaxcnn.flax``: Flax's ``ConvTranspose`` (NNX and Linen) and ``flax.linen``'s ``max_pool`` /
``avg_pool`` with jaxcnn's gradients.

Reference: the stock Flax layer or function, built from the same seed (hence the same
parameters), differentiated by JAX autodiff through ``lax.conv_transpose`` and
``lax.reduce_window``. Outputs agree to float64's ``TOL``, the gradients (kernel, bias, input)
to ``VJP_TOL``, over Flax's paddings (SAME, VALID, CIRCULAR, an int, per-axis ints, pairs),
strides, kernel dilation, ``transpose_kernel``, masks, 1D/2D/3D and zero, one or two batch
axes; pooling over symmetric pairs jaxcnn takes itself, asymmetric and wide pairs it pads
explicitly, and ``count_include_pad`` both ways. The gradients' jaxprs hold jaxcnn's primitives
and none of lax's convolution or windowed reductions. Without Flax, only the missing-extra
test runs (it simulates the missing package either way).
"""
from __future__ import annotations

import dataclasses
import doctest
import importlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import (TOL, VJP_TOL, assert_close, primitive_names, random_array, sample,
                     tree_assert_close)

try:
    from flax import linen, nnx
    import jaxcnn.flax as jfx
except ImportError:
    linen = nnx = jfx = None
needs_flax = pytest.mark.skipif(jfx is None, reason="flax is not installed (the interop extra)")

pytestmark = pytest.mark.x64

CONV_PRIMITIVES = {"jaxcnn_conv", "jaxcnn_conv_input_grad", "jaxcnn_conv_weight_grad"}
LAX_WINDOWED = {"conv_general_dilated", "reduce_window", "reduce_window_max", "reduce_window_sum",
                "select_and_scatter_add", "select_and_gather_add"}


def values_and_grads(apply: Any, params: Any, x: jax.Array, seed: int) -> tuple:
    """``y = apply(params, x)`` and the gradients of ``⟨c, y⟩`` (a fixed random ``c``) with
    respect to ``params`` and ``x``."""
    y, vjp = jax.vjp(apply, params, x)
    return y, vjp(random_array(np.random.default_rng(seed), y.shape))


def check_against_stock(apply: Any, apply_ref: Any, params: Any, x: jax.Array, seed: int,
                        name: str) -> None:
    y_ref, (dp_ref, dx_ref) = values_and_grads(apply_ref, params, x, seed)
    y, (dp, dx) = values_and_grads(apply, params, x, seed)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype, f"{name}: {y.shape} {y_ref.shape}"
    assert_close(y, y_ref, TOL["float64"], f"{name}: output")
    tree_assert_close(dp, dp_ref, VJP_TOL, f"{name}: d params")
    assert_close(dx, dx_ref, VJP_TOL, f"{name}: d input")


# ----------------------------------------------------------------------------- ConvTranspose

@dataclasses.dataclass(frozen=True)
class Case:
    """One ``ConvTranspose``; ``shape`` is the input's, channels last."""
    shape: tuple[int, ...]
    features: int
    kernel_size: Any
    options: dict = dataclasses.field(default_factory=dict)


CASES = {
    "1d_valid_stride2": Case((2, 6, 3), 4, 3, {"strides": 2, "padding": "VALID"}),
    "1d_circular_stride3": Case((2, 5, 2), 3, (4,), {"strides": 3, "padding": "CIRCULAR"}),
    "1d_no_batch_axis_int_padding": Case((7, 2), 3, (3,), {"padding": 1, "use_bias": False}),
    "2d_same_stride2": Case((2, 4, 5, 3), 2, (3, 3), {"strides": 2}),
    "2d_pairs_dilation_transpose_kernel": Case((1, 5, 4, 2), 3, (3, 2), {
        "padding": ((2, 1), (0, 1)), "kernel_dilation": (2, 1), "transpose_kernel": True}),
    "2d_circular_transpose_kernel": Case((1, 5, 6, 2), 3, (4, 3), {
        "strides": (2, 1), "padding": "CIRCULAR", "transpose_kernel": True}),
    "2d_two_batch_axes_per_axis_ints": Case((2, 2, 4, 4, 2), 3, (2, 3), {
        "strides": (1, 2), "padding": (1, 0)}),
    "3d_same_stride": Case((1, 3, 4, 3, 2), 2, (2, 3, 2), {"strides": (2, 1, 2)}),
    "3d_valid_dilation": Case((1, 3, 3, 4, 2), 2, 2, {"padding": "VALID", "kernel_dilation": 2}),
}
LINEN = ("1d_circular_stride3", "1d_no_batch_axis_int_padding", "2d_pairs_dilation_transpose_kernel",
         "3d_same_stride")
MANUAL = ("1d_valid_stride2", "2d_circular_transpose_kernel")


def nnx_model(module: Any, case: Case, **options: Any) -> tuple[Any, Any]:
    """``(apply, params)``: ``module.ConvTranspose`` split into a pure function and its state."""
    layer = module.ConvTranspose(case.shape[-1], case.features, case.kernel_size, **case.options,
                                 **options, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    graph, params = nnx.split(layer)
    return (lambda params, x: nnx.merge(graph, params)(x)), nnx.to_pure_dict(params)


def linen_model(cls: Any, case: Case, **options: Any) -> tuple[Any, Any]:
    """``(apply, params)``: a Linen ``ConvTranspose`` class and its initial parameters."""
    layer = cls(case.features, case.kernel_size, **case.options, **options,
                param_dtype=jnp.float64)
    params = layer.init(jax.random.key(0), jnp.zeros(case.shape, jnp.float64))["params"]
    return (lambda params, x: layer.apply({"params": params}, x)), params


def _meaning(name: str, impl: str) -> dict:
    """What a case stands for; the default tier meets each value once (the full tier every
    case): each rank, padding spelling, stride, dilation, transposed kernel, impl."""
    options = CASES[name].options
    padding = options.get("padding", "SAME")
    return dict(n=name[:2], padding=padding if isinstance(padding, str) else type(padding).__name__,
                stride=options.get("strides", 1) != 1, dilation="kernel_dilation" in options,
                transpose_kernel=options.get("transpose_kernel", False), impl=impl)


@needs_flax
@pytest.mark.parametrize("name, impl", sample([(name, "lax") for name in CASES] +
                                              [(name, "manual") for name in MANUAL],
                                              key=lambda case: _meaning(*case), strength=1))
def test_nnx_conv_transpose_matches_the_stock_layer(name, impl, rng):
    case = CASES[name]
    apply_ref, params_ref = nnx_model(nnx, case)
    apply, params = nnx_model(jfx, case, impl=impl)
    tree_assert_close(params, params_ref, 0.0, "the same initial parameters")
    x = random_array(rng, case.shape)
    check_against_stock(apply, apply_ref, params, x, int(rng.integers(2**31)), name)


@needs_flax
@pytest.mark.parametrize("name", LINEN)
def test_linen_conv_transpose_matches_the_stock_layer(name, rng):
    case = CASES[name]
    apply_ref, params_ref = linen_model(linen.ConvTranspose, case)
    apply, params = linen_model(jfx.LinenConvTranspose, case)
    tree_assert_close(params, params_ref, 0.0, "the same initial parameters")
    x = random_array(rng, case.shape)
    check_against_stock(apply, apply_ref, params, x, int(rng.integers(2**31)), name)


@needs_flax
@pytest.mark.parametrize("model", ["nnx", "linen"])
def test_conv_transpose_with_a_mask(model, rng):
    """A lower-triangular mask multiplies the kernel, as Flax (its gradient masked too)."""
    case = Case((2, 6, 3), 4, (3,), {"padding": "VALID"})
    mask = jnp.tril(jnp.ones((3, 3, 4), jnp.float64))
    if model == "nnx":
        (apply_ref, _), (apply, params) = (nnx_model(m, case, mask=mask) for m in (nnx, jfx))
    else:
        (apply_ref, _), (apply, params) = (linen_model(cls, case, mask=mask)
                                           for cls in (linen.ConvTranspose, jfx.LinenConvTranspose))
    check_against_stock(apply, apply_ref, params, random_array(rng, case.shape),
                        int(rng.integers(2**31)), f"{model} mask")
    x = jnp.zeros(case.shape, jnp.float64)
    with pytest.raises(ValueError, match=r"mask: expected the kernel's shape \(3, 3, 4\)"):
        if model == "nnx":
            jfx.ConvTranspose(3, 4, (3,), mask=mask[:2], rngs=nnx.Rngs(0))(x)
        else:
            jfx.LinenConvTranspose(4, (3,), mask=mask[:2]).init(jax.random.key(0), x)


# ----------------------------------------------------------------------------- pooling

@dataclasses.dataclass(frozen=True)
class PoolCase:
    """One pooling: input ``(*batch, *S, C)`` and ``flax.linen``'s arguments."""
    shape: tuple[int, ...]
    window: tuple[int, ...]
    strides: Any = None
    padding: Any = "VALID"


POOLS = {
    "1d_default_stride": PoolCase((2, 7, 3), (3,)),
    "1d_no_batch_axis_same": PoolCase((7, 2), (2,), (2,), "SAME"),
    "1d_asymmetric_pair": PoolCase((2, 8, 2), (3,), (2,), ((2, 0),)),
    "2d_symmetric_pairs": PoolCase((2, 7, 6, 2), (3, 2), (2, 2), ((1, 1), (1, 1))),
    "2d_wide_pairs_stride": PoolCase((1, 6, 7, 2), (3, 3), (1, 2), ((2, 2), (0, 1))),
    "2d_two_batch_axes_same": PoolCase((2, 2, 5, 6, 2), (3, 3), (2, 2), "SAME"),
    "3d_same": PoolCase((1, 5, 4, 6, 2), (2, 3, 2), (2, 1, 2), "SAME"),
    "3d_valid_pairs": PoolCase((1, 4, 5, 4, 2), (2, 2, 3), (1, 2, 1), ((1, 1), (0, 1), (2, 1))),
}


def pool_pairs(kind: str, count_include_pad: bool = True) -> tuple[Any, Any]:
    """``(ours, Flax's)`` for one kind of pooling, as ``f(params, x, case)``."""
    options = {} if kind == "max" else {"count_include_pad": count_include_pad}

    def ours(params, x, case):
        return getattr(jfx, f"{kind}_pool")(x, case.window, case.strides, case.padding, **options)

    def stock(params, x, case):
        with jax.numpy_dtype_promotion("standard"):    # Flax divides by an int64 count
            return getattr(linen, f"{kind}_pool")(x, case.window, case.strides, case.padding,
                                                  **options)
    return ours, stock


def _pool_meaning(name: str, kind: str, count_include_pad: bool) -> dict:
    """Each rank and padding spelling, each kind with and without the padding counted."""
    padding = POOLS[name].padding
    return dict(n=name[:2], padding=padding if isinstance(padding, str) else type(padding).__name__,
                kind=(kind, count_include_pad), batch_axes=len(POOLS[name].shape) - int(name[0]) - 1)


@needs_flax
@pytest.mark.parametrize("name, kind, count_include_pad", sample([
    *[(name, "max", True) for name in POOLS],
    *[(name, "avg", (i % 2 == 0)) for i, name in enumerate(POOLS)],
    ("1d_asymmetric_pair", "avg", False), ("2d_wide_pairs_stride", "avg", False)],
    key=lambda case: _pool_meaning(*case), strength=1))
def test_pool_matches_flax(name, kind, count_include_pad, rng):
    case = POOLS[name]
    ours, stock = pool_pairs(kind, count_include_pad)
    x = random_array(rng, case.shape)
    check_against_stock(lambda p, x: ours(p, x, case), lambda p, x: stock(p, x, case), {}, x,
                        int(rng.integers(2**31)), f"{name} {kind}")


# ----------------------------------------------------------------------------- jaxprs

def assert_jaxcnn_gradient(f: Any, args: tuple, expected: set[str]) -> None:
    """``jax.grad`` of ``sum(sin(f(*args)))`` holds ``expected`` and none of lax's windowed ops."""
    grad = jax.grad(lambda *args: jnp.sum(jnp.sin(f(*args))), argnums=tuple(range(len(args))))
    names = primitive_names(jax.make_jaxpr(grad)(*args))
    assert expected <= names, f"{sorted(expected - names)} missing from {sorted(names)}"
    assert not names & LAX_WINDOWED, sorted(names & LAX_WINDOWED)


@needs_flax
@pytest.mark.parametrize("model", ["nnx", "linen"])
def test_conv_transpose_gradient_runs_through_jaxcnn(model, rng):
    case = CASES["2d_circular_transpose_kernel"]
    apply, params = (nnx_model(jfx, case) if model == "nnx" else
                     linen_model(jfx.LinenConvTranspose, case))
    assert_jaxcnn_gradient(apply, (params, random_array(rng, case.shape)), CONV_PRIMITIVES)


@needs_flax
@pytest.mark.parametrize("name", ["2d_symmetric_pairs", "2d_wide_pairs_stride"])
def test_pool_gradients_run_through_jaxcnn(name, rng):
    case = POOLS[name]
    x = random_array(rng, case.shape)
    for kind, expected in (("max", {"jaxcnn_max_pool_argmax", "jaxcnn_max_pool_scatter"}),
                           ("avg", {"jaxcnn_avg_pool_transpose"})):
        ours, _ = pool_pairs(kind, count_include_pad=False)
        assert_jaxcnn_gradient(lambda x: ours({}, x, case), (x,), expected)


# ----------------------------------------------------------------------------- bad input, docs

@needs_flax
def test_bad_input():
    x = jnp.zeros((1, 6, 2), jnp.float64)
    with pytest.raises(ValueError, match=r"padding: jaxcnn's pooling takes no negative padding"):
        jfx.max_pool(x, (2,), padding=((-1, 1),))
    with pytest.raises(ValueError, match=r"padding: expected 1 \(lo, hi\) pairs"):
        jfx.avg_pool(x, (2,), padding=((1, 1), (0, 0)))
    with pytest.raises(TypeError, match="window_shape: expected a tuple of ints"):
        jfx.max_pool(x, 2)
    with pytest.raises(ValueError, match=r"inputs: expected \(\*batch, \*S, C\) with 2 spatial"):
        jfx.avg_pool(x[0], (2, 2))
    with pytest.raises(ValueError, match="impl: expected one of"):
        jfx.ConvTranspose(2, 3, 3, impl="fast", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="impl: expected one of"):
        jfx.LinenConvTranspose(3, 3, impl="fast").init(jax.random.key(0), x)


@needs_flax
def test_docstring_examples():
    result = doctest.testmod(jfx, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0, result


def test_a_missing_flax_names_the_extra(monkeypatch):
    """Without Flax, ``import jaxcnn.flax`` says which extra to install (simulated: runs with or
    without Flax)."""
    monkeypatch.setitem(sys.modules, "flax", None)             # ``import flax`` now fails
    monkeypatch.delitem(sys.modules, "jaxcnn.flax", raising=False)
    with pytest.raises(ImportError, match=r"jaxcnn.flax needs flax.*pip install 'jaxcnn\[interop\]'"):
        importlib.import_module("jaxcnn.flax")
