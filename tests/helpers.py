"""Shared test helpers: the test tiers and grid sampling, tolerances, random arrays, error
measures, the primitives of a jaxpr, an independent numpy conv, conv configurations (a
dataclass, fixed cases, a hypothesis strategy), and conv_transpose cases with layout and VJP
helpers."""
from __future__ import annotations

import dataclasses
import itertools
import os
import random
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _pytest.mark import ParameterSet    # what pytest.param returns
from hypothesis import assume
from jax.extend.core import ClosedJaxpr, Jaxpr
from hypothesis import strategies as st

import jaxcnn
from jaxcnn import reference
from jaxcnn._cases import Case
from jaxcnn.fuzz.torch_side import expected_pads   # API.md's padding forms, independently of jaxcnn

# Tolerances by dtype for a relative error (max abs error / max abs reference), and of a float64
# hand VJP vs JAX autodiff of the reference: one table for the tests, gradcheck and the bench.
from jaxcnn.tolerances import RTOL as TOL, VJP_RTOL as VJP_TOL


# ----------------------------------------------------------------------------- tiers and sampling
# As JAX's JAX_NUM_GENERATED_CASES: ``JAXCNN_TEST_CASES`` scales the generated grids.
#   unset (the default tier, ``make test``): a pairwise-covering subset of each grid, every value
#       of every parameter meets every value of every other at least once; ``slow`` tests skip.
#   ``all`` (the full tier, ``make test-full``): every case of every grid; ``slow`` tests run.
#   an integer k: the covering subset and seeded random cases of the rest, up to k per grid.

CASES_ENV = "JAXCNN_TEST_CASES"

# The devices of the multi-device run (tests marked ``multidevice``: tests/conftest.py).
DEVICES = 8


def test_cases_setting() -> str:
    """``JAXCNN_TEST_CASES`` as set ('' when unset), checked: 'all' or a positive integer."""
    value = os.environ.get(CASES_ENV, "").strip().lower()
    if value not in ("", "all") and not (value.isdigit() and int(value) > 0):
        raise ValueError(f"{CASES_ENV} must be 'all' or a positive integer, got {value!r}")
    return value


def full_tier() -> bool:
    """Whether this run is the full tier (``JAXCNN_TEST_CASES=all``)."""
    return test_cases_setting() == "all"


FAST_XLA_FLAG = "--xla_cpu_use_fusion_emitters=false"
"""XLA's older CPU fusion emitters: the same programs, compiled in about half the time."""


def xla_knows(flag: str) -> bool:
    """Whether this jaxlib's XLA parses ``flag`` (``--name=value``): XLA aborts the process on a
    flag it does not know, and its library holds the name of every flag it parses."""
    import mmap
    from pathlib import Path

    import jaxlib
    name = flag.lstrip("-").split("=")[0].encode()
    for library in Path(jaxlib.__file__).parent.glob("*.so"):
        with open(library, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(name) >= 0:
                return True
    return False


def fast_xla_flags() -> bool:
    """Add ``FAST_XLA_FLAG`` to ``XLA_FLAGS`` where this XLA knows it (before JAX starts its
    backend: it reads the flags once); whether it did."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FAST_XLA_FLAG.split("=")[0] in flags or not xla_knows(FAST_XLA_FLAG):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FAST_XLA_FLAG}".strip()
    return True


def _factor_values(case) -> tuple:
    """A case's parameter values, keyed by position (a tuple, a ``pytest.param``) or by name (a
    dict); a bare value is a one-parameter case. Values are compared by ``repr``."""
    values = case.values if isinstance(case, ParameterSet) else case
    if isinstance(values, dict):
        return tuple((key, repr(values[key])) for key in sorted(values))
    if not isinstance(values, (tuple, list)):
        values = (values,)
    return tuple(enumerate(repr(v) for v in values))


def cover(cases, strength: int = 2) -> list[int]:
    """A deterministic subset of ``cases`` in which every pair of parameter values that meets in
    ``cases`` meets again (``strength=2``, pairwise), or every single value appears again
    (``strength=1``): greedy set cover, the case that covers most uncovered pairs first (ties:
    the earlier case), in the grid's order. Every value appears in either strength.

    ``cases`` may be constrained (not a full product): only pairs that occur are required.
    Returns the chosen indices, in order."""
    if strength not in (1, 2):
        raise ValueError(f"strength: expected 1 (each value) or 2 (each pair); got {strength!r}")
    ids: dict = {}                  # a pair (or a single value) -> its column; 0 is padding
    rows = []
    for case in cases:
        factors = _factor_values(case)
        pairs = [*factors, *(itertools.combinations(factors, 2) if strength == 2 else ())]
        rows.append([ids.setdefault(pair, len(ids) + 1) for pair in pairs])
    if not rows:
        return []
    table = np.zeros((len(rows), max(map(len, rows))), np.int64)
    for i, row in enumerate(rows):
        table[i, :len(row)] = row
    uncovered = np.ones(len(ids) + 1, bool)
    uncovered[0] = False
    chosen = []
    while uncovered.any():
        best = int(np.argmax(uncovered[table].sum(axis=1)))    # ties: the earliest case
        chosen.append(best)
        uncovered[table[best]] = False
    return sorted(chosen)


def pairwise_cover(cases) -> list[int]:
    """``cover(cases, 2)``: every pair of parameter values that meets in ``cases`` meets again."""
    return cover(cases, 2)


def sample(cases, seed: int = 0, *, key=None, full: int | None = None, strength: int = 2,
           among=None) -> list:
    """The cases of a parametrised grid that this tier runs: a pairwise cover (the default tier),
    all of them (``JAXCNN_TEST_CASES=all``), or the cover and seeded random others up to k
    (``JAXCNN_TEST_CASES=k``). Cases are tuples, dicts, ``pytest.param`` objects or single values;
    the order of the grid is kept, so test ids stay stable.

    ``key(case)``: the parameters that must meet pairwise (a tuple or dict; default the case's
    own), for grids whose raw values (exact shapes) matter less than what they stand for.
    ``full``: the full tier's count where the whole grid is too big to run (the cover and
    seeded random others up to ``full``). ``strength=1``: the default tier covers each value
    once, not each pair (for a grid whose pairs another test's grid already meets: say so
    where it is used). ``among(case)``: the cover is drawn from these cases only (the costly
    others run in the full tier, or as the seeded extra cases)."""
    cases = list(cases)
    setting = test_cases_setting()
    if setting == "all" and full is None:
        return cases
    wanted = full if setting == "all" else int(setting) if setting else 0
    pool = [i for i, case in enumerate(cases) if among is None or among(case)]
    keys = [case if key is None else key(case) for case in cases]
    chosen = {pool[j] for j in cover([keys[i] for i in pool], strength)}
    if wanted > len(chosen):
        rest = [i for i in range(len(cases)) if i not in chosen]
        chosen |= set(random.Random(seed).sample(rest, min(wanted - len(chosen), len(rest))))
    return [case for i, case in enumerate(cases) if i in chosen]


def product(*factors) -> list:
    """The full grid of ``factors`` as ``pytest.param`` objects for ``sample``, ids joined by '-': a
    factor is a dict (id: value) or a sequence of values (each its own id, as pytest's)."""
    named = [list(f.items()) if isinstance(f, dict) else [(_id(v), v) for v in f] for f in factors]
    return [pytest.param(*(v for _, v in combo), id="-".join(i for i, _ in combo))
            for combo in itertools.product(*named)]


def _id(value) -> str:
    return value if isinstance(value, str) else repr(value).replace(" ", "")


# ----------------------------------------------------------------------------- arrays and errors

def random_array(rng: np.random.Generator, shape: tuple[int, ...],
                 dtype: Any = jnp.float64) -> jax.Array:
    """Standard normal samples of ``shape``, cast to ``dtype``; a 64-bit dtype with
    ``jax_enable_x64`` off is an error (mark the test ``x64``), not a silent 32-bit array."""
    if jax.dtypes.canonicalize_dtype(dtype) != np.dtype(dtype):
        raise RuntimeError(f"{np.dtype(dtype)} needs jax_enable_x64: mark the test x64 (tests/conftest.py)")
    return jnp.asarray(rng.standard_normal(shape), dtype=dtype)


def relative_error(a: Any, b: Any) -> float:
    """``max|a − b| / max(max|b|, tiny)``, in float64 numpy; shapes must match exactly."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape mismatch: {a.shape} vs {b.shape}"
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(b))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(a - b))) / scale


def assert_close(a: Any, b: Any, tol: float, what: str = "") -> None:
    """Relative error of ``a`` against the reference ``b`` at most ``tol``."""
    err = relative_error(a, b)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def tree_assert_close(a: Any, b: Any, tol: float, what: str = "") -> None:
    """``assert_close`` leaf by leaf over two pytrees of the same structure."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b, f"{what}: tree structure {tree_a} vs {tree_b}"
    for i, (la, lb) in enumerate(zip(leaves_a, leaves_b)):
        assert_close(la, lb, tol, f"{what}[{i}]")


def vdot(a: Any, b: Any) -> jax.Array:
    """``⟨a, b⟩`` in float64 over all elements."""
    return jnp.vdot(jnp.asarray(a, jnp.float64).ravel(), jnp.asarray(b, jnp.float64).ravel())


def primitive_names(jaxpr) -> set[str]:
    """Every primitive in a (closed) jaxpr, those of the jaxprs inside its equations included
    (pjit, auto_axes, custom rules, cond branches: a parameter that is a jaxpr or a tuple of them)."""
    names = set()
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        names.add(eqn.primitive.name)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, (Jaxpr, ClosedJaxpr)):
                    names |= primitive_names(sub)
    return names


# ----------------------------------------------------------------------------- an independent conv
# The seed formula in plain numpy loops, sharing nothing with jaxcnn or lax: the oracle that
# reference.conv itself is checked against (small shapes only).

NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def numpy_conv(x: Any, w: Any, b: Any = None, *, stride, pads, dilation, groups: int = 1,
               padding_mode: str = "zeros", channels_last: bool = False) -> np.ndarray:
    """``y[n, o, i] = b[o] + Σ_c Σ_k w[o, c, k] · x_pad[n, g(o)·C/g + c, i·s + k·d]``, a loop
    over output positions and kernel offsets; ``stride``, ``dilation``: n-tuples."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n = w.ndim - 2
    if channels_last:
        x, w = np.moveaxis(x, -1, 1), np.transpose(w, (n + 1, n, *range(n)))
    x = np.pad(x, [(0, 0), (0, 0), *pads], mode=NUMPY_PAD_MODE[padding_mode.lower()])
    batch, out_channels, in_per_group, kernel = x.shape[0], w.shape[0], w.shape[1], w.shape[2:]
    out = [(length - d * (k - 1) - 1) // s + 1
           for length, k, s, d in zip(x.shape[2:], kernel, stride, dilation)]
    xg = x.reshape(batch, groups, in_per_group, *x.shape[2:])
    wg = w.reshape(groups, out_channels // groups, in_per_group, *kernel)
    y = np.zeros((batch, out_channels, *out))
    lead = (slice(None),) * 3
    for i in np.ndindex(*out):
        for k in np.ndindex(*kernel):
            pos = tuple(ii * s + kk * d for ii, kk, s, d in zip(i, k, stride, dilation))
            y[(slice(None), slice(None)) + i] += np.einsum(
                "ngc,goc->ngo", xg[lead + pos], wg[lead + k]).reshape(batch, out_channels)
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, out_channels, *([1] * n))
    return np.moveaxis(y, 1, -1) if channels_last else y


# ----------------------------------------------------------------------------- conv configurations
# A hashable description of one conv (shapes, every knob), a fixed rich configuration per n,
# and a hypothesis strategy over all of them, for the tests of conv and of what builds on it.


def as_tuple(value, n):
    return (value,) * n if isinstance(value, int) else tuple(value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(Case):
    """One conv configuration (hashable: it is a static argument of the jitted checks): a
    ``jaxcnn._cases.Case`` whose defaults are 4 → 4 channels in 2 groups, with a bias."""

    channels: int = 4
    out_channels: int = 4
    groups: int = 2
    bias: bool = True

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups, padding_mode=self.padding_mode,
                    channels_last=self.channels_last)

    def shapes(self) -> tuple[tuple, tuple]:
        return self.x_shape(), self.w_shape()

    def arrays(self, rng, dtype=jnp.float64) -> tuple:
        x_shape, w_shape = self.shapes()
        b = random_array(rng, (self.out_channels,), dtype) if self.bias else None
        return random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype), b

    def pads(self) -> list:
        return expected_pads(self.padding, self.sizes, self.kernel, self.per_axis("stride"),
                             self.per_axis("dilation"))

    def oracle(self, x, w, b) -> np.ndarray:
        return numpy_conv(x, w, b, stride=self.per_axis("stride"), pads=self.pads(),
                          dilation=self.per_axis("dilation"), groups=self.groups,
                          padding_mode=self.padding_mode, channels_last=self.channels_last)

    def out_shape(self) -> tuple:
        return jax.eval_shape(partial(reference.conv, **self.kwargs()), *self.shapes_struct()).shape

    def shapes_struct(self) -> tuple:
        x_shape, w_shape = self.shapes()
        return jax.ShapeDtypeStruct(x_shape, jnp.float64), jax.ShapeDtypeStruct(w_shape, jnp.float64)


def fixed_config(n: int, channels_last: bool, **changes) -> Config:
    """A configuration per n with every knob off its default (uneven stride, (lo, hi) pads,
    dilation, two groups)."""
    base = {1: dict(sizes=(9,), kernel=(3,), stride=2, padding=((1, 2),), dilation=2),
            2: dict(sizes=(6, 5), kernel=(3, 2), stride=(2, 1), padding=((1, 0), (2, 1)),
                    dilation=(1, 2)),
            3: dict(sizes=(4, 5, 3), kernel=(2, 3, 2), stride=(1, 2, 1), padding=1,
                    dilation=(2, 1, 1), channels=2, out_channels=2)}[n]
    return Config(channels_last=channels_last, **{**base, **changes})


def operands(x, w, b) -> tuple:
    return (x, w) if b is None else (x, w, b)


@partial(jax.jit, static_argnums=(0, 1))
def forward_and_vjp(fn_name: str, cfg: Config, args: tuple, ct):
    """``y`` and the VJP at ``ct`` of jaxcnn.conv (impl = fn_name) or of reference.conv."""
    fn = reference.conv if fn_name == "reference" else partial(jaxcnn.conv, impl=fn_name)
    y, pull = jax.vjp(lambda *a: fn(*a, **cfg.kwargs()), *args)
    return y, pull(ct)


_STRINGS = st.sampled_from(["VALID", "SAME", "FULL", "CAUSAL"]).flatmap(
    lambda s: st.sampled_from([s, s.lower(), s.capitalize()]))


@st.composite
def configs(draw) -> Config:
    n = draw(st.integers(1, 3))
    per_axis = lambda lo, hi: st.tuples(*[st.integers(lo, hi)] * n)  # noqa: E731
    kind = draw(st.sampled_from(["grouped", "depthwise", "single"]))
    if kind == "depthwise":
        groups = channels = draw(st.integers(1, 3))
    else:
        groups = 2 if kind == "grouped" else 1
        channels = groups * draw(st.integers(1, 2))
    out_channels = groups * draw(st.integers(1, 2))
    kernel = draw(per_axis(1, 3 if n < 3 else 2))
    dilation = draw(st.one_of(st.just(1), per_axis(1, 2)))
    stride = draw(st.one_of(st.integers(1, 3), per_axis(1, 3)))
    padding = draw(st.one_of(st.integers(0, 2), per_axis(0, 2), _STRINGS,
                             st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))] * n)))
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, as_tuple(dilation, n))]
    sizes = tuple(draw(st.integers(max(1, e - 2), e + (3 if n < 3 else 2))) for e in extent)
    cfg = Config(channels_last=draw(st.booleans()), sizes=sizes, kernel=kernel, channels=channels,
                 out_channels=out_channels, groups=groups, batch=draw(st.integers(1, 2)),
                 stride=stride, padding=padding, dilation=dilation, bias=draw(st.booleans()))
    pads = cfg.pads()
    assume(all(length + lo + hi >= e for length, (lo, hi), e in zip(sizes, pads, extent)))
    widest = [max(p) for p in pads]
    modes = ["zeros", "replicate"]
    modes += ["reflect"] if all(p < length for p, length in zip(widest, sizes)) else []
    modes += ["circular"] if all(p <= length for p, length in zip(widest, sizes)) else []
    mode = draw(st.sampled_from(modes).flatmap(lambda m: st.sampled_from([m, m.upper()])))
    return dataclasses.replace(cfg, padding_mode=mode)


# ----------------------------------------------------------------------------- conv_transpose
# Cases, layout moves and a jitted VJP shared by test_transpose*.py (conv_transpose and convolve)

IMPLS = ("lax", "manual")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TransposeCase(Case):
    """A conv_transpose configuration, PyTorch's layout: x (N, C_in, *S), w (C_in, C_out/g, *K)."""

    op: str = "conv_transpose"

    def kwargs(self) -> dict:
        return dict(stride=self.stride, dilation=self.dilation, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups)

    def arrays(self, rng, with_bias: bool = True):
        x = random_array(rng, self.x_shape())
        w = random_array(rng, self.w_shape())
        b = random_array(rng, (self.out_channels,)) if with_bias else None
        return x, w, b


def transpose_case(sizes, kernel, stride, dilation, padding, output_padding, groups: int = 1,
                   per_group: tuple[int, int] = (2, 3)) -> TransposeCase:
    """A ``TransposeCase`` of ``per_group = (C_in / g, C_out / g)`` channels per group."""
    return TransposeCase(sizes=sizes, kernel=kernel, stride=stride, dilation=dilation,
                         padding=padding, output_padding=output_padding, groups=groups,
                         channels=groups * per_group[0], out_channels=groups * per_group[1])


TRANSPOSE_CASES = {
    "1d": transpose_case((5,), (3,), (1,), (1,), ((0, 0),), (0,)),
    "1d_stride2_pad1_op1": transpose_case((4,), (3,), (2,), (1,), ((1, 1),), (1,)),
    "1d_dilation3_op2_groups2": transpose_case((4,), (2,), (2,), (3,), ((1, 2),), (2,), groups=2),
    "2d_stride_dilation_asym_pad": transpose_case((3, 4), (2, 3), (2, 1), (1, 2),
                                                  ((0, 1), (2, 0)), (1, 1)),
    "2d_groups3_stride3": transpose_case((3, 3), (3, 2), (3, 2), (1, 1), ((1, 1), (1, 1)), (2, 1),
                                         groups=3, per_group=(1, 2)),
    "3d": transpose_case((2, 3, 2), (2, 2, 3), (1, 2, 2), (2, 1, 1), ((1, 1), (0, 0), (1, 1)),
                         (1, 1, 0)),
}


def to_layout(a, channels_last: bool):
    """An activation ``(N, C, *S)`` in the requested layout."""
    return jnp.moveaxis(a, 1, -1) if channels_last else a


def kernel_to_layout(w, channels_last: bool):
    """A kernel ``(A, B, *K)`` as ``(*K, B, A)`` for channels last."""
    n = w.ndim - 2
    return jnp.transpose(w, (*range(2, n + 2), 1, 0)) if channels_last else w


def shape_of(op, *shapes, **kwargs) -> tuple[int, ...]:
    """The output shape of ``op`` on float64 arrays of ``shapes``, traced, never run."""
    structs = [jax.ShapeDtypeStruct(shape, jnp.float64) for shape in shapes]
    return jax.eval_shape(lambda *a: op(*a, **kwargs), *structs).shape


def value_and_vjp(op, args, cotangent):
    """``op(*args)`` and its VJP at ``cotangent``, in one jit (one compile, not one per op)."""
    def run(args, cotangent):
        out, pullback = jax.vjp(op, *args)
        return out, pullback(cotangent)
    return jax.jit(run)(args, cotangent)


def run_piece(fn, piece: str, x, w, dy, spec):
    """One conv piece (``jaxcnn._conv.pieces``' calling convention: ``conv(x, w)``, ``input_grad(dy, w)``,
    ``weight_grad(x, dy)``), jit-compiled with a static spec."""
    if piece == "conv":
        return jax.jit(partial(fn, spec=spec))(x, w)
    if piece == "input_grad":
        return jax.jit(partial(fn, spec=spec, in_shape=x.shape))(dy, w)
    return jax.jit(partial(fn, spec=spec, w_shape=w.shape))(x, dy)
