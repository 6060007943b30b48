"""``out_sharding`` and explicit meshes (``jaxcnn._sharding``), for every public op.

On 8 CPU devices (the multi-device run: ``multidevice``, tests/conftest.py), batch- and
spatially sharded inputs on meshes of ``AxisType.Explicit`` (current JAX's default) and
``Auto``: values and gradients equal to the unsharded computation in float64, and the
shardings each result comes back with.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxcnn
import jaxcnn.lax as jlax
from helpers import TOL, VJP_TOL, assert_close, product, random_array, sample

pytestmark = [pytest.mark.x64, pytest.mark.multidevice]

F64 = TOL["float64"]
HAS_EXPLICIT = all(hasattr(jax, name) for name in ("typeof", "set_mesh")) and hasattr(
    jax.sharding, "AxisType") and hasattr(jax.sharding, "auto_axes")
needs_explicit = pytest.mark.skipif(not HAS_EXPLICIT, reason="this JAX has no explicit sharding")


def _mesh(kind: str, size: int = 4) -> jax.sharding.Mesh:
    devices = np.array(jax.devices()[:size])
    if kind == "explicit":
        return jax.sharding.Mesh(devices, ("d",), axis_types=(jax.sharding.AxisType.Explicit,))
    return jax.sharding.Mesh(devices, ("d",))


# op name → (function of (x, w), x shape, w shape, the x axes that may be sharded)
OPS = {
    "conv": (lambda x, w: jaxcnn.conv(x, w, padding=1), (8, 3, 16, 12), (4, 3, 3, 3)),
    "conv-stride2-channels-last": (
        lambda x, w: jaxcnn.conv(x, w, stride=2, padding="SAME", channels_last=True),
        (8, 16, 16, 3), (3, 3, 3, 4)),
    "conv-circular-1d": (lambda x, w: jaxcnn.conv(x, w, padding=2, padding_mode="circular"),
                         (8, 2, 32), (3, 2, 5)),
    "conv-3d-manual": (lambda x, w: jaxcnn.conv(x, w, padding=1, impl="manual"),
                       (4, 2, 8, 8, 4), (2, 2, 3, 3, 3)),
    "convolve": (lambda x, w: jaxcnn.convolve(x, w, padding="SAME"), (8, 3, 16, 12), (4, 3, 3, 3)),
    "conv_transpose": (lambda x, w: jaxcnn.conv_transpose(x, w, stride=2, padding=1, output_padding=1),
                       (8, 4, 8, 6), (4, 3, 3, 3)),
    "lax.conv_general_dilated": (
        lambda x, w: jlax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")),
        (8, 16, 12, 3), (3, 3, 3, 4)),
    "lax.conv_transpose": (lambda x, w: jlax.conv_transpose(x, w, (2, 2), "SAME"),
                           (8, 8, 8, 3), (3, 3, 3, 4)),
    "max_pool": (lambda x, w: jaxcnn.max_pool(x, 3, 2, 1) * jnp.sum(w), (8, 3, 16, 12), (1,)),
    "avg_pool": (lambda x, w: jaxcnn.avg_pool(x, 2, channels_last=True) * jnp.sum(w), (8, 16, 16, 3), (1,)),
    "global_avg_pool": (lambda x, w: jaxcnn.global_avg_pool(x) * jnp.sum(w), (8, 3, 16, 12), (1,)),
}
SHARDINGS = {"batch": lambda ndim: P("d"), "spatial": lambda ndim: P(None, None, "d")}


def _entries(array) -> tuple:
    """``array``'s PartitionSpec with one entry per dimension (trailing Nones written out)."""
    spec = tuple(array.sharding.spec)
    return spec + (None,) * (array.ndim - len(spec))


def _check(rng, op, placement, kind, case=None):
    fn, x_shape, w_shape = OPS[op] if case is None else case
    x, w = random_array(rng, x_shape), random_array(rng, w_shape)
    expected = fn(x, w)
    probe = random_array(rng, expected.shape)
    loss = lambda a, b: jnp.sum(fn(a, b) * probe)
    expected_grads = jax.grad(loss, argnums=(0, 1))(x, w)
    mesh = _mesh(kind)
    xs = jax.device_put(x, NamedSharding(mesh, SHARDINGS[placement](x.ndim)))
    ws = jax.device_put(w, NamedSharding(mesh, P()))
    context = jax.set_mesh(mesh) if hasattr(jax, "set_mesh") else mesh
    with context:
        got = jax.jit(fn)(xs, ws)
        grads = jax.jit(jax.grad(loss, argnums=(0, 1)))(xs, ws)
    assert_close(got, expected, F64, f"{op} value")
    for name, g, r in zip(("x", "w"), grads, expected_grads):
        assert_close(g, r, VJP_TOL, f"{op} d{name}")
    return xs, got, grads


# The default tier: every op and both placements (each op once); the full tier: every op in both.
@needs_explicit
@pytest.mark.parametrize("op,placement", sample(product(list(OPS), list(SHARDINGS)), strength=1))
def test_explicit_mesh_matches_unsharded(rng, op, placement):
    xs, got, grads = _check(rng, op, placement, "explicit")
    # The input gradient comes back sharded as its primal; the result keeps x's sharding on
    # the axes it comes from (batch: axis 0 of every op here).
    assert _entries(grads[0]) == _entries(xs)
    if placement == "batch":
        assert _entries(got)[0] == "d"


@pytest.mark.parametrize("op,placement", sample(product(
    ["conv", "conv_transpose", "lax.conv_general_dilated", "max_pool"], list(SHARDINGS)), strength=1))
def test_auto_mesh_matches_unsharded(rng, op, placement):
    _check(rng, op, placement, "auto")


@needs_explicit
def test_out_sharding_places_the_result(rng):
    mesh = _mesh("explicit")
    x, w = random_array(rng, (8, 3, 16, 12)), random_array(rng, (4, 3, 3, 3))
    xs = jax.device_put(x, NamedSharding(mesh, P("d")))
    with jax.set_mesh(mesh):
        y = jax.jit(partial(jaxcnn.conv, padding=1, out_sharding=P(None, None, "d")))(xs, w)
        z = jax.jit(partial(jlax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                            out_sharding=P(None, None, None, "d")))(xs, w)
    assert _entries(y) == (None, None, "d", None)
    assert _entries(z) == (None, None, None, "d")
    assert_close(y, jaxcnn.conv(x, w, padding=1), F64, "conv")
    assert_close(z, jax.lax.conv_general_dilated(x, w, (1, 1), "SAME"), F64, "lax")


@needs_explicit
def test_weight_gradient_of_batch_sharded_data_is_summed_and_replicated(rng):
    """The data-parallel case: conv_weight_grad of batch-sharded x and dy is the full sum."""
    mesh = _mesh("explicit")
    x, dy = random_array(rng, (8, 3, 10)), random_array(rng, (8, 4, 10))
    expected = jaxcnn.conv_weight_grad(x, dy, (4, 3, 3), padding=1)
    xs, dys = (jax.device_put(a, NamedSharding(mesh, P("d"))) for a in (x, dy))
    with jax.set_mesh(mesh):
        got = jax.jit(partial(jaxcnn.conv_weight_grad, weight_shape=(4, 3, 3), padding=1))(xs, dys)
        dx = jax.jit(partial(jaxcnn.conv_input_grad, input_shape=(8, 3, 10), padding=1))(
            dys, jnp.ones((4, 3, 3)))
    assert _entries(got) == (None, None, None)
    assert _entries(dx)[0] == "d"
    assert_close(got, expected, F64, "dw")


@needs_explicit
def test_kernel_sharded_by_output_channel_keeps_it(rng):
    mesh = _mesh("explicit")
    x, w = random_array(rng, (8, 3, 9, 9)), random_array(rng, (8, 3, 3, 3))
    ws = jax.device_put(w, NamedSharding(mesh, P("d")))
    xs = jax.device_put(x, NamedSharding(mesh, P()))
    with jax.set_mesh(mesh):
        y = jax.jit(partial(jaxcnn.conv, stride=2))(xs, ws)
        g = jax.jit(jax.grad(lambda a, b: jnp.sum(jaxcnn.conv(a, b, stride=2) ** 2), (0, 1)))(xs, ws)
    assert _entries(y) == (None, "d", None, None)
    assert_close(y, jaxcnn.conv(x, w, stride=2), F64, "value")
    reference = jax.grad(lambda a, b: jnp.sum(jax.lax.conv_general_dilated(a, b, (2, 2), "VALID") ** 2),
                         (0, 1))(x, w)
    for got, ref in zip(g, reference):
        assert_close(got, ref, VJP_TOL, "grad")


@needs_explicit
def test_result_that_cannot_keep_the_sharding_asks_for_out_sharding(rng):
    mesh = _mesh("explicit")
    xs = jax.device_put(random_array(rng, (2, 3, 16, 16)), NamedSharding(mesh, P(None, None, "d")))
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="^out_sharding:.*divide"):
        jaxcnn.conv(xs, random_array(rng, (4, 3, 3, 3)), padding=2)   # 18 rows over 4 devices
    with jax.set_mesh(mesh):   # saying where the result goes makes it work
        y = jaxcnn.conv(xs, random_array(rng, (4, 3, 3, 3)), padding=2, out_sharding=P())
    assert y.shape == (2, 4, 18, 18)


@needs_explicit
def test_eager_vjp_on_an_explicit_mesh(rng):
    """Without jax.jit around it: the VJP of a batch-sharded conv, as under jit."""
    mesh = _mesh("explicit", 2)
    x, w, dy = random_array(rng, (2, 3, 5)), random_array(rng, (4, 3, 3)), random_array(rng, (2, 4, 5))
    expected = jax.vjp(lambda a, b: jax.lax.conv_general_dilated(a, b, (1,), ((1, 1),)), x, w)[1](dy)
    with jax.set_mesh(mesh):
        xs, dys = (jax.device_put(a, NamedSharding(mesh, P("d"))) for a in (x, dy))
        got = jax.vjp(lambda a, b: jaxcnn.conv(a, b, padding=1), xs, w)[1](dys)
    for g, r in zip(got, expected):
        assert_close(g, r, VJP_TOL, "eager vjp")


@needs_explicit
@pytest.mark.parametrize("padding_mode", ["reflect", *(pytest.param(mode, marks=pytest.mark.slow)   # one by
                                                      for mode in ("replicate", "circular"))])       # default
def test_padding_modes_input_gradient_split_on_an_explicit_mesh(rng, padding_mode):
    """Found by ``jaxcnn fuzz`` (``sharded_input``): with the input split along a padded axis
    over 4 devices of an Explicit mesh (2 samples a device), the border fold's scatter-add gave
    input gradients off by 24-33 (float64; the value and the weight gradient were right)."""
    case = (lambda x, w: jaxcnn.conv(x, w, padding=1, padding_mode=padding_mode), (1, 4, 8, 4, 4),
            (2, 4, 3, 3, 3))
    _check(rng, f"conv-{padding_mode}-3d", "spatial", "explicit", case)


@pytest.mark.parametrize("kind", [pytest.param("explicit", marks=needs_explicit), "auto"])
def test_strided_input_gradient_whose_padding_reaches_past_a_shard(rng, kind):
    """Found by ``jaxcnn fuzz`` (seed 1214): XLA's partitioner split the lhs-dilated convolution
    of a strided input gradient (here conv_transpose's value) along a spatial axis of one sample a
    device, whose padding reaches past the neighbour's shard, into a program its own verifier
    rejects (or, other geometries, aborts on: ``experiments/xla_partitioner_conv/``); jaxcnn
    splits those by batch itself."""
    case = (lambda x, w: jaxcnn.conv_transpose(x, w, stride=3, dilation=3, padding="CAUSAL", output_padding=2),
            (2, 5, 4, 4), (5, 2, 4, 1))
    _check(rng, f"conv_transpose-causal-{kind}", "spatial", kind, case)
