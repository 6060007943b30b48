r"""The memory budget of the conv forms: each form's intermediates, estimated from shapes alone.

Memory weighs as much as time. Each form's intermediates are counted in elements from the
shapes of its piece's activations (``activation_sizes``): what XLA's CPU compiler was seen to
hold at once (``jaxcnn bench``'s temp-memory column). An unrolled tap sum holds every tap's
slice or product (XLA's CPU compiler computes every tap before summing), a loop one of them, a
depth fold its stacked depth taps (and their copy). ``rules`` uses a form only where its
model fits ``MEMORY_BUDGET × (input + output)`` elements (``room``); otherwise the next
candidate: the tap loops of ``loops`` (one tap alive at a time; the manual forward's over
slices of the batch, or of the output's rows, where the whole loop does not fit: ``chunks``),
and at last the one-lax-call piece (``impl="lax"``).

Shape arithmetic only: every function takes ints and a dict of ints, never arrays. The table
that gives each form its model is ``rules.FORMS``.
"""
from __future__ import annotations

import math

from jaxcnn._shapes import ConvSpec, dilated_size, kernel_sizes, output_sizes, spatial_sizes

MEMORY_BUDGET = 1.5
"""A form is used only if its intermediates fit in ``MEMORY_BUDGET × (input + output)`` elements
of its piece's activations; otherwise the next candidate (at last the lean tap loop, or for
``impl="lax"`` the one-lax-call piece). Chosen to keep fwd+bwd near the compiled temp memory of
``jax.grad`` of lax (docs/performance.md, "Form choice")."""


def activation_sizes(spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> dict[str, int]:
    """Elements of a conv's activations: ``input``, ``output``, ``padded`` (``x_pad``), ``slice``
    (one tap's read, ``N·C·∏S_out``), ``dilated`` (one tap's placed part, stride holes
    included), ``taps`` (``∏K``) and ``depth_taps`` (``K_0``), ``depth_slice`` (one depth tap's
    read, ``N·C·D_out·∏S'``), ``depth_padded`` (the input padded along depth alone) and
    ``dy_copy`` (channels first: the output-sized copy of ``dy`` that a per-tap weight-gradient
    contraction reads, transposed; channels last contracts ``dy`` as it lies), ``batch``
    (``N``) and ``rows`` (the output's first spatial size)."""
    k_sizes = kernel_sizes(w_shape, spec)
    in_sizes = spatial_sizes(in_shape, spec)
    out_sizes = output_sizes(in_sizes, k_sizes, spec.stride, spec.dilation, spec.padding)
    n, c = in_shape[0], in_shape[spec.channel_axis()]
    o = w_shape[spec.kernel_io_axes()[0]]
    return {"input": n * c * math.prod(in_sizes), "output": n * o * math.prod(out_sizes),
            "padded": n * c * math.prod(s + lo + hi for s, (lo, hi) in zip(in_sizes, spec.padding)),
            "slice": n * c * math.prod(out_sizes),
            "dilated": n * c * math.prod(dilated_size(o_, s) for o_, s in zip(out_sizes, spec.stride)),
            "taps": math.prod(k_sizes), "depth_taps": k_sizes[0],
            "depth_slice": n * c * out_sizes[0] * math.prod(in_sizes[1:]),
            "depth_padded": n * c * (in_sizes[0] + sum(spec.padding[0])) * math.prod(in_sizes[1:]),
            "dy_copy": 0 if spec.channels_last else n * o * math.prod(out_sizes), "batch": n,
            "rows": out_sizes[0]}


def one_call(a: dict[str, int]) -> int:
    """One lax call or one custom call: XLA's own temp memory, the yardstick of the budget."""
    return 0


def unrolled(a: dict[str, int]) -> int:
    """x_pad and every tap's slice or product (XLA's CPU compiler computes all taps, then sums)."""
    return a["padded"] + a["taps"] * max(a["slice"], a["output"])


def padded_input(a: dict[str, int]) -> int:
    """x_pad alone: a tap sum XLA fuses into one loop over the output (the single-channel forward)."""
    return a["padded"]


def placed_taps(a: dict[str, int]) -> int:
    """dx_pad and every tap's part placed back, stride holes included (the manual input gradient)."""
    return a["padded"] + a["taps"] * a["dilated"]


def stacked_taps(a: dict[str, int]) -> int:
    """x_pad, the ``∏K`` stacked slices and their reshaped copy (im2col)."""
    return a["padded"] + 2 * a["taps"] * a["slice"]


def folded_depth(a: dict[str, int]) -> int:
    """The ``K_0`` stacked depth slices and their folded copy."""
    return 2 * a["depth_taps"] * a["depth_slice"]


def depth_tap_loop(a: dict[str, int]) -> int:
    """x_pad (or dx_pad; padded along depth only), one tap's depth slice, and the tap's (n−1)-D
    result beside the accumulator. The input gradient's is smaller, given the same so that
    fwd+bwd stays within the budget of ``jax.grad``'s."""
    return a["depth_padded"] + a["depth_slice"] + a["output"]


def loop_conv_memory(a: dict[str, int]) -> int:
    """x_pad, one tap's product and its accumulator (a lax conv feeds its consumer directly)."""
    return a["padded"] + 2 * a["output"]


def loop_input_grad_memory(a: dict[str, int]) -> int:
    """dx_pad, one tap's slice, and ``dy``: each tap's input-sized part is added onto the phases
    of dx_pad (no stride holes written)."""
    return a["padded"] + a["slice"] + a["output"]


def loop_weight_grad_memory(a: dict[str, int]) -> int:
    """x_pad, the slice the tap's dot copies, and channels first a transposed copy of ``dy``."""
    return a["padded"] + a["slice"] + a["dy_copy"]


def loop_depthwise_memory(a: dict[str, int]) -> int:
    """x_pad and one tap's fused multiply-and-sum, output-sized."""
    return a["padded"] + a["output"]


def chunked_memory(a: dict[str, int], batch: int, rows: int) -> int:
    """The tap loop over ``batch`` slices of the batch (the stacked results and their reshaped
    copy, and per slice its input, x_pad, accumulator and product) or over ``rows`` slices of the
    output's rows (x_pad and the output, and per slice the accumulator and product)."""
    if batch > 1:
        return 2 * a["output"] + (a["input"] + a["padded"] + 2 * a["output"]) // batch
    if rows > 1:
        return a["padded"] + a["output"] + 2 * a["output"] // rows
    return loop_conv_memory(a)


_MIN_SLICE = 8
"""Samples per batch slice at least: smaller slices held more memory, not less."""


def room(a: dict[str, int]) -> float:
    """The budget for a form's intermediates: ``MEMORY_BUDGET × (input + output)`` elements."""
    return MEMORY_BUDGET * (a["input"] + a["output"])


def chunks(a: dict[str, int]) -> tuple[int, int]:
    """``(batch slices, row slices)`` of the chunked tap loop: the fewest equal slices of the
    batch (a divisor of ``N``, at least ``_MIN_SLICE`` samples each) that fit the budget; else
    the fewest equal slices of the output's first spatial axis that do (a few samples' volume,
    conv3d's single sample); ``(1, 1)`` (the plain loop) where none does."""
    n, rows, budget = a["batch"], a["rows"], room(a)
    batch = next((b for b in range(1, n // _MIN_SLICE + 1)
                  if n % b == 0 and chunked_memory(a, b, 1) <= budget), None)
    if batch is not None:
        return batch, 1
    return 1, next((r for r in range(2, rows + 1) if rows % r == 0 and chunked_memory(a, 1, r) <= budget), 1)


def chunked_loop_memory(a: dict[str, int]) -> int:
    """The chunked tap loop (``loops.chunked_loop_conv``) with the slices ``chunks`` picks."""
    return chunked_memory(a, *chunks(a))
