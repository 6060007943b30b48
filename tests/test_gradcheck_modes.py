"""Tests of jaxcnn.gradcheck.check_modes / assert_grads: functions of pytrees, both modes, batched.

A checker that cannot fail proves nothing: each test plants one deliberately wrong rule (a
JVP, a transpose, a batching rule, a second-order rule off by a factor) in a small test-local
primitive or ``custom_jvp``, feeds it through one leaf of a params pytree, and asserts that
exactly the checks that rule feeds fail, for that leaf's path, and the others pass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.interpreters import ad, batching

from jaxcnn import nn
from jaxcnn._primitives import ShapedArray, make_primitive
from jaxcnn.gradcheck import GradcheckError, assert_grads, check_modes
from jaxcnn.tolerances import VJP_RTOL, finite_difference_rtol
from jaxcnn.train import cross_entropy

from helpers import random_array

pytestmark = pytest.mark.x64

FACTOR = 1.5


def _scale_primitive(name: str, jvp_error: float = 1.0, transpose_error: float = 1.0,
                     batch_error: float = 1.0):
    """``x ↦ factor·x`` as a primitive whose JVP, transpose or batching rule is off by a factor."""
    prim = make_primitive(f"test_scale_{name}", lambda x, *, factor: x * factor,
                          lambda a, *, factor: ShapedArray(a.shape, a.dtype))

    def jvp(primals, tangents, *, factor):
        (x,), (t,) = primals, tangents
        return prim.bind(x, factor=factor), prim.bind(ad.instantiate_zeros(t), factor=factor * jvp_error)

    def transpose(ct, x, *, factor):
        return [None if type(ct) is ad.Zero else prim.bind(ct, factor=factor * transpose_error)]

    def batch(args, dims, *, factor):
        return prim.bind(args[0], factor=factor * batch_error), dims[0]

    ad.primitive_jvps[prim] = jvp
    ad.primitive_transposes[prim] = transpose
    batching.primitive_batchers[prim] = batch
    return lambda x: prim.bind(x, factor=FACTOR)


def _model(scale):
    """A function of a params pytree with a pytree output; only ``params['b']`` meets ``scale``."""
    def model(params, x):
        return {"y": jnp.tanh(params["a"] * x), "z": scale(params["b"]) * params["a"]}
    return model


def _model_reference(params, x):
    return {"y": jnp.tanh(params["a"] * x), "z": FACTOR * params["b"] * params["a"]}


def _args(rng):
    return {"a": random_array(rng, (3,)), "b": random_array(rng, (3,))}, random_array(rng, (3,))


def _failing(report):
    return {(r.path, r.check) for r in report.failed()}


def test_right_rules_pass_every_check_and_name_every_leaf(rng):
    report = check_modes(_model(_scale_primitive("right")), _args(rng), batched=True)
    assert report.ok, report.table()
    assert {r.path for r in report.rows} == {"params['a']", "params['b']", "x"}
    assert {r.check for r in report.rows} == {
        "rev vs finite differences", "fwd vs finite differences", "jvp/vjp consistency",
        "batched vjp (vmap vs loop)", "batched jvp (vmap vs loop)"}
    assert "no reference" in report.oracle
    assert report.worst("finite differences") <= finite_difference_rtol(1e-6)


def test_wrong_jvp_fails_forward_mode_for_that_leaf_only(rng):
    # JAX's reverse mode transposes the JVP, so the VJP inherits the factor; the two agree.
    wrong = _model(_scale_primitive("wrong_jvp", jvp_error=2.0))
    report = check_modes(wrong, _args(rng), reference=_model_reference)
    assert _failing(report) == {("params['b']", c) for c in (
        "fwd vs finite differences", "fwd vs reference", "rev vs finite differences",
        "rev vs reference")}
    assert report.row("params['b']", "jvp/vjp consistency").ok
    assert report.row("params['b']", "fwd vs reference").rel_error == pytest.approx(1.0, rel=1e-9)


def test_wrong_transpose_fails_reverse_mode_and_the_consistency(rng):
    report = check_modes(_model(_scale_primitive("wrong_transpose", transpose_error=3.0)), _args(rng))
    assert _failing(report) == {("params['b']", "rev vs finite differences"),
                                ("params['b']", "jvp/vjp consistency")}
    assert report.row("params['b']", "fwd vs finite differences").ok


def test_wrong_batching_rule_fails_the_batched_checks_only(rng):
    report = check_modes(_model(_scale_primitive("wrong_batching", batch_error=2.0)), _args(rng),
                         batched=True)
    assert _failing(report) == {("params['b']", "batched vjp (vmap vs loop)"),
                                ("params['b']", "batched jvp (vmap vs loop)")}
    assert check_modes(_model(_scale_primitive("wrong_batching_unasked", batch_error=2.0)),
                       _args(rng)).ok    # batched=False: the per-example rules are right


def _cube_with_wrong_second_derivative():
    """``x³`` whose first derivative ``3x²`` is right and whose second is ``12x`` (truth 6x)."""
    @jax.custom_jvp
    def slope(x):
        return 3 * x ** 2
    slope.defjvp(lambda primals, tangents: (slope(primals[0]), 12 * primals[0] * tangents[0]))

    @jax.custom_jvp
    def cube(x):
        return x ** 3
    cube.defjvp(lambda primals, tangents: (cube(primals[0]), slope(primals[0]) * tangents[0]))
    return lambda params: {"cube": cube(params["x"]), "square": params["y"] ** 2}


def test_wrong_second_order_rule_fails_at_order_2_only(rng):
    f = _cube_with_wrong_second_derivative()
    params = {"x": random_array(rng, (4,)), "y": random_array(rng, (2,))}
    assert check_modes(f, (params,)).ok
    report = check_modes(f, (params,), order=2)
    assert _failing(report) == {("params['x']", "rev vs finite differences"),
                                ("params['x']", "fwd vs finite differences")}
    assert {r.path for r in report.rows if r.order == 2} == {
        "params['x']", "params['y']", "v['cube']", "v['square']"}


def test_assert_grads_message_names_path_check_element_values_and_tolerance(rng):
    wrong = _model(_scale_primitive("wrong_transpose_message", transpose_error=3.0))
    params, x = _args(rng)
    with pytest.raises(AssertionError) as caught:
        assert_grads(wrong, (params, x))
    assert isinstance(caught.value, GradcheckError)
    first = str(caught.value).strip().splitlines()[0]
    assert first.startswith("params['b'] (order 1): check 'rev vs finite differences' failed: "
                            "worst element direction and cotangent ")
    assert "expected (finite differences) " in first and "got (f's derivative) " in first
    assert f"> tolerance {finite_difference_rtol(1e-6):.1e} (tolerances.finite_difference_rtol(eps=1e-06)" in first
    row = check_modes(wrong, (params, x)).row("params['b']", "rev vs finite differences")
    assert f"{row.expected:.6e}" in first and f"{row.got:.6e}" in first
    assert "relative to the largest expected value" in str(caught.value)   # jax#3130
    assert f"tolerance {VJP_RTOL:.1e}: tolerances.VJP_RTOL" in str(caught.value)


def test_worst_element_index_points_into_the_leaf(rng):
    """A VJP wrong in one element only: the report names that element of that leaf."""
    @jax.custom_vjp
    def f(params):
        return params["w"] * 2.0
    f.defvjp(lambda p: (f(p), None), lambda _, g: ({"w": g.at[1, 2].multiply(5.0) * 2.0},))
    w = random_array(rng, (2, 3))
    report = check_modes(f, ({"w": w},), reference=lambda p: p["w"] * 2.0, modes="rev")
    row = report.row("params['w']", "rev vs reference")
    assert not row.ok and row.worst.endswith("params['w'][1, 2]")
    assert row.got == pytest.approx(5 * row.expected)


def _double(scale_dx: float = 2.0):
    """``2x`` as a ``jax.custom_vjp`` (no forward mode) whose VJP is ``scale_dx·g``."""
    @jax.custom_vjp
    def double(x):
        return 2.0 * x
    double.defvjp(lambda x: (2.0 * x, None), lambda _, g: (scale_dx * g,))
    return double


def _status(report) -> str:
    return report.table().splitlines()[0].rsplit(": ", 1)[1]


def test_no_forward_mode_is_not_applicable_by_default(rng):
    x = random_array(rng, (3,))
    report = check_modes(_double(), (x,), batched=True)
    assert report.ok and _status(report) == "ok"
    assert [w for w, _ in report.unavailable] == ["order 1"] and not report.refused
    assert "not applicable: order 1: fwd: n/a (no forward mode)" in report.table()
    assert {r.check for r in report.rows} == {"rev vs finite differences", "batched vjp (vmap vs loop)"}
    passed = assert_grads(_double(), (x,))          # the issue: it raised although all passed
    assert passed.ok and "n/a (no forward mode)" in passed.table()
    assert assert_grads(_double(), (x,), modes=("rev",), batched=True, order=2).ok


@pytest.mark.parametrize("modes", [("rev", "fwd"), "fwd"], ids=["rev+fwd", "fwd"])
def test_forward_mode_asked_for_explicitly_fails_saying_why(rng, modes):
    x = random_array(rng, (3,))
    report = check_modes(_double(), (x,), modes=modes)
    assert not report.ok and _status(report) == "FAILED" and not report.unavailable
    assert [w for w, _ in report.refused] == ["order 1"]
    assert "FAILED, asked for in modes but f cannot run it: order 1: fwd" in report.table()
    with pytest.raises(GradcheckError, match=r"order 1: fwd: n/a \(no forward mode\).*asked for "
                                             r"in modes.*modes=\('rev',\)"):
        assert_grads(_double(), (x,), modes=modes)


def test_custom_vjp_with_a_wrong_rule_still_fails_by_default(rng):
    x = random_array(rng, (3,))
    report = check_modes(_double(scale_dx=2.5), (x,))
    assert _failing(report) == {("x", "rev vs finite differences")} and _status(report) == "FAILED"
    with pytest.raises(GradcheckError, match=r"^\nx \(order 1\): check 'rev vs finite differences'"):
        assert_grads(_double(scale_dx=2.5), (x,))
    with pytest.raises(GradcheckError, match="rev vs reference"):
        assert_grads(_double(scale_dx=2.5), (x,), reference=lambda x: 2.0 * x)


@pytest.mark.parametrize("case", ["right", "right, fwd asked", "wrong", "wrong, rev only",
                                  "primitive, wrong transpose", "primitive, right"])
def test_report_status_and_assert_grads_always_agree(rng, case):
    """The table's status line says FAILED exactly when ``assert_grads`` raises (and then the
    table is in the message), ok exactly when it returns that report."""
    x = random_array(rng, (3,))
    f, options = {
        "right": (_double(), {}), "right, fwd asked": (_double(), dict(modes=("rev", "fwd"))),
        "wrong": (_double(3.0), {}), "wrong, rev only": (_double(3.0), dict(modes="rev")),
        "primitive, wrong transpose": (_scale_primitive("agree_wrong", transpose_error=3.0), {}),
        "primitive, right": (_scale_primitive("agree_right"), {}),
    }[case]
    status = _status(check_modes(f, (x,), **options))
    try:
        report = assert_grads(f, (x,), **options)
    except GradcheckError as err:
        assert status == "FAILED" and ": FAILED\n" in str(err)
    else:
        assert status == "ok" and _status(report) == "ok"
    assert status == ("ok" if case.endswith("right") else "FAILED")


def test_full_jacobian_on_request(rng):
    """``full_jacobian=True``: the basis vectors as directions and cotangents, so "rev vs
    finite differences" compares J row by row with J column by column, element by element."""
    params, x = _args(rng)
    report = check_modes(_model(_scale_primitive("full_right")), (params, x), full_jacobian=True,
                         batched=True)
    assert report.ok, report.table()
    assert "full Jacobians" in report.precision
    wrong = check_modes(_model(_scale_primitive("full_wrong", transpose_error=3.0)), (params, x),
                        full_jacobian=True)
    assert _failing(wrong) == {("params['b']", "rev vs finite differences"),
                               ("params['b']", "jvp/vjp consistency")}
    row = wrong.row("params['b']", "rev vs finite differences")
    # z = 1.5·b·a: ∂z_i/∂b_i = 1.5·a_i, the wrong transpose gives 3 times that (J diagonal).
    i = int(np.argmax(np.abs(np.asarray(params["a"]))))
    assert row.worst == f"output['z'][flat {i}], params['b'][{i}]"
    assert row.expected == pytest.approx(FACTOR * float(params["a"][i]), rel=finite_difference_rtol(1e-6))
    assert row.got == pytest.approx(3 * FACTOR * float(params["a"][i]), rel=1e-15)
    with pytest.raises(TypeError, match="full_jacobian"):
        check_modes(jnp.sin, (x,), full_jacobian=1)


def _loss(model):
    def loss(params, x, labels):
        return jnp.mean(cross_entropy(model.apply(params, x), labels))
    return loss


def test_small_model_loss_with_a_params_pytree_passes(rng):
    model = nn.serial(nn.Conv(4, (3,), padding=1), nn.ReLU(), nn.Flatten(), nn.Dense(3))
    params, _ = model.init(jax.random.PRNGKey(0), (2, 1, 6))
    x, labels = random_array(rng, (2, 1, 6)), jnp.asarray([0, 2])
    report = assert_grads(_loss(model), (params, x, labels), batched=True)
    assert {r.path for r in report.rows} == {"params[0]['w']", "params[0]['b']", "params[3]['w']",
                                             "params[3]['b']", "x"}   # labels: ints, skipped
    assert {r.order for r in report.rows} == {1}


def test_model_with_pooling_reverse_mode_to_order_2(rng):
    model = nn.serial(nn.Conv(3, (2,)), nn.ReLU(), nn.GlobalAvgPool(), nn.Dense(2))
    params, _ = model.init(jax.random.PRNGKey(1), (2, 1, 5))
    x, labels = random_array(rng, (2, 1, 5)), jnp.asarray([1, 0])
    report = assert_grads(_loss(model), (params, x, labels), modes=("rev",), order=2, batched=True)
    assert {r.order for r in report.rows} == {1, 2} and "v" in {r.path for r in report.rows}


def test_bad_options_name_the_option(rng):
    x = random_array(rng, (3,))
    with pytest.raises(ValueError, match="modes"):
        check_modes(jnp.sin, (x,), modes=("backward",))
    with pytest.raises(ValueError, match="order"):
        check_modes(jnp.sin, (x,), order=3)
    with pytest.raises(ValueError, match="args"):
        check_modes(lambda n: n, (np.arange(3),))
