"""``jaxcnn._conv.xla_guard``: the rule for XLA's operand-swap abort, checked against XLA itself at
each of its boundaries, and the configurations that aborted or failed to lower, now right.

Everything that could abort runs in worker processes (``jaxcnn.fuzz.runner``): an abort
fails one test instead of killing the suite.
"""
from __future__ import annotations

import numpy as np
import pytest

from jaxcnn.fuzz import runner
from jaxcnn._conv.xla_guard import aborting_convolutions, operand_swap_aborts

HERE = __file__

# One lhs-dilated convolution of the input-gradient kind, and one change per boundary of the
# rule. Axis 0 is the "group axis" (kernel 2, no padding, base dilation 2, stride 1) with the
# input 4 long; axis 1 (input 1, kernel 2) makes the kernel the larger operand.
BASE = dict(sizes=(4, 1), kernel=(2, 2), strides=(1, 1), padding=((0, 0), (1, 2)),
            lhs_dilation=(2, 3), rhs_dilation=(1, 1), groups=1, dtype="float32")
BOUNDARIES = {
    "aborts": {},
    "group axis as long as its kernel": dict(sizes=(2, 1)),
    "group axis padded low": dict(padding=((1, 0), (1, 2))),
    "group axis padded high": dict(padding=((0, 1), (1, 2))),
    "group axis stride not kernel - 1": dict(strides=(2, 1)),
    "group axis base dilation not kernel": dict(lhs_dilation=(3, 3)),
    "group axis window dilated": dict(rhs_dilation=(2, 1)),
    "kernel 3 group axis": dict(kernel=(3, 2), strides=(2, 1), lhs_dilation=(3, 3)),
    "products equal": dict(sizes=(4, 2), padding=((0, 0), (0, 0))),
    "input 1 under a full padding counts the kernel": dict(padding=((0, 0), (1, 1)), lhs_dilation=(2, 1)),
    "two feature groups": dict(groups=2),
    "two feature groups, float64 (expanded first)": dict(groups=2, dtype="float64"),
    "two feature groups, bfloat16": dict(groups=2, dtype="bfloat16"),
    "float64, one group": dict(dtype="float64"),
    "third axis, larger input": dict(sizes=(4, 1, 5), kernel=(2, 2, 1), strides=(1, 1, 1),
                                     padding=((0, 0), (1, 2), (0, 0)), lhs_dilation=(2, 3, 1),
                                     rhs_dilation=(1, 1, 1)),
    "third axis, pure contraction": dict(sizes=(4, 1, 3), kernel=(2, 2, 3), strides=(1, 1, 1),
                                         padding=((0, 0), (1, 2), (0, 0)), lhs_dilation=(2, 3, 1),
                                         rhs_dilation=(1, 1, 1)),
}


def _predict(c: dict) -> bool:
    return operand_swap_aborts(c["sizes"], c["kernel"], c["strides"], c["padding"],
                               c["lhs_dilation"], c["rhs_dilation"], c["groups"], dtype=c["dtype"])


def compile_lax(c: dict) -> dict:
    """Worker target: compile one ``lax.conv_general_dilated`` (aborts where XLA does)."""
    import jax
    import jax.numpy as jnp
    jax.config.update("jax_enable_x64", True)
    g, dtype = c["groups"], jnp.dtype(c["dtype"])
    lhs = jnp.ones((1, 2 * g, *c["sizes"]), dtype)
    rhs = jnp.ones((2, 2, *c["kernel"]), dtype)
    jax.jit(lambda a, b: jax.lax.conv_general_dilated(
        a, b, c["strides"], [tuple(p) for p in c["padding"]], lhs_dilation=c["lhs_dilation"],
        rhs_dilation=c["rhs_dilation"], feature_group_count=g)).lower(lhs, rhs).compile()
    return {"status": "ok"}


# The jaxlib whose XLA the rule was measured on; other releases must never abort where the
# rule says a convolution is safe (the rule may be conservative there, never wrong).
MEASURED_JAXLIB = "0.10.2"


@pytest.mark.slow
def test_rule_matches_xla_at_every_boundary():
    import jaxlib
    exact = jaxlib.__version__ == MEASURED_JAXLIB
    configs = [{**BASE, **change, "name": name} for name, change in BOUNDARIES.items()]
    results = runner.run(f"{HERE}:compile_lax", configs, processes=2, chunk=len(configs))
    assert [r["config"]["name"] for r in results] == list(BOUNDARIES)
    for r in results:
        assert r["status"] in ("ok", "crash"), r
        aborted = r["status"] == "crash"
        if exact or aborted:
            assert aborted == _predict(r["config"]), (r["config"]["name"], r.get("detail"))
        if aborted:
            assert "Window dimensions do not match" in r["detail"], r["detail"]
    if exact:
        assert sum(r["status"] == "crash" for r in results) == 5   # base, f64 ×2, kernel 3, contraction


@pytest.mark.x64   # the boundaries hold float64 cases
def test_lowered_programs_are_read_for_aborting_convolutions():
    """``aborting_convolutions`` parses every convolution of a lowered (never compiled)
    program and asks the rule: the same verdict at every boundary, in both layouts."""
    import jax
    import jax.numpy as jnp
    for name, change in BOUNDARIES.items():
        c = {**BASE, **change}
        g, dtype = c["groups"], jnp.dtype(c["dtype"])
        for channels_last in (False, True):
            lhs = jnp.ones((1, 2 * g, *c["sizes"]), dtype)
            rhs = jnp.ones((2, 2, *c["kernel"]), dtype)
            spatial = "DHW"[3 - len(c["sizes"]):]
            numbers = (f"NC{spatial}", f"OI{spatial}", f"NC{spatial}")
            if channels_last:
                lhs, rhs = jnp.moveaxis(lhs, 1, -1), jnp.moveaxis(rhs, (0, 1), (-1, -2))
                numbers = (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")
            lowered = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
                a, b, c["strides"], c["padding"], lhs_dilation=c["lhs_dilation"],
                rhs_dilation=c["rhs_dilation"], dimension_numbers=numbers,
                feature_group_count=g)).lower(lhs, rhs).as_text()
            assert bool(aborting_convolutions(lowered)) == _predict(c), (name, channels_last)


def test_rule_is_pure_shape_arithmetic():
    assert _predict(BASE)
    assert not _predict({**BASE, "sizes": (2, 1)})
    assert not operand_swap_aborts((4,), (2,), (1,), ((0, 0),), (2,), (1,))   # one axis: no swap


# ----------------------------------------------------------------------------- the reproducers
# Found by a random search against PyTorch: two gradients that aborted the process (one also
# aborts jax.grad of plain lax) and a 3D conv_transpose whose lowering had the wrong shape.

REPRODUCERS = [
    dict(op="conv", x=(1, 2, 3, 6, 4), w=(1, 2, 1, 2, 3), stride=(1, 2, 1), padding=(0, 1, 0)),
    dict(op="conv", x=(2, 2, 3, 6, 4), w=(1, 2, 2, 2, 3), stride=(1, 2, 1), padding=(0, 1, 0)),
    dict(op="conv", x=(1, 1, 6, 3), w=(2, 1, 2, 2), stride=(2, 3), padding=(1, 0)),
    dict(op="conv_transpose", x=(2, 2, 1, 5, 3), w=(2, 2, 1, 1, 1), stride=(1, 1, 3),
         padding=(0, 2, 0), output_padding=(1, 0, 0), dilation=(2, 1, 1)),
]


def against_torch(c: dict) -> dict:
    """Worker target: ``c``'s value and gradients (w.r.t. x and w, of ``sum(y²)/2``) from
    jaxcnn (both impls, both layouts) and PyTorch, float32; the worst relative error."""
    import jax
    import jax.numpy as jnp
    import torch

    import jaxcnn
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(c["x"]), rng.standard_normal(c["w"])
    options = {k: v for k, v in c.items() if k not in ("op", "x", "w")}
    n = len(c["x"]) - 2
    torch_op = getattr(torch.nn.functional, f"{c['op']}{n}d")
    tx, tw = (torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in (x, w))
    ty = torch_op(tx, tw, **options)
    (0.5 * (ty ** 2).sum()).backward()
    expected = [ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy()]
    worst = {}
    for impl in ("lax", "manual"):
        for channels_last in (False, True):
            def to(a, kernel=False):
                if not channels_last:
                    return a
                return np.moveaxis(a, (0, 1), (-1, -2)) if kernel else np.moveaxis(a, 1, -1)

            def back(a, kernel=False):
                a = np.asarray(a)
                if not channels_last:
                    return a
                return np.moveaxis(a, (-1, -2), (0, 1)) if kernel else np.moveaxis(a, -1, 1)

            op = getattr(jaxcnn, c["op"])
            f = lambda x, w: op(x, w, channels_last=channels_last, impl=impl, **options)
            jx, jw = jnp.asarray(to(x), jnp.float32), jnp.asarray(to(w, True), jnp.float32)
            y = f(jx, jw)
            gx, gw = jax.grad(lambda x, w: 0.5 * jnp.sum(f(x, w) ** 2), argnums=(0, 1))(jx, jw)
            got = [back(y), back(gx), back(gw, True)]
            worst[f"{impl} channels_last={channels_last}"] = max(
                float(np.max(np.abs(a - b)) / np.max(np.abs(b))) if a.shape == b.shape else np.inf
                for a, b in zip(got, expected))
    return {"status": "ok", "worst": worst}


@pytest.mark.slow   # a worker process; the default tier: the float32 low-pad gradients below
def test_reproducers_match_pytorch():
    pytest.importorskip("torch")
    results = runner.run(f"{HERE}:against_torch", REPRODUCERS, processes=1, chunk=len(REPRODUCERS))
    for r in results:
        assert r["status"] == "ok", r
        for form, error in r["worst"].items():
            assert error <= 1e-5, (r["config"], form, error)   # float32


# ----------------------------------------------------------------------------- negative low pads

def test_low_crops_hand_worked():
    """(−2, 1) on 5: slice 2, pad (0, 1); (−3, 1) on 2: slice all 2, the third from hi → (0, 0);
    a dilated axis or a non-negative lo is left alone. The padded length is unchanged."""
    from jaxcnn._conv.xla_guard import low_crops
    crops, pads = low_crops([5, 2, 4, 6], [(-2, 1), (-3, 1), (-1, 1), (1, -1)], [1, 1, 2, 1])
    assert crops == [2, 2, 0, 0]
    assert pads == [(0, 1), (0, 0), (-1, 1), (1, -1)]
    for size, cut, (lo, hi), (lo2, hi2) in zip([5, 2], crops, [(-2, 1), (-3, 1)], pads):
        assert size - cut + lo2 + hi2 == size + lo + hi


@pytest.mark.x64   # the reference: the manual impl in float64
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True], ids=["NC", "NC_last"])
def test_float32_gradients_with_a_low_pad_past_the_kernel(n, channels_last):
    """Pads (3, 0), kernel 2: the input gradient's convolution would pad by lo' = −2 with
    hi' = 1, which XLA's CPU float32 convolution got wrong by up to 1e22 (four input channels:
    not the native kernels' case). jaxcnn's float32 gradients equal the manual impl's in float64
    (no convolution primitive) to float32's tolerance."""
    import jax
    import jax.numpy as jnp
    import jaxcnn
    from jaxcnn._compat import enable_x64
    from helpers import TOL, assert_close
    rng = np.random.default_rng(0)
    shape = (5, *(2,) * n, 4) if channels_last else (5, 4, *(2,) * n)
    w_shape = (*(2,) * n, 4, 8) if channels_last else (8, 4, *(2,) * n)
    x, w = rng.standard_normal(shape), rng.standard_normal(w_shape)

    def grads(dtype, impl):
        def loss(x, w):
            return jnp.sum(jnp.sin(jaxcnn.conv(x, w, padding=((3, 0),) * n, channels_last=channels_last,
                                               impl=impl)))
        return jax.grad(loss, argnums=(0, 1))(jnp.asarray(x, dtype), jnp.asarray(w, dtype))
    want = grads(jnp.float64, "manual")
    with enable_x64(False):
        got = grads(jnp.float32, "lax")
    for g, r, what in zip(got, want, ("dx", "dw")):
        assert_close(g, r, TOL["float32"], what)
