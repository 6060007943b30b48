"""Run configurations in worker processes, so that an abort inside XLA is caught and recorded.

A worker (``python -m jaxcnn.fuzz.worker TARGET``) reads a JSON list of configurations on
stdin and prints one JSON line per configuration as soon as it is done. When a worker dies
(an XLA ``Check failed`` aborts the whole process) or runs past its time, the configuration
after the last one it reported is the culprit: it is recorded as a crash with the worker's
exit status and the tail of its stderr, and a fresh worker takes the rest of the chunk.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from jaxcnn.fuzz.worker import MARK

STDERR_TAIL = 20000


def _run_worker(target: str, configs: Sequence[dict], timeout: float) -> tuple[list[dict], int | None, str]:
    """One worker over ``configs``: its results in order, its exit status (None: timed out)
    and the tail of its stderr."""
    command = [sys.executable, "-m", "jaxcnn.fuzz.worker", target]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(command, input=json.dumps(list(configs)), capture_output=True,
                              text=True, timeout=timeout, env=env)
        stdout, returncode, stderr = done.stdout, done.returncode, done.stderr
    except subprocess.TimeoutExpired as expired:
        stdout = _text(expired.stdout)
        returncode, stderr = None, _text(expired.stderr)
    results = [json.loads(line[len(MARK):]) for line in stdout.splitlines() if line.startswith(MARK)]
    return results, returncode, stderr[-STDERR_TAIL:]


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def run_chunk(target: str, configs: Sequence[dict], timeout: float = 600.0) -> list[dict]:
    """Results for every configuration of ``configs``, in order: a worker's own result, or
    ``{"config": ..., "status": "crash", ...}`` for the one that killed or hung its worker."""
    results: list[dict] = []
    while len(results) < len(configs):
        pending = configs[len(results):]
        got, returncode, stderr = _run_worker(target, pending, timeout)
        results.extend(got)
        if len(got) < len(pending):
            what = "timeout" if returncode is None else f"exit status {returncode}"
            results.append({"config": pending[len(got)], "status": "crash",
                            "detail": f"worker died ({what}): {_last_lines(stderr)}"})
        elif returncode not in (0, None):
            break   # everything reported, then the worker failed on exit: nothing is lost
    return results


def _last_lines(text: str, keep: int = 4) -> str:
    """The lines of a worker's stderr that say why it died: from XLA's ``Check failed`` line
    if there is one (the stack trace after it says little), else its last lines."""
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "Check failed" in line:
            return " | ".join(lines[i:i + 2])[:1000]
    return " | ".join(lines[-keep:])[:1000]


def run(target: str, configs: Sequence[dict], *, processes: int = 2, chunk: int = 40,
        timeout: float = 600.0, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Every configuration of ``configs`` through ``target`` in ``processes`` parallel workers,
    ``chunk`` configurations a worker; results in the order of ``configs``."""
    chunks = [configs[i:i + chunk] for i in range(0, len(configs), chunk)]

    def one(part: Sequence[dict]) -> list[dict]:
        out = run_chunk(target, part, timeout)
        if progress is not None:
            progress(len(part))
        return out

    with ThreadPoolExecutor(max_workers=max(processes, 1)) as pool:
        return [result for part in pool.map(one, chunks) for result in part]

