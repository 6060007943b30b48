"""Flax's ``Conv`` (NNX and Linen) with ``conv_general_dilated=jaxcnn.lax.conv_general_dilated``.

Reference: the stock layer (``jax.lax.conv_general_dilated``, differentiated by JAX autodiff),
built from the same seed, so the two hold the same parameters. Outputs agree to float64's
``TOL`` and the gradients (kernel, bias and input) to ``VJP_TOL``, over Flax's paddings
(SAME, VALID, CIRCULAR, REFLECT, CAUSAL, an int, pairs, negative pairs), strides, kernel and
input dilations, feature groups, 1D–4D and extra batch axes; the ``manual`` impl on a subset.
The gradient's jaxpr holds jaxcnn's primitives and no ``conv_general_dilated``.

Flax's ``ConvTranspose`` (NNX and Linen) calls ``lax.conv_transpose`` itself and takes no
convolution argument: ``jaxcnn.flax`` subclasses it, and ``test_flax.py`` holds it (and
``jaxcnn.flax``'s pooling) to the stock layers; ``jaxcnn.lax.conv_transpose`` is tested in
``test_lax.py``. Equinox's layers are in ``test_equinox.py``.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.lax
from helpers import (TOL, VJP_TOL, assert_close, primitive_names, random_array, sample,
                     tree_assert_close)

flax = pytest.importorskip("flax", reason="flax is not installed (the interop extra)")
from flax import linen, nnx  # noqa: E402

pytestmark = pytest.mark.x64

JAXCNN_PRIMITIVES = {"jaxcnn_conv", "jaxcnn_conv_input_grad", "jaxcnn_conv_weight_grad"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One Flax ``Conv`` configuration; ``shape`` is the input's, channels last."""
    shape: tuple[int, ...]
    features: int
    kernel_size: tuple[int, ...]
    strides: Any = 1
    padding: Any = "SAME"
    kernel_dilation: Any = 1
    input_dilation: Any = 1
    feature_group_count: int = 1

    @property
    def options(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in (
            "kernel_size", "strides", "padding", "kernel_dilation", "input_dilation",
            "feature_group_count")}


CASES = {
    "1d_valid_stride2": Case((2, 9, 3), 4, (3,), strides=2, padding="VALID"),
    "1d_causal_dilation2": Case((2, 9, 2), 3, (3,), padding="CAUSAL", kernel_dilation=2),
    "1d_circular_stride2": Case((2, 8, 2), 3, (4,), strides=2, padding="CIRCULAR"),
    "1d_reflect_dilation2": Case((1, 9, 2), 3, (3,), padding="REFLECT", kernel_dilation=2),
    "1d_int_padding": Case((2, 7, 2), 3, (3,), padding=2),
    "1d_negative_pair": Case((2, 9, 2), 3, (2,), padding=[(-1, 2)]),
    "1d_input_dilation": Case((2, 5, 2), 3, (3,), padding=[(2, 1)], input_dilation=2),
    "2d_same_stride2_groups2": Case((2, 7, 6, 4), 6, (3, 3), strides=2, feature_group_count=2),
    "2d_pairs_dilation": Case((1, 8, 7, 2), 3, (3, 2), padding=[(1, 2), (0, 1)],
                              kernel_dilation=(2, 1)),
    "2d_int_per_axis": Case((1, 6, 7, 2), 3, (3, 2), strides=(1, 2), padding=(1, 0)),
    "2d_circular_even_kernel": Case((1, 5, 6, 2), 2, (2, 4), padding="CIRCULAR"),
    "2d_reflect_groups3": Case((1, 6, 6, 3), 6, (3, 3), padding="REFLECT", feature_group_count=3),
    "2d_input_dilation_stride2": Case((1, 4, 5, 2), 3, (2, 3), strides=2,
                                      padding=[(1, 1), (2, 0)], input_dilation=(2, 3)),
    "2d_two_batch_axes": Case((2, 2, 5, 5, 2), 3, (3, 3)),
    "3d_same_stride": Case((1, 5, 4, 6, 2), 3, (2, 3, 2), strides=(2, 1, 2)),
    "3d_valid_groups2_dilation": Case((1, 5, 5, 5, 4), 2, (2, 2, 2), padding="VALID",
                                      kernel_dilation=(1, 2, 1), feature_group_count=2),
    "4d_same_stride2": Case((1, 3, 4, 3, 3, 2), 2, (2, 2, 2, 2), strides=(2, 1, 1, 2)),
}
MANUAL = ("1d_causal_dilation2", "2d_same_stride2_groups2", "2d_input_dilation_stride2",
          "3d_same_stride")
# Linen's layer hands the convolution the same arguments as NNX's: a few padding forms (and
# the jaxpr test below takes Linen's input dilation).
LINEN = ("1d_valid_stride2", "1d_causal_dilation2", "1d_circular_stride2", "2d_pairs_dilation",
         "2d_reflect_groups3")


def ours(impl: str):
    """jaxcnn's drop-in, as a Flax layer receives it."""
    return partial(jaxcnn.lax.conv_general_dilated, impl=impl)


def nnx_model(case: Case, **kwargs: Any) -> tuple[Any, Any]:
    """``(apply, params)``: NNX's ``Conv`` split into a pure function and its state."""
    graph, params = nnx.split(nnx.Conv(case.shape[-1], case.features, **case.options,
                                       param_dtype=jnp.float64, rngs=nnx.Rngs(0), **kwargs))
    return (lambda params, x, **call: nnx.merge(graph, params)(x, **call)), nnx.to_pure_dict(params)


def linen_model(case: Case, **kwargs: Any) -> tuple[Any, Any]:
    """``(apply, params)``: Linen's ``Conv`` and its initial variables."""
    layer = linen.Conv(case.features, **case.options, param_dtype=jnp.float64, **kwargs)
    params = layer.init(jax.random.key(0), jnp.zeros(case.shape, jnp.float64))["params"]
    return (lambda params, x: layer.apply({"params": params}, x)), params


def values_and_grads(apply: Any, params: Any, x: jax.Array, seed: int) -> tuple:
    """``y = apply(params, x)`` and the VJP of a fixed random cotangent ``c``: the gradients of
    ``⟨c, y⟩`` with respect to the parameters and the input."""
    y, vjp = jax.vjp(apply, params, x)
    cotangent = random_array(np.random.default_rng(seed), y.shape)
    return y, vjp(jax.device_put(cotangent, y.sharding))


def check_against_stock(model: Any, case: Case, impl: str, rng: np.random.Generator, name: str):
    x = random_array(rng, case.shape)
    seed = int(rng.integers(2**31))
    (apply_ref, p_ref), (apply, p) = model(case), model(case, conv_general_dilated=ours(impl))
    assert_close(p["kernel"], p_ref["kernel"], 0.0, "the same initial kernel")
    y_ref, (dp_ref, dx_ref) = values_and_grads(apply_ref, p_ref, x, seed)
    y, (dp, dx) = values_and_grads(apply, p, x, seed)
    assert_close(y, y_ref, TOL["float64"], f"{name}: output")
    for what in ("kernel", "bias"):
        assert_close(dp[what], dp_ref[what], VJP_TOL, f"{name}: d {what}")
    assert_close(dx, dx_ref, VJP_TOL, f"{name}: d input")


def _meaning(case) -> dict:
    """What a case stands for; the default tier meets each value once (the full tier every
    case): each rank, padding spelling, stride, both dilations, groups, impl."""
    name, impl = case.values
    c = CASES[name]
    padding = c.padding if isinstance(c.padding, str) else type(c.padding).__name__
    return dict(n=len(c.kernel_size), padding=padding, stride=c.strides != 1,
                dilation=c.kernel_dilation != 1, input_dilation=c.input_dilation != 1,
                groups=c.feature_group_count > 1, impl=impl)


@pytest.mark.parametrize("name, impl", sample(
    [pytest.param(name, "lax", id=f"{name}-lax") for name in CASES]
    + [pytest.param(name, "manual", id=f"{name}-manual") for name in MANUAL], key=_meaning, strength=1))
def test_nnx_conv_matches_the_stock_layer(name, impl, rng):
    check_against_stock(nnx_model, CASES[name], impl, rng, name)


@pytest.mark.parametrize("name", LINEN)
def test_linen_conv_matches_the_stock_layer(name, rng):
    check_against_stock(linen_model, CASES[name], "lax", rng, name)


@pytest.mark.multidevice
@pytest.mark.skipif(not hasattr(jax, "set_mesh"), reason="explicit sharding needs a newer jax")
@pytest.mark.parametrize("jit", [True, False], ids=["jit", "eager"])
def test_nnx_conv_on_an_explicit_mesh(jit, rng):
    """NNX passes its ``out_sharding`` on to the convolution: on a batch-sharded input the
    output is batch-sharded and values and gradients are the stock layer's on the unsharded
    input. (The stock layer's own kernel gradient fails there, with jax 0.10.2: lax's transpose
    rule asks for an ``out_sharding`` that it is not given.)"""
    case = CASES["2d_same_stride2_groups2"]
    mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Explicit,))
    spec = jax.sharding.PartitionSpec("data")
    x = random_array(rng, case.shape)
    apply_ref, params = nnx_model(case)
    apply, _ = nnx_model(case, conv_general_dilated=ours("lax"))

    def loss(apply, **call):
        return jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(apply(p, x, **call))), argnums=(0, 1))
    loss_ref, grads_ref = loss(apply_ref)(params, x)
    with jax.set_mesh(mesh):
        x_sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))
        y = apply(params, x_sharded, out_sharding=spec)
        value_and_grad = loss(apply, out_sharding=spec)
        value, grads = (jax.jit(value_and_grad) if jit else value_and_grad)(params, x_sharded)
    assert jax.typeof(y).sharding.spec[0] == "data"
    assert_close(y, apply_ref(params, x), TOL["float64"], "output")
    assert_close(value, loss_ref, TOL["float64"], "loss")
    tree_assert_close(grads, grads_ref, VJP_TOL, "gradients")


# ----------------------------------------------------------------------------- jaxprs

@pytest.mark.parametrize("model, name, impl", [
    pytest.param(nnx_model, "1d_causal_dilation2", "lax", id="nnx-1d_causal_dilation2-lax"),
    pytest.param(nnx_model, "2d_reflect_groups3", "manual", id="nnx-2d_reflect_groups3-manual"),
    pytest.param(linen_model, "2d_input_dilation_stride2", "lax", id="linen-2d_input_dilation_stride2-lax")])
def test_gradients_run_through_jaxcnn_primitives(model, name, impl, rng):
    """``jax.grad`` and a Hessian-vector product of a Flax layer's loss: jaxcnn's three
    primitives, no ``conv_general_dilated``, no ``custom_vjp``."""
    case = CASES[name]
    apply, params = model(case, conv_general_dilated=ours(impl))
    x = random_array(rng, case.shape)
    grad = jax.grad(lambda params, x: jnp.sum(jnp.sin(apply(params, x))), argnums=(0, 1))

    def hvp(params, x):
        return jax.jvp(lambda p: grad(p, x)[0], (params,), (params,))[1]
    for what, f in (("grad", grad), ("hvp", hvp)):
        names = primitive_names(jax.make_jaxpr(f)(params, x))
        assert JAXCNN_PRIMITIVES <= names, f"{what}: {sorted(JAXCNN_PRIMITIVES - names)} missing"
        assert "conv_general_dilated" not in names, f"{what}: {sorted(names)}"
        assert not any("custom" in n for n in names), f"{what}: {sorted(names)}"
