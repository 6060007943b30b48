r"""Where a compiled step spends its time: XLA's per-op trace, summed by what each op computes.

``jax.profiler`` records every op the compiled program runs (a fusion, a library call, a
loop, and each op of a loop's body on its own: a loop's event does not include its body's
ops) with its duration; the program's text says where each op came from (its stack
frames: the Python call that traced it, and whether it belongs to the forward or to a
transpose, the backward). ``categories`` attributes each op to the innermost frame that names
a part of the model: convolutions (forward / backward), pooling, normalisation, dropout,
dense, the optimizer (optax); the rest is "rest".
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import tempfile
from typing import Any, Callable

import jax

# (pattern on "file:function", category) in the order they are tried on each frame.
_RULES = (
    (r"jaxcnn/conv\.py:|jaxcnn/transpose\.py:", "conv"),
    (r"jaxcnn/pool\.py:", "pooling"),
    (r"jaxcnn/norm\.py:|:GroupNorm\.", "normalisation"),
    (r":Dropout\.", "dropout"),
    (r":Dense\.", "dense"),
    (r"optax/", "optimizer"),
)


def _table(text: str, title: str) -> dict[int, str]:
    block = re.search(rf"^{title}\n((?:\d+ .*\n)+)", text, re.M)
    return {int(line.split(" ", 1)[0]): line.split(" ", 1)[1] for line in block.group(1).splitlines()} if block else {}


def op_categories(hlo_text: str) -> dict[str, str]:
    """``{op name: category}`` for every instruction of the program, loop bodies included
    (instruction names are unique in a module)."""
    files = {k: v.strip('"') for k, v in _table(hlo_text, "FileNames").items()}
    functions = {k: v.strip('"') for k, v in _table(hlo_text, "FunctionNames").items()}
    locations = {k: tuple(int(x) for x in re.findall(r"(?:file_name_id|function_name_id)=(\d+)", v))
                 for k, v in _table(hlo_text, "FileLocations").items()}
    frames = {k: tuple(int(x) for x in re.findall(r"(?:file_location_id|parent_frame_id)=(\d+)", v))
              for k, v in _table(hlo_text, "StackFrames").items()}

    def category(frame: int) -> str:
        seen = set()
        while frame in frames and frame not in seen:
            seen.add(frame)
            location, parent = frames[frame]
            file_id, function_id = locations.get(location, (0, 0))
            where = f"{files.get(file_id, '')}:{functions.get(function_id, '')}"
            for pattern, name in _RULES:
                if re.search(pattern, where):
                    return name
            frame = parent
        return "rest"

    result = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%([\w.\-]+) = .*?metadata=\{([^}]*)\}", hlo_text, re.M):
        name, metadata = match.groups()
        frame = re.search(r"stack_frame_id=(\d+)", metadata)
        kind = category(int(frame.group(1))) if frame else "rest"
        if kind == "conv":
            kind = "conv backward" if "transpose(" in metadata else "conv forward"
        result[name] = kind
    return result


def trace_durations(run: Callable[[], Any], calls: int) -> dict[str, float]:
    """Milliseconds per call of each traced event name over ``calls`` calls of ``run``."""
    with tempfile.TemporaryDirectory() as directory:
        with jax.profiler.trace(directory, create_perfetto_trace=True):
            for _ in range(calls):
                jax.block_until_ready(run())
        paths = glob.glob(os.path.join(directory, "**", "*.json.gz"), recursive=True)
        with gzip.open(sorted(paths)[-1]) as f:
            events = json.load(f)
    events = events["traceEvents"] if isinstance(events, dict) else events
    total: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e.get("dur", 0) / 1e3 / calls
    return dict(total)


def step_profile(compiled: Any, args: tuple, calls: int = 3) -> dict[str, float]:
    """Milliseconds per step in each category, every op's own time (loop bodies' ops
    included; ops that ran side by side on the CPU's threads both count, so the sum can exceed
    the step's wall time)."""
    jax.block_until_ready(compiled(*args))
    kinds = op_categories(compiled.as_text())
    durations = trace_durations(lambda: compiled(*args), calls)
    result: dict[str, float] = collections.Counter()
    for name, ms in durations.items():
        if name in kinds:
            result[kinds[name]] += ms
    return dict(result)
