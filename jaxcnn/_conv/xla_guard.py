r"""Convolutions that XLA miscompiles, recognised from static shapes so jaxcnn never emits them.

**XLA's convolution operand swap** (``ConvOperandSwapper``, run by the algebraic simplifier;
jaxlib 0.10.2 aborts with ``algebraic_simplifier.cc: Check failed ... Window dimensions do not
match RHS shape``). For a convolution with one feature group and one batch group, the pass
looks at each spatial axis of its window (kernel size ``K``, input size ``L``, ``stride``,
``padding (lo, hi)``, ``base_dilation`` = lax's ``lhs_dilation``, ``window_dilation`` =
``rhs_dilation``, no reversal) and

- keeps the axis as it is when it is a *group axis*: ``lo = hi = 0``, ``window_dilation = 1``,
  ``base_dilation = K`` and ``stride = K − 1``; or a *pure contraction axis*: ``K = L``,
  ``lo = hi = 0``, no dilation, ``stride = 1``;
- otherwise counts ``K`` into the kernel's product and ``L`` into the swapped one (``K`` when
  ``L = 1``, ``stride = 1``, no window dilation and ``lo = hi = K − 1``),

and swaps input and kernel when the kernel's product is the larger. It skips grouped
convolutions, but on CPU a float64 grouped convolution has by then been expanded into an
ungrouped one (the groups become one more, well-formed, group axis), so there it applies. The kept axes keep their
window (size ``K``) while the new kernel is the old input (size ``L`` there): for a pure
contraction axis ``K = L``, but the group-axis test never asks ``L = K``. So a convolution
with a group axis whose ``L ≠ K``, whose other axes pass the product test, is rewritten into
an invalid one and the compiler aborts the process.

Where jaxcnn meets it: the input gradient of a strided conv written as one lhs-dilated
convolution (``pieces.lax_input_grad``, also what ``jax.grad`` of ``lax`` emits) has
``stride = 1`` and ``base_dilation`` = the conv's stride, so an axis with kernel 2, stride 2,
dilation 1 and ``pad_lo = 1`` whose padding leaves nothing over at the high end
(``L + 1`` even; ``lo' = hi' = 0``) is a group axis. If another axis makes the kernel "larger"
than the gradient (``dy`` one wide under a 2-wide kernel, say), XLA aborts. jaxcnn computes
those input gradients with the manual form instead (no convolution primitive); ``jax.grad``
of plain ``lax`` aborts there. Reproducer: ``experiments/xla_conv_crash/``.

**XLA's CPU convolution with a negative low pad** (jaxlib 0.10.2, float32): a
``lax.conv_general_dilated`` whose padding on some axis has ``lo < 0`` (a crop) and ``hi = 1``
(more generally ``lo + hi ≤ 0 < hi`` in the cases probed), with no input dilation there, returns
wrong values, off by up to 10³⁶ (uninitialised memory): 1D and 2D, channels first and last,
1–16 channels, kernels 2 and 3; float64 is right, and so is every other sign pattern probed
((−1, 0), (−1, 2), (1, −1), (0, −2)), and input dilation 2–3. ``jax.grad`` of plain lax emits
such a convolution for the input gradient of a conv with ``pad_lo > d·(K − 1)``: its padding
is ``lo' = d·(K − 1) − pad_lo < 0``. jaxcnn never emits a negative low pad where the input is
not dilated: ``low_crops`` turns it into a slice of the input (the same map), and the lax
pieces of ``jaxcnn._conv.pieces`` apply it. Reproducer: ``experiments/xla_negative_pad/``.
"""
from __future__ import annotations

import json
import re
from typing import Any, Sequence

import numpy as np


def _group_axis(kernel: int, lo: int, hi: int, stride: int, base: int, window: int) -> bool:
    return lo == 0 and hi == 0 and window == 1 and base == kernel and stride == kernel - 1


def _contraction_axis(size: int, kernel: int, lo: int, hi: int, stride: int, base: int,
                      window: int) -> bool:
    return kernel == size and lo == 0 and hi == 0 and window == 1 and base == 1 and stride == 1


# Element types whose grouped convolutions XLA's CPU backend runs as they are (measured with
# jaxlib 0.10.2); others (float64) are first expanded into one group with an extra "group
# axis" (L = K = groups), which the swap then sees like any ungrouped convolution.
_NATIVE_GROUPED = ("float32", "bfloat16", "float16")


def operand_swap_aborts(in_sizes: Sequence[int], kernel_sizes: Sequence[int],
                        strides: Sequence[int], padding: Sequence[tuple[int, int]],
                        lhs_dilation: Sequence[int], rhs_dilation: Sequence[int],
                        feature_group_count: int = 1, batch_group_count: int = 1,
                        dtype: Any = None, window_reversal: Sequence[bool] | None = None) -> bool:
    """Whether XLA's convolution operand swap turns this ``lax.conv_general_dilated`` (its
    spatial sizes and window, as lax's arguments, and its element type; None: assume the
    grouped convolution is expanded) into an invalid convolution and aborts."""
    grouped = feature_group_count > 1 or batch_group_count > 1
    if grouped and dtype is not None and np.dtype(dtype).name in _NATIVE_GROUPED:
        return False      # the swap leaves grouped convolutions alone
    kernel_product = swapped_product = 1
    mismatched_group_axis = False
    reversal = window_reversal or [False] * len(in_sizes)
    for size, k, s, (lo, hi), base, window, reversed_ in zip(in_sizes, kernel_sizes, strides, padding,
                                                             lhs_dilation, rhs_dilation, reversal):
        if reversed_:        # neither a group nor a contraction axis
            kernel_product *= k
            swapped_product *= size
            continue
        if _group_axis(k, lo, hi, s, base, window):
            mismatched_group_axis |= size != k
            continue
        if _contraction_axis(size, k, lo, hi, s, base, window):
            continue
        kernel_product *= k
        full = size == 1 and s == 1 and window == 1 and lo == hi == k - 1
        swapped_product *= k if full else size
    return mismatched_group_axis and kernel_product > swapped_product


# ----------------------------------------------------------------------------- lowered programs
# The same rule read off a lowered program (``jax.jit(f).lower(...).as_text()``, StableHLO),
# before XLA compiles it: what autodiff emits can be checked without knowing how it emits it.

_CONVOLUTION = re.compile(
    r"stablehlo\.convolution\(.*?\)\s*dim_numbers = \[([^\]]*)\]x\[([^\]]*)\]->\[[^\]]*\],"
    r"\s*window = \{([^}]*)\}\s*\{([^}]*)\}\s*:\s*\(tensor<([^>]*)>, tensor<([^>]*)>\)")
_ELEMENT = {"f64": "float64", "f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def _window_field(window: str, name: str, n: int, default: Any) -> list:
    """One field of a printed window (``pad = [[0, 0], [1, 2]]``), or ``default`` per axis."""
    start = window.find(f"{name} = [")
    if start < 0:
        return [default] * n
    start = window.index("[", start)
    depth = 0
    for end in range(start, len(window)):
        depth += {"[": 1, "]": -1}.get(window[end], 0)
        if depth == 0:
            break
    return json.loads(window[start:end + 1].replace("true", "1").replace("false", "0"))


def _tensor(text: str) -> tuple[list[int], str]:
    *dims, element = text.split("x")
    return [int(d) for d in dims], _ELEMENT.get(element, element)


def aborting_convolutions(lowered: str) -> list[str]:
    """The convolutions of a lowered program (StableHLO text) that XLA's operand swap would
    abort on; an empty list when it compiles safely."""
    found = []
    for match in _CONVOLUTION.finditer(lowered):
        lhs_labels, rhs_labels, window, attributes, lhs_text, rhs_text = match.groups()
        lhs_shape, element = _tensor(lhs_text)
        rhs_shape, _ = _tensor(rhs_text)
        lhs_labels = [s.strip() for s in lhs_labels.split(",")]
        rhs_labels = [s.strip() for s in rhs_labels.split(",")]
        n = len(lhs_labels) - 2
        in_sizes = [lhs_shape[lhs_labels.index(str(i))] for i in range(n)]
        kernel = [rhs_shape[rhs_labels.index(str(i))] for i in range(n)]
        pads = [tuple(p) for p in _window_field(window, "pad", n, (0, 0))]
        reverse = _window_field(window, "reverse", n, 0)
        groups = {key: int(value) for key, value in
                  re.findall(r"(batch_group_count|feature_group_count) = (\d+)", attributes)}
        if operand_swap_aborts(in_sizes, kernel, _window_field(window, "stride", n, 1), pads,
                               _window_field(window, "lhs_dilate", n, 1),
                               _window_field(window, "rhs_dilate", n, 1),
                               groups.get("feature_group_count", 1), groups.get("batch_group_count", 1),
                               dtype=element, window_reversal=[bool(r) for r in reverse]):
            found.append(match.group(0))
    return found


# ----------------------------------------------------------------------------- negative low pads

def low_crops(in_sizes: Sequence[int], padding: Sequence[tuple[int, int]],
              lhs_dilation: Sequence[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """``(crops, padding')``: the leading elements to slice off each spatial axis of the input
    and the padding that then gives the same convolution with no negative low pad on an axis
    without input dilation. A crop past the whole axis leaves it empty and takes the rest from
    the high pad, so the padded length ``size + lo + hi`` (and the output) is unchanged."""
    crops, pads = [], []
    for size, (lo, hi), base in zip(in_sizes, padding, lhs_dilation):
        if lo >= 0 or base != 1:
            crops.append(0)
            pads.append((lo, hi))
            continue
        cut = min(-lo, size)
        crops.append(cut)
        pads.append((0, hi - (-lo - cut)))
    return crops, pads
