"""Run ``jaxcnn bench`` over the whole suite and write its results: JSON, markdown tables and
the ratio plot.

    python experiments/bench/run.py [--out experiments/bench] [bench options, e.g. --quick]

writes ``OUT/results.json`` (every row), ``OUT/results.md`` (the tables)
and ``OUT/ratios.png`` (each contender's time over JAX autodiff of plain lax, log scale); the
JSON and the plot are not versioned (``.gitignore``).
``--from-json PATH`` redraws the table and plot from an earlier run without timing anything.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from jaxcnn import bench

CONTENDERS = (("lax", "jaxcnn impl=lax"), ("manual", "jaxcnn impl=manual"), ("torch", "PyTorch"))


def tables(report: dict) -> str:
    """Markdown: a header naming device, scale, load; one table per (dtype, op family)."""
    dev, peak = report["device"], report["matmul"]
    lines = [f"Command: `{report['command']}`", "",
             f"Device: {dev.get('cpu', dev['device_kind'])}, {dev.get('cpu_cores', '?')} cores "
             f"({dev['platform']}); jax {dev['jax']}, torch {dev.get('torch')} "
             f"({dev.get('torch_threads')} threads). Scale: {report['scale']}; repeats: "
             f"{report['repeats']} rounds (more, up to 50, while a round of all contenders takes under 200 ms; contenders interleaved within each round); load average "
             f"(1, 5, 15 min) at start {report.get('load_average', {}).get('start')}, at end "
             f"{report.get('load_average', {}).get('end')}.",
             f"Matmul peak: float32 {peak['n']}² in {peak['ms']:.3g} ms = **{peak['gflops']:.1f} GFLOP/s**.", ""]
    rows = report["rows"]
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        for title, ops in (("Convolutions", ("conv",)), ("conv_transpose", ("conv_transpose",)),
                           ("Pooling", ("max_pool", "avg_pool"))):
            chosen = [r for r in rows if r["dtype"] == dtype and r["op"] in ops]
            if chosen:
                lines += [f"### {title}, {dtype}", "", bench.markdown_table(chosen), ""]
    if report.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"{s['case']} ({s['reason']})" for s in report["skipped"]), ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    """Horizontal bars of ms / ms(jax autodiff of lax) per row, one panel per (dtype, mode)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report["rows"]
    panels = [(d, m) for d in dict.fromkeys(r["dtype"] for r in rows) for m in bench.MODES]
    labels = list(dict.fromkeys(f"{r['case']} {'NC…' if r['layout'] == 'channels_first' else 'N…C'}"
                                for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 0.28 * len(labels) + 2),
                             sharey=True, squeeze=False)
    y = np.arange(len(labels))
    for ax, (dtype, mode) in zip(axes[0], panels):
        chosen = {f"{r['case']} {'NC…' if r['layout'] == 'channels_first' else 'N…C'}": r
                  for r in rows if r["dtype"] == dtype and r["mode"] == mode}
        for i, (key, name) in enumerate(CONTENDERS):
            ratios = [chosen[l]["ratio"].get(key if key != "lax" or "lax" in chosen[l]["ratio"] else "jaxcnn",
                                             np.nan) if l in chosen else np.nan for l in labels]
            ax.barh(y + (i - 1) * 0.27, ratios, height=0.27, label=name)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{dtype}, {mode}")
        ax.set_xlabel("time / time of jax.grad(lax)  (< 1: faster)")
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0][0].set_yticks(y, labels, fontsize=7)
    axes[0][0].invert_yaxis()
    axes[0][0].legend(loc="lower right", fontsize=7)
    dev = report["device"]
    fig.suptitle(f"jaxcnn bench on {dev.get('cpu', dev['device_kind'])} ({dev.get('cpu_cores', '?')} cores), "
                 f"scale {report['scale']}; pooling rows: jaxcnn's one impl in the lax bar", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.relpath(Path(__file__).resolve().parent))
    p.add_argument("--from-json", help="redraw from this results JSON instead of running")
    args, bench_args = p.parse_known_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        status = bench.main([*bench_args, "--json", os.path.relpath(out / "results.json")])
        report = json.loads((out / "results.json").read_text())
    (out / "results.md").write_text(tables(report) + "\n")
    plot(report, out / "ratios.png")
    print(f"wrote {out / 'results.md'} and {out / 'ratios.png'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
