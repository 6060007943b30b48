"""``jaxcnn gradcheck``: run the verification matrix, print one table, optionally write JSON.

The configurations live in ``jaxcnn.gradcheck.matrix``, the checks in ``jaxcnn.gradcheck.checks``;
this module is the command around them: arguments, each configuration checked (``run_case``)
and each op's rows summed up (``summarize``), a progress bar (rich, else tqdm), the table
(rich, else plain text), the failures' details and the JSON record.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from jaxcnn import reference
from jaxcnn.gradcheck import matrix
from jaxcnn.gradcheck.checks import check, check_dtype, float64
from jaxcnn.gradcheck.pytrees import NO_FORWARD_MODE, check_modes
from jaxcnn.tolerances import FD_EPS, RTOL, VJP_RTOL, finite_difference_rtol


def main(argv: Sequence[str] | None = None) -> int:
    """``jaxcnn gradcheck [--quick] [--json PATH] [--seed N] [--ops conv,max_pool,...]``.

    Runs the verification matrix (``jaxcnn.gradcheck.matrix``: every op × 1D/2D/3D × strides,
    paddings, modes, dilations, groups, layouts, impls; float64 against autodiff and finite
    differences, float32 against the float64 reference, some at order 2) and prints one table,
    a row per op. Exit status 0 if everything passes, 1 on any failure, 2 on bad usage.
    """
    parser = argparse.ArgumentParser(prog="jaxcnn gradcheck",
                                     description=main.__doc__.split("\n\n")[1].replace("``", ""))
    parser.add_argument("--quick", action="store_true", help="one configuration per op, drawn by --seed "
                        "(default: off, the whole matrix)")
    parser.add_argument("--json", metavar="PATH", help="write every configuration's result and the summary "
                        "as JSON (default: none, the table only)")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="seeds the data, the directions and "
                        "--quick's draw (default: 0)")
    parser.add_argument("--ops", metavar="OP,OP", help=f"comma-separated subset of: {', '.join(matrix.OPS)} "
                        "(default: all)")
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        options = parser.parse_args(argv)
    except SystemExit as stop:   # --help, or a usage error (argparse prints it)
        return int(stop.code or 0)
    available = matrix.available_ops()
    ops = available if options.ops is None else list(dict.fromkeys(
        op.strip() for op in options.ops.split(",") if op.strip()))
    unknown = [op for op in ops if op not in available]
    if unknown or not ops:
        print(f"jaxcnn gradcheck: --ops: unknown op {', '.join(map(repr, unknown)) or '(none given)'}; "
              f"expected a comma-separated subset of: {', '.join(available)}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with float64():
        cases = matrix.select(ops, options.seed, options.quick)
        with _progress_bar(len(cases)) as advance:
            rows = run_all(cases, options.seed, advance)
    wall = time.perf_counter() - start
    summaries = [summarize(op, [r for r in rows if r["op"] == op]) for op in ops]
    ok = all(s["ok"] for s in summaries)
    failed = sum(not r["ok"] for r in rows)
    title = (f"jaxcnn gradcheck{' --quick' if options.quick else ''}: {len(rows)} configurations, "
             f"seed {options.seed}, {wall:.0f} s: " + ("all pass" if ok else f"{failed} FAILED"))
    eps = f"{FD_EPS:.0e}".replace("e-0", "e-")    # 1e-6, not 1e-06
    notes = (f"Relative errors (max|a − b| / max|b|), worst over configurations and arguments. "
             f"Tolerances: float64 vs autodiff {VJP_RTOL:.0e}, vs central differences "
             f"{finite_difference_rtol(FD_EPS):.1e} (ε = {eps}), float32 {RTOL['float32']:.0e}. "
             f"Forward mode: JVPs against autodiff of the reference ({VJP_RTOL:.0e}) and central "
             f"differences ({finite_difference_rtol(FD_EPS):.1e}), and ⟨u, Jᵀv⟩ = ⟨Ju, v⟩; "
             f"batched: vmap of the VJP and of the JVP against the per-example ones ({VJP_RTOL:.0e}). "
             f"{NO_FORWARD_MODE}: the op is a jax.custom_vjp on this build.")
    _print_table(summaries, title, notes)
    for line in failure_lines(rows):
        print(line)
    if options.json:
        result = {"command": ["jaxcnn", "gradcheck", *argv], "seed": options.seed,
                  "quick": options.quick, "ok": ok, "wall_s": wall, "summary": summaries,
                  "configurations": rows}
        with open(options.json, "w", encoding="utf-8") as out:
            json.dump(_finite(result), out, indent=1, allow_nan=False)
    return 0 if ok else 1


@contextlib.contextmanager
def _progress_bar(total: int) -> Iterator[Callable[[Any], None]]:
    """A progress bar on stderr (rich, else tqdm, else none); yields ``advance(case)``."""
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        try:
            from tqdm import tqdm
        except ImportError:
            yield lambda case: None
            return
        with tqdm(total=total, desc="gradcheck", leave=False) as bar:
            yield lambda case: bar.update(1)
        return
    columns = (TextColumn("gradcheck"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("", total=total)
        yield lambda case: progress.update(task, advance=1, description=case.describe())


def _print_table(summaries: list[dict[str, Any]], title: str, notes: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"{title}\n{plain_table(summaries)}\n{notes}")
        return
    print(title)
    table = Table()
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=i == 0,
                         min_width=max(len(s["op"]) for s in summaries) if i == 0 else None)
    for line in table_rows(summaries):
        table.add_row(*line, style=None if line[-1] == "pass" else "bold red")
    console = Console()
    if not console.is_terminal:   # a file or a pipe: wide enough never to wrap a row
        console = Console(width=200)
    console.print(table)
    print(notes)


def run_all(cases: list[matrix.Case], seed: int, advance: Callable[[matrix.Case], None] = lambda case: None):
    """Run ``cases`` in order; ``advance(case)`` after each (a progress bar)."""
    rows = []
    for case in cases:
        rows.append(run_case(case, seed))
        advance(case)
    return rows


# ----------------------------------------------------------------------------- running

FULL_JACOBIAN_MAX = 64      # full Jacobians for the tiny (mostly 1D) configurations


def run_case(case: matrix.Case, seed: int = 0) -> dict[str, Any]:
    """Check one configuration; an exception is a failed row carrying its message."""
    f, reference_f = matrix.FUNCTIONS[case.function], getattr(reference, case.reference)
    start = time.perf_counter()
    row: dict[str, Any] = {"op": case.op, "function": case.function, "label": case.label,
                           "dtype": case.dtype, "order": case.order,
                           "args": [f"array{list(a.shape)}" if hasattr(a, "shape") else repr(a)
                                    for a in case.args],
                           "kwargs": {k: repr(v) for k, v in case.kwargs.items()}}
    try:
        if case.dtype == "float64":
            report = check(f, case.args, reference=reference_f, order=case.order,
                           full_jacobian_max=FULL_JACOBIAN_MAX, seed=seed, **case.kwargs)
        else:
            report = check_dtype(f, case.args, case.dtype, reference=reference_f,
                                 seed=seed, **case.kwargs)
    except Exception as err:  # noqa: BLE001 -- a crash is a failed configuration, reported
        row.update(ok=False, error=f"{type(err).__name__}: {err}", seconds=time.perf_counter() - start)
        return row
    rows = report.rows
    row.update(ok=report.ok, seconds=time.perf_counter() - start, report=report.as_dict(),
               worst_autodiff=max(r.rel_autodiff for r in rows),
               worst_fd=max((r.rel_fd for r in rows if r.rel_fd is not None), default=None))
    if case.dtype == "float64" and case.order == 1:
        _run_modes(case, f, reference_f, seed, row)
    row["seconds"] = time.perf_counter() - start
    return row


def _run_modes(case: matrix.Case, f: Callable, reference_f: Callable, seed: int, row: dict) -> None:
    """Forward mode and batched: ``row["modes"]`` and the worst errors, or ``row["fwd"]`` =
    ``NO_FORWARD_MODE`` where ``f`` has none (only batched reverse mode then)."""
    try:
        modes = check_modes(f, case.args, reference=reference_f, batched=True, seed=seed,
                            **case.kwargs)
    except Exception as err:  # noqa: BLE001 -- a crash is a failed configuration, reported
        row.update(ok=False, error=f"forward mode / batched: {type(err).__name__}: {err}")
        return
    row.update(ok=row["ok"] and modes.ok, modes=modes.as_dict(),
               fwd=NO_FORWARD_MODE if modes.unavailable else "ran",
               worst_fwd_autodiff=modes.worst("fwd vs reference"),
               worst_fwd_fd=modes.worst("fwd vs finite differences"),
               worst_consistency=modes.worst("consistency"), worst_batched=modes.worst("batched"))


def summarize(op: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One table entry: counts, worst errors per comparison, time, status."""
    def worst(selected, key):
        values = [r[key] for r in selected if r.get(key) is not None]
        return max(values) if values else None
    exact = [r for r in rows if r["dtype"] == "float64"]
    low = [r for r in rows if r["dtype"] != "float64"]
    checked = [r for r in exact if "fwd" in r]
    return {"op": op, "configurations": len(rows),
            "float64": sum(r["order"] == 1 for r in exact), "order2": sum(r["order"] == 2 for r in exact),
            "float32": len(low), "failed": sum(not r["ok"] for r in rows),
            "worst_autodiff": worst(exact, "worst_autodiff"), "worst_fd": worst(exact, "worst_fd"),
            "worst_float32": worst(low, "worst_autodiff"),
            "fwd_checked": sum(r["fwd"] == "ran" for r in checked),
            "fwd_unavailable": sum(r["fwd"] == NO_FORWARD_MODE for r in checked),
            "worst_fwd_autodiff": worst(checked, "worst_fwd_autodiff"),
            "worst_fwd_fd": worst(checked, "worst_fwd_fd"),
            "worst_consistency": worst(checked, "worst_consistency"),
            "worst_batched": worst(checked, "worst_batched"), "batched": len(checked),
            "seconds": sum(r["seconds"] for r in rows), "ok": all(r["ok"] for r in rows)}


# ----------------------------------------------------------------------------- output

COLUMNS = ("op", "configs (f64 / order 2 / f32)", "worst rel. vs autodiff", "worst rel. vs fin. diff.",
           "worst rel. float32 vs f64 ref.", "fwd vs autodiff / fin. diff.",
           "batched (vmap vs loop)", "time (s)", "status")


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1e}"


def forward_cell(s: dict[str, Any]) -> str:
    """The forward-mode column: worst errors, or ``n/a (no forward mode)`` where the op has
    none on this build (a ``jax.custom_vjp``); fills in once the op has a JVP rule."""
    if s["fwd_checked"] == 0:
        return NO_FORWARD_MODE if s["fwd_unavailable"] else "—"
    cell = f"{_num(s['worst_fwd_autodiff'])} / {_num(s['worst_fwd_fd'])}"
    return cell + (f" (n/a in {s['fwd_unavailable']})" if s["fwd_unavailable"] else "")


def table_rows(summaries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    return [(s["op"], f"{s['configurations']} ({s['float64']} / {s['order2']} / {s['float32']})",
             _num(s["worst_autodiff"]), _num(s["worst_fd"]), _num(s["worst_float32"]),
             forward_cell(s), _num(s["worst_batched"]),
             f"{s['seconds']:.1f}", "pass" if s["ok"] else f"FAIL ({s['failed']})")
            for s in summaries]


def plain_table(summaries: list[dict[str, Any]]) -> str:
    lines = [COLUMNS, *table_rows(summaries)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join([text[0], "  ".join("-" * w for w in widths), *text[1:]])


def failure_lines(rows: list[dict[str, Any]], limit: int = 20) -> list[str]:
    """One line per failed configuration: what ran and its worst row (or its exception)."""
    lines = []
    for row in [r for r in rows if not r["ok"]][:limit]:
        what = f"{row['function']} {row['label']} [{row['dtype']}, order {row['order']}]"
        if "error" in row:
            lines.append(f"FAIL {what}: {row['error']}")
            continue
        bad = [r for r in row["report"]["rows"] if not r["ok"]]
        lines += [f"FAIL {what}: {r['path']} (order {r['order']}, {r['check']}): rel. error "
                  f"{r['rel_error']:.1e} > {r['tolerance']:.1e} at {r['worst']}"
                  for r in row.get("modes", {}).get("rows", []) if not r["ok"]]
        lines += [f"FAIL {what}: {r['name']} (order {r['order']}, {r['method']}): rel. error "
                  f"{r['rel_autodiff']:.1e} vs autodiff, "
                  + ("—" if r["rel_fd"] is None else f"{r['rel_fd']:.1e}") + " vs fin. diff."
                  for r in bad]
    return lines


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as strings."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
