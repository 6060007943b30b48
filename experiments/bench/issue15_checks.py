"""Issue 15's acceptance lines, computed from `jaxcnn bench --json` runs (no timing here).

    python -m jaxcnn bench --mode fwd+bwd --dtype float32 --json run1.json   # one run
    ...later, at another machine speed...
    python -m jaxcnn bench --mode fwd+bwd --dtype float32 --json run2.json
    python -m jaxcnn bench --train --json train.json
    python experiments/bench/issue15_checks.py run1.json run2.json --train train1.json [train2.json ...] --markdown out.md

Per conv row and run: impl="lax" fwd+bwd time / jax.grad of lax (≤ 1.05; the row's
``paired_ratio``, the median of per-round ratios, where the run has it), the compiled temp
memory ratios lax/jax (≤ 1.5) and manual/jax (≤ 2); per max_pool 3×3 s2 row jaxcnn / jax.grad
(≤ 1.0) and / PyTorch (≤ 2); per model the fastest jaxcnn step / the fastest PyTorch step
(≤ 1.5). Each run's float32 matmul speed is named with it.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

LIMITS = {"lax/jax time": 1.05, "lax/jax memory": 1.5, "manual/jax memory": 2.0,
          "max_pool/jax time": 1.0, "max_pool/torch time": 2.0, "train step / torch": 1.5}


def _mark(value: float | None, limit: float) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" + ("" if value <= limit else " **over**")


def conv_table(runs: list[dict[str, Any]]) -> list[str]:
    heads = " | ".join(f"run {i + 1} lax/jax time" for i in range(len(runs)))
    lines = [f"| case | layout | {heads} | lax/jax memory | manual/jax memory |",
             "|---|---|" + "---|" * (len(runs) + 2)]
    first = runs[0]["rows"]
    for row in first:
        if row["op"] not in ("conv", "conv_transpose") or row["mode"] != "fwd+bwd" or row["dtype"] != "float32":
            continue
        key = (row["case"], row["layout"])
        times = []
        for run in runs:
            match = [r for r in run["rows"] if (r["case"], r["layout"]) == key and r["mode"] == "fwd+bwd"
                     and r["dtype"] == "float32"]
            ratio = (match[0].get("paired_ratio") or match[0]["ratio"]) if match else {}
            times.append(_mark(ratio.get("lax"), LIMITS["lax/jax time"]))
        memory = row.get("temp_ratio") or {}
        layout = "N…C" if row["layout"] == "channels_last" else "NC…"
        lines.append(f"| {row['case']} | {layout} | " + " | ".join(times) + " | "
                     f"{_mark(memory.get('lax'), LIMITS['lax/jax memory'])} | "
                     f"{_mark(memory.get('manual'), LIMITS['manual/jax memory'])} |")
    return lines


def pool_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| run | layout | jaxcnn ms | jax.grad ms | PyTorch ms | / jax.grad | / PyTorch |",
             "|---|---|---|---|---|---|---|"]
    for i, run in enumerate(runs):
        for row in run["rows"]:
            if row["case"] != "maxpool3x3_s2" or row["mode"] != "fwd+bwd" or row["dtype"] != "float32":
                continue
            ms = row["ms"]
            ours = ms.get("jaxcnn", ms.get("lax"))
            layout = "N…C" if row["layout"] == "channels_last" else "NC…"
            lines.append(f"| {i + 1} | {layout} | {ours:.3g} | {ms['jax']:.3g} | {ms.get('torch', float('nan')):.3g} | "
                         f"{_mark(ours / ms['jax'], LIMITS['max_pool/jax time'])} | "
                         f"{_mark(ours / ms['torch'], LIMITS['max_pool/torch time']) if 'torch' in ms else '—'} |")
    return lines


def train_table(train: dict[str, Any]) -> list[str]:
    lines = ["| model | fastest jaxcnn | ms | fastest PyTorch | ms | ratio |", "|---|---|---|---|---|---|"]
    for row in train["rows"]:
        ours, theirs = row.get("fastest_jaxcnn"), row.get("fastest_torch")
        if not ours or not theirs:
            continue
        ms = row["ms"]
        lines.append(f"| {row['model']} | {ours} | {ms[ours]:.3g} | {theirs} | {ms[theirs]:.3g} | "
                     f"{_mark(ms[ours] / ms[theirs], LIMITS['train step / torch'])} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="jaxcnn bench --json files (fwd+bwd, float32)")
    parser.add_argument("--train", nargs="+", default=[], help="jaxcnn bench --train --json files (a table each)")
    parser.add_argument("--markdown", help="write the tables here too")
    args = parser.parse_args(argv)
    runs = []
    for path in args.runs:
        with open(path) as f:
            runs.append(json.load(f))
    speeds = ", ".join(f"run {i + 1}: {r['matmul']['gflops']:.0f} GFLOP/s (load {r['load_average']['start'][0]})"
                       for i, r in enumerate(runs))
    out = [f"float32 2048² matmul: {speeds}", "", "### Convolutions, fwd+bwd, float32", "", *conv_table(runs),
           "", "### max_pool 3×3 s2, fwd+bwd, float32", "", *pool_table(runs)]
    for path in args.train:
        with open(path) as f:
            train = json.load(f)
        name = os.path.splitext(os.path.basename(path))[0]
        out += ["", f"### The training step (`{name}`, matmul "
                f"{train.get('matmul', {}).get('gflops', float('nan')):.0f} GFLOP/s)", "", *train_table(train)]
    text = "\n".join(out) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
