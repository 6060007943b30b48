"""Where does conv's backward spend its time on this CPU, and which formulation is fastest?

For each case (jaxcnn.bench's suite at its CPU sizes, float32, both layouts) it times, jit-compiled
and interleaved round-robin (so a shared machine's load falls on all alike):

- the pieces: ``fwd`` (lax, manual, im2col), ``dx`` and ``dw`` (each variant of vjp_variants.py,
  jaxcnn's lax and manual pieces, JAX autodiff's own transpose of plain lax, PyTorch's
  ``aten.convolution_backward`` with one output mask);
- the totals, fwd+bwd (``value_and_grad`` of ``Σ y·ct`` w.r.t. ``x`` and ``w``): JAX autodiff of
  plain lax, jaxcnn impl="lax" as it is, a conv whose custom_vjp uses the proposed pieces
  (``proposal``), and PyTorch autograd.

    python experiments/bench/investigate.py [--cases training] [--layout ...] [--rounds R]
                                            [--json experiments/bench/investigate.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

# --single-thread: one XLA and one torch thread, timed in process CPU time, which a shared
# machine's load cannot inflate (a preempted process accrues none): the work each formulation
# does, compared without the noise. Must be set before jax and torch load.
SINGLE = "--single-thread" in sys.argv
if SINGLE:
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
    os.environ["OMP_NUM_THREADS"] = "1"
CLOCK = time.process_time if SINGLE else time.perf_counter

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vjp_variants as V  # noqa: E402

from jaxcnn import bench  # noqa: E402
from jaxcnn.conv import conv_core  # noqa: E402


def proposal(spec, x_shape) -> tuple[str, str, str]:
    """The (forward, dx, dw) formulation proposed for conv's impl="lax" on CPU, from the
    measurements quoted in docs/history.md (names: vjp_variants.INPUT_GRADS / WEIGHT_GRADS)."""
    channels = x_shape[-1 if spec.channels_last else 1]
    if spec.groups > 1 and spec.groups == channels:          # depthwise: no grouped lax conv
        return "manual", "manual", "depthwise"
    if spec.groups == 1 and spec.n == 3:                     # 3D: Eigen's 3D conv is slow
        return "fold_depth", "fold_depth_out", "manual"
    if spec.groups == 1 and spec.n == 2 and max(spec.stride) == 1 and spec.channels_last and channels >= 16:
        return "lax", "lax", "manual"                        # per-tap matmuls, no transposes
    return "lax", "lax", "lax"


FORWARDS = {"lax": lambda x, w, spec: conv_core(x, w, spec, "lax"),
            "manual": lambda x, w, spec: conv_core(x, w, spec, "manual"),
            "im2col": V.forward_im2col, "fold_depth": V.forward_fold_depth, "as_2d": V.forward_as_2d}


def proposed_conv(fwd_name: str, dx_name: str, dw_name: str):
    """A conv whose forward and VJP use the named formulations."""
    @partial(jax.custom_vjp, nondiff_argnums=(2,))
    def f(x, w, spec):
        return FORWARDS[fwd_name](x, w, spec)

    def fwd(x, w, spec):
        return f(x, w, spec), (x, w)

    def bwd(spec, res, dy):
        x, w = res
        return (V.INPUT_GRADS[dx_name](dy, w, spec, x.shape),
                V.WEIGHT_GRADS[dw_name](x, dy, spec, w.shape))

    f.defvjp(fwd, bwd)
    return f


def contenders(case: bench.Case, cl: bool, torch_side, totals_only: bool = False):
    """name → (callable of no arguments, synchronise) for one case and layout."""
    x_shape, w_shape, y_shape = case.shapes(cl)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape) / w_shape[-1 if cl else 0]), jnp.float32)
    dy = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)
    spec = V.conv_spec(x_shape, w_shape, stride=case.stride, padding=case.padding, groups=case.groups,
                       channels_last=cl)
    base = bench.baseline_fn(case, cl)
    out: dict = {}
    sync = jax.block_until_ready

    def add(name, f, *args):
        g = jax.jit(f)
        out[name] = (lambda: g(*args), sync)

    if totals_only:
        return _totals(out, add, case, cl, spec, base, x, w, dy, x_shape, torch_side)
    add("fwd/lax", lambda x, w: conv_core(x, w, spec, "lax"), x, w)
    add("fwd/manual", lambda x, w: conv_core(x, w, spec, "manual"), x, w)
    add("fwd/im2col", lambda x, w: V.forward_im2col(x, w, spec), x, w)
    if case.n == 3 and V.applicable("fold_depth", spec, x_shape):
        add("fwd/fold_depth", lambda x, w: V.forward_fold_depth(x, w, spec), x, w)
    if V.applicable("as_2d", spec, x_shape):
        add("fwd/as_2d", lambda x, w: V.forward_as_2d(x, w, spec), x, w)

    def skip(name):   # phases only matter for strides, folding for 3D, NHWC for channels first
        return (not V.applicable(name, spec, x_shape) or (name == "phases" and max(spec.stride) == 1)
                or (name.startswith("fold_depth") and case.n != 3) or (name.endswith("_nhwc") and cl))
    for name, f in V.INPUT_GRADS.items():
        if skip(name):
            continue
        add(f"dx/{name}", partial(lambda f, dy, w: f(dy, w, spec, x_shape), f), dy, w)
    for name, f in V.WEIGHT_GRADS.items():
        if skip(name):
            continue
        add(f"dw/{name}", partial(lambda f, x, dy: f(x, dy, spec, w_shape), f), x, dy)
    add("dx/jax", lambda x, w, dy: jax.vjp(lambda x: base(x, w), x)[1](dy)[0], x, w, dy)
    add("dw/jax", lambda x, w, dy: jax.vjp(lambda w: base(x, w), w)[1](dy)[0], x, w, dy)

    _totals(out, add, case, cl, spec, base, x, w, dy, x_shape, None)
    if torch_side is not None:
        torch = torch_side.torch
        tx = torch_side.tensor(np.asarray(x), "act", "float32", cl, grad=True)
        tw = torch_side.tensor(np.asarray(w), "kernel", "float32", cl, grad=True)
        tdy = torch_side.tensor(np.asarray(dy), "act", "float32", cl)
        f = bench.torch_fn(case)
        pads = [case.padding] * case.n
        strides = [case.stride] * case.n

        def piece(mask):
            return torch.ops.aten.convolution_backward(
                tdy, tx.detach(), tw.detach(), None, strides, pads, [1] * case.n, False,
                [0] * case.n, case.groups, mask)

        def fwd():
            with torch.no_grad():
                return f(tx, tw)
        out["fwd/torch"] = (fwd, torch_side.sync)
        out["dx/torch"] = (lambda: piece([True, False, False]), torch_side.sync)
        out["dw/torch"] = (lambda: piece([False, True, False]), torch_side.sync)
        out["total/torch"] = (torch_side.runner(case, "fwd+bwd", [tx, tw], tdy), torch_side.sync)
    return out


def _totals(out, add, case, cl, spec, base, x, w, dy, x_shape, torch_side):
    """fwd+bwd of JAX autodiff of lax, jaxcnn impl="lax" as it is, the proposal (and torch)."""
    def total(f):
        return jax.value_and_grad(lambda x, w, ct: jnp.sum(f(x, w) * ct), argnums=(0, 1))

    add("total/jax", total(base), x, w, dy)
    add("total/lax", total(lambda x, w: conv_core(x, w, spec, "lax")), x, w, dy)
    conv = proposed_conv(*proposal(spec, x_shape))
    add("total/proposal", total(lambda x, w: conv(x, w, spec)), x, w, dy)
    if torch_side is not None:
        tx = torch_side.tensor(np.asarray(x), "act", "float32", cl, grad=True)
        tw = torch_side.tensor(np.asarray(w), "kernel", "float32", cl, grad=True)
        tdy = torch_side.tensor(np.asarray(dy), "act", "float32", cl)
        out["total/torch"] = (torch_side.runner(case, "fwd+bwd", [tx, tw], tdy), torch_side.sync)
    return out


def measure(calls: dict, rounds: int) -> dict[str, dict[str, float]]:
    """Compile and warm every call, then ``rounds`` interleaved timings; min and median ms."""
    for call, sync in calls.values():
        sync(call())
        sync(call())
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, (call, sync) in calls.items():
            start = CLOCK()
            sync(call())
            times[name].append((CLOCK() - start) * 1e3)
    return {name: {"min": min(t), "median": statistics.median(t)} for name, t in times.items()}


def markdown(report: dict) -> str:
    """Two tables from a saved run: every piece's time (fastest bold) and the fwd+bwd totals."""
    lines = ["| case | layout | piece | " + "time (ms, fastest of the rounds) per formulation |",
             "|---|---|---|---|"]
    totals = ["| case | layout | proposal (fwd, dx, dw) | jax ms | lax ms | proposal ms | torch ms "
              "| proposal/jax | torch/jax |", "|---|---|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        ms = {k: v["min"] for k, v in row["ms"].items()}
        layout = "NC…" if row["layout"] == "channels_first" else "N…C"
        for piece in ("fwd", "dx", "dw"):
            entries = {k.split("/")[1]: v for k, v in ms.items() if k.startswith(piece + "/")}
            if entries:
                best = min(entries.values())
                cells = " · ".join(f"**{k} {v:.3g}**" if v == best else f"{k} {v:.3g}"
                                   for k, v in entries.items())
                lines.append(f"| {row['case']} | {layout} | {piece} | {cells} |")
        t = {k.split("/")[1]: v for k, v in ms.items() if k.startswith("total/")}
        torch_ms = "—" if "torch" not in t else f"{t['torch']:.3g}"
        torch_ratio = "—" if "torch" not in t else f"{t['torch'] / t['jax']:.2f}"
        totals.append(f"| {row['case']} | {layout} | {', '.join(row['proposal'])} | {t['jax']:.3g} | "
                      f"{t['lax']:.3g} | {t['proposal']:.3g} | {torch_ms} | "
                      f"{t['proposal'] / t['jax']:.2f} | {torch_ratio} |")
    return "\n".join(lines) + "\n\n" + "\n".join(totals) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="training")
    p.add_argument("--layout", default="channels_first,channels_last")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--scale", default="cpu", choices=("cpu", "full", "quick"))
    p.add_argument("--json", default=None)
    p.add_argument("--totals-only", action="store_true", help="time only the fwd+bwd totals")
    p.add_argument("--markdown", metavar="JSON", help="print the tables of a saved run and exit")
    p.add_argument("--single-thread", action="store_true",
                   help="1 thread each, process CPU time (set before jax loads; see the top)")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    try:
        torch_side = bench.TorchSide()
        if SINGLE:
            torch_side.torch.set_num_threads(1)
    except ImportError:
        torch_side = None
    results = []
    cases = [c for c in bench.select_cases(args.cases) if c.op == "conv"]
    for case in cases:
        sized = case.sized(args.scale)
        for layout in args.layout.split(","):
            cl = layout == "channels_last"
            timing = measure(contenders(sized, cl, torch_side, args.totals_only), args.rounds)
            row = {"case": case.name, "shape": bench.describe(sized), "layout": layout,
                   "flops_fwd": bench.case_flops(sized, "fwd"), "ms": timing,
                   "proposal": proposal(V.conv_spec(*sized.shapes(cl)[:2], stride=sized.stride,
                                                    padding=sized.padding, groups=sized.groups,
                                                    channels_last=cl), sized.shapes(cl)[0])}
            results.append(row)
            best = {k: f"{v['min']:.3g}" for k, v in timing.items()}
            print(json.dumps({"case": case.name, "layout": layout, "min_ms": best}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"load_average": list(bench.load_average() or []),
                                               "clock": "process CPU time, 1 thread" if SINGLE
                                               else "wall clock, default threads",
                                               "device": bench.device_info(), "rows": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
