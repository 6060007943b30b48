"""The benchmark issue's acceptance checks, computed from one ``jaxcnn bench`` JSON.

    python experiments/bench/summary.py [experiments/bench/results.json] [--out experiments/bench/summary.md]

Every figure comes from the rows of that one run (fwd+bwd rows; ratios of medians of
interleaved rounds): no number is typed in by hand. Checks, per dtype:

1. ``impl="lax"`` (hand VJP) over ``jax.grad`` of plain lax, every conv case: target ≤ 1.05.
   Pooling (one impl, hand VJP) is listed beside it.
2. The fastest jaxcnn path (``lax`` or ``manual``) over PyTorch on the training layers:
   target ≤ 1.5; and where XLA's backward is the bottleneck, faster than ``jax.grad``.
3. ``impl="manual"`` over ``jax.grad`` of lax: target ≤ 1.5 on CPU; the MNIST-sized case
   faster than ``lax``; the stem ≤ 2.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _layout(row: dict) -> str:
    return "NC…" if row["layout"] == "channels_first" else "N…C"


def _verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _check_table(title: str, rows: list[dict], value, target: float, header: str) -> list[str]:
    """One markdown table: case, layout, the figure, whether it meets ``target``; a line
    with the worst figure and how many rows meet it."""
    lines = [f"#### {title}", "", f"| case | layout | {header} | ≤ {target:g} |", "|---|---|---|---|"]
    figures = []
    for row in rows:
        figure = value(row)
        if figure is None:
            continue
        figures.append(figure)
        lines.append(f"| {row['case']} | {_layout(row)} | {figure:.2f} | {_verdict(figure <= target)} |")
    if figures:
        met = sum(f <= target for f in figures)
        lines += ["", f"Worst {max(figures):.2f}; {met} of {len(figures)} rows meet the target.", ""]
    return lines


def summarize(report: dict) -> str:
    rows = [r for r in report["rows"] if r["mode"] == "fwd+bwd"]
    dev = report["device"]
    out = [f"Source: `{report['command']}` on {dev.get('cpu', dev['device_kind'])} "
           f"({dev['platform']}, {dev.get('cpu_cores', '?')} cores), load average at start "
           f"{report.get('load_average', {}).get('start')}, at end "
           f"{report.get('load_average', {}).get('end')}; fwd+bwd rows.", ""]
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        here = [r for r in rows if r["dtype"] == dtype]
        convs = [r for r in here if r["op"] in ("conv", "conv_transpose")]
        pools = [r for r in here if r["op"] in ("max_pool", "avg_pool")]
        training = [r for r in here if r["training"] and r["op"] == "conv"]
        out += [f"### {dtype}", ""]
        out += _check_table("1. impl=\"lax\" / jax.grad(lax), convolutions", convs,
                            lambda r: r["ratio"].get("lax"), 1.05, "lax / jax")
        out += _check_table("1b. pooling (hand VJP) / jax.grad(lax.reduce_window)", pools,
                            lambda r: r["ratio"].get("jaxcnn"), 1.05, "ours / jax")

        def fastest_over_torch(r):
            ours = [r["ms"][k] for k in ("lax", "manual") if k in r["ms"]]
            return min(ours) / r["ms"]["torch"] if ours and "torch" in r["ms"] else None
        out += _check_table("2. fastest jaxcnn path / PyTorch, training layers", training,
                            fastest_over_torch, 1.5, "min(lax, manual) / torch")
        out += _check_table("3. impl=\"manual\" / jax.grad(lax), convolutions", convs,
                            lambda r: r["ratio"].get("manual"), 1.5, "manual / jax")
        for name, bound in (("mnist5x5", None), ("stem7x7_s2", 2.0)):
            for r in (r for r in convs if r["case"] == name):
                manual, lax = r["ms"].get("manual"), r["ms"].get("lax")
                if manual is None or lax is None:
                    continue
                if bound is None:
                    out.append(f"- {name} {_layout(r)}: manual {manual:.3g} ms vs lax {lax:.3g} ms "
                               f"({_verdict(manual < lax)}: manual faster than lax)")
                else:
                    ratio = r["ratio"]["manual"]
                    out.append(f"- {name} {_layout(r)}: manual / jax {ratio:.2f} ({_verdict(ratio <= bound)}: ≤ {bound:g})")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", default=str(ROOT / "results.json"))
    p.add_argument("--out", default=str(ROOT / "summary.md"))
    args = p.parse_args(argv)
    if not Path(args.results).exists():  # results.json is not versioned: run.py writes it
        p.error(f"{args.results} not found: write it first with python experiments/bench/run.py")
    text = summarize(json.loads(Path(args.results).read_text()))
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
