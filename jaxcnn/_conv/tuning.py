r"""Measured form choice: time the candidate forms of a piece once per shape, keep the winner.

``rules.choose`` picks by fixed rules measured on one machine; on another clock speed
they lost to plain lax on some rows. As cuDNN's and oneDNN's autotuners do, ``measured``
times every candidate that fits the memory budget on random operands of the piece's shapes
the first time a shape is lowered, and caches the winner's name on disk, keyed by the device,
the JAX version, the piece, the impl, the spec, the shapes and the dtype. Every candidate
computes the same map (tests/test_conv_rules.py), so the choice changes speed, not values.

Off unless ``JAXCNN_MEASURE_FORMS=1``: the fixed rules stay the default (measuring costs
compile time on the first call of each shape, and is impossible where lowering cannot run
code: exporting for another platform). ``JAXCNN_FORM_CACHE`` names the cache file (default
``~/.cache/jaxcnn/forms.json``). A failed measurement falls back to the fixed rule.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

MEASURE_ENV, CACHE_ENV = "JAXCNN_MEASURE_FORMS", "JAXCNN_FORM_CACHE"
_MEMORY: dict[str, str] = {}     # this process's choices (the file is read once)


def enabled() -> bool:
    return os.environ.get(MEASURE_ENV, "0") == "1"


def cache_folder() -> str:
    """jaxcnn's folder of things made on this machine: measured forms, compiled kernels."""
    return os.path.join(os.path.expanduser("~"), ".cache", "jaxcnn")


def cache_path() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(cache_folder(), "forms.json")


def cache_key(piece: str, impl: str, spec: Any, shapes: Sequence[tuple[int, ...]], dtype: Any) -> str:
    """Everything the winner depends on: device, JAX version, the piece and its static shapes."""
    device = jax.devices()[0]
    return json.dumps([device.platform, device.device_kind, jax.__version__, piece, impl, repr(spec),
                       [list(s) for s in shapes], str(jnp.dtype(dtype))])


def _load() -> dict[str, str]:
    if not _MEMORY:
        try:
            with open(cache_path()) as f:
                _MEMORY.update(json.load(f))
        except (OSError, ValueError):
            pass
    return _MEMORY


def _store(key: str, name: str) -> None:
    _load()[key] = name
    path = cache_path()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(_MEMORY, f, indent=0)
        os.replace(tmp, path)      # atomic: a concurrent reader sees the old or the new file
    except OSError:
        pass                       # a read-only home: the choice lives for this process


def time_form(form: Callable, operands: Sequence[np.ndarray], repeats: int = 5) -> float:
    """Median seconds of ``form`` (jit-compiled, operands on the device) after a warm-up."""
    f = jax.jit(form)
    args = [jnp.asarray(a) for a in operands]
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measured(key: str, forms: Sequence[Callable], operands: Callable[[], Sequence[np.ndarray]],
             bind: Callable[[Callable], Callable]) -> Callable | None:
    """The fastest of ``forms`` (each bound by ``bind`` to a function of the operands), from
    the cache or timed now on ``operands()``; None when measuring is off or fails."""
    if not enabled() or len(forms) < 2:
        return None
    by_name = {f.__name__: f for f in forms}
    name = _load().get(key)
    if name in by_name:
        return by_name[name]
    try:
        with jax.ensure_compile_time_eval():
            arrays = operands()
            times = {f.__name__: time_form(bind(f), arrays) for f in forms}
    except Exception:   # measuring is impossible here: the fixed rule decides
        return None
    best = min(times, key=times.get)
    _store(key, best)
    return by_name[best]
