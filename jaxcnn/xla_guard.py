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
convolution (``conv_impls._lax_input_grad``, also what ``jax.grad`` of ``lax`` emits) has
``stride = 1`` and ``base_dilation`` = the conv's stride, so an axis with kernel 2, stride 2,
dilation 1 and ``pad_lo = 1`` whose padding leaves nothing over at the high end
(``L + 1`` even; ``lo' = hi' = 0``) is a group axis. If another axis makes the kernel "larger"
than the gradient (``dy`` one wide under a 2-wide kernel, say), XLA aborts. jaxcnn computes
those input gradients with the manual form instead (no convolution primitive); ``jax.grad``
of plain ``lax`` aborts there. Reproducer: ``experiments/xla_conv_crash/``.
"""
from __future__ import annotations

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
                        dtype: Any = None) -> bool:
    """Whether XLA's convolution operand swap turns this ``lax.conv_general_dilated`` (its
    spatial sizes and window, as lax's arguments, and its element type; None: assume the
    grouped convolution is expanded) into an invalid convolution and aborts."""
    grouped = feature_group_count > 1 or batch_group_count > 1
    if grouped and dtype is not None and np.dtype(dtype).name in _NATIVE_GROUPED:
        return False      # the swap leaves grouped convolutions alone
    kernel_product = swapped_product = 1
    mismatched_group_axis = False
    for size, k, s, (lo, hi), base, window in zip(in_sizes, kernel_sizes, strides, padding,
                                                  lhs_dilation, rhs_dilation):
        if _group_axis(k, lo, hi, s, base, window):
            mismatched_group_axis |= size != k
            continue
        if _contraction_axis(size, k, lo, hi, s, base, window):
            continue
        kernel_product *= k
        full = size == 1 and s == 1 and window == 1 and lo == hi == k - 1
        swapped_product *= k if full else size
    return mismatched_group_axis and kernel_product > swapped_product
