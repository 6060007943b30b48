"""A worker target for ``tests/test_fuzz.py``'s runner tests, in a module of its own: the fuzz
worker imports it by path, outside pytest, so it needs nothing but the standard library (the
test module imports the suite's helpers, which a worker cannot)."""
from __future__ import annotations

import os
import time


def misbehave(config: dict) -> dict:
    """Abort, raise, hang or answer, as the configuration says."""
    if config["do"] == "abort":
        os.abort()
    if config["do"] == "raise":
        raise ValueError("w: planted")
    if config["do"] == "hang":
        time.sleep(60)
    return {"status": "ok", "twice": 2 * config["value"]}
