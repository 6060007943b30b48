"""``jaxcnn.lax``: the drop-ins against ``jax.lax`` itself, on the grids of JAX's own tests.

The grids are the facts of JAX's ``lax_autodiff_test.py::testConvGeneralDilatedGrad`` (batch
and feature groups, lhs shapes with an empty spatial axis, strides, lhs and rhs dilations,
negative padding, three dimension-number layouts) and ``lax_test.py``'s conv tests (9×10
inputs, 4×5 kernels, lhs dilation as transposed convolution, ``conv_transpose`` with and
without ``transpose_kernel``), written here as our own parameter lists. Each case compares in
float64 with ``jax.lax`` (values ≤ RTOL, VJPs ≤ VJP_RTOL against ``jax.vjp`` of lax). The
grids are large: the default tier runs a pairwise cover of what each case stands for (layout,
strides, padding, dilations, groups, impl; ``helpers.sample``), the full tier that and a seeded
random sample, a few times today's CI count (``JAXCNN_TEST_CASES=k``: up to k of each grid).
"""
from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.lax as jlax
from helpers import TOL, VJP_TOL, assert_close, primitive_names, random_array, sample, product

pytestmark = pytest.mark.x64

F64 = TOL["float64"]
IMPLS = ("lax", "manual")

# lax_autodiff_test.testConvGeneralDilatedGrad: (dimension numbers, lhs and rhs permutations
# taking (N, C, H, W) / (O, I, H, W) shapes to that layout).
LAYOUTS = {
    "NCHW": (("NCHW", "OIHW", "NCHW"), (0, 1, 2, 3), (0, 1, 2, 3)),
    "NHWC": (("NHWC", "HWIO", "NHWC"), (0, 2, 3, 1), (2, 3, 1, 0)),
    "NHWC-OIHW-NCHW": (("NHWC", "OIHW", "NCHW"), (0, 2, 3, 1), (0, 1, 2, 3)),
}


def _autodiff_grid() -> list[dict]:
    cases = []
    for batch_groups, groups in ((1, 1), (2, 1), (1, 2)):
        for b, i, j in itertools.product((1, 2), repeat=3):
            rhs = (j * batch_groups * groups, i, 1, 2)
            for lhs in ((b * batch_groups, i * groups, 6, 7), (b * batch_groups, i * groups, 0, 4)):
                pads = [((0, 0), (0, 0)), ((1, 0), (0, 1))] + ([((0, -1), (0, 0))] if lhs[2] else [])
                for strides, rhs_dil, lhs_dil, padding, layout in itertools.product(
                        ((1, 1), (1, 2), (2, 1)), ((1, 1), (2, 2)), ((1, 1), (2, 1)), pads, LAYOUTS):
                    cases.append(dict(lhs=lhs, rhs=rhs, strides=strides, padding=padding,
                                      lhs_dilation=lhs_dil, rhs_dilation=rhs_dil, layout=layout,
                                      feature_group_count=groups, batch_group_count=batch_groups))
    return cases


def _meaning(case: dict) -> dict:
    """What a case stands for, the parameters that meet pairwise in the default tier (the exact
    shapes only vary within each)."""
    return dict({k: case.get(k) for k in ("strides", "padding", "lhs_dilation", "rhs_dilation",
                                         "layout", "impl", "transpose_kernel")},
                groups=(case.get("feature_group_count"), case.get("batch_group_count")),
                empty=0 in case["lhs"])


def _with_impls(grid: list[dict]) -> list[dict]:
    return [dict(case, impl=impl) for case in grid for impl in IMPLS]


def _case_id(case: dict) -> str:
    return "-".join(f"{v}" for v in (case["lhs"], case["rhs"], case["strides"], case["padding"],
                                     case["lhs_dilation"], case["rhs_dilation"], case["layout"],
                                     case["feature_group_count"], case["batch_group_count"],
                                     *([case["impl"]] if "impl" in case else []))
                    ).replace(" ", "")


def _operands(rng, case: dict):
    dn, lhs_perm, rhs_perm = LAYOUTS[case["layout"]]
    lhs = random_array(rng, tuple(np.take(case["lhs"], lhs_perm)))
    rhs = random_array(rng, tuple(np.take(case["rhs"], rhs_perm)))
    kwargs = {k: case[k] for k in ("strides", "padding", "lhs_dilation", "rhs_dilation",
                                   "feature_group_count", "batch_group_count")}
    kwargs["window_strides"] = kwargs.pop("strides")
    return lhs, rhs, dict(kwargs, dimension_numbers=dn)


def _check_values_and_vjp(rng, ours, theirs, operands) -> None:
    expected = theirs(*operands)
    got = ours(*operands)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert_close(got, expected, F64, "forward")
    cotangent = random_array(rng, expected.shape)
    for name, g, r in zip(("lhs", "rhs"), jax.vjp(ours, *operands)[1](cotangent),
                          jax.vjp(theirs, *operands)[1](cotangent)):
        assert_close(g, r, VJP_TOL, f"vjp {name}")


AUTODIFF_GRID = _autodiff_grid()


@pytest.mark.parametrize("case", sample(_with_impls(AUTODIFF_GRID), 0, key=_meaning, full=160),
                         ids=_case_id)
def test_values_and_vjps_on_jax_autodiff_grid(rng, case):
    lhs, rhs, kwargs = _operands(rng, case)
    _check_values_and_vjp(rng, partial(jlax.conv_general_dilated, **kwargs, impl=case["impl"]),
                          partial(jax.lax.conv_general_dilated, **kwargs), (lhs, rhs))


# The default tier meets each value once here (the first-order grid above meets them pairwise).
@pytest.mark.parametrize("case", sample(AUTODIFF_GRID, 1, key=_meaning, full=16, strength=1), ids=_case_id)
def test_second_order_jvp_vmap_jit(rng, case):
    """grad-of-grad, jax.jvp, vmap over a leading axis and jit, against the same of lax."""
    lhs, rhs, kwargs = _operands(rng, case)
    ours = partial(jlax.conv_general_dilated, **kwargs)
    theirs = partial(jax.lax.conv_general_dilated, **kwargs)
    probe = random_array(rng, theirs(lhs, rhs).shape)

    def second(conv):   # d/d(lhs, rhs) of ⟨∂/∂lhs ⟨conv, probe⟩, lhs⟩: a second-order rule
        inner = jax.grad(lambda a, b: jnp.vdot(conv(a, b), probe))
        return jax.grad(lambda a, b: jnp.vdot(inner(a, b), jnp.sin(a)), argnums=(0, 1))(lhs, rhs)
    for g, r in zip(second(ours), second(theirs)):
        assert_close(g, r, VJP_TOL, "grad of grad")
    tangents = (random_array(rng, lhs.shape), random_array(rng, rhs.shape))
    assert_close(jax.jvp(ours, (lhs, rhs), tangents)[1], jax.jvp(theirs, (lhs, rhs), tangents)[1],
                 VJP_TOL, "jvp")
    stacked = jnp.stack([lhs, 2 * lhs])
    assert_close(jax.vmap(ours, (0, None))(stacked, rhs), jax.vmap(theirs, (0, None))(stacked, rhs),
                 F64, "vmap")
    assert_close(jax.jit(ours)(lhs, rhs), theirs(lhs, rhs), F64, "jit")


# lax_test.testConvGeneralDilated: (b, i, 9, 10) inputs, (j, i, 4, 5) kernels.
LAX_TEST_GRID = [dict(lhs=(b, i, 9, 10), rhs=(j, i, 4, 5), strides=s, padding=p, lhs_dilation=ld,
                      rhs_dilation=rd, layout=layout, feature_group_count=1, batch_group_count=1)
                 for b, i, j in itertools.product((1, 2), repeat=3)
                 for s in ((1, 1), (1, 2), (2, 1)) for p in (((0, 0), (0, 0)), ((1, 2), (2, 0)))
                 for ld in ((1, 1), (1, 2), (2, 2)) for rd in ((1, 1), (2, 1))
                 for layout in ("NCHW", "NHWC")]


# The default tier meets each value once here (the autodiff grid above meets them pairwise).
@pytest.mark.parametrize("case", sample(_with_impls(LAX_TEST_GRID), 2, key=_meaning, full=48, strength=1),
                         ids=_case_id)
def test_values_and_vjps_on_lax_test_grid(rng, case):
    lhs, rhs, kwargs = _operands(rng, case)
    _check_values_and_vjp(rng, partial(jlax.conv_general_dilated, **kwargs, impl=case["impl"]),
                          partial(jax.lax.conv_general_dilated, **kwargs), (lhs, rhs))


STRING_PADDING_SHAPES = {
    "1d": ((2, 3, 11), (4, 3, 4), (2,), (3,), ("NCH", "OIH", "NCH")),
    "3d-channels-last": ((1, 7, 6, 5, 2), (3, 2, 2, 2, 4), (2, 1, 2), (1, 2, 1),
                         ("NDHWC", "DHWIO", "NDHWC")),
    "2d-permuted-layouts": ((9, 2, 8, 3), (3, 4, 2, 3), (1, 2), (1, 1), ("HNWC", "HOWI", "CWNH")),
}


@pytest.mark.parametrize("shapes,padding,impl", sample(product(   # each rank, padding and impl once
    STRING_PADDING_SHAPES, ["SAME", "SAME_LOWER", "VALID", "same"], IMPLS), strength=1))
def test_string_padding_any_rank_and_layout(rng, shapes, padding, impl):
    lhs_shape, rhs_shape, strides, rhs_dil, dn = shapes
    lhs, rhs = random_array(rng, lhs_shape), random_array(rng, rhs_shape)
    kwargs = dict(window_strides=strides, padding=padding, rhs_dilation=rhs_dil, dimension_numbers=dn)
    _check_values_and_vjp(rng, partial(jlax.conv_general_dilated, **kwargs, impl=impl),
                          partial(jax.lax.conv_general_dilated, **kwargs), (lhs, rhs))


@pytest.mark.parametrize("impl", IMPLS)
def test_no_spatial_axes_is_a_matmul(rng, impl):
    lhs, rhs = random_array(rng, (3, 4)), random_array(rng, (5, 4))
    _check_values_and_vjp(rng, partial(jlax.conv_general_dilated, window_strides=(), padding=(), impl=impl),
                          partial(jax.lax.conv_general_dilated, window_strides=(), padding=()), (lhs, rhs))
    assert_close(jlax.conv_general_dilated(lhs, rhs, (), (), impl=impl), lhs @ rhs.T, F64, "x wᵀ")


# lax_test.testConvTranspose{1,2}D: channels-last inputs, k×k kernels, "VALID"/"SAME", strides,
# rhs dilation, and transpose_kernel (TensorFlow's kernel of the forward conv).
TRANSPOSE_GRID = [dict(lhs=(b, 9, 10, i), rhs=(k, k, i, j), strides=s, padding=p, rhs_dilation=rd,
                       transpose_kernel=t)
                  for b, i, j, k in ((1, 2, 3, 3), (2, 3, 2, 4))
                  for s in ((1, 1), (2, 2), (2, 1)) for p in ("VALID", "SAME", ((1, 2), (0, 1)))
                  for rd in (None, (2, 1)) for t in (False, True)]


# The default tier: each value once (the drop-in runs jaxcnn.conv_transpose, whose own grids are
# in test_transpose.py); the full tier: pairwise and a seeded sample.
@pytest.mark.parametrize("case", sample(_with_impls(TRANSPOSE_GRID), 3, key=_meaning, full=40, strength=1),
                         ids=lambda c: "-".join(str(v) for v in c.values()).replace(" ", ""))
def test_conv_transpose_matches_lax(rng, case):
    impl = case["impl"]
    lhs, rhs = random_array(rng, case["lhs"]), random_array(rng, case["rhs"])
    kwargs = {k: case[k] for k in ("strides", "padding", "rhs_dilation", "transpose_kernel")}
    if case["transpose_kernel"]:     # the kernel of the forward conv: I and O exchanged
        rhs = jnp.swapaxes(rhs, 2, 3)
    _check_values_and_vjp(rng, partial(jlax.conv_transpose, **kwargs, impl=impl),
                          partial(jax.lax.conv_transpose, **kwargs), (lhs, rhs))


def test_conv_transpose_consistent_padding_and_1d(rng):
    if "use_consistent_padding" not in jax.lax.conv_transpose.__code__.co_varnames:
        pytest.skip("this jax.lax.conv_transpose has no use_consistent_padding")
    lhs, rhs = random_array(rng, (2, 7, 3)), random_array(rng, (3, 3, 2))
    kwargs = dict(strides=(2,), padding=((1, 0),), use_consistent_padding=True)
    _check_values_and_vjp(rng, partial(jlax.conv_transpose, **kwargs),
                          partial(jax.lax.conv_transpose, **kwargs), (lhs, rhs))


FORMS = {   # one per mapping onto the family (jaxcnn.lax's docstring)
    "plain": dict(window_strides=(2, 1), padding=((1, -1), (0, 2)), rhs_dilation=(1, 2)),
    "lhs-dilated": dict(window_strides=(1, 1), padding=((2, 1), (0, 1)), lhs_dilation=(2, 3)),
    "batch-grouped": dict(window_strides=(1, 2), padding=((1, 0), (0, 0)), batch_group_count=2),
    "lhs-dilated-strided": dict(window_strides=(2, 1), padding=((1, 1), (0, 0)), lhs_dilation=(2, 1)),
}


@pytest.mark.parametrize("form", FORMS)
def test_every_derivative_runs_through_the_family(rng, form):
    """The jaxprs of jax.grad, grad-of-grad and jax.jvp hold jaxcnn's primitives and no
    conv_general_dilated; and the values agree with lax (the rules are the ones that ran)."""
    kwargs = FORMS[form]
    lhs, rhs = random_array(rng, (4, 2, 7, 6)), random_array(rng, (4, 2, 3, 2))
    conv = partial(jlax.conv_general_dilated, **kwargs)
    loss = lambda a, b: jnp.sum(conv(a, b) ** 2)
    grad = jax.grad(loss, argnums=(0, 1))
    second = jax.grad(lambda a, b: jnp.sum(grad(a, b)[0] ** 2), argnums=(0, 1))
    jvp = lambda a, b: jax.jvp(conv, (a, b), (a, b))
    for name, fn in (("grad", grad), ("grad of grad", second), ("jvp", jvp)):
        names = primitive_names(jax.make_jaxpr(fn)(lhs, rhs).jaxpr)
        assert "conv_general_dilated" not in names, f"{name}: {sorted(names)}"
        assert names & {"jaxcnn_conv", "jaxcnn_conv_input_grad", "jaxcnn_conv_weight_grad"}, name
    reference = jax.grad(lambda a, b: jnp.sum(jax.lax.conv_general_dilated(a, b, **kwargs) ** 2),
                         argnums=(0, 1))(lhs, rhs)
    for g, r in zip(grad(lhs, rhs), reference):
        assert_close(g, r, VJP_TOL, form)


@pytest.mark.parametrize("precision", [None, jax.lax.Precision.HIGHEST, "highest", "float32",
                                       ("highest", "highest"),
                                       (jax.lax.Precision.DEFAULT, jax.lax.Precision.HIGH)])
def test_every_precision_form_lax_takes(rng, precision):
    lhs, rhs = random_array(rng, (2, 3, 6)), random_array(rng, (4, 3, 3))
    kwargs = dict(window_strides=(1,), padding="SAME", precision=precision)
    _check_values_and_vjp(rng, partial(jlax.conv_general_dilated, **kwargs),
                          partial(jax.lax.conv_general_dilated, **kwargs), (lhs, rhs))


@pytest.mark.parametrize("form", FORMS)
def test_preferred_element_type_bfloat16_in_float32_out(rng, form):
    """bfloat16 operands, float32 result: products exact in float32 and summed there, as lax;
    so the two agree to float32's tolerance, and the cotangents come back in bfloat16."""
    kwargs = dict(FORMS[form], preferred_element_type=jnp.float32)
    lhs = random_array(rng, (4, 2, 7, 6), jnp.bfloat16)
    rhs = random_array(rng, (4, 2, 3, 2), jnp.bfloat16)
    got = jlax.conv_general_dilated(lhs, rhs, **kwargs)
    expected = jax.lax.conv_general_dilated(lhs, rhs, **kwargs)
    assert got.dtype == expected.dtype == jnp.float32
    assert_close(got, expected, TOL["float32"], form)
    grads = jax.grad(lambda a, b: jnp.sum(jlax.conv_general_dilated(a, b, **kwargs)), (0, 1))(lhs, rhs)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]


BAD = [
    (dict(window_strides=(1,)), ValueError, "window_strides"),
    (dict(window_strides=(1, 0)), ValueError, "window_strides"),
    (dict(padding="FULL"), ValueError, "padding"),
    (dict(padding=((1, 1),)), ValueError, "padding"),
    (dict(padding="SAME", lhs_dilation=(2, 1)), ValueError, "padding"),
    (dict(padding=((-9, 0), (0, 0))), ValueError, "padding"),
    (dict(lhs_dilation=(0, 1)), ValueError, "lhs_dilation"),
    (dict(rhs_dilation=(1, 2, 3)), ValueError, "rhs_dilation"),
    (dict(dimension_numbers=("NCHW", "OIHW")), ValueError, "dimension_numbers"),
    (dict(dimension_numbers=("NCHW", "OIXW", "NCHW")), ValueError, "dimension_numbers"),
    (dict(feature_group_count=0), ValueError, "feature_group_count"),
    (dict(feature_group_count=4), ValueError, "feature_group_count"),
    (dict(batch_group_count=3), ValueError, "batch_group_count"),
    (dict(batch_group_count=2, feature_group_count=2), ValueError, "batch_group_count"),
    (dict(precision="fast-ish"), ValueError, "precision"),
    (dict(preferred_element_type=jnp.int32), TypeError, "preferred_element_type"),
    (dict(preferred_element_type=jnp.float32), TypeError, "preferred_element_type"),
    (dict(impl="cudnn"), ValueError, "impl"),
    (dict(out_sharding="rows"), TypeError, "out_sharding"),
]


@pytest.mark.parametrize("kwargs,error,name", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_arguments_name_the_argument(rng, kwargs, error, name):
    lhs, rhs = random_array(rng, (4, 2, 7, 6)), random_array(rng, (4, 2, 3, 2))
    full = dict(dict(window_strides=(1, 1), padding="VALID"), **kwargs)
    with pytest.raises(error, match=f"^{name}:"):
        jlax.conv_general_dilated(lhs, rhs, **full)


def test_bad_operands_name_the_operand(rng):
    lhs, rhs = random_array(rng, (4, 2, 7, 6)), random_array(rng, (4, 2, 3, 2))
    keys = jax.random.split(jax.random.key(0), 4 * 2 * 7 * 6).reshape(4, 2, 7, 6)
    with pytest.raises(TypeError, match="^lhs:"):     # lax refuses it too (test_lax_dtypes)
        jlax.conv_general_dilated(keys, rhs, (1, 1), "VALID")
    with pytest.raises(TypeError, match="^rhs:"):
        jlax.conv_general_dilated(jnp.ones((4, 2, 7, 6), jnp.int32), rhs, (1, 1), "VALID")
    with pytest.raises(TypeError, match="^rhs:"):
        jlax.conv_general_dilated(lhs, rhs.astype(jnp.float32), (1, 1), "VALID")
    with pytest.raises(ValueError, match="^rhs:"):
        jlax.conv_general_dilated(lhs, rhs[0], (1, 1), "VALID")
    with pytest.raises(ValueError, match="^rhs:"):
        jlax.conv_general_dilated(lhs, random_array(rng, (4, 3, 3, 2)), (1, 1), "VALID")


def test_grouped_conv_with_no_spatial_axes_gradient_by_hand():
    """No spatial axes, 3 groups, output laid out "CN": y[o, n] = x[n, o // 2] · w[0, o]; the
    input gradient dx[n, g] = Σ_{o in group g} dy[o, n] · w[0, o], summed here by hand (jax.lax
    0.4.30 differentiates this conv wrongly, so the fuzzer skips it there)."""
    rng = np.random.default_rng(0)
    x, w, dy = rng.standard_normal((2, 3)), rng.standard_normal((1, 6)), rng.standard_normal((6, 2))
    conv = lambda x, w: jlax.conv_general_dilated(x, w, (), "VALID", dimension_numbers=("NC", "IO", "CN"),
                                                  feature_group_count=3)
    y, pull = jax.vjp(conv, jnp.asarray(x), jnp.asarray(w))
    dx, dw = pull(jnp.asarray(dy))
    groups = np.arange(6) // 2
    np.testing.assert_allclose(np.asarray(y), x[:, groups].T * w[0][:, None], rtol=1e-12)
    expected_dx = np.stack([np.sum(dy[groups == g] * w[0][groups == g][:, None], axis=0) for g in range(3)], axis=1)
    np.testing.assert_allclose(np.asarray(dx), expected_dx, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(dw), np.sum(dy * x[:, groups].T, axis=1)[None], rtol=1e-12)
