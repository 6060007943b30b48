"""One configuration of the verification matrix (``Case``) and how an op's variants become
configurations (``expand``): each variant once per number of spatial axes, the (impl, layout)
pair cycling, every third also in float32, one per dimension at order 2.

A row's arrays are drawn in the shapes of its geometry (``jaxcnn._cases.Case``, kept on the
row). The shapes of a configuration stay small (N = 2, C ≤ 4, sizes ≤ 7: ``SIZES``, ``KERNELS``):
compiling each one is the main cost of ``jaxcnn gradcheck``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from jaxcnn._cases import Case as OpCase

SIZES = {1: (7,), 2: (6, 5), 3: (5, 4, 3)}
KERNELS = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
IMPL_LAYOUTS = (("lax", False), ("manual", True), ("lax", True), ("manual", False))


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration: ``jaxcnn.<function>(*args, **kwargs)`` against
    ``jaxcnn.reference.<reference>``, in ``dtype``, at ``order``."""

    op: str
    function: str
    reference: str
    label: str
    args: tuple
    kwargs: dict
    dtype: str = "float64"
    order: int = 1
    geometry: OpCase | None = None    # the op call its arrays were drawn for

    def describe(self) -> str:
        extra = "" if self.dtype == "float64" and self.order == 1 else (
            f" [{self.dtype}]" if self.dtype != "float64" else " [order 2]")
        return f"{self.function} {self.label}{extra}"


def per_axis(values: tuple, n: int) -> tuple:
    return tuple(values[:n])


def geometry(op: str, n: int, channels: int, channels_last: bool, **fields) -> OpCase:
    """A row's geometry: batch 2, ``SIZES[n]`` and ``KERNELS[n]`` unless ``fields`` say
    otherwise (any field of ``jaxcnn._cases.Case``: the variant's keyword arguments)."""
    fields = {"batch": 2, "sizes": SIZES[n], "kernel": KERNELS[n], **fields}
    return OpCase(op=op, channels=channels, channels_last=channels_last, **fields)


def expand(op: str, variants, rng: np.random.Generator, build: Callable) -> list[Case]:
    """Each variant once per dimension, the (impl, layout) pair cycling; every third case
    also in float32; at order 2 one variant per dimension, spread over the list."""
    cases, count = [], 0
    for j, variant in enumerate(variants):
        for n in (1, 2, 3):
            impl, channels_last = IMPL_LAYOUTS[(j + n) % len(IMPL_LAYOUTS)]
            case = build(variant, n, impl, channels_last, rng)
            cases.append(case)
            count += 1
            if count % 3 == 0:
                cases.append(dataclasses.replace(case, dtype="float32"))
            if j == ((n - 1) * len(variants) // 3 + 1) % len(variants):
                cases.append(dataclasses.replace(case, order=2))
    return cases


def layout_label(impl: str | None, channels_last: bool) -> str:
    return ("channels_last" if channels_last else "channels_first") + (f" {impl}" if impl else "")


def both_layouts(op: str, variants, rng, build) -> list[Case]:
    """``expand``, plus each float64 case again in the other layout (cheap ops only)."""
    cases = expand(op, variants, rng, build)
    other = expand(op, variants, rng, lambda v, n, impl, cl, r: build(v, n, impl, not cl, r))
    return cases + [c for c in other if c.dtype == "float64" and c.order == 1]
