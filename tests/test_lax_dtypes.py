"""``jaxcnn.lax`` outside real floats: complex, integer and bool operands, lax's
``preferred_element_type`` rule, and bfloat16 operands with float32 results, each against
``jax.lax`` itself (and complex also against PyTorch).

Complex cases are a pairwise sample of rank × form × padding × layout × dtype × impl: every
value of each factor meets every value of every other at least once (``_all_pairs``).
Tolerances: complex128 as float64 (``TOL["float64"]``), complex64 as float32; integers are exact.
"""
from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn.lax as jlax
from helpers import TOL, assert_close, primitive_names, sample

pytestmark = pytest.mark.x64

COMPLEX_TOL = {"complex128": TOL["float64"], "complex64": TOL["float32"]}
# The three spatial ranks: lhs (N, C, *S), kernel (O, C // groups, *K).
SPATIAL = {1: ((7,), (3,)), 2: ((7, 6), (3, 2)), 3: ((5, 4, 3), (2, 2, 2))}
FORMS = {   # name: (feature groups, batch groups, conv_general_dilated's other arguments)
    "strided-grouped": (2, 1, dict(strides=2)),
    "rhs-dilated": (1, 1, dict(rhs_dilation=2)),
    "lhs-dilated": (1, 1, dict(lhs_dilation=2)),
    "batch-grouped": (1, 2, dict(strides=2, rhs_dilation=2)),
}
PADDINGS = {"SAME": (1, 1), "VALID": (0, 0), "pairs": (2, -1)}   # pairs if lhs-dilated
LAYOUTS = {1: {"first": ("NCH", "OIH", "NCH"), "last": ("NHC", "HIO", "NHC")},
           2: {"first": ("NCHW", "OIHW", "NCHW"), "last": ("NHWC", "HWIO", "NHWC")},
           3: {"first": ("NCDHW", "OIDHW", "NCDHW"), "last": ("NDHWC", "DHWIO", "NDHWC")}}


def _all_pairs(factors: dict[str, tuple]) -> list[dict]:
    """A few rows of the full product covering every pair of values of two factors: one row per
    pair of values of the two largest factors, the others chosen greedily (deterministically)
    to cover the most pairs still uncovered; then greedy rows for any pair left."""
    names = sorted(factors, key=lambda name: -len(factors[name]))
    pairs = lambda row: {(a, row[a], b, row[b]) for a, b in itertools.combinations(names, 2)}
    full = [dict(zip(names, v)) for v in itertools.product(*(factors[n] for n in names))]
    uncovered = set().union(*map(pairs, full))
    chosen = []
    for first, second in itertools.product(factors[names[0]], factors[names[1]]):
        candidates = [row for row in full if (row[names[0]], row[names[1]]) == (first, second)]
        chosen.append(max(candidates, key=lambda row: len(pairs(row) & uncovered)))
        uncovered -= pairs(chosen[-1])
    while uncovered:
        chosen.append(max(full, key=lambda row: len(pairs(row) & uncovered)))
        uncovered -= pairs(chosen[-1])
    return [{name: row[name] for name in factors} for row in chosen]


COMPLEX_CASES = _all_pairs(dict(rank=(1, 2, 3), form=tuple(FORMS), padding=tuple(PADDINGS),
                                layout=("first", "last"), dtype=("complex128", "complex64"),
                                impl=("lax", "manual")))


def _close(a, b, tol: float, what: str) -> None:
    """``assert_close`` on complex arrays: ``max|a − b| / max|b|`` over real and imaginary parts."""
    parts = lambda v: np.stack([np.real(np.asarray(v)), np.imag(np.asarray(v))])
    assert_close(parts(a), parts(b), tol, what)


def _lax_vjp(conv, operands, cotangent):
    """``jax.vjp`` of a lax conv; skips where this jax's transpose rules refuse a cotangent wider
    than the operands (``preferred_element_type``: jax 0.4.30 passes mixed dtypes to the conv)."""
    try:
        return jax.vjp(conv, *operands)[1](cotangent)
    except TypeError as err:
        if "same dtypes" not in str(err):
            raise
        pytest.skip(f"this jax.lax cannot differentiate a wider preferred_element_type: {err}")


def _complex(rng, shape, dtype) -> jax.Array:
    return jnp.asarray(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), dtype)


def _to_layout(a: jax.Array, spec: str, canonical: str) -> jax.Array:
    """``a`` laid out as ``canonical`` ("NCH…"/"OIH…") moved to the layout string ``spec``."""
    return jnp.transpose(a, [canonical.index(c) for c in spec])


def _operands(rng, case: dict, make=_complex):
    """lhs, rhs and the keyword arguments of ``case`` (a dict of the factors above)."""
    n, (groups, batch_groups, form) = case["rank"], FORMS[case["form"]]
    in_sizes, k_sizes = SPATIAL[n]
    dn = LAYOUTS[n][case["layout"]]
    lhs = make(rng, (4 * batch_groups, 2 * groups, *in_sizes), case["dtype"])
    rhs = make(rng, (4, 2, *k_sizes), case["dtype"])
    lhs, rhs = _to_layout(lhs, dn[0], LAYOUTS[n]["first"][0]), _to_layout(rhs, dn[1], LAYOUTS[n]["first"][1])
    padding = case["padding"]
    if "lhs_dilation" in form:       # lax takes no padding string with an lhs dilation
        padding = [PADDINGS[padding]] * n
    elif padding == "pairs":
        padding = [PADDINGS[padding]] * n
    kwargs = dict(window_strides=(form.get("strides", 1),) * n, padding=padding,
                  lhs_dilation=(form.get("lhs_dilation", 1),) * n,
                  rhs_dilation=(form.get("rhs_dilation", 1),) * n, dimension_numbers=dn,
                  feature_group_count=groups, batch_group_count=batch_groups)
    return lhs, rhs, kwargs


def _case_id(case: dict) -> str:
    return "-".join(str(v) for v in case.values())


def _derivatives(conv):
    """conv's value, ``jax.vjp`` with a complex cotangent and ``jax.jvp`` with complex tangents,
    in one compiled program (``jax.grad`` of a real loss is a vjp: test_complex_matches_pytorch)."""
    @jax.jit
    def run(lhs, rhs, cotangent, tangents):
        y, vjp = jax.vjp(conv, lhs, rhs)
        return dict(value=y, vjp=vjp(cotangent), jvp=jax.jvp(conv, (lhs, rhs), tangents)[1])
    return run


# The full tier: every pair of values (COMPLEX_CASES); the default tier: each value once.
@pytest.mark.parametrize("case", sample(COMPLEX_CASES, strength=1), ids=_case_id)
def test_complex_values_vjp_and_jvp_match_lax(rng, case):
    """Complex values, ``jax.vjp`` with a complex cotangent and ``jax.jvp`` with complex
    tangents: each as jax.lax's (JAX's complex convention throughout)."""
    lhs, rhs, kwargs = _operands(rng, case)
    theirs = partial(jax.lax.conv_general_dilated, **kwargs)
    shape = jax.eval_shape(theirs, lhs, rhs).shape
    probes = (_complex(rng, shape, case["dtype"]),
              (_complex(rng, lhs.shape, case["dtype"]), _complex(rng, rhs.shape, case["dtype"])))
    got = _derivatives(partial(jlax.conv_general_dilated, **kwargs, impl=case["impl"]))(lhs, rhs, *probes)
    expected = _derivatives(theirs)(lhs, rhs, *probes)
    for path, g in jax.tree_util.tree_leaves_with_path(got):
        e = expected
        for key in path:
            e = e[key.key if hasattr(key, "key") else key.idx]
        assert (g.shape, g.dtype) == (e.shape, e.dtype), jax.tree_util.keystr(path)
        _close(g, e, COMPLEX_TOL[case["dtype"]], jax.tree_util.keystr(path))


def test_complex_gradients_run_through_the_family(rng):
    """The complex gradient is the family's rules on real and imaginary parts, no lax conv."""
    lhs, rhs = _complex(rng, (2, 4, 7), "complex128"), _complex(rng, (3, 4, 3), "complex128")
    loss = lambda a, b: jnp.sum(jnp.abs(jlax.conv_general_dilated(a, b, (2,), "SAME")) ** 2)
    names = primitive_names(jax.make_jaxpr(jax.grad(loss, (0, 1)))(lhs, rhs).jaxpr)
    assert "conv_general_dilated" not in names
    assert {"jaxcnn_conv", "jaxcnn_conv_input_grad", "jaxcnn_conv_weight_grad"} <= names


@pytest.mark.parametrize("dtype,out", [("complex64", None), ("complex64", "complex128"),
                                       ("complex128", None)])
def test_complex_preferred_element_type(rng, dtype, out):
    lhs, rhs = _complex(rng, (2, 4, 6, 5), dtype), _complex(rng, (3, 4, 3, 2), dtype)
    kwargs = dict(window_strides=(1, 2), padding="SAME", preferred_element_type=out)
    got = jlax.conv_general_dilated(lhs, rhs, **kwargs)
    expected = jax.lax.conv_general_dilated(lhs, rhs, **kwargs)
    assert got.dtype == expected.dtype
    _close(got, expected, COMPLEX_TOL[dtype], "forward")
    cotangent = _complex(rng, got.shape, got.dtype)
    expected_vjp = _lax_vjp(partial(jax.lax.conv_general_dilated, **kwargs), (lhs, rhs), cotangent)
    got_vjp = jax.vjp(partial(jlax.conv_general_dilated, **kwargs), lhs, rhs)[1](cotangent)
    for g, r in zip(got_vjp, expected_vjp):
        assert g.dtype == r.dtype == jnp.dtype(dtype)
        _close(g, r, COMPLEX_TOL[dtype], "vjp")


@pytest.mark.parametrize("n,transpose_kernel", [(1, False), (2, True)])
def test_complex_conv_transpose_matches_lax(rng, n, transpose_kernel):
    lhs = _complex(rng, (2, *SPATIAL[n][0], 3), "complex128")
    rhs = _complex(rng, (*SPATIAL[n][1], 3, 2), "complex128")
    if transpose_kernel:     # the kernel of the forward conv: I and O exchanged
        rhs = jnp.swapaxes(rhs, -1, -2)
    kwargs = dict(strides=(2,) * n, padding="SAME", transpose_kernel=transpose_kernel)
    shape = jax.eval_shape(partial(jax.lax.conv_transpose, **kwargs), lhs, rhs).shape
    cotangent = _complex(rng, shape, "complex128")
    run = lambda conv: jax.jit(lambda a, b: jax.vjp(partial(conv, **kwargs), a, b))(lhs, rhs)
    (got, got_vjp), (expected, expected_vjp) = run(jlax.conv_transpose), run(jax.lax.conv_transpose)
    _close(got, expected, TOL["float64"], "forward")
    for g, r in zip(got_vjp(cotangent), expected_vjp(cotangent)):
        _close(g, r, TOL["float64"], "vjp")


TORCH_CASES = {   # n, stride, padding (ints: PyTorch's symmetric form), dilation, groups, dtype
    "1d-strided-grouped": (1, 2, 1, 1, 2, "complex128"),
    "2d-dilated": (2, 1, 2, 2, 1, "complex64"),
    "3d-strided": (3, 2, 0, 1, 1, "complex128"),
}


@pytest.mark.parametrize("case", TORCH_CASES)
def test_complex_matches_pytorch(rng, case):
    """Against ``torch.nn.functional.conv{n}d`` on complex tensors. For a real loss ``L``,
    PyTorch's ``z.grad`` is ``∂L/∂Re z + i·∂L/∂Im z`` (the conjugate Wirtinger derivative,
    scaled by 2: the step direction of gradient descent), JAX's ``jax.grad`` is
    ``∂L/∂Re z − i·∂L/∂Im z``: the two are each other's conjugates."""
    torch = pytest.importorskip("torch")
    n, stride, pad, dilation, groups, dtype = TORCH_CASES[case]
    lhs = _complex(rng, (2, 2 * groups, *SPATIAL[n][0]), dtype)
    rhs = _complex(rng, (4, 2, *SPATIAL[n][1]), dtype)
    probe = _complex(rng, (), dtype)            # makes the loss mix real and imaginary parts
    conv = partial(jlax.conv_general_dilated, window_strides=(stride,) * n,
                   padding=[(pad, pad)] * n, rhs_dilation=(dilation,) * n,
                   feature_group_count=groups)
    loss = lambda a, b: jnp.sum(jnp.real(conv(a, b) * probe) + jnp.abs(conv(a, b)) ** 2)
    value, grads = jax.jit(lambda a, b: (conv(a, b), jax.grad(loss, (0, 1))(a, b)))(lhs, rhs)
    t_lhs, t_rhs = (torch.tensor(np.asarray(a), requires_grad=True) for a in (lhs, rhs))
    torch_conv = getattr(torch.nn.functional, f"conv{n}d")
    t_out = torch_conv(t_lhs, t_rhs, stride=stride, padding=pad, dilation=dilation, groups=groups)
    torch.sum((t_out * torch.tensor(np.asarray(probe))).real + t_out.abs() ** 2).backward()
    tol = COMPLEX_TOL[dtype]
    _close(value, t_out.detach().numpy(), tol, "forward")
    for name, g, t in zip(("lhs", "rhs"), grads, (t_lhs, t_rhs)):
        _close(g, np.conj(t.grad.numpy()), tol, f"grad {name} (conjugated PyTorch)")


# ----------------------------------------------------------------------------- integers and bool

INTEGERS = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
FLOATS = ["float16", "bfloat16", "float32", "float64", "complex64", "complex128"]
INT_FORMS = [   # one geometry per dtype, in turn: negative padding, groups, batch groups
    dict(lhs=(2, 4, 7, 6), rhs=(3, 4, 3, 2), kwargs=dict(window_strides=(2, 1), padding=((1, -1), (0, 2)))),
    dict(lhs=(2, 4, 7, 6), rhs=(4, 2, 3, 2), kwargs=dict(window_strides=(1, 1), padding="SAME",
                                                         rhs_dilation=(2, 1), feature_group_count=2)),
    dict(lhs=(4, 2, 7, 6), rhs=(4, 2, 2, 3), kwargs=dict(window_strides=(1, 2), padding=((1, 1), (0, 1)),
                                                         lhs_dilation=(2, 1), batch_group_count=2)),
]


def _small_ints(rng, shape, dtype) -> jax.Array:
    """Values that no dtype's sums overflow: bool at random, unsigned 0..2, signed −2..2."""
    if dtype == "bool":
        return jnp.asarray(rng.integers(0, 2, shape).astype(bool))
    low = 0 if dtype.startswith("u") else -2
    return jnp.asarray(rng.integers(low, 3, shape), dtype)


@pytest.mark.parametrize("dtype", sample(INTEGERS, strength=1, key=lambda name: (   # each kind and width
    name.rstrip("0123456789"), np.dtype(name).itemsize)))                            # once by default
def test_integer_values_and_output_dtypes_match_lax(rng, dtype):
    """lax's output dtype for every ``preferred_element_type`` (or its refusal, as a TypeError
    naming the argument); exactly lax's values, and the sums computed in float64 (exact here),
    with the operands' dtype, int64 and the narrowest float lax allows."""
    form = INT_FORMS[INTEGERS.index(dtype) % len(INT_FORMS)]
    lhs, rhs = _small_ints(rng, form["lhs"], dtype), _small_ints(rng, form["rhs"], dtype)
    exact = np.asarray(jax.lax.conv_general_dilated(lhs.astype(jnp.float64), rhs.astype(jnp.float64),
                                                    **form["kwargs"]))
    _dtype_rule_matches_lax(lhs, rhs, form["kwargs"])
    for out in (None, "int64", "float64" if lhs.dtype.itemsize == 8 else "float32"):
        kwargs = dict(form["kwargs"], preferred_element_type=out)
        got = jlax.conv_general_dilated(lhs, rhs, **kwargs)
        expected = jax.lax.conv_general_dilated(lhs, rhs, **kwargs)
        assert (got.shape, got.dtype) == (expected.shape, expected.dtype), out
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=str(out))
        if got.dtype == jnp.bool_:
            np.testing.assert_array_equal(np.asarray(got), exact > 0)   # an OR of ANDs
        else:
            np.testing.assert_array_equal(np.asarray(got, np.float64), exact, err_msg=str(out))


def _dtype_rule_matches_lax(lhs, rhs, kwargs: dict) -> None:
    """For every ``preferred_element_type``, on shapes alone (``jax.eval_shape``): lax's result
    dtype, or a TypeError naming ``preferred_element_type`` where lax refuses."""
    lhs, rhs = (jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (lhs, rhs))
    for out in [None] + INTEGERS + FLOATS:
        conv = lambda f: partial(f, **kwargs, preferred_element_type=out)
        try:
            expected = jax.eval_shape(conv(jax.lax.conv_general_dilated), lhs, rhs).dtype
        except TypeError:
            with pytest.raises(TypeError, match="^preferred_element_type:"):
                jax.eval_shape(conv(jlax.conv_general_dilated), lhs, rhs)
            continue
        assert jax.eval_shape(conv(jlax.conv_general_dilated), lhs, rhs).dtype == expected, out


@pytest.mark.parametrize("dtype", FLOATS)
def test_floating_preferred_element_type_rule_matches_lax(dtype):
    _dtype_rule_matches_lax(jax.ShapeDtypeStruct((2, 3, 6), dtype), jax.ShapeDtypeStruct((4, 3, 2), dtype),
                            dict(window_strides=(1,), padding="VALID"))


@pytest.mark.parametrize("out", [None, "float32"])
def test_integer_derivatives_are_lax_s(rng, out):
    """No derivative of an integer conv, as lax: ``jax.grad`` refuses integer inputs,
    ``jax.vjp`` returns float0 cotangents and ``jax.jvp`` a float0 (or zero) tangent."""
    lhs, rhs = _small_ints(rng, (2, 4, 7), "int32"), _small_ints(rng, (3, 4, 3), "int32")
    kwargs = dict(window_strides=(1,), padding="SAME", preferred_element_type=out)
    ours, theirs = partial(jlax.conv_general_dilated, **kwargs), partial(jax.lax.conv_general_dilated, **kwargs)
    for conv in (ours, theirs):
        with pytest.raises(TypeError, match="grad requires real- or complex-valued inputs"):
            jax.grad(lambda a: jnp.sum(conv(a, rhs)).astype(jnp.float32))(lhs)
    y, vjp = jax.vjp(ours, lhs, rhs)
    cotangent = (np.zeros(y.shape, jax.dtypes.float0) if out is None
                 else jnp.ones(y.shape, out))
    expected = jax.vjp(theirs, lhs, rhs)[1](cotangent)
    assert [(g.shape, g.dtype) for g in vjp(cotangent)] == [(g.shape, g.dtype) for g in expected]
    tangents = tuple(np.zeros(a.shape, jax.dtypes.float0) for a in (lhs, rhs))
    got, expected = jax.jvp(ours, (lhs, rhs), tangents), jax.jvp(theirs, (lhs, rhs), tangents)
    for g, e in zip(got, expected):
        assert (g.shape, g.dtype) == (e.shape, e.dtype)
        np.testing.assert_array_equal(np.asarray(g, np.float64) if g.dtype != jax.dtypes.float0 else 0,
                                      np.asarray(e, np.float64) if e.dtype != jax.dtypes.float0 else 0)


def test_operands_lax_refuses_are_type_errors(rng):
    """PRNG keys and mixed dtypes: lax raises TypeError, and so do we, naming the operand."""
    keys = jax.random.split(jax.random.key(0), 2 * 3 * 6).reshape(2, 3, 6)
    ints, floats = jnp.ones((2, 3, 6), jnp.int32), jnp.ones((4, 3, 2), jnp.float32)
    for lhs, rhs, name in ((keys, floats, "lhs"), (ints, floats, "rhs"),
                           (floats.reshape(2, 3, 4)[..., :2].astype(jnp.complex64), floats[:2], "rhs")):
        with pytest.raises(TypeError):
            jax.lax.conv_general_dilated(lhs, rhs, (1,), "VALID")
        with pytest.raises(TypeError, match=f"^{name}:"):
            jlax.conv_general_dilated(lhs, rhs, (1,), "VALID")


def test_integer_conv_transpose_matches_lax(rng):
    lhs, rhs = _small_ints(rng, (2, 5, 6, 3), "int8"), _small_ints(rng, (3, 2, 3, 2), "int8")
    kwargs = dict(strides=(2, 1), padding="SAME", preferred_element_type=jnp.int32)
    got = jlax.conv_transpose(lhs, rhs, **kwargs)
    expected = jax.lax.conv_transpose(lhs, rhs, **kwargs)
    assert got.dtype == expected.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


# ----------------------------------------------------------------------------- bfloat16 → float32

BF16_FORMS = {   # the plain form and the lhs-dilated strided one reach conv's own transposes
    "plain": dict(window_strides=(2, 1), padding=((1, -1), (0, 2)), rhs_dilation=(1, 2)),
    "lhs-dilated-strided": dict(window_strides=(2, 1), padding=((1, 1), (0, 0)), lhs_dilation=(2, 1)),
    "batch-grouped": dict(window_strides=(1, 2), padding=((1, 0), (0, 0)), batch_group_count=2),
}
@pytest.mark.parametrize("form", BF16_FORMS)
def test_bfloat16_to_float32_gradients_rounded_once_as_lax(rng, form):
    """bfloat16 operands, ``preferred_element_type=float32``, a float32 cotangent. lax's
    transposes widen the operand to the cotangent's float32 (exact), sum in float32 and round
    the gradient to bfloat16 once. So each element must lie within half a bfloat16 ulp (and
    float32's sum error) of the float64 gradient of the same bfloat16 operands; rounding the
    cotangent to bfloat16 on the way in as well errs by up to an ulp (today's 4e-3 of max)."""
    kwargs = dict(BF16_FORMS[form], preferred_element_type=jnp.float32)
    lhs = jnp.asarray(rng.standard_normal((4, 2, 7, 6)), jnp.bfloat16)
    rhs = jnp.asarray(rng.standard_normal((4, 2, 3, 2)), jnp.bfloat16)
    y, ours = jax.vjp(partial(jlax.conv_general_dilated, **kwargs), lhs, rhs)
    cotangent = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    theirs = _lax_vjp(partial(jax.lax.conv_general_dilated, **kwargs), (lhs, rhs), cotangent)
    wide = dict(kwargs, preferred_element_type=None, precision="highest")
    exact = jax.vjp(partial(jax.lax.conv_general_dilated, **wide), lhs.astype(jnp.float64),
                    rhs.astype(jnp.float64))[1](cotangent.astype(jnp.float64))
    for name, g, r, e in zip(("lhs", "rhs"), ours(cotangent), theirs, exact):
        assert g.dtype == r.dtype == jnp.bfloat16
        e = np.asarray(e)
        rounded = np.abs(e).astype(jnp.bfloat16).astype(np.float64)
        half_ulp = np.ldexp(1.0, np.frexp(rounded)[1] - 8) / 2     # bfloat16: 8 significant bits
        allowed = half_ulp + TOL["float32"] * np.max(np.abs(e))
        assert np.all(np.abs(np.asarray(r, np.float64) - e) <= allowed), f"lax {name}"
        worst = np.max(np.abs(np.asarray(g, np.float64) - e) / allowed)
        assert worst <= 1, f"{name}: an element {worst:.2f}× beyond half a bfloat16 ulp"
