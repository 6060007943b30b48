"""Random configurations of every op, drawn over everything the API accepts.

A configuration is a ``FuzzCase`` (a ``jaxcnn._cases.Case`` with the fuzzer's own fields: the
seed of its arrays, its index, the knobs of the newer families); on disk and between processes
it is its JSON form (``to_dict``/``from_dict``, key for key): the op, the shapes (channels
first, as PyTorch; the layout flag says how jaxcnn gets them), every knob. A draw writes the
JSON form key by key (``draw_config``: the order of its keys and of the random draws is the
stream's, kept for old seeds) and ``draw`` makes it a case. Draws lean to
the edges that hand-picked tests miss: sizes down to (and below) the smallest legal one,
N = 0, a kernel as large as the padded input, strides larger than the kernel, outputs of
size 1, even kernels on strided padded axes, every padding form and mode, groups and
depthwise channels, 1–3 spatial axes (and 4, against the reference alone); group_norm over
0–3 spatial axes, groups that do not divide the channels and empty spatial axes.
"""
from __future__ import annotations

import dataclasses
import json
import math
import random
from typing import Any

from jaxcnn._cases import Case
from jaxcnn._shapes import is_int

CONV_OPS = ("conv", "convolve", "conv_transpose", "conv_input_grad", "conv_weight_grad")
POOL_OPS = ("max_pool", "avg_pool", "global_avg_pool")
NORM_OPS = ("group_norm",)
# The newer families, each drawn and checked by its own module (float32 and the native
# kernels, the jax.lax drop-ins, the sharded runs): op -> module of jaxcnn.fuzz.
FAMILIES = {"conv_float32": "float32",
            "lax.conv_general_dilated": "drop_in", "lax.conv_transpose": "drop_in",
            "sharded.conv": "sharding", "sharded.max_pool": "sharding",
            "sharded.avg_pool": "sharding", "sharded_input": "sharding",
            "sharded_float32": "sharded_float32", "pool_float32": "pool_float32"}
OPS = CONV_OPS + POOL_OPS + NORM_OPS + tuple(FAMILIES)
PADDING_STRINGS = ("VALID", "SAME", "FULL", "CAUSAL", "same", "valid")
MODES = ("zeros", "zeros", "zeros", "reflect", "replicate", "circular")


def draw_per_axis(rng: random.Random, n: int, choices, uniform: float = 0.5) -> list[int]:
    """One value per axis; with probability ``uniform`` the same on every axis."""
    if rng.random() < uniform:
        return [rng.choice(choices)] * n
    return [rng.choice(choices) for _ in range(n)]


def draw_padding(rng: random.Random, n: int, string_forms=PADDING_STRINGS):
    form = rng.choice(["int", "ints", "pairs", "string", "string"])
    if form == "int":
        return rng.choice([0, 0, 1, 2, 3])
    if form == "ints":
        return [rng.choice([0, 1, 2]) for _ in range(n)]
    if form == "pairs":
        return [[rng.choice([0, 0, 1, 2, 3]), rng.choice([0, 0, 1, 2, 3])] for _ in range(n)]
    return rng.choice(string_forms)


def draw_sizes(rng: random.Random, kernel, dilation, low_pad: int) -> list[int]:
    """Spatial sizes: random small, or the smallest that holds the dilated kernel (give or
    take one: one less is illegal unless padding makes room)."""
    sizes = []
    for k, d in zip(kernel, dilation):
        extent = d * (k - 1) + 1
        if rng.random() < 0.35:
            sizes.append(max(extent - low_pad + rng.choice([-1, 0, 0, 1]), 1))
        else:
            sizes.append(rng.randint(1, 9))
    return sizes


def draw_conv(op: str, rng: random.Random) -> dict:
    n = rng.choices([1, 2, 3, 4], weights=[30, 40, 26, 4])[0]
    groups = rng.choice([1, 1, 1, 2, 3])
    in_per_group = rng.choice([1, 1, 2, 3]) if groups > 1 else rng.choice([1, 2, 3, 5])
    out_per_group = rng.choice([1, 2]) if groups > 1 else rng.choice([1, 2, 4])
    kernel = draw_per_axis(rng, n, [1, 2, 2, 3, 3, 4, 5] if n < 3 else [1, 2, 3])
    stride = draw_per_axis(rng, n, [1, 1, 2, 3, 4])
    dilation = draw_per_axis(rng, n, [1, 1, 1, 2, 3])
    padding = draw_padding(rng, n)
    config = dict(
        op=op, n=n, impl=rng.choice(["lax", "manual"]), channels_last=rng.random() < 0.4,
        batch=rng.choice([0, 1, 1, 2, 2, 3]) if n < 4 else 1, groups=groups,
        channels=groups * in_per_group, out_channels=groups * out_per_group, kernel=kernel,
        stride=stride if rng.random() < 0.8 else stride[0], dilation=dilation if rng.random() < 0.8 else dilation[0],
        padding=padding, seed=rng.randrange(2**31), second_order=rng.random() < 0.15)
    low_pad = padding if isinstance(padding, int) else 0
    config["sizes"] = draw_sizes(rng, kernel, dilation, low_pad)
    if n == 4:
        config["sizes"] = [min(s, 4) for s in config["sizes"]]
    if op in ("conv", "convolve", "conv_transpose"):
        config["bias"] = rng.random() < 0.5
        config["padding_mode"] = rng.choice(MODES)
    if op == "conv_transpose":
        config["output_padding"] = [rng.randrange(max(s, d)) if rng.random() < 0.4 else 0
                                    for s, d in zip(stride, dilation)]
        if rng.random() < 0.05:     # out of range: refused by both
            config["output_padding"] = [max(s, d) for s, d in zip(stride, dilation)]
    return config


def draw_pool(op: str, rng: random.Random) -> dict:
    n = rng.choices([1, 2, 3], weights=[3, 4, 3])[0]
    config = dict(op=op, n=n, channels_last=rng.random() < 0.4, batch=rng.choice([0, 1, 2, 3]),
                  channels=rng.choice([1, 2, 3]), seed=rng.randrange(2**31),
                  second_order=rng.random() < 0.15)
    if op == "global_avg_pool":
        config["sizes"] = [rng.randint(1, 6) for _ in range(n)]
        return config
    window = draw_per_axis(rng, n, [1, 2, 2, 3, 3, 4])
    dilation = draw_per_axis(rng, n, [1, 1, 2, 3]) if op == "max_pool" else [1] * n
    config.update(window=window, stride=None if rng.random() < 0.3 else draw_per_axis(rng, n, [1, 1, 2, 3]),
                  padding=draw_per_axis(rng, n, [0, 0, 1, 2]), dilation=dilation,
                  ceil_mode=rng.random() < 0.4)
    if op == "avg_pool":
        config["count_include_pad"] = rng.random() < 0.5
    config["sizes"] = draw_sizes(rng, window, dilation, 0)
    return config


def draw_group_norm(op: str, rng: random.Random) -> dict:
    """N from 0 to 3 (an empty batch: jaxcnn.group_norm channels first and the reference
    once raised ZeroDivisionError there, reshaping an empty array with -1). Every group holds
    ≥ 3 elements, (C/G)·|S| ≥ 3: with one, x̂ = 0 and dx is rounding alone (no relative error
    means anything); with two, x̂ = ±(1 − O(eps/d²)) and dx is the O(eps) remainder of O(1)
    terms that cancel, measured 1e-12 to 3e-11 relative, too close to the tolerance (the same
    sums in other orders), which is not widened."""
    n = rng.choices([0, 1, 2, 3], weights=[15, 30, 35, 20])[0]
    groups = rng.choice([1, 1, 2, 3, 4])
    while True:
        per_group = rng.choice([1, 1, 2, 3, 4])
        sizes = [rng.randint(1, 5 if n < 3 else 3) for _ in range(n)]
        if per_group * math.prod(sizes) >= 3:
            break
    channels = groups * per_group
    if rng.random() < 0.08:     # not a divisor of the channels: refused by both
        groups = rng.choice([g for g in range(2, channels + 2) if channels % g])
    if n and rng.random() < 0.05:   # an empty spatial axis: refused by jaxcnn (DIFFERENCES)
        sizes[rng.randrange(n)] = 0
    return dict(op=op, n=n, channels_last=rng.random() < 0.4, batch=rng.choice([0, 1, 1, 2, 3]),
                channels=channels, groups=groups, sizes=sizes, eps=rng.choice([1e-5, 1e-3, 0.1]),
                affine=rng.random() < 0.8, seed=rng.randrange(2**31),
                second_order=rng.random() < 0.15)


def family(op: str):
    """The module of jaxcnn.fuzz that draws and checks ``op``, for the newer families."""
    import importlib
    return importlib.import_module(f"jaxcnn.fuzz.{FAMILIES[op]}")


def draw_config(op: str, rng: random.Random) -> dict:
    """One configuration of ``op`` in its JSON form."""
    if op in FAMILIES:
        return family(op).draw(op, rng)
    if op in NORM_OPS:
        return draw_group_norm(op, rng)
    return draw_pool(op, rng) if op in POOL_OPS else draw_conv(op, rng)


def draw(op: str, rng: random.Random) -> "FuzzCase":
    return FuzzCase.from_dict(draw_config(op, rng))


# Turns an op takes in each round of draws (1 if not named): float32 channels-last conv is what
# users run on a CPU and the draw that reaches the native kernels most (about 60 % of its draws
# do), so it takes 7 of a round of 27, ~1,500 native configurations in 10,000; its batch-sharded
# runs (the kernels per shard) take 2; float32 pooling (about 80 % of its draws on the native
# pooling kernels) takes 3.
TURNS = {"conv_float32": 7, "sharded_float32": 2, "pool_float32": 3}
# Ops added after runs were published, each drawn from a stream of its own (seeded by the seed
# and the op's name) at the end of each round: the ops before them draw from the seed's stream
# exactly what they drew before, in the same order (a published configuration is drawn again,
# at its position among the new turns; ``--ops`` without the new ops draws the old list
# itself, index for index), and ``draw_many(n)`` stays a prefix of ``draw_many(n + k)``.
OWN_STREAM = ("sharded_float32", "pool_float32")


def rotation(ops=OPS) -> list[str]:
    """One round of draws: each op ``TURNS`` times (1 if not named), in order."""
    return [op for op in ops for _ in range(TURNS.get(op, 1))]


def draw_many(n: int, seed: int, ops=OPS) -> list["FuzzCase"]:
    """``n`` configurations, the ops taken in turn (a ``rotation`` round after round),
    reproducible from ``seed``; each carries its index so that a failure names the draw that
    made it."""
    streams = {op: random.Random(f"{seed}/{op}") for op in OWN_STREAM}
    rng = random.Random(seed)
    turns = rotation(ops)
    return [draw(op, streams.get(op, rng)).extended(index=i)
            for i, op in ((i, turns[i % len(turns)]) for i in range(n))]


# ----------------------------------------------------------------------------- the case type
# The runner, the workers and tests/fuzz_regressions.json pass configurations as JSON dicts;
# ``FuzzCase`` is one as a ``jaxcnn._cases.Case`` (its shapes, its checked fields), with the
# fuzz's own fields added. ``from_dict`` refuses a key it does not know, naming it; ``to_dict``
# gives back the dict it came from, key for key (``given`` keeps the keys and their order;
# pooling's ``window`` is the case's ``kernel``; ``n`` is the number of sizes).

KEY_FIELDS = {"window": "kernel"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class FuzzCase(Case):
    """A fuzz configuration: a ``Case`` with its seed, its draw's index and the knobs of the
    ops and families that only the fuzzer draws (None: not drawn)."""

    stride: Any = None        # None: the op's own default (1; a pooling's window)
    seed: int = 0
    second_order: bool = False
    index: int | None = None
    name: str | None = None                       # a hand-written configuration's label
    eps: float | None = None                      # group_norm
    affine: bool | None = None
    count_include_pad: bool | None = None         # avg_pool
    ties: bool | None = None                      # pool_float32: x drawn from 5 integers
    # jaxcnn.lax's drop-ins (jaxcnn.fuzz.drop_in)
    window_strides: Any = None
    strides: Any = None
    lhs_dilation: Any = None
    rhs_dilation: Any = None
    dimension_numbers: Any = None
    batch_groups: int | None = None
    transpose_kernel: bool | None = None
    precision: Any = None
    preferred_element_type: str | None = None
    # jaxcnn.sharded (jaxcnn.fuzz.sharding)
    devices: int | None = None
    shards: int | None = None
    spatial_axis: int | None = None
    mesh_kind: str | None = None
    placement: str | None = None
    path: str | None = None
    inner: str | None = None
    check_vma: bool | None = None
    use_consistent_padding: bool | None = None
    given: tuple[str, ...] = ()

    CHECKS = {**Case.CHECKS,
              "seed": (is_int, "an int"),
              "second_order": (lambda v: isinstance(v, bool), "a bool"),
              "index": (lambda v: v is None or is_int(v), "an int or None"),
              "given": (lambda v: all(isinstance(k, str) for k in v), "a tuple of key names")}

    @classmethod
    def of(cls, config: "dict | FuzzCase") -> "FuzzCase":
        """A configuration as a case, whether it came as one or in its JSON form."""
        return config if isinstance(config, cls) else cls.from_dict(config)

    def extended(self, **fields: Any) -> "FuzzCase":
        """The case with ``fields`` set; those its JSON form lacked are written after its keys."""
        given = self.given and self.given + tuple(k for k in fields if k not in self.given)
        return dataclasses.replace(self, **fields, given=given)

    @classmethod
    def from_dict(cls, config: dict) -> "FuzzCase":
        fields = {f.name for f in dataclasses.fields(cls)} - {"given"}
        values = {}
        for key, value in config.items():
            name = KEY_FIELDS.get(key, key)
            if key != "n" and name not in fields:
                raise ValueError(f"fuzz configuration: unknown key {key!r} (value {value!r})")
            values[name] = value
        n = values.pop("n", None)
        case = cls(**values, given=tuple(config))
        if n is not None and n != case.n:
            raise ValueError(f"fuzz configuration: n = {n!r} but {case.n} sizes {list(case.sizes)}")
        return case

    def to_dict(self) -> dict:
        """The configuration as JSON takes it (tuples as lists)."""
        def plain(value):
            return [plain(v) for v in value] if isinstance(value, tuple) else value
        keys = self.given or ["n"] + [f.name for f in dataclasses.fields(self)
                                      if f.name != "given" and getattr(self, f.name) is not None]
        return {key: self.n if key == "n" else plain(getattr(self, KEY_FIELDS.get(key, key)))
                for key in keys}


def load(text: str) -> list[FuzzCase]:
    """The configurations of a file the fuzzer wrote or reads, whatever its release wrote it:
    ``results.jsonl`` (a result a line), ``failures.json`` (a list of results),
    ``tests/fuzz_regressions.json`` (``found``, ``now``, ``config``) or a list of configurations;
    an entry with a ``config`` is a result, any other a configuration."""
    stripped = text.strip()
    entries = (json.loads(stripped) if stripped.startswith("[")
               else [json.loads(line) for line in stripped.splitlines() if line.strip()])
    return [FuzzCase.from_dict(e["config"] if "config" in e else e) for e in entries]
