"""Timing for ``jaxcnn bench``: contenders timed in interleaved rounds, and the matmul peak
every GFLOP/s is a fraction of."""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def failure_message(err: Exception) -> str:
    """A contender's exception as the one line the report keeps."""
    return f"{type(err).__name__}: {err}"[:300]


def time_interleaved(calls: dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]], repeats: int,
                     min_seconds: float = 0.0, first: dict[str, float] | None = None, *,
                     follow_itself: bool = False,
                     ) -> tuple[dict[str, list[float]], dict[str, Any], dict[str, str]]:
    """Milliseconds of every contender's synchronised calls, timed **in rounds**: after each
    one's first (compiling) call and a warm-up, every round calls each contender once, the
    order rotating by one per round, so a burst of load or a clock change hits them all alike
    and the ratios stay fair. ``repeats`` rounds, or more (up to 50) until ``min_seconds`` of
    rounds are spent. Returns the times, each contender's first output, and the failures (a
    contender that raises is reported and left out, the others go on). ``first``, where
    given, receives each contender's first call in milliseconds (its compilation, where it
    compiles on first call), never part of the times. ``follow_itself``: each turn calls the
    contender twice and times the second call, which thus follows the same call, as a training
    loop's step follows the step before it (its weights, state and buffers warm in the caches);
    else the timed call follows another contender's, whose data just went through the caches
    (a 32 ms clips-cnn3d step measured 36.7 ms right after the 150 ms plain-JAX step)."""
    outs, failures, warm = {}, {}, 0.0
    for name, (call, sync) in calls.items():
        try:
            start = time.perf_counter()
            outs[name] = call()
            sync(outs[name])
            if first is not None:
                first[name] = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            sync(call())
            warm += time.perf_counter() - start
        except Exception as err:  # a broken contender is reported, the run goes on
            failures[name] = failure_message(err)
    names = [n for n in calls if n not in failures]
    count = max(repeats, min(50, math.ceil(min_seconds / max(warm, 1e-6))))
    times: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(count):
        for i in range(len(names)):
            name = names[(i + round_) % len(names)]
            call, sync = calls[name]
            if follow_itself:
                sync(call())
            start = time.perf_counter()
            sync(call())
            times[name].append((time.perf_counter() - start) * 1e3)
    return times, outs, failures


def paired_ratios(times: dict[str, list[float]], base: str) -> dict[str, float]:
    """Each contender's time over ``base``'s, **paired by round** (``time_interleaved`` calls
    every contender once per round, side by side), the median over the rounds. A clock change
    or a burst of load between rounds cancels in each pair; on this CPU two identical
    programs' single calls spread ±20 % (resnet3x3_64 fwd+bwd: 7.8–11.9 ms, 10th–90th
    percentile), so a ratio of two medians over 11 rounds moved 1.0 ± 0.3 where the paired
    median over 60 rounds measured 0.99."""
    if base not in times:
        return {}
    return {name: statistics.median(a / b for a, b in zip(values, times[base]))
            for name, values in times.items()}


def matmul_peak(n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of a square float32 ``n × n`` matmul on ``jax.devices()[0]``: the yardstick. A
    peak, so the fastest call counts (a shared machine only ever slows calls down)."""
    a = jax.device_put(jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32))
    f = jax.jit(jnp.matmul)
    times, _, failures = time_interleaved({"matmul": (lambda: f(a, a), jax.block_until_ready)}, repeats)
    if failures:
        raise RuntimeError(f"matmul peak: {failures['matmul']}")
    times = times["matmul"]
    return {"n": n, "ms": min(times), "gflops": 2 * n ** 3 / min(times) / 1e6}
