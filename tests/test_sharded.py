"""Tests of jaxcnn/sharded.py: spatially sharded conv and pooling with a hand-written halo exchange.

References, each independent of the halo code: the unsharded op on the global array
(``jaxcnn.conv``, ``max_pool``, ``avg_pool``: values ≤ 1e-12, input / weight / bias gradients
≤ 1e-10 in float64), brute-force enumeration of the samples each shard's windows read (the
shape helpers), the adjoint identity ``⟨extend(x), g⟩ = ⟨x, fold(g)⟩`` against dense inner
products, XLA's own partitioner (``jax.jit(jaxcnn.conv)`` on a spatially sharded input), and
the jaxpr (``ppermute``, no all-gather). Every configuration compiles once: values and the
VJP in one ``jax.jit``. The multi-device run has eight CPU devices (``multidevice``: conftest).
"""
from __future__ import annotations

import contextlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxcnn
from jaxcnn import sharded
from jaxcnn._args.sharded import HaloSpec
from jaxcnn._compat import axis_types, make_mesh, shard_map
from jaxcnn._shapes import conv_output_size, dilated_size, halo_widths, tiles_shards
from helpers import TOL, VJP_TOL, assert_close, random_array, sample

pytestmark = [pytest.mark.x64, pytest.mark.multidevice]
F64 = TOL["float64"]
MODES = ("zeros", "reflect", "replicate", "circular")
AUTO = axis_types()[1] if axis_types() else None     # 0.4.30: every mesh is automatic


def _mesh(shards: int, name: str = "s", kind=AUTO) -> jax.sharding.Mesh:
    return make_mesh((shards,), (name,), kind)


def _value_and_vjp(f, args, ct_rng):
    """``f(*args)`` and its VJP for a random cotangent, in one jitted call."""
    shape = jax.eval_shape(f, *args).shape
    ct = random_array(ct_rng, shape)

    @jax.jit
    def run(args, ct):
        y, vjp = jax.vjp(f, *args)
        return y, vjp(ct)
    return run(args, ct)


def _assert_same(f, f_ref, args, rng, what):
    """Values ≤ 1e-12 and every argument's gradient ≤ 1e-10 against the unsharded op."""
    seed = int(rng.integers(2**31))
    y, grads = _value_and_vjp(f, args, np.random.default_rng(seed))
    y_ref, grads_ref = _value_and_vjp(f_ref, args, np.random.default_rng(seed))
    assert_close(y, y_ref, F64, f"{what}: value")
    for i, (g, g_ref) in enumerate(zip(grads, grads_ref)):
        assert_close(g, g_ref, VJP_TOL, f"{what}: gradient of argument {i}")


def _conv_case(rng, n, shards, split, *, c_in=2, c_out=3, kernel=3, local=4, groups=1,
               channels_last=False, bias=True):
    sizes = [5, 4, 3][:n]
    sizes[split] = local * shards
    x_shape = (2, *sizes, c_in) if channels_last else (2, c_in, *sizes)
    k = (kernel,) * n
    w_shape = (*k, c_in // groups, c_out) if channels_last else (c_out, c_in // groups, *k)
    args = (random_array(rng, x_shape), random_array(rng, w_shape))
    return args + ((random_array(rng, (c_out,)),) if bias else ())


# ----------------------------------------------------------------------------- shape helpers


@pytest.mark.parametrize("kernel,stride,dilation", list(itertools.product((1, 2, 3, 4), (1, 2, 3), (1, 2))))
def test_halo_widths_cover_exactly_what_each_shard_reads(kernel, stride, dilation):
    """Brute force: for every padding that tiles the shards, the positions each shard's windows
    read (``i·s + k·d − lo``, relative to its block) span exactly ``[−left, m + right)``."""
    extent = dilated_size(kernel, dilation)
    for shards, local_blocks in itertools.product((1, 2, 3), (1, 2, 3)):
        local = local_blocks * stride * max(1, extent)
        length = local * shards
        for lo, hi in itertools.product(range(extent + 1), repeat=2):
            out = conv_output_size(length, kernel, stride, dilation, lo, hi)
            fits = extent - stride <= lo + hi <= extent - 1
            assert tiles_shards(length, shards, stride, out) == fits, (lo, hi, length, out)
            if not fits:
                continue
            left, right = halo_widths(extent, stride, lo)
            q = local // stride
            for p in range(shards):
                read = [i * stride + k * dilation - lo - p * local
                        for i in range(p * q, (p + 1) * q) for k in range(kernel)]
                assert min(read) == -left and max(read) == local - 1 + right


def test_shards_that_do_not_tile_the_output():
    assert tiles_shards(12, 4, 1, 12) and not tiles_shards(13, 4, 1, 13)   # unequal shards
    assert not tiles_shards(12, 4, 2, 6)                        # 3 per shard: stride 2 does not tile
    assert not tiles_shards(16, 4, 1, 14)                       # VALID, kernel 3: 14 outputs


# ----------------------------------------------------------------------------- the exchange


@pytest.mark.parametrize("mode,left,right", sample(   # the default tier: each mode, each halo once
    [(mode, *halo) for mode in MODES for halo in [(2, 1), (0, 3), (3, -1)]],
    key=lambda case: (case[0], case[1:]), strength=1))
def test_fold_is_the_adjoint_of_extend(mode, left, right, rng):
    """``⟨extend(x) − fill, g⟩ = ⟨x, fold(g)⟩`` for random x, g, over 4 shards of 4 samples
    (dense inner products over the global arrays; the fill of the zeros mode is the constant)."""
    shards, local = 4, 4
    mesh = _mesh(shards)
    halo = HaloSpec(2, left, right, "s", shards, mode)
    x = random_array(rng, (2, 3, shards * local))
    width = left + local + right
    g = random_array(rng, (2, 3, shards * width))
    split = P(None, None, "s")
    extend = shard_map(lambda b: sharded.halo_extend(b, halo), mesh, (split,), split, check=False)
    fold = shard_map(lambda b: sharded.halo_fold(b, halo), mesh, (split,), split, check=False)

    @jax.jit
    def run(x, g):
        fold_vjp = jax.vjp(fold, g)[1]
        return jnp.vdot(extend(x), g), jnp.vdot(x, fold(g)), fold_vjp(x)[0], extend(x)

    lhs, rhs, fold_transposed, extended = run(x, g)
    assert abs(lhs - rhs) <= F64 * max(abs(lhs), 1.0)
    # the fold's VJP is the extend again (grad-of-grad stays in these rules)
    assert_close(fold_transposed, extended, F64, "fold's VJP")


def test_extend_gives_neighbours_edges_and_border_at_the_ends():
    """Hand-worked: 2 shards of [0 1 2 3 | 4 5 6 7], left 2, right 1."""
    mesh = _mesh(2)
    x = jnp.arange(8.0).reshape(1, 1, 8)
    expected = {"zeros": [0, 0, 0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 0],
                "reflect": [2, 1, 0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 6],
                "replicate": [0, 0, 0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 7],
                "circular": [6, 7, 0, 1, 2, 3, 4, 2, 3, 4, 5, 6, 7, 0]}
    for mode, values in expected.items():
        halo = HaloSpec(2, 2, 1, "s", 2, mode)
        split = P(None, None, "s")
        got = jax.jit(shard_map(lambda b: sharded.halo_extend(b, halo), mesh, (split,), split,
                                check=False))(x)
        np.testing.assert_array_equal(np.asarray(got).ravel(), values, err_msg=mode)


# ----------------------------------------------------------------------------- conv


def _sharded_conv(mesh, spatial_axis=0, **kwargs):
    return lambda x, w, *b: sharded.conv(x, w, *b, mesh=mesh, axis_name="s",
                                         spatial_axis=spatial_axis, **kwargs)


def _unsharded_conv(**kwargs):
    return lambda x, w, *b: jaxcnn.conv(x, w, *b, **kwargs)


# 1D: every padding mode × stride 1, 2 × dilation 1, 2, the shard count cycling through 2, 4, 8
# so that each count meets every mode; the padding is the one that tiles the shards
# (lo + hi between e − s and e − 1), written in each of its forms.
CONV_1D = [(mode, stride, dilation, (2, 4, 8)[(i + j) % 3])
           for i, mode in enumerate(MODES)
           for j, (stride, dilation) in enumerate(itertools.product((1, 2), (1, 2)))]
PADDING_1D = {(1, 1): 1, (2, 1): "SAME", (1, 2): 2, (2, 2): ((2, 1),)}   # kernel 3


@pytest.mark.parametrize("mode,stride,dilation,shards", [   # modes, strides, dilations pairwise; every count
    pytest.param(*case, id=f"{case[0]}-s{case[1]}-d{case[2]}-{case[3]}shards")
    for case in sample(CONV_1D, key=lambda case: case[:3])])
def test_conv_1d_matches_unsharded(mode, stride, dilation, shards, rng):
    kwargs = dict(stride=stride, dilation=dilation, padding=PADDING_1D[stride, dilation],
                  padding_mode=mode)
    args = _conv_case(rng, 1, shards, 0, local=4)
    _assert_same(_sharded_conv(_mesh(shards), **kwargs), _unsharded_conv(**kwargs), args, rng,
                 f"1D {kwargs}, {shards} shards")


# 2D and 3D: a covering sample of split axes, layouts, strides, dilations, modes and groups.
CONV_ND = {
    "2D-axis0-zeros-SAME-stride2": (2, 4, 0, dict(stride=2, padding="SAME"), {}),
    "2D-axis1-reflect-dilation2-channels_last": (2, 2, 1, dict(dilation=2, padding=2, padding_mode="reflect",
                                                               channels_last=True), dict(channels_last=True)),
    "2D-axis0-circular-groups2-8shards": (2, 8, 0, dict(padding=1, padding_mode="circular", groups=2),
                                          dict(c_in=4, c_out=4, groups=2, local=2)),
    "2D-axis1-replicate-per-axis-stride": (2, 4, 1, dict(stride=(1, 2), padding=((1, 1), (1, 0)),
                                                         padding_mode="replicate"), {}),
    "3D-axis0-zeros-CAUSAL-manual": (3, 2, 0, dict(padding="CAUSAL", impl="manual"), dict(kernel=2)),
    "3D-axis2-circular-stride2-channels_last": (3, 4, 2, dict(stride=2, padding=1, padding_mode="circular",
                                                              channels_last=True), dict(channels_last=True)),
    "3D-axis1-reflect-dilation2-stride2": (3, 2, 1, dict(stride=2, dilation=2, padding=2,
                                                         padding_mode="reflect"), dict(bias=False)),
    "3D-axis0-replicate-SAME-8shards": (3, 8, 0, dict(padding="same", padding_mode="replicate"),
                                        dict(kernel=2, local=2)),
}


@pytest.mark.parametrize("case", sample(CONV_ND, strength=1, key=lambda case: dict(   # each value once
    n=CONV_ND[case][0], shards=CONV_ND[case][1], mode=CONV_ND[case][3].get("padding_mode", "zeros"),
    layout=CONV_ND[case][3].get("channels_last", False), impl=CONV_ND[case][3].get("impl", "lax"))))
def test_conv_nd_matches_unsharded(case, rng):
    n, shards, split, kwargs, shape = CONV_ND[case]
    args = _conv_case(rng, n, shards, split, **shape)
    _assert_same(_sharded_conv(_mesh(shards), split, **kwargs), _unsharded_conv(**kwargs), args,
                 rng, case)


def test_conv_block_inside_users_shard_map_with_batch_sharding_too(rng):
    """The local-block form, in a user's shard_map over a 2 × 4 mesh: batch over "b", length
    over "s"; the weight's gradient summed over both by shard_map's transpose."""
    mesh = make_mesh((2, 4), ("b", "s"), AUTO)
    kwargs = dict(stride=2, padding=1, padding_mode="circular")
    split = P("b", None, "s")

    def block(x, w, b):
        return sharded.conv(x, w, b, axis_name="s", **kwargs)

    f = shard_map(block, mesh, (split, P(), P()), split, check=False)
    args = _conv_case(rng, 1, 4, 0, local=4)
    _assert_same(f, _unsharded_conv(**kwargs), args, rng, "batch and length sharded")


def test_conv_second_order_matches_unsharded(rng):
    """grad of ⟨∇_x L, v⟩ (a Hessian-vector product in (x, w)): through halo_fold's VJP."""
    mesh = _mesh(4)
    kwargs = dict(stride=2, padding=1, padding_mode="reflect")
    x, w = _conv_case(rng, 1, 4, 0, bias=False)
    v = random_array(rng, x.shape)

    def hvp(conv):
        def inner(x, w):
            return jnp.vdot(jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w))))(x, w), v)
        return jax.jit(jax.grad(inner, argnums=(0, 1)))(x, w)

    got, want = hvp(_sharded_conv(mesh, **kwargs)), hvp(_unsharded_conv(**kwargs))
    for g, r, name in zip(got, want, ("x", "w")):
        assert_close(g, r, VJP_TOL, f"second order, {name}")


def test_jaxpr_exchanges_halos_without_gathering_the_input(rng):
    mesh = _mesh(4)
    x, w, b = _conv_case(rng, 1, 4, 0)
    f = _sharded_conv(mesh, stride=2, padding=1, padding_mode="reflect")
    forward = str(jax.make_jaxpr(f)(x, w, b))
    backward = str(jax.make_jaxpr(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), (0, 1)))(x, w))
    for text in (forward, backward):
        assert "ppermute" in text and "shard_map" in text
        assert "all_gather" not in text and "all_to_all" not in text


@pytest.mark.skipif(not axis_types(), reason="AxisType.Explicit meshes need jax > 0.4.30")
def test_conv_on_an_explicit_mesh(rng):
    """On an ``AxisType.Explicit`` mesh (under ``jax.set_mesh``): same values and gradients,
    and the output's type says it is split along the spatial axis."""
    mesh = _mesh(4, kind=axis_types()[0])
    kwargs = dict(stride=2, padding="SAME", padding_mode="replicate")
    args = _conv_case(rng, 1, 4, 0)
    with jax.set_mesh(mesh):
        y = jax.jit(_sharded_conv(mesh, **kwargs))(*args)
        assert tuple(jax.typeof(y).sharding.spec)[2] == "s"
        _assert_same(_sharded_conv(mesh, **kwargs), _unsharded_conv(**kwargs), args, rng, "explicit")


# ----------------------------------------------------------------------------- against GSPMD


def test_conv_matches_xla_partitioner_on_a_spatially_sharded_input(rng):
    """``jax.jit(jaxcnn.conv)`` on an input placed split along its length (XLA's partitioner
    does the halo itself) and the hand-written exchange: same values and gradients."""
    mesh = _mesh(4)
    kwargs = dict(stride=2, padding="SAME", padding_mode="zeros")
    x, w, b = _conv_case(rng, 2, 4, 0)
    x = jax.device_put(x, NamedSharding(mesh, P(None, None, "s")))
    _assert_same(_sharded_conv(mesh, **kwargs), _unsharded_conv(**kwargs), (x, w, b), rng,
                 "halo exchange vs GSPMD")


@pytest.mark.parametrize("kind", ["auto", "explicit"])
def test_jax_16894_stride2_batch_and_output_channel_sharded(kind, rng):
    """JAX issue 16894 reports wrong numbers for a stride-2 conv whose input is sharded by batch
    and whose kernel is sharded by output channel; jaxcnn.conv under jit on that placement, on
    an Auto and an Explicit mesh, against the same conv on unsharded arrays, values and
    gradients."""
    if kind == "explicit" and not axis_types():
        pytest.skip("AxisType.Explicit meshes need jax > 0.4.30")
    mesh = make_mesh((2, 4), ("data", "model"), axis_types()[0] if kind == "explicit" else AUTO)
    kwargs = dict(stride=2, padding=1)
    x = random_array(rng, (4, 3, 8, 8))
    w = random_array(rng, (8, 3, 3, 3))
    placed = (jax.device_put(x, NamedSharding(mesh, P("data"))),
              jax.device_put(w, NamedSharding(mesh, P("model"))))
    seed = int(rng.integers(2**31))
    with jax.set_mesh(mesh) if kind == "explicit" else contextlib.nullcontext():
        y, grads = _value_and_vjp(_unsharded_conv(**kwargs), placed, np.random.default_rng(seed))
    with jax.default_device(jax.devices()[0]):
        y_ref, grads_ref = _value_and_vjp(_unsharded_conv(**kwargs), (np.asarray(x), np.asarray(w)),
                                          np.random.default_rng(seed))
    assert_close(y, y_ref, F64, "16894: value")
    for g, g_ref, name in zip(grads, grads_ref, ("x", "w")):
        assert_close(g, g_ref, VJP_TOL, f"16894: gradient of {name}")


# ----------------------------------------------------------------------------- pooling


# 1D: window, stride, padding (the ones that tile the shards), dilation and ceil_mode for max
# pooling, count_include_pad for average pooling; shard counts 2, 4, 8.
MAX_POOL_1D = {
    "window2": (2, dict(window=2)),
    "window3-stride1-pad1": (4, dict(window=3, stride=1, padding=1)),
    "window3-stride2-pad1": (8, dict(window=3, stride=2, padding=1)),
    "window2-stride1-dilation2-pad1": (2, dict(window=2, stride=1, dilation=2, padding=1)),
    "window3-stride2-ceil": (4, dict(window=3, stride=2, ceil_mode=True)),   # floor: 1 short
}
AVG_POOL_1D = {
    "window2": (4, dict(window=2)),
    "window3-stride1-pad1": (2, dict(window=3, stride=1, padding=1)),
    "window3-stride1-pad1-exclude-pad": (8, dict(window=3, stride=1, padding=1, count_include_pad=False)),
    "window3-stride2-pad1-exclude-pad": (4, dict(window=3, stride=2, padding=1, count_include_pad=False)),
    "window3-stride2-ceil-overhang": (2, dict(window=3, stride=2, ceil_mode=True)),
}
POOL_ND = {
    "max-2D-axis1-channels_last": ("max_pool", 2, 4, 1, dict(window=3, stride=1, padding=1, channels_last=True)),
    "avg-2D-axis0-exclude-pad": ("avg_pool", 2, 2, 0, dict(window=(3, 2), stride=(2, 1), padding=(1, 0),
                                                           count_include_pad=False)),
    "max-3D-axis2-stride2": ("max_pool", 3, 2, 2, dict(window=2, stride=2)),
    "avg-3D-axis0-channels_last": ("avg_pool", 3, 4, 0, dict(window=3, stride=1, padding=1,
                                                             channels_last=True)),
}


def _pool_case(op, n, shards, split, kwargs, rng):
    sizes = [4, 5, 3][:n]
    sizes[split] = 4 * shards
    shape = (2, *sizes, 3) if kwargs.get("channels_last") else (2, 3, *sizes)
    mesh = _mesh(shards)
    f = lambda x: getattr(sharded, op)(x, mesh=mesh, axis_name="s", spatial_axis=split, **kwargs)
    # continuous random data: no ties, so max pooling is differentiable there
    _assert_same(f, lambda x: getattr(jaxcnn, op)(x, **kwargs), (random_array(rng, shape),), rng,
                 f"{op} {n}D {kwargs}, {shards} shards")


@pytest.mark.parametrize("case", list(MAX_POOL_1D), ids=list(MAX_POOL_1D))
def test_max_pool_1d_matches_unsharded(case, rng):
    shards, kwargs = MAX_POOL_1D[case]
    _pool_case("max_pool", 1, shards, 0, kwargs, rng)


@pytest.mark.parametrize("case", list(AVG_POOL_1D), ids=list(AVG_POOL_1D))
def test_avg_pool_1d_matches_unsharded(case, rng):
    shards, kwargs = AVG_POOL_1D[case]
    _pool_case("avg_pool", 1, shards, 0, kwargs, rng)


@pytest.mark.parametrize("case", list(POOL_ND), ids=list(POOL_ND))
def test_pool_nd_matches_unsharded(case, rng):
    op, n, shards, split, kwargs = POOL_ND[case]
    _pool_case(op, n, shards, split, kwargs, rng)


# ----------------------------------------------------------------------------- bad input


def _conv_error(x_shape, w_shape, shards=4, **kwargs):
    x, w = jnp.ones(x_shape), jnp.ones(w_shape)
    return lambda: sharded.conv(x, w, mesh=_mesh(shards), axis_name="s", **kwargs)


@pytest.mark.parametrize("call,error,pattern", [
    pytest.param(_conv_error((1, 2, 18), (2, 2, 3), padding=1), ValueError,
                 r"x: spatial axis 0 \(array axis 2\) of size 18 does not split into 4 equal shards "
                 r"over mesh axis 's'", id="unequal-shards"),
    pytest.param(_conv_error((1, 2, 12), (2, 2, 3), stride=2, padding=1), ValueError,
                 r"stride: 2 on spatial axis 0 \(split into 4 shards of 3 over mesh axis 's'\) "
                 r"does not tile the shard boundaries", id="stride-does-not-tile"),
    pytest.param(_conv_error((1, 2, 16), (2, 2, 3), padding="VALID"), ValueError,
                 r"padding: sharded conv on spatial axis 0 .* needs an output of input / stride = "
                 r"16 / 1 = 16 samples.* padding \(0, 0\) gives 14; expected lo \+ hi between 2 and 2",
                 id="valid-does-not-tile"),
    pytest.param(_conv_error((1, 2, 8), (2, 2, 7), padding="SAME"), ValueError,
                 r"x: conv's halo on spatial axis 0 .* wider than a shard: 3 samples from the left "
                 r"and 3 from the right; expected at most 2", id="halo-wider-than-shard"),
    pytest.param(_conv_error((1, 2, 8), (2, 2, 5), padding=2, padding_mode="reflect"), ValueError,
                 r"expected at most 1 \(reflect\)", id="reflect-halo"),
    pytest.param(_conv_error((1, 2, 8, 8), (2, 2, 3, 3), padding=1, spatial_axis=2), ValueError,
                 r"spatial_axis: expected an int in \[0, 2\) for 2 spatial axes; got 2", id="spatial-axis"),
    pytest.param(_conv_error((1, 2, 8), (2, 2, 3), padding=1, spatial_axis=0.0), TypeError,
                 r"spatial_axis: expected an int", id="spatial-axis-type"),
    pytest.param(lambda: sharded.conv(jnp.ones((1, 2, 8)), jnp.ones((2, 2, 3)), mesh=_mesh(4),
                                      axis_name="t"), ValueError,
                 r"axis_name: expected one of the mesh's axes \('s',\); got 't'", id="axis-not-in-mesh"),
    pytest.param(lambda: sharded.conv(jnp.ones((1, 2, 8)), jnp.ones((2, 2, 3)), mesh="mesh",
                                      axis_name="s"), TypeError,
                 r"mesh: expected a jax.sharding.Mesh; got str", id="mesh-type"),
    pytest.param(lambda: sharded.conv(jnp.ones((1, 2, 8)), jnp.ones((2, 2, 3)), axis_name="s"),
                 ValueError, r"axis_name: expected a mesh axis bound by an enclosing jax.shard_map",
                 id="unbound-axis"),
    pytest.param(_conv_error((1, 2, 8), (2, 3, 3), padding=1), ValueError,
                 r"w: expected 2 input channels per group", id="global-check-still-applies"),
    pytest.param(lambda: sharded.max_pool(jnp.ones((1, 2, 12)), 3, 2, 1, mesh=_mesh(4),
                                          axis_name="s"), ValueError,
                 r"stride: 2 on spatial axis 0 \(split into 4 shards of 3", id="pool-stride"),
    pytest.param(lambda: sharded.avg_pool(jnp.ones((1, 2, 16)), 3, 1, 0, mesh=_mesh(4),
                                          axis_name="s"), ValueError,
                 r"padding: sharded avg_pool on spatial axis 0 .* gives 14", id="pool-padding"),
])
def test_bad_input_is_named(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_vmap_of_the_gradient_matches_unsharded(rng):
    """``jax.vmap`` of the gradient over a leading axis (per-example gradients) through the
    exchange's hand-written VJP, against the unsharded conv's."""
    mesh = _mesh(4)
    kwargs = dict(stride=2, padding=1, padding_mode="replicate")
    x, w = _conv_case(rng, 1, 4, 0, bias=False)
    f, f_ref = _sharded_conv(mesh, **kwargs), _unsharded_conv(**kwargs)
    xs = random_array(rng, (3, *x.shape))
    per_example = jax.jit(jax.vmap(lambda x: jax.grad(lambda x: jnp.sum(f(x, w) ** 2))(x)))(xs)
    reference = jax.jit(jax.vmap(lambda x: jax.grad(lambda x: jnp.sum(f_ref(x, w) ** 2))(x)))(xs)
    assert_close(per_example, reference, VJP_TOL, "vmap of the gradient")
