"""``jaxcnn fuzz``: differential fuzzing of every op against PyTorch, the reference and the
one-lax-call pieces, each chunk of configurations in its own worker process.

    python -m jaxcnn fuzz --n 10000 --seed 0            # every op, both impls
    python -m jaxcnn fuzz --n 500 --ops conv,conv_transpose --out runs/fuzz
    python -m jaxcnn fuzz --replay runs/fuzz/failures.json      # rerun a run's failures

Prints a summary table per op and writes ``summary.md``, ``failures.json`` (each failure with
its configuration: a reproducer) and ``results.jsonl`` (every configuration) to ``--out``,
by default ``runs/fuzz`` under the current folder (where ``jaxcnn train`` keeps its runs,
``runs/DATASET-MODEL-seedK``); a later run with the same ``--out`` replaces the three files.
Exit status 1 if anything crashed, disagreed, was refused by one side only or was refused
with a message that names no argument; ``skipped``: a path this JAX release cannot run.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import time
from collections import Counter, defaultdict

from jaxcnn._files import atomic_write
from jaxcnn.fuzz import configs, runner

DESCRIPTION = ("Differential fuzzing of every op against PyTorch, the reference and the one-lax-call "
               "pieces: random configurations, each chunk in its own worker process; a table per op, "
               "and every failure with its configuration (a reproducer). Exit status 1 on any failure.")
TARGET = "jaxcnn.fuzz.checks:check"
FAILURES = ("crash", "error", "mismatch", "one_sided", "unnamed")
COLUMNS = ("configs", "ok", "refused", "documented", "skipped", *FAILURES, "reference skipped",
           "worst rel. error", "s / config")


def fuzz(n: int, seed: int, ops=configs.OPS, processes: int = 2, chunk: int = 50,
         progress=None) -> list[dict]:
    """Draw ``n`` configurations over ``ops`` and run them all; the results in order."""
    return replay(configs.draw_many(n, seed, tuple(ops)), processes, chunk, progress)


def replay(cases: list[configs.FuzzCase], processes: int = 2, chunk: int = 50,
           progress=None) -> list[dict]:
    """Run ``cases`` (their JSON form goes to the workers); the results in order."""
    return runner.run(TARGET, [c.to_dict() for c in cases], processes=processes, chunk=chunk,
                      progress=progress)


def summarize(results: list[dict]) -> dict[str, Counter]:
    """Per op and path (``conv[lax]``, ``conv_float32[lax] / native``, ...): counts by status,
    reference skips, worst error."""
    table: dict[str, Counter] = defaultdict(Counter)
    worst: dict[str, float] = defaultdict(float)
    seconds: dict[str, float] = defaultdict(float)     # each worker's own time, compiling included
    for r in results:
        c = configs.FuzzCase.from_dict(r["config"])
        key = c.op + (f"[{c.impl}]" if c.impl is not None else "") + (f" / {r['path']}" if r.get("path") else "")
        table[key]["configs"] += 1
        table[key][r["status"]] += 1
        table[key]["reference skipped"] += bool(r.get("reference_skipped"))
        worst[key] = max(worst[key], r.get("worst", 0.0) if r["status"] == "ok" else 0.0)
        seconds[key] += r.get("seconds", 0.0)
    for key in table:
        table[key]["worst rel. error"] = worst[key]
        table[key]["s / config"] = seconds[key] / table[key]["configs"]
    return dict(sorted(table.items()))


AVERAGES = ("worst rel. error", "s / config")


def _cell(column: str, value) -> str:
    return f"{value:.1e}" if column == "worst rel. error" else f"{value:.2f}" if column == "s / config" else str(value)


def markdown(table: dict[str, Counter]) -> str:
    lines = ["| op | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    total: Counter = Counter()
    for key, row in table.items():
        lines.append(f"| {key} | " + " | ".join(_cell(col, row[col]) for col in COLUMNS) + " |")
        total.update({col: row[col] for col in COLUMNS if col not in AVERAGES})
        total["seconds"] += row["s / config"] * row["configs"]
    total["worst rel. error"] = max((row["worst rel. error"] for row in table.values()), default=0.0)
    total["s / config"] = total["seconds"] / max(total["configs"], 1)
    cells = [_cell(col, total[col]) for col in COLUMNS]
    lines.append("| **all** | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jaxcnn fuzz", description=DESCRIPTION)
    parser.add_argument("--n", type=int, default=1000, metavar="N", help="configurations to draw "
                        "(default: 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="K", help="seeds the draw: the same --n, "
                        "--seed and --ops draw the same configurations (default: 0)")
    parser.add_argument("--ops", default=",".join(configs.OPS), metavar="OP,OP",
                        help=f"comma-separated, from {', '.join(configs.OPS)} (default: all)")
    parser.add_argument("--processes", type=int, default=2, metavar="N", help="worker processes at once, "
                        "each running chunks of 50 configurations (default: 2)")
    parser.add_argument("--out", default="runs/fuzz", metavar="DIR", help="folder for summary.md, "
                        "failures.json and results.jsonl, replaced by a later run into it (default: "
                        "runs/fuzz, under the current folder, beside jaxcnn train's runs)")
    parser.add_argument("--replay", metavar="FILE", help="run the configurations of FILE instead of "
                        "drawing: a run's results.jsonl or failures.json, or tests/fuzz_regressions.json "
                        "(default: none, draw --n configurations)")
    options = parser.parse_args(argv)
    for name in ("n", "processes"):
        if getattr(options, name) < 1:
            parser.error(f"--{name}: expected a positive integer; got {getattr(options, name)}")
    ops = tuple(op.strip() for op in options.ops.split(",") if op.strip())
    unknown = sorted(set(ops) - set(configs.OPS))
    if unknown:
        parser.error(f"--ops: unknown {unknown}; expected some of {list(configs.OPS)}")
    cases = (configs.load(pathlib.Path(options.replay).read_text()) if options.replay
             else configs.draw_many(options.n, options.seed, ops))
    started, done = time.perf_counter(), [0]

    def progress(count: int) -> None:
        done[0] += count
        print(f"\r{done[0]}/{len(cases)} configurations, {time.perf_counter() - started:.0f} s",
              end="", flush=True)

    results = replay(cases, options.processes, progress=progress)
    seconds = time.perf_counter() - started
    print()
    table = markdown(summarize(results))
    failures = [r for r in results if r["status"] in FAILURES]
    out = pathlib.Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    run = (f"--replay {options.replay}" if options.replay
           else f"--n {options.n} --seed {options.seed} --ops {','.join(ops)}")
    native = sum("native" in r.get("path", "").split() for r in results)
    header = (f"`jaxcnn fuzz {run}`: {len(results)} configurations in {seconds:.0f} s, "
              f"{len(failures)} failures, {native} on the native kernels (read from each program "
              f"compiled or lowered).\n\n")
    atomic_write(out / "summary.md", header + table + "\n")
    atomic_write(out / "failures.json", json.dumps(failures, indent=1, default=str))
    atomic_write(out / "results.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in results))
    print(header + table)
    print(f"wrote {out / 'summary.md'}, {out / 'failures.json'} and {out / 'results.jsonl'}")
    return 1 if failures else 0
