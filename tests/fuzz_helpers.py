"""What tests/test_fuzz.py and tests/test_fuzz_families.py share: fixed configurations by name,
the check of their results, and one run of a test module's configurations through the fuzz's
target (``run_batch``)."""
from __future__ import annotations

import fcntl
import json
import math
import os

from jaxcnn.fuzz import command, runner


def named(cases: dict) -> list[dict]:
    """``cases``' configurations (name → (configuration, ...)), each with its name."""
    return [{**c, "name": k} for k, (c, *_) in cases.items()]


def assert_named_cases(cases: dict, results: list[dict]) -> None:
    """``cases``: name → (configuration, status, holds): the error keys an ``ok`` result must
    hold, or the start of the refusal and then the documented differences it names."""
    assert [r["config"]["name"] for r in results] == list(cases)
    for result in results:
        name = result["config"]["name"]
        _, status, holds = cases[name]
        assert result["status"] == status, (name, result)
        if status == "ok":
            assert all(key in result["errors"] for key in holds), (name, result["errors"])
        else:
            assert result["refusal"].startswith(holds[0]), (name, result["refusal"])
            assert result.get("differences", []) == holds[1:], (name, result)


def run_batch(tmp_path_factory, name: str, groups: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """The results of ``groups`` (test → configurations), by test: one ``runner.run`` of four
    chunks over two worker processes (each worker pays JAX's and PyTorch's import once; the
    tests used to start a dozen). Computed once per session under ``name``: pytest-xdist's
    workers share the folder above their own and take turns through a lock (as
    test_distributed's curves)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    done = root / f"{name}.json"
    with (root / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            configs = [c for group in groups.values() for c in group]
            results = runner.run(command.TARGET, configs, processes=2,
                                 chunk=max(math.ceil(len(configs) / 4), 1))
            done.write_text(json.dumps(results, default=str))
    results = iter(json.loads(done.read_text()))
    return {test: [next(results) for _ in group] for test, group in groups.items()}
