"""Where the clips-cnn3d training step's time goes, and the step before and after a change.

Two parts, both on ``jaxcnn.bench.train_step``'s own step (``jax_step``: jaxcnn lax, channels
last, batch 64, float32, AdamW):

- **timeline** (this tree): the step timed without the profiler, then traced
  (``jax.profiler``); per traced step, the span from its first op to its last, the time some op
  ran (the union of the ops' intervals on XLA's threads), the sum of the ops' own times and the
  idle gaps between them; and the categories ``jaxcnn.bench.profile`` attributes (its sum, and
  the ops it cannot attribute: no source metadata).
- **before/after** (``--base REV``): the step of ``git archive REV jaxcnn`` and of this tree, each in a
  process of its own, alternated ``--rounds`` times; each process times its step interleaved
  with PyTorch eager (channels_last) and reports the median of the per-round ratios, so the
  load of a shared machine cancels in each pair.

    python experiments/bench/clips_step_gap.py --base cebac0a --out experiments/bench/issue28/clips_gap
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _step():
    import jax
    from jaxcnn.bench import train_step as ts
    x, y = ts.batch_data("clips-cnn3d", 64)
    compiled, args = ts.jax_step("clips-cnn3d", "lax", x, y, channels_last=True)["compiled"]["step"]
    return jax, ts, x, y, compiled, args


def timeline(steps: int = 8) -> dict:
    """The untraced step, then per traced step: span, busy union, op sum, gaps (ms)."""
    jax, _, _, _, compiled, args = _step()
    from jaxcnn.bench.profile import op_categories
    run = lambda: jax.block_until_ready(compiled(*args))
    for _ in range(5):
        run()
    walls = []
    for _ in range(20):
        start = time.perf_counter(); run(); walls.append((time.perf_counter() - start) * 1e3)
    kinds = op_categories(compiled.as_text())
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            traced = []
            for _ in range(steps):
                start = time.perf_counter(); run(); traced.append((time.perf_counter() - start) * 1e3)
        path = sorted(glob.glob(os.path.join(directory, "**", "*.json.gz"), recursive=True))[-1]
        with gzip.open(path) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    # the program's instructions, on whichever thread ran them (the first ones may run on the
    # client's thread, the rest on XLA's pool)
    names = set(re.findall(r"^\s*(?:ROOT )?%([\w.\-]+) = ", compiled.as_text(), re.M))
    ops = sorted((e for e in events if e.get("ph") == "X" and e["name"] in names), key=lambda e: e["ts"])
    syncs = [e["ts"] + e["dur"] for e in events if e.get("ph") == "X" and "block_until_ready" in e["name"]]
    per_step, first = [], 0
    for end in sorted(syncs):
        mine = [e for e in ops if first <= e["ts"] <= end]
        first = end
        if not mine:
            continue
        busy, gaps, current = 0.0, [], None
        for e in mine:
            s, t = e["ts"], e["ts"] + e["dur"]
            if current and s <= current[1]:
                current[1] = max(current[1], t)
                continue
            if current:
                busy += current[1] - current[0]; gaps.append(s - current[1])
            current = [s, t]
        busy += current[1] - current[0]
        per_step.append({"span": (max(e["ts"] + e["dur"] for e in mine) - mine[0]["ts"]) / 1e3,
                         "busy": busy / 1e3, "op_sum": sum(e["dur"] for e in mine) / 1e3,
                         "gaps": sum(gaps) / 1e3, "gap_count": len(gaps), "largest_gap": max(gaps, default=0) / 1e3})
    categories, unattributed = collections.Counter(), collections.Counter()
    for e in ops:
        (categories if e["name"] in kinds else unattributed)[kinds.get(e["name"], e["name"])] += e["dur"] / 1e3 / len(per_step)
    median = lambda key: round(statistics.median(s[key] for s in per_step), 3)
    return {"untraced_step_ms": round(statistics.median(walls), 2), "traced_step_ms": round(statistics.median(traced), 2),
            **{f"{k}_ms": median(k) for k in ("span", "busy", "op_sum", "gaps", "largest_gap")},
            "gap_count": median("gap_count"), "per_step": [{k: round(v, 3) for k, v in s.items()} for s in per_step],
            "categories_ms": {k: round(v, 3) for k, v in categories.items()},
            "unattributed_ms": {k: round(v, 3) for k, v in unattributed.most_common(5)},
            "load_average": list(os.getloadavg())}


def versus_torch(rounds: int = 40) -> dict:
    """This process's step against PyTorch eager channels_last, interleaved rounds."""
    jax, ts, x, y, compiled, args = _step()
    from jaxcnn.bench import torch_models
    step = torch_models.train_step("clips-cnn3d", ts.jax_loss("clips-cnn3d", "lax")[1], x, y,
                                   channels_last=True, compiled=False)
    calls = {"jaxcnn": lambda: jax.block_until_ready(compiled(*args)), "torch": lambda: step().item()}
    for call in calls.values():
        call(); call()
    times = {k: [] for k in calls}
    for r in range(rounds):
        for i in range(2):
            name = list(calls)[(i + r) % 2]
            start = time.perf_counter(); calls[name](); times[name].append((time.perf_counter() - start) * 1e3)
    return {"jaxcnn_ms": round(statistics.median(times["jaxcnn"]), 2), "torch_ms": round(statistics.median(times["torch"]), 2),
            "paired_ratio": round(statistics.median(a / b for a, b in zip(times["jaxcnn"], times["torch"])), 3),
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def after_what(rounds: int = 15) -> dict:
    """The step right after another call: itself, PyTorch's step, or the ``jax`` contender's
    (the same network in plain lax, autodiff; ~100 MiB of temporaries), as the bench's
    interleaved rounds put it; median ms and the process's page faults during the step."""
    import resource
    jax, ts, x, y, compiled, args = _step()
    from jaxcnn.bench import torch_models
    plain, plain_args = ts.jax_step("clips-cnn3d", "jax", x, y, channels_last=True)["compiled"]["step"]
    step = torch_models.train_step("clips-cnn3d", ts.jax_loss("clips-cnn3d", "lax")[1], x, y,
                                   channels_last=True, compiled=False)
    run = lambda: jax.block_until_ready(compiled(*args))
    before = {"itself": run, "torch eager channels_last": lambda: step().item(),
              "jax (plain lax)": lambda: jax.block_until_ready(plain(*plain_args))}
    times, faults = {k: [] for k in before}, {k: [] for k in before}
    for call in before.values():
        call(); call()
    for _ in range(rounds):
        for name, call in before.items():
            call()
            f0, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"ms_after": {k: round(statistics.median(v), 2) for k, v in times.items()},
            "page_faults_after": {k: statistics.median(v) for k, v in faults.items()},
            "load_average": [round(v, 2) for v in os.getloadavg()]}


def before_after(base: str, rounds: int) -> dict:
    """``versus_torch`` in a process per tree (``base``'s jaxcnn, this tree's), alternated."""
    with tempfile.TemporaryDirectory() as directory:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", base, "jaxcnn"], capture_output=True, check=True).stdout
        with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
            tar.extractall(directory)
        runs = {"before": [], "after": []}
        for _ in range(rounds):
            for name, tree in (("before", directory), ("after", str(ROOT))):
                env = {**os.environ, "PYTHONPATH": tree, "OMP_WAIT_POLICY": "PASSIVE"}
                out = subprocess.run([sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True)
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"base": base, "runs": runs,
            "median_paired_ratio": {k: statistics.median(r["paired_ratio"] for r in v) for k, v in runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="the revision to compare with (before/after)")
    parser.add_argument("--rounds", type=int, default=3, help="processes per tree")
    parser.add_argument("--out", help="write OUT.json and OUT.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child:
        print(json.dumps(versus_torch()))
        return
    result = {"timeline": timeline(), "after_what": after_what()}
    if a.base:
        result["before_after"] = before_after(a.base, a.rounds)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out + ".json").write_text(text + "\n")
        t, lines = result["timeline"], ["| what | ms |", "|---|---:|"]
        lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in t.items() if k.endswith("_ms") and not isinstance(v, dict)]
        lines.append(f"| gaps per step | {t['gap_count']} |")
        lines += ["", "| the step right after | ms |", "|---|---:|"]
        lines += [f"| {k} | {v} |" for k, v in result["after_what"]["ms_after"].items()]
        if a.base:
            lines += ["", "| tree | jaxcnn / PyTorch eager channels_last (paired, each process) | median |", "|---|---|---:|"]
            for name, runs in result["before_after"]["runs"].items():
                lines.append(f"| {name} | {', '.join(str(r['paired_ratio']) for r in runs)} | "
                             f"{result['before_after']['median_paired_ratio'][name]} |")
        Path(a.out + ".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
