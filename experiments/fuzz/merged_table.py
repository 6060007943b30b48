"""The table of a ``jaxcnn fuzz`` run for the verification page: its rows (``summary.md`` has
each op, impl, path and mesh kind) merged per op and path, the sharded families' impls and mesh
kinds (auto, explicit) together.

    python experiments/fuzz/merged_table.py runs/fuzz/results.jsonl
"""
from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict

from jaxcnn.fuzz import command

FAILURES = command.FAILURES


def merged_key(key: str) -> str:
    """``sharded.conv[lax] / mesh (auto)`` -> ``sharded.conv / mesh``; other keys unchanged."""
    if not key.startswith("sharded"):
        return key
    return re.sub(r" \((auto|explicit)\)", "", re.sub(r"\[(lax|manual)\]", "", key))


def merged(results: list[dict]) -> dict[str, Counter]:
    rows: dict[str, Counter] = defaultdict(Counter)
    worst: dict[str, float] = defaultdict(float)
    for key, row in command.summarize(results).items():
        target = merged_key(key)
        rows[target].update({k: v for k, v in row.items() if k not in command.AVERAGES})
        worst[target] = max(worst[target], row["worst rel. error"])
    for key in rows:
        rows[key]["worst rel. error"] = worst[key]
    return dict(sorted(rows.items()))


def markdown(rows: dict[str, Counter]) -> str:
    lines = ["| op / path | configs | ok | refused (both) | documented | failures | worst rel. error |",
             "|---|---|---|---|---|---|---|"]
    total: Counter = Counter()
    for key, row in [*rows.items(), ("**all**", None)]:
        if row is None:
            row = total
            row["worst rel. error"] = max(r["worst rel. error"] for r in rows.values())
        failures = sum(row[f] for f in FAILURES)
        lines.append(f"| {key} | {row['configs']} | {row['ok']} | {row['refused']} | {row['documented']} "
                     f"| {failures} | {row['worst rel. error']:.1e} |")
        if key != "**all**":
            total.update({k: v for k, v in row.items() if k != "worst rel. error"})
    return "\n".join(lines)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "runs/fuzz/results.jsonl"
    with open(path) as f:
        print(markdown(merged([json.loads(line) for line in f])))
