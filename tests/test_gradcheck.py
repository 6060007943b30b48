"""Tests of jaxcnn.gradcheck: the checker passes on the real ops and fails on wrong rules.

A checker that cannot fail proves nothing, so most tests here feed it deliberately wrong
``custom_vjp`` rules (a factor 2 on dx, a dropped bias gradient, a wrong second-order rule)
and assert which rows fail and which still pass.
"""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import gradcheck
from jaxcnn._compat import enable_x64
from jaxcnn.gradcheck import GradcheckError, check, check_dtype, command, matrix
from jaxcnn.gradcheck.cases import IMPL_LAYOUTS
from jaxcnn.tolerances import RTOL

from helpers import random_array

pytestmark = pytest.mark.x64


def _conv_args(rng, n: int, bias: bool = True):
    sizes = {1: (6,), 2: (5, 4), 3: (4, 3, 3)}[n]
    x = random_array(rng, (2, 3, *sizes))
    w = random_array(rng, (4, 3, *(2,) * n))
    return x, w, random_array(rng, (4,)) if bias else None


# ----------------------------------------------------------------------------- deliberately wrong rules


def _wrong_conv(scale_dx: float = 1.0, scale_db: float = 1.0):
    """``jaxcnn.conv`` with a custom VJP whose dx is scaled by ``scale_dx``, db by ``scale_db``."""
    @jax.custom_vjp
    def conv(x, w, b):
        return jaxcnn.conv(x, w, b, padding=1)

    def fwd(x, w, b):
        return conv(x, w, b), (x, w, b)

    def bwd(residuals, dy):
        x, w, b = residuals
        dx, dw, db = jax.vjp(lambda x, w, b: jaxcnn.conv(x, w, b, padding=1), x, w, b)[1](dy)
        return scale_dx * dx, dw, scale_db * db

    conv.defvjp(fwd, bwd)
    return conv


def _padded_reference(x, w, b):
    return jaxcnn.reference.conv(x, w, b, padding=1)


def test_check_passes_on_conv_every_dimension_and_impl(rng):
    for n, impl in ((1, "lax"), (2, "manual"), (3, "lax")):
        args = _conv_args(rng, n)
        report = check(jaxcnn.conv, args, stride=2, padding="SAME", impl=impl)
        assert report.ok, report.table()
        assert [(r.name, r.order) for r in report.rows] == [("output", 0), ("x", 1), ("w", 1), ("b", 1)]
        assert report["x"].rel_autodiff <= 1e-10 and report["x"].rel_fd <= 1e-7


def test_small_arguments_get_full_jacobians_large_ones_projections(rng):
    x, w, b = _conv_args(rng, 1)            # y has 2·4·5 = 40 elements
    report = check(jaxcnn.conv, (x, w, b), full_jacobian_max=40, n_projections=3)
    assert report["x"].method == "jacobian 40×36"
    assert report["b"].method == "jacobian 40×4"
    report = check(jaxcnn.conv, (x, w, b), full_jacobian_max=39, n_projections=3)
    assert {r.method for r in report.rows[1:]} == {"3 projections"}
    assert report.ok, report.table()


def test_check_skips_none_and_shape_arguments(rng):
    x, w, _ = _conv_args(rng, 2, bias=False)
    assert [r.name for r in check(jaxcnn.conv, (x, w, None)).rows] == ["output", "x", "w"]
    dy = random_array(rng, jaxcnn.conv(x, w).shape)
    report = check(jaxcnn.conv_input_grad, (dy, w, x.shape))
    assert report.ok and [r.name for r in report.rows] == ["output", "dy", "w"]


@pytest.mark.parametrize("full_jacobian_max", [0, 1000], ids=["projections", "jacobian"])
def test_wrong_dx_fails_both_comparisons_and_only_for_x(rng, full_jacobian_max):
    args = _conv_args(rng, 1)
    report = check(_wrong_conv(scale_dx=2.0), args, reference=_padded_reference,
                   full_jacobian_max=full_jacobian_max)
    assert not report.ok
    # dx = 2·(true dx): relative error max|2a − a| / max|a| = 1 against either oracle.
    assert report["x"].rel_autodiff == pytest.approx(1.0, rel=1e-9)
    assert report["x"].rel_fd == pytest.approx(1.0, rel=1e-6)
    assert not report["x"].ok and report["w"].ok and report["b"].ok and report["output"].ok


def test_dropped_bias_gradient_fails_and_raises_with_the_table(rng):
    args = _conv_args(rng, 2)
    wrong = _wrong_conv(scale_db=0.0)
    assert not check(wrong, args, reference=_padded_reference)["b"].ok
    with pytest.raises(GradcheckError) as caught:
        check(wrong, args, reference=_padded_reference, raise_on_failure=True)
    assert isinstance(caught.value, AssertionError)
    message = str(caught.value)
    assert "FAIL" in message and all(f" {name} " in message for name in ("x", "w", "b"))


def test_finite_differences_alone_catch_a_wrong_vjp(rng):
    """With the wrong function as its own reference, autodiff agrees (it runs the same wrong
    rule); the finite differences of its forward do not."""
    wrong = _wrong_conv(scale_dx=1.001)
    report = check(wrong, _conv_args(rng, 1), reference=wrong)
    assert report["x"].rel_autodiff == 0.0
    assert report["x"].rel_fd == pytest.approx(1e-3, rel=1e-3)
    assert not report.ok


def _conv_with_wrong_second_order(x_shape):
    """First order right; the rule that differentiates its dx wrt w returns twice the truth."""
    input_grad = lambda dy, w: jaxcnn.conv_input_grad(dy, w, x_shape)

    @jax.custom_vjp
    def wrong_input_grad(dy, w):
        return input_grad(dy, w)

    def ig_bwd(residuals, ct):
        d_dy, d_w = jax.vjp(input_grad, *residuals)[1](ct)
        return d_dy, 2.0 * d_w

    wrong_input_grad.defvjp(lambda dy, w: (input_grad(dy, w), (dy, w)), ig_bwd)

    @jax.custom_vjp
    def conv(x, w):
        return jaxcnn.conv(x, w)

    def bwd(residuals, dy):
        x, w = residuals
        return wrong_input_grad(dy, w), jaxcnn.conv_weight_grad(x, dy, w.shape)

    conv.defvjp(lambda x, w: (conv(x, w), (x, w)), bwd)
    return conv


def test_order_2_catches_a_wrong_second_order_rule(rng):
    x, w, _ = _conv_args(rng, 2, bias=False)
    wrong = _conv_with_wrong_second_order(x.shape)
    first = check(wrong, (x, w), reference=jaxcnn.reference.conv)
    assert first.ok, first.table()
    second = check(wrong, (x, w), reference=jaxcnn.reference.conv, order=2)
    assert not second.ok
    assert not second.row("w", order=2).ok
    assert second.row("x", order=2).ok and second.row("v", order=2).ok
    assert check(jaxcnn.conv, (x, w), order=2).ok


def test_smooth_nonlinear_function_passes_within_the_derived_tolerance(rng):
    """Truncation error O(ε²) and rounding O(u/ε) both stay under finite_difference_rtol."""
    @jax.custom_vjp
    def wave(x, a):
        return jnp.sin(a * x) * x

    def bwd(residuals, g):
        x, a = residuals
        return (g * (jnp.sin(a * x) + a * x * jnp.cos(a * x)),
                jnp.sum(g * x * x * jnp.cos(a * x), keepdims=True))

    wave.defvjp(lambda x, a: (wave(x, a), (x, a)), bwd)
    reference = lambda x, a: jnp.sin(a * x) * x
    report = check(wave, (random_array(rng, (5,)), jnp.asarray([1.3])), reference=reference, order=2)
    assert report.ok, report.table()
    assert gradcheck.finite_difference_rtol(1e-6) == pytest.approx(1e3 * 2.0 ** -53 / 1e-6 + 1e-12)


def test_check_turns_float64_on_when_it_is_off_and_says_so(rng):
    x, w, b = (np.asarray(a, np.float32) for a in _conv_args(rng, 1))
    with enable_x64(False):
        report = check(jaxcnn.conv, (x, w, b))
        assert not jax.config.read("jax_enable_x64")
    assert "turned on for this check only" in report.precision
    assert report.ok and report["x"].rel_fd <= 1e-7   # float32 differences would err ~1e-2


def test_check_dtype_float32_against_the_float64_reference(rng):
    args = _conv_args(rng, 2)
    report = check_dtype(jaxcnn.conv, args, "float32", padding="SAME")
    assert report.ok and report.precision == "float32 vs float64 reference"
    assert 0 < report["x"].rel_autodiff <= 1e-5    # float32 rounding, visible and bounded
    assert not check_dtype(_wrong_conv(scale_dx=2.0), args, reference=_padded_reference).ok


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_check_dtype_half_precision_uses_the_tolerance_table(rng, dtype):
    """One rounding of a float32-accumulated result: within ``tolerances.RTOL[dtype]``, the
    tests' own bound, and a factor 2 on dx is still caught."""
    x, w, _ = _conv_args(rng, 2, bias=False)
    report = check_dtype(jaxcnn.conv, (x, w, None), dtype, padding=1)
    assert report.ok, report.table()
    assert {r.rtol for r in report.rows} == {RTOL[dtype]}
    assert 0 < report["x"].rel_autodiff
    wrong = check_dtype(_wrong_conv(scale_dx=2.0), (x, w, jnp.zeros(4)), dtype,
                        reference=_padded_reference)
    assert not wrong["x"].ok and wrong["w"].ok and wrong["output"].ok


def test_no_reference_checks_the_vjp_against_its_own_jvp_and_finite_differences(rng):
    """A function with no twin in jaxcnn.reference (a user's own): as torch.autograd.gradcheck,
    finite differences and the jvp/vjp consistency, said in the report."""
    def my_conv(x, w, b):
        return jaxcnn.conv(x, w, b, padding=1)
    args = _conv_args(rng, 1)
    for full_jacobian_max in (0, 1000):
        report = check(my_conv, args, full_jacobian_max=full_jacobian_max, order=2)
        assert report.ok, report.table()
        assert "no reference" in report.precision and "output" not in [r.name for r in report.rows]
        assert all(r.method.endswith("vs f's JVP") for r in report.rows)
        assert all(r.rel_autodiff <= 1e-10 and r.rel_fd <= 1e-7 for r in report.rows)
    # A custom_vjp has no forward mode: finite differences alone, and they catch a factor 2.
    wrong = _wrong_conv(scale_dx=2.0)     # named "conv": wrapped, so that no twin is found
    report = check(lambda x, w, b: wrong(x, w, b), args)
    assert not report["x"].ok and report["x"].rel_autodiff is None
    assert report["x"].rel_fd == pytest.approx(1.0, rel=1e-6) and report["w"].ok
    assert report["x"].method.endswith("(no forward mode: fin. diff. only)")


def test_bad_arguments_name_the_argument(rng):
    args = _conv_args(rng, 1)
    with pytest.raises(TypeError, match="reference"):
        check(jaxcnn.conv, args, reference="conv")
    with pytest.raises(ValueError, match="argnums"):
        check(jaxcnn.conv, args, argnums=(2, 5))
    with pytest.raises(ValueError, match="argnums"):
        check(jaxcnn.conv_input_grad, (args[0], args[1], (2, 3, 6)), argnums=2)
    with pytest.raises(ValueError, match="args"):
        check(jaxcnn.conv, (None, None))
    with pytest.raises(ValueError, match="order"):
        check(jaxcnn.conv, args, order=3)
    with pytest.raises(ValueError, match="eps"):
        check(jaxcnn.conv, args, eps=0.0)
    with pytest.raises(ValueError, match="n_projections"):
        check(jaxcnn.conv, args, n_projections=0)


# ----------------------------------------------------------------------------- jaxcnn gradcheck


@pytest.mark.slow
def test_quick_run_exits_0_and_writes_json(tmp_path, capsys):
    path = tmp_path / "gradcheck.json"
    assert gradcheck.main(["--quick", "--json", str(path)]) == 0, capsys.readouterr().out
    result = json.loads(path.read_text())
    ops = [s["op"] for s in result["summary"]]
    assert ops == gradcheck_ops() and result["ok"]
    assert len(result["configurations"]) == len(ops)       # one sampled per op
    assert all(r["ok"] and r["report"]["rows"] for r in result["configurations"])
    out = capsys.readouterr().out
    assert all(op in out for op in ops)
    # Forward mode and batched columns, from the float64 order-1 configurations.
    for s in result["summary"]:
        assert s["batched"] == s["fwd_checked"] + s["fwd_unavailable"] <= s["float64"]
        if s["fwd_checked"]:
            assert s["worst_fwd_autodiff"] <= 1e-10 and s["worst_fwd_fd"] <= 1e-7
            assert s["worst_consistency"] <= 1e-10
        if s["batched"]:
            assert s["worst_batched"] <= 1e-10
    conv = next(s for s in result["summary"] if s["op"] == "conv")
    assert conv["fwd_checked"] == 1 and conv["fwd_unavailable"] == 0


def test_forward_mode_column_says_na_for_an_op_without_forward_mode():
    """A ``jax.custom_vjp`` op (pooling before it becomes primitives) is not a failure: its
    forward-mode cell reads "n/a (no forward mode)", its batched reverse mode still runs; the
    cell fills in with the errors once the op has a JVP rule."""
    case = matrix.cases_for("global_avg_pool", seed=0)[0]
    row = command.run_case(case)
    assert row["ok"], row
    assert row["worst_batched"] <= 1e-10
    summary = command.summarize("global_avg_pool", [row])
    has_jvp = row["fwd"] == "ran"    # global_avg_pool as a primitive with a JVP rule
    assert (summary["fwd_checked"], summary["fwd_unavailable"]) == ((1, 0) if has_jvp else (0, 1))
    expected = (f"{row['worst_fwd_autodiff']:.1e} / {row['worst_fwd_fd']:.1e}" if has_jvp
                else "n/a (no forward mode)")
    assert gradcheck.command.forward_cell(summary) == expected
    assert gradcheck.command.forward_cell(dict(summary, fwd_checked=2, fwd_unavailable=1,
                                               worst_fwd_autodiff=1e-16, worst_fwd_fd=2e-10)) \
        == "1.0e-16 / 2.0e-10 (n/a in 1)"


def gradcheck_ops() -> list[str]:
    return matrix.available_ops()


def test_ops_filter_runs_only_those_ops(tmp_path, capsys):
    path = tmp_path / "conv.json"
    assert gradcheck.main(["--quick", "--ops", "conv_weight_grad, conv", "--seed", "3",
                           "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert [s["op"] for s in result["summary"]] == ["conv_weight_grad", "conv"]
    assert {r["op"] for r in result["configurations"]} == {"conv", "conv_weight_grad"}
    assert "max_pool" not in capsys.readouterr().out


def test_unknown_op_exits_2_with_a_clear_message(capsys):
    assert gradcheck.main(["--ops", "conv,not_an_op"]) == 2
    err = capsys.readouterr().err
    assert "--ops" in err and "'not_an_op'" in err and "conv_transpose" in err
    assert gradcheck.main(["--no-such-flag"]) == 2


def test_cli_dispatches_gradcheck(capsys):
    from jaxcnn.cli import main as cli_main
    assert cli_main(["gradcheck", "--ops", "nope"]) == 2
    assert "unknown op 'nope'" in capsys.readouterr().err


def test_matrix_covers_every_factor_for_conv():
    """No compilation: the conv configurations span every dimension, padding form and mode,
    impl, layout, stride, dilation and groups, and some run in float32 and at order 2."""
    cases = matrix.cases_for("conv", seed=0)
    kw = [c.kwargs for c in cases]
    assert {c.args[1].ndim - 2 for c in cases} == {1, 2, 3}
    assert {c.function for c in cases} == {"conv", "conv1d", "conv2d", "conv3d"}
    strings = {k["padding"].upper() for k in kw if isinstance(k.get("padding"), str)}
    assert strings == {"VALID", "SAME", "FULL", "CAUSAL"}
    assert {type(k.get("padding", 0)).__name__ for k in kw} == {"int", "tuple", "str"}
    assert {k.get("padding_mode", "zeros") for k in kw} == {"zeros", "reflect", "replicate", "circular"}
    for n in (1, 2, 3):   # every (impl, layout) pair in every dimension
        pairs = {(k["impl"], k["channels_last"]) for c, k in zip(cases, kw) if c.args[1].ndim == n + 2}
        assert pairs == set(IMPL_LAYOUTS)
    assert any(np.max(k.get("stride", 1)) > 1 for k in kw)
    assert any(np.max(k.get("dilation", 1)) > 1 for k in kw)
    assert {k.get("groups", 1) for k in kw} >= {1, 2, 4}
    assert {(c.dtype, c.order) for c in cases} == {("float64", 1), ("float32", 1), ("float64", 2)}
    assert any(c.args[2] is None for c in cases) and any(c.args[2] is not None for c in cases)


def test_plain_text_table_without_rich(monkeypatch, capsys):
    """With rich unavailable the table is plain text (and the progress bar tqdm's)."""
    import sys
    for name in ("rich", "rich.console", "rich.table", "rich.progress"):
        monkeypatch.setitem(sys.modules, name, None)      # import raises ImportError
    assert gradcheck.main(["--quick", "--ops", "global_avg_pool"]) == 0
    out = capsys.readouterr().out
    header, rule, row = out.splitlines()[1:4]
    assert header.startswith("op ") and "worst rel. vs fin. diff." in header
    assert set(rule) == {"-", " "}
    assert row.startswith("global_avg_pool") and row.endswith("pass")
