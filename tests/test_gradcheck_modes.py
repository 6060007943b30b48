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


def test_no_forward_mode_is_reported_not_raised(rng):
    @jax.custom_vjp
    def double(x):
        return 2.0 * x
    double.defvjp(lambda x: (2.0 * x, None), lambda _, g: (2.0 * g,))
    x = random_array(rng, (3,))
    report = check_modes(double, (x,), batched=True)
    assert report.ok and [w for w, _ in report.unavailable] == ["order 1"]
    assert "n/a (no forward mode)" in report.table()
    with pytest.raises(AssertionError, match=r"no forward mode.*modes=\('rev',\)"):
        assert_grads(double, (x,))
    assert assert_grads(double, (x,), modes=("rev",), batched=True, order=2).ok


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
