"""``jaxcnn.equinox``: Equinox's ``Conv*``, ``ConvTranspose*``, ``MaxPool*``, ``AvgPool*`` and
``GroupNorm`` with jaxcnn's gradients.

Reference: the stock Equinox layer built with the same arguments and key (hence the same
parameters), differentiated by JAX autodiff through ``jax.lax.conv_general_dilated``,
``lax.reduce_window`` and ``jnp`` statistics. Outputs agree to float64's ``TOL``, the gradients
(weight, bias, input) to ``VJP_TOL``, over Equinox's paddings (an int, per-axis ints, pairs,
VALID, SAME, SAME_LOWER), every ``padding_mode`` it supports (ZEROS, REFLECT, REPLICATE,
CIRCULAR; CIRCULAR with SAME for the transposed layer), strides, dilations, groups, output
padding and 1D/2D/3D, on a batch through ``jax.vmap``; the pools over symmetric, asymmetric and
wide padding pairs and ``use_ceil``; ``GroupNorm`` with and without its affine parameters and
with a ``state``. Without Equinox only the import tests run.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import TOL, VJP_TOL, assert_close, primitive_names, random_array, sample

try:
    import equinox as eqx
    import jaxcnn.equinox as jqx
except ImportError:
    eqx = jqx = None
needs_equinox = pytest.mark.skipif(jqx is None, reason="equinox is not installed (the interop extra)")

pytestmark = pytest.mark.x64


@dataclasses.dataclass(frozen=True)
class Case:
    """One layer: its class name in ``equinox.nn``, its arguments, one example's ``(C, *S)``."""
    layer: str
    shape: tuple[int, ...]
    out_channels: int
    kernel_size: Any
    options: dict = dataclasses.field(default_factory=dict)

    def build(self, module: Any, key: jax.Array) -> Any:
        return getattr(module, self.layer)(self.shape[0], self.out_channels, self.kernel_size,
                                           **self.options, dtype=jnp.float64, key=key)


CASES = {
    "1d_same_lower_dilation2": Case("Conv1d", (2, 8), 3, 2, {"padding": "SAME_LOWER",
                                                             "dilation": 3}),
    "1d_reflect_same_stride2": Case("Conv1d", (2, 9), 3, 3, {"padding": "SAME", "stride": 2,
                                                             "padding_mode": "REFLECT"}),
    "1d_replicate_pairs": Case("Conv1d", (2, 7), 3, 3, {"padding": ((2, 1),),
                                                        "padding_mode": "REPLICATE"}),
    "2d_circular_same_groups2": Case("Conv2d", (4, 6, 5), 4, 3, {
        "padding": "SAME", "groups": 2, "padding_mode": "CIRCULAR"}),
    "2d_valid_stride_dilation": Case("Conv2d", (2, 8, 9), 3, (3, 2), {
        "padding": "VALID", "stride": (2, 1), "dilation": (1, 2)}),
    "2d_zeros_pairs_groups2": Case("Conv2d", (4, 6, 6), 2, 2, {"padding": ((1, 0), (0, 2)),
                                                              "groups": 2}),
    "2d_reflect_per_axis": Case("Conv2d", (2, 5, 6), 3, 3, {"padding": (1, 2),
                                                          "padding_mode": "reflect"}),
    "3d_same_stride2": Case("Conv3d", (2, 5, 4, 5), 2, 3, {"padding": "SAME", "stride": 2}),
    "3d_replicate_int": Case("Conv3d", (2, 4, 3, 4), 2, 2, {"padding": 1,
                                                           "padding_mode": "REPLICATE"}),
    "generic_2d": Case("Conv", (2, 5, 5), 3, 3, {"padding": 1}),
    "t_1d_stride2_output_padding": Case("ConvTranspose1d", (3, 5), 2, 3, {
        "stride": 2, "padding": 1, "output_padding": 1}),
    "t_1d_same_stride2": Case("ConvTranspose1d", (2, 6), 3, 4, {"stride": 2, "padding": "SAME"}),
    "t_2d_circular_same_stride2": Case("ConvTranspose2d", (2, 4, 5), 3, 3, {
        "stride": 2, "padding": "SAME", "padding_mode": "CIRCULAR"}),
    "t_2d_groups2_dilation2": Case("ConvTranspose2d", (4, 4, 3), 2, 2, {
        "groups": 2, "dilation": 2, "padding": ((1, 0), (0, 1))}),
    "t_2d_same_lower_stride3": Case("ConvTranspose2d", (2, 3, 4), 2, (3, 2), {
        "stride": 3, "padding": "SAME_LOWER", "output_padding": (2, 1)}),
    "t_3d_valid_stride2": Case("ConvTranspose3d", (2, 3, 2, 3), 2, 2, {"stride": 2,
                                                                      "padding": "VALID"}),
}
MANUAL = ("2d_circular_same_groups2", "t_1d_stride2_output_padding")


def build(case: Case, module: Any) -> Any:
    """The layer; ``Conv``/``ConvTranspose`` (generic) take the number of spatial axes first."""
    if case.layer in ("Conv", "ConvTranspose"):
        n = len(case.shape) - 1
        return getattr(module, case.layer)(n, case.shape[0], case.out_channels, case.kernel_size,
                                           **case.options, dtype=jnp.float64, key=jax.random.key(0))
    return case.build(module, jax.random.key(0))


def _values_and_grads(layer: Any, x: jax.Array, cotangent_seed: int) -> tuple:
    """``y = vmap(layer)(x)`` and the gradients of ``⟨c, y⟩`` (a fixed random ``c``) with
    respect to the layer's arrays and ``x``."""
    params, static = eqx.partition(layer, eqx.is_array)
    y, vjp = jax.vjp(lambda p, x: jax.vmap(eqx.combine(p, static))(x), params, x)
    return y, vjp(random_array(np.random.default_rng(cotangent_seed), y.shape))


# One program (jit) for each side: what the layers compute under vmap and VJP is the same as
# eager, and one compile costs a fraction of dispatching each primitive on its own.
values_and_grads = eqx.filter_jit(_values_and_grads) if eqx is not None else None


def check_against_stock(stock: Any, ours: Any, x: jax.Array, seed: int, name: str) -> None:
    assert_close(ours.weight, stock.weight, 0.0, f"{name}: the same initial weight")
    y_ref, (dp_ref, dx_ref) = values_and_grads(stock, x, seed)
    y, (dp, dx) = values_and_grads(ours, x, seed)
    assert_close(y, y_ref, TOL["float64"], f"{name}: output")
    assert_close(dp.weight, dp_ref.weight, VJP_TOL, f"{name}: d weight")
    assert_close(dp.bias, dp_ref.bias, VJP_TOL, f"{name}: d bias")
    assert_close(dx, dx_ref, VJP_TOL, f"{name}: d input")


def _meaning(name: str) -> dict:
    """What a layer case stands for; the default tier meets each value once (the full tier
    every case): each class, padding mode and spelling, groups, stride, dilation."""
    options = CASES[name].options
    padding = options.get("padding", 0)
    return dict(layer=CASES[name].layer, mode=options.get("padding_mode", "zeros").lower(),
                padding=padding if isinstance(padding, str) else type(padding).__name__,
                groups=options.get("groups", 1) > 1, stride=options.get("stride", 1) != 1,
                dilation=options.get("dilation", 1) != 1)


@needs_equinox
@pytest.mark.parametrize("name", sample(CASES, key=_meaning, strength=1))
def test_layer_matches_the_stock_layer(name, rng):
    case = CASES[name]
    stock, ours = build(case, eqx.nn), build(case, jqx)
    assert isinstance(ours, getattr(eqx.nn, case.layer)) and ours.impl == "lax"
    x = random_array(rng, (2,) + case.shape)
    check_against_stock(stock, ours, x, int(rng.integers(2**31)), name)


@needs_equinox
@pytest.mark.parametrize("name", MANUAL)
def test_convert_keeps_the_parameters_and_the_values(name, rng):
    """``convert`` of a stock layer, with the manual impl: the same arrays, the same values
    and gradients."""
    case = CASES[name]
    stock = build(case, eqx.nn)
    ours = jqx.convert(stock, impl="manual")
    assert type(ours) is getattr(jqx, case.layer) and ours.impl == "manual"
    assert ours.weight is stock.weight
    assert jqx.convert(ours).impl == "lax"          # one of ours: only the impl changes
    x = random_array(rng, (2,) + case.shape)
    check_against_stock(stock, ours, x, int(rng.integers(2**31)), name)


def small_model(key: jax.Array) -> Any:
    k1, k2, k3 = jax.random.split(key, 3)
    return eqx.nn.Sequential([
        eqx.nn.Conv1d(1, 4, 3, padding="SAME", dtype=jnp.float64, key=k1),
        eqx.nn.Lambda(jax.nn.relu),
        eqx.nn.Conv1d(4, 4, 3, stride=2, padding=1, padding_mode="CIRCULAR", dtype=jnp.float64,
                      key=k2),
        eqx.nn.ConvTranspose1d(4, 2, 2, stride=2, dtype=jnp.float64, key=k3)])


@needs_equinox
def test_convert_replaces_every_conv_of_a_model_and_its_gradients_use_jaxcnn(rng):
    """A stock ``Sequential``: every conv converted, the rest kept; the loss and its gradients
    are the stock model's, and the gradient's jaxpr holds jaxcnn's primitives, no lax conv."""
    stock = small_model(jax.random.key(0))
    ours = jqx.convert(stock)
    assert [type(layer).__module__ for layer in ours.layers] == [
        "jaxcnn.equinox", type(stock.layers[1]).__module__, "jaxcnn.equinox", "jaxcnn.equinox"]
    x = random_array(rng, (3, 1, 8))

    def loss(model, x):
        return jnp.sum(jnp.sin(jax.vmap(model)(x)))
    grad = eqx.filter_jit(eqx.filter_grad(loss))
    assert_close(loss(ours, x), loss(stock, x), TOL["float64"], "loss")
    for g, g_ref in zip(jax.tree.leaves(grad(ours, x)), jax.tree.leaves(grad(stock, x))):
        assert_close(g, g_ref, VJP_TOL, "gradient")
    names = primitive_names(jax.make_jaxpr(lambda x: grad(ours, x))(x))
    assert {"jaxcnn_conv", "jaxcnn_conv_input_grad", "jaxcnn_conv_weight_grad"} <= names
    assert "conv_general_dilated" not in names, sorted(names)


@needs_equinox
def test_bad_input():
    layer = jqx.Conv2d(2, 3, 3, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"x: expected one example of rank 3, \(C, \*S\)"):
        layer(jnp.zeros((1, 2, 5, 5), jnp.float32))
    with pytest.raises(ValueError, match="impl: expected one of"):
        jqx.convert(layer, impl="fast")

    class Mine(eqx.nn.Conv1d):
        pass
    with pytest.raises(TypeError, match="model: cannot convert .*Mine"):
        jqx.convert([Mine(1, 1, 1, key=jax.random.key(0))])


def test_import_jaxcnn_does_not_import_equinox():
    import pathlib
    import subprocess
    import sys
    code = "import sys, jaxcnn, jaxcnn.lax; print('equinox' in sys.modules, 'flax' in sys.modules)"
    root = pathlib.Path(__file__).parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=root)
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- pooling, GroupNorm

POOLS = {   # layer, one example's (C, *S), the layer's arguments
    "max_1d_default": ("MaxPool1d", (2, 7), {"kernel_size": 3}),
    "max_1d_asymmetric_ceil": ("MaxPool1d", (2, 8), {"kernel_size": 3, "stride": 2,
                                                     "padding": ((2, 0),), "use_ceil": True}),
    "max_2d_int_stride2": ("MaxPool2d", (3, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1}),
    "max_2d_wide_pairs": ("MaxPool2d", (2, 6, 5), {"kernel_size": (3, 2), "stride": (1, 2),
                                                   "padding": ((2, 1), (1, 1))}),
    "max_3d_per_axis_ceil": ("MaxPool3d", (2, 5, 4, 6), {"kernel_size": 3, "stride": 2,
                                                         "padding": (1, 0, 1), "use_ceil": True}),
    "avg_1d_int": ("AvgPool1d", (2, 9), {"kernel_size": 4, "stride": 3, "padding": 2}),
    "avg_2d_asymmetric": ("AvgPool2d", (2, 6, 7), {"kernel_size": (2, 3), "stride": (2, 1),
                                                   "padding": ((0, 1), (2, 1))}),
    "avg_2d_ceil": ("AvgPool2d", (3, 7, 6), {"kernel_size": 3, "stride": 2, "use_ceil": True}),
    "avg_3d_default": ("AvgPool3d", (2, 4, 5, 4), {"kernel_size": (2, 3, 2)}),
}
NORMS = {   # one example's (C, *S), the layer's arguments
    "1d_two_groups": ((4, 7), {"groups": 2, "channels": 4}),
    "2d_one_group": ((3, 5, 4), {"groups": 1, "channels": 3}),
    "3d_instance": ((2, 3, 4, 3), {"groups": 2, "channels": 2, "eps": 1e-3}),
    "2d_no_affine": ((6, 4, 4), {"groups": 3, "channelwise_affine": False}),
    "no_spatial_axes": ((6,), {"groups": 2, "channels": 6}),
}


def check_arrays_against_stock(stock: Any, ours: Any, x: jax.Array, seed: int, name: str) -> None:
    """Outputs and every gradient (the layer's arrays and ``x``) of a layer without ``weight``
    checks of its own (pools have no arrays; GroupNorm's weight and bias)."""
    y_ref, (dp_ref, dx_ref) = values_and_grads(stock, x, seed)
    y, (dp, dx) = values_and_grads(ours, x, seed)
    assert y.shape == y_ref.shape, f"{name}: {y.shape} vs {y_ref.shape}"
    assert_close(y, y_ref, TOL["float64"], f"{name}: output")
    for g, g_ref in zip(jax.tree.leaves(dp), jax.tree.leaves(dp_ref), strict=True):
        assert_close(g, g_ref, VJP_TOL, f"{name}: d parameter")
    assert_close(dx, dx_ref, VJP_TOL, f"{name}: d input")


@needs_equinox
@pytest.mark.parametrize("name", sample(POOLS, strength=1, key=lambda name: dict(   # each value once:
    layer=POOLS[name][0], ceil=POOLS[name][2].get("use_ceil", False),
    padding=type(POOLS[name][2].get("padding", 0)).__name__)))
def test_pool_matches_the_stock_layer(name, rng):
    layer, shape, options = POOLS[name]
    stock, ours = getattr(eqx.nn, layer)(**options), getattr(jqx, layer)(**options)
    assert isinstance(ours, getattr(eqx.nn, layer))
    assert type(jqx.convert(stock)) is type(ours)
    check_arrays_against_stock(stock, ours, random_array(rng, (2,) + shape),
                               int(rng.integers(2**31)), name)


def random_affine(layer: Any, rng: np.random.Generator) -> Any:
    """``layer`` with random ``weight`` and ``bias`` (Equinox starts from ones and zeros)."""
    if layer.weight is None:
        return layer
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer,
                       (random_array(rng, layer.weight.shape), random_array(rng, layer.bias.shape)))


@needs_equinox
@pytest.mark.parametrize("name", NORMS)
def test_group_norm_matches_the_stock_layer(name, rng):
    shape, options = NORMS[name]
    stock = random_affine(eqx.nn.GroupNorm(**options, dtype=jnp.float64), rng)
    ours = jqx.convert(stock)
    assert type(ours) is jqx.GroupNorm and ours.weight is stock.weight
    check_arrays_against_stock(stock, ours, random_array(rng, (2,) + shape),
                               int(rng.integers(2**31)), name)
    state = eqx.nn.State(eqx.nn.Sequential([]))
    y, state_out = ours(random_array(rng, shape), state)
    assert state_out is state and y.shape == shape


def pooled_model(key: jax.Array) -> Any:
    k1, k2 = jax.random.split(key)
    return eqx.nn.Sequential([
        eqx.nn.Conv2d(1, 4, 3, padding=1, dtype=jnp.float64, key=k1),
        eqx.nn.GroupNorm(2, 4, dtype=jnp.float64),
        eqx.nn.MaxPool2d(2, stride=2, padding=((1, 0), (0, 1))),
        eqx.nn.Conv2d(4, 4, 3, padding=1, dtype=jnp.float64, key=k2),
        eqx.nn.AvgPool2d(3, stride=2, padding=1)])


@needs_equinox
def test_convert_swaps_pools_and_norms_and_their_gradients_use_jaxcnn(rng):
    """A conv/norm/pool model: every layer converted; the stock model's loss and gradients; the
    gradient's jaxpr holds jaxcnn's pooling and norm primitives and none of lax's windowed ops."""
    stock = pooled_model(jax.random.key(0))
    ours = jqx.convert(stock)
    assert all(type(layer).__module__ == "jaxcnn.equinox" for layer in ours.layers)
    x = random_array(rng, (2, 1, 8, 7))

    def loss(model, x):
        return jnp.sum(jnp.sin(jax.vmap(model)(x)))
    grad = eqx.filter_jit(eqx.filter_grad(loss))
    assert_close(loss(ours, x), loss(stock, x), TOL["float64"], "loss")
    for g, g_ref in zip(jax.tree.leaves(grad(ours, x)), jax.tree.leaves(grad(stock, x)), strict=True):
        assert_close(g, g_ref, VJP_TOL, "gradient")
    names = primitive_names(jax.make_jaxpr(lambda x: grad(ours, x))(x))
    expected = {"jaxcnn_conv_weight_grad", "jaxcnn_max_pool_argmax", "jaxcnn_max_pool_scatter",
                "jaxcnn_avg_pool_transpose", "jaxcnn_group_norm"}
    assert expected <= names, sorted(expected - names)
    lax_windowed = {"conv_general_dilated", "reduce_window", "reduce_window_max",
                    "reduce_window_sum", "select_and_scatter_add", "select_and_gather_add"}
    assert not names & lax_windowed, sorted(names & lax_windowed)


@needs_equinox
def test_convert_leaves_generic_and_adaptive_pools_alone():
    """Documented: the generic ``Pool`` (any reduction) and ``AdaptivePool`` are not swapped."""
    import jax.lax as lax
    kept = [eqx.nn.Pool(0.0, lax.add, 2, 2), eqx.nn.AdaptiveAvgPool2d(3),
            eqx.nn.AdaptiveMaxPool1d(2)]
    assert [type(layer) for layer in jqx.convert(kept)] == [type(layer) for layer in kept]


@needs_equinox
def test_pool_bad_input_as_equinox():
    """Equinox's own checks, the same errors: padding wider than the kernel (after use_ceil's
    extra stride), and a user's subclass refused by convert."""
    options = {"kernel_size": 3, "stride": 2, "padding": ((0, 2),), "use_ceil": True}
    x = jnp.zeros((1, 6), jnp.float64)
    with pytest.raises(RuntimeError, match="Paddings should be less than the size of the kernel"):
        eqx.nn.MaxPool1d(**options)(x)
    with pytest.raises(RuntimeError, match="Paddings should be less than the size of the kernel"):
        jqx.MaxPool1d(**options)(x)

    class Mine(eqx.nn.AvgPool1d):
        pass
    with pytest.raises(TypeError, match="model: cannot convert .*Mine"):
        jqx.convert(Mine(2))


@needs_equinox
def test_docstring_examples():
    import doctest
    result = doctest.testmod(jqx, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0, result


def test_a_missing_equinox_names_the_extra(monkeypatch):
    """Without Equinox, ``import jaxcnn.equinox`` says which extra to install (simulated: runs
    with or without Equinox)."""
    import importlib
    import sys
    monkeypatch.setitem(sys.modules, "equinox", None)          # ``import equinox`` now fails
    monkeypatch.delitem(sys.modules, "jaxcnn.equinox", raising=False)
    with pytest.raises(ImportError, match=r"jaxcnn.equinox needs equinox.*pip install 'jaxcnn\[interop\]'"):
        importlib.import_module("jaxcnn.equinox")
