"""``python -m jaxcnn.fuzz.worker TARGET``: run ``TARGET`` on each configuration of a JSON
list read from stdin, printing one marked JSON line per result as soon as it is known.

``TARGET`` is ``package.module:function`` or ``path/to/file.py:function``; the function takes
one configuration (a dict) and returns a JSON-serialisable dict. An exception it raises is
reported as ``{"status": "error"}``; an abort kills this process, which ``runner`` records.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
import time
import traceback
from typing import Callable

MARK = "@jaxcnn.fuzz "   # a result line; anything else a target prints is ignored


def load(target: str) -> Callable[[dict], dict]:
    where, _, name = target.rpartition(":")
    if where.endswith(".py"):
        spec = importlib.util.spec_from_file_location("fuzz_target", where)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    return getattr(module, name)


def force_devices(configs: list) -> None:
    """CPU devices for the configurations that ask for them (``"devices"``: the sharded
    runs), set before anything imports jax (the flag is read once, when jax starts)."""
    wanted = max((c.get("devices", 0) for c in configs if isinstance(c, dict)), default=0)
    flags = os.environ.get("XLA_FLAGS", "")
    if wanted and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={wanted}".strip()


def main() -> None:
    configs = json.loads(sys.stdin.read())
    force_devices(configs)
    function = load(sys.argv[1])
    for config in configs:
        started = time.perf_counter()
        try:
            result = function(config)
        except Exception as error:  # noqa: BLE001 - a config's failure is data, not a stop
            result = {"status": "error",
                      "detail": f"{type(error).__name__}: {error}"[:2000],
                      "trace": traceback.format_exc(limit=4)[-1500:]}
        result["seconds"] = round(time.perf_counter() - started, 3)    # compiling included
        print(MARK + json.dumps({"config": config, **result}, default=str), flush=True)


if __name__ == "__main__":
    main()
