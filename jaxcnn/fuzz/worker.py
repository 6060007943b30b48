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
import sys
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


def main() -> None:
    function = load(sys.argv[1])
    for config in json.loads(sys.stdin.read()):
        try:
            result = function(config)
        except Exception as error:  # noqa: BLE001 - a config's failure is data, not a stop
            result = {"status": "error",
                      "detail": f"{type(error).__name__}: {error}"[:2000],
                      "trace": traceback.format_exc(limit=4)[-1500:]}
        print(MARK + json.dumps({"config": config, **result}, default=str), flush=True)


if __name__ == "__main__":
    main()
