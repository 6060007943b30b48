r"""Faster forms of the conv family's three pieces, and the rule that picks one per shape.

Every form computes exactly the map of its piece (``jaxcnn.conv_impls``), in an order of
operations XLA runs faster for some shapes; each is linear in each operand, so the VJP family
(every piece's transpose is another piece) is untouched. ``choose`` is called when a primitive
is lowered, with static shapes, so the choice costs nothing at run time. The rule is a table:
``FORMS`` holds each form (its function and its memory model) and ``RULES`` each piece's
candidates, fastest first, each with the test of where it applies; ``candidates`` filters the
rules in order and ``choose`` takes the first that fits the memory budget. The measurements
behind the order are in BENCHMARKS.md ("Form choice: the measurements behind conv_forms'
table"). On CPU:

- **native** (``jaxcnn.conv_native``; channels last, one group, float32, ``C ≥ 8``): C++
  kernels called as FFI custom calls, register-blocked sums over a table of input rows, for
  each piece in 1D, 2D and 3D where they apply (the input gradient at stride 1); first where
  they do. The forms below serve every other dtype, layout and shape, and every machine
  without a compiler.
- **depthwise** (``C/g = 1``, ``g > 1``): XLA's grouped convolution runs 1×1 blocks far from
  peak. The manual tap sum is an elementwise multiply per tap, and the weight gradient a
  multiply-and-sum per tap:
  ``dw[g·M + m, 0, k] = Σ_{n,i} x_pad[n, g, i·s + k·d] · dy[n, g·M + m, i]``.
- **fold depth** (n = 3, one group; ``jaxcnn.conv_depth``): XLA's CPU backend sends 2D
  convolutions to its fast library and 3D ones to a generic loop. A 3D conv is a sum over its
  ``K_d`` depth taps of 2D convs over a batch of ``N·D_out`` depth slices: the taps stacked into
  the channels (one 2D conv; ``K_d`` copies of the input), or, where those do not fit the
  memory budget, a loop over the taps (one depth slice alive at a time).
- **2D and 3D weight gradient** (one group): XLA computes it as a convolution whose "kernel"
  is the whole of ``dy``. Per-tap matmuls (the manual form) are faster; with ``N ≥ 4`` samples
  and a small ``C × O`` tap they run batched over the samples and summed after (the long
  contraction over ``(n, i)`` of a small output is the shape XLA's CPU matmul cannot
  parallelise).
- **im2col** (``impl="manual"``, ``1 < C/g ≤ 4``): with few input channels each tap's
  contraction is a matmul of depth ``C/g`` that writes the whole output; stacking the ``∏K``
  slices along a tap axis makes one contraction of depth ``∏K·C/g``.

Memory weighs as much as time: each form's intermediates are estimated from shapes
(``Form.memory``; an unrolled tap sum holds ``∏K`` slices, XLA's CPU compiler computing every
tap before summing) and a form is used only within ``MEMORY_BUDGET`` of its piece's
activations; otherwise the next candidate: the tap loops of ``jaxcnn.conv_loops`` (one tap
alive at a time; the manual forward's over slices of the batch, or of the output's rows, where
the whole loop does not fit), and at last the one-lax-call piece (``impl="lax"``).

The native, depthwise, fold-depth and per-tap forms are CPU lowerings of ``impl="lax"`` (on a
GPU, cuDNN handles grouped and 3D convolutions itself); im2col and the depthwise weight
gradient are ``impl="manual"`` forms everywhere (no convolution primitive in either).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._conv import native, tuning
from jaxcnn._args import ConvSpec
from jaxcnn._primitives import custom_calls_allowed
from jaxcnn._shapes import (dilated_size, kernel_sizes, output_sizes,
                            spatial_sizes)
from jaxcnn._taps import offsets
from jaxcnn._conv.depth import (depth_tap_conv, depth_tap_input_grad, fold_depth_conv,
                               fold_depth_input_grad, fold_depth_weight_grad)
from jaxcnn._conv.loops import (loop_conv, loop_input_grad, loop_sample_batched_weight_grad, loop_stack,
                                loop_weight_grad, tap_offsets, tap_reader)
from jaxcnn._conv.pieces import (IMPLS, contract, conv_output_sizes, lax_conv, lax_input_grad, lax_weight_grad,
                               manual_conv, manual_input_grad, manual_weight_grad, output_dtype,
                               stack_taps, sum_dtype, tap_window, zero_pad)
from jaxcnn._conv.native import native_conv, native_input_grad, native_weight_grad


PIECES = ("conv", "input_grad", "weight_grad")


# ----------------------------------------------------------------------------- depthwise


def _depthwise_tap(xs: jax.Array, dy_g: jax.Array, spec: ConvSpec) -> jax.Array:
    """One tap of the depthwise weight gradient, ``(G, M)``: ``Σ_{n,i} xs[n, g, i] · dy[n, g, m, i]``."""
    acc = dy_g.dtype
    if spec.channels_last:          # xs (N, *O, G) × dy (N, *O, G, M)
        return jnp.sum(xs[..., None].astype(acc) * dy_g, axis=tuple(range(dy_g.ndim - 2)))
    return jnp.sum(xs[:, :, None].astype(acc) * dy_g, axis=(0, *range(3, dy_g.ndim)))


def _depthwise_operands(x, dy, spec: ConvSpec):
    """``x_pad``, ``dy`` split as ``(…, G, M, …)`` in the summing dtype, and the output sizes."""
    g, acc = spec.groups, sum_dtype(spec, x.dtype)
    if spec.channels_last:
        dy_g = dy.reshape(*dy.shape[:-1], g, dy.shape[-1] // g)
    else:
        dy_g = dy.reshape(dy.shape[0], g, dy.shape[1] // g, *dy.shape[2:])
    return zero_pad(x, spec, spec.padding), dy_g.astype(acc), spatial_sizes(dy.shape, spec)


def _depthwise_taps_to_kernel(taps: jax.Array, spec: ConvSpec, w_shape) -> jax.Array:
    """``(T, G, M)`` → ``(*K, 1, O)`` (channels last) or ``(O, 1, *K)`` (channels first)."""
    return (taps if spec.channels_last else jnp.moveaxis(taps, 0, -1)).reshape(w_shape)


def depthwise_weight_grad(x, dy, spec: ConvSpec, w_shape):
    """``dw[g·M + m, 0, k] = Σ_{n,i} x_pad[n, g, i·s + k·d] · dy[n, g·M + m, i]`` per tap ``k``
    (one input channel per group, channel multiplier ``M = O/g``): a fused multiply-and-sum
    instead of a batched matmul of 1×1 blocks."""
    x_pad, dy_g, out = _depthwise_operands(x, dy, spec)
    taps = [_depthwise_tap(x_pad[tap_window(spec, k, out, x.ndim)], dy_g, spec)
            for k in offsets(kernel_sizes(w_shape, spec))]
    return _depthwise_taps_to_kernel(jnp.stack(taps), spec, w_shape)


def loop_depthwise_weight_grad(x, dy, spec: ConvSpec, w_shape):
    """``depthwise_weight_grad`` one tap at a time (``jaxcnn.conv_loops``)."""
    x_pad, dy_g, out = _depthwise_operands(x, dy, spec)
    k_sizes = kernel_sizes(w_shape, spec)
    read_tap = tap_reader(x_pad, spec, out)
    taps = loop_stack(int(np.prod(k_sizes)), lambda t: _depthwise_tap(
        read_tap(tap_offsets(t, k_sizes)), dy_g, spec))
    return _depthwise_taps_to_kernel(taps, spec, w_shape)


# ----------------------------------------------------------------------------- weight gradient


def sample_batched_weight_grad(x, dy, spec: ConvSpec, w_shape):
    """``dw[k] = Σ_n (Σ_i x_pad[n, i·s + k·d] ⊗ dy[n, i])`` (one group): per tap, one matmul
    per sample batched over ``n``, then the sum over ``n``. The same products as one long
    contraction over ``(n, i)``, but XLA's CPU matmul cannot split a long contraction into
    parallel work when its output ``C × O`` is small; a batch of ``N`` short ones it can."""
    x_pad = zero_pad(x, spec, spec.padding)
    out = spatial_sizes(dy.shape, spec)
    dy = dy.astype(x.dtype)
    subscripts = "n...c,n...o->nco" if spec.channels_last else "nc...,no...->noc"
    taps = [contract(subscripts, x_pad[tap_window(spec, k, out, x.ndim)], dy, spec).sum(0)
            for k in offsets(kernel_sizes(w_shape, spec))]
    return stack_taps(taps, spec, w_shape)


# ----------------------------------------------------------------------------- im2col


def patches(x_pad: jax.Array, spec: ConvSpec, k_sizes: tuple[int, ...],
            out: tuple[int, ...]) -> jax.Array:
    """``(N, G, C/g, T, *O)`` (channels first) or ``(N, *O, T, G, C/g)``: tap ``t`` holds
    ``x_pad[i·s + k_t·d]``, ``T = ∏K`` in row-major order of the kernel."""
    slices = [x_pad[tap_window(spec, k, out, x_pad.ndim)] for k in offsets(k_sizes)]
    g = spec.groups
    if spec.channels_last:
        p = jnp.stack(slices, axis=-2)
        return p.reshape(*p.shape[:-1], g, p.shape[-1] // g)
    p = jnp.stack(slices, axis=2)
    n, c = p.shape[:2]
    return p.reshape(n, g, c // g, *p.shape[2:])


def im2col_conv(x, w, spec: ConvSpec):
    """``y[i] = Σ_{k,c} w[k, c] · x_pad[i·s + k·d, c]`` as one contraction over (tap, channel)."""
    k_sizes = kernel_sizes(w.shape, spec)
    out = conv_output_sizes(x.shape, k_sizes, spec)
    p = patches(zero_pad(x, spec, spec.padding), spec, k_sizes, out)
    g, t = spec.groups, int(np.prod(k_sizes))
    if spec.channels_last:                              # w (*K, C/g, O) → (T, C/g, G, O/g)
        y = contract("n...tgc,tcgo->n...go", p, w.reshape(t, w.shape[-2], g, w.shape[-1] // g), spec)
        y = y.reshape(*y.shape[:-2], w.shape[-1])
    else:                                               # w (O, C/g, *K) → (G, O/g, C/g, T)
        y = contract("ngct...,goct->ngo...", p, w.reshape(g, w.shape[0] // g, w.shape[1], t), spec)
        y = y.reshape(y.shape[0], w.shape[0], *y.shape[3:])
    return y.astype(output_dtype(spec, x.dtype))


def im2col_weight_grad(x, dy, spec: ConvSpec, w_shape):
    """``dw[k, c, o] = Σ_{n,i} x_pad[n, i·s + k·d, c] · dy[n, i, o]``: the stacked slices
    contracted with ``dy`` over (batch, positions), one matmul of depth ``N·∏S_out``."""
    out = spatial_sizes(dy.shape, spec)
    p = patches(zero_pad(x, spec, spec.padding), spec, kernel_sizes(w_shape, spec), out)
    g, dy = spec.groups, dy.astype(x.dtype)
    if spec.channels_last:                              # → (T, C/g, G, O/g) → (*K, C/g, O)
        dy_g = dy.reshape(*dy.shape[:-1], g, dy.shape[-1] // g)
        return contract("n...tgc,n...go->tcgo", p, dy_g, spec).reshape(w_shape)
    dy_g = dy.reshape(dy.shape[0], g, dy.shape[1] // g, *dy.shape[2:])
    return contract("ngct...,ngo...->goct", p, dy_g, spec).reshape(w_shape)


# ----------------------------------------------------------------------------- memory
# Each form's intermediates, in elements, from shapes alone (what XLA's CPU compiler was seen to
# hold at once, ``jaxcnn bench``'s temp-memory column): an unrolled tap sum holds every tap's
# slice or product, a loop one of them, a depth fold its stacked depth taps (and their copy).


MEMORY_BUDGET = 1.5
"""A form is used only if its intermediates fit in ``MEMORY_BUDGET × (input + output)`` elements
of its piece's activations; otherwise the next candidate (at last the lean tap loop, or for
``impl="lax"`` the one-lax-call piece). Chosen to keep fwd+bwd near the compiled temp memory of
``jax.grad`` of lax (BENCHMARKS.md, "Form choice")."""


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


def _none(a: dict[str, int]) -> int:
    """One lax call or one custom call: XLA's own temp memory, the yardstick of the budget."""
    return 0


def _unrolled(a: dict[str, int]) -> int:
    """x_pad and every tap's slice or product (XLA's CPU compiler computes all taps, then sums)."""
    return a["padded"] + a["taps"] * max(a["slice"], a["output"])


def _stacked_taps(a: dict[str, int]) -> int:
    """x_pad, the ``∏K`` stacked slices and their reshaped copy (im2col)."""
    return a["padded"] + 2 * a["taps"] * a["slice"]


def _folded_depth(a: dict[str, int]) -> int:
    """The ``K_0`` stacked depth slices and their folded copy."""
    return 2 * a["depth_taps"] * a["depth_slice"]


def _depth_tap_loop(a: dict[str, int]) -> int:
    """x_pad (or dx_pad; padded along depth only), one tap's depth slice, and the tap's (n−1)-D
    result beside the accumulator. The input gradient's is smaller, given the same so that
    fwd+bwd stays within the budget of ``jax.grad``'s."""
    return a["depth_padded"] + a["depth_slice"] + a["output"]


def _loop_conv_memory(a: dict[str, int]) -> int:
    """x_pad, one tap's product and its accumulator (a lax conv feeds its consumer directly)."""
    return a["padded"] + 2 * a["output"]


def _loop_input_grad_memory(a: dict[str, int]) -> int:
    """dx_pad, one tap's slice, and ``dy``: each tap's input-sized part is added onto the phases
    of dx_pad (no stride holes written)."""
    return a["padded"] + a["slice"] + a["output"]


def _loop_weight_grad_memory(a: dict[str, int]) -> int:
    """x_pad, the slice the tap's dot copies, and channels first a transposed copy of ``dy``."""
    return a["padded"] + a["slice"] + a["dy_copy"]


def _loop_depthwise_memory(a: dict[str, int]) -> int:
    """x_pad and one tap's fused multiply-and-sum, output-sized."""
    return a["padded"] + a["output"]


def _chunked_memory(a: dict[str, int], batch: int, rows: int) -> int:
    """The tap loop over ``batch`` slices of the batch (the stacked results and their reshaped
    copy, and per slice its input, x_pad, accumulator and product) or over ``rows`` slices of the
    output's rows (x_pad and the output, and per slice the accumulator and product)."""
    if batch > 1:
        return 2 * a["output"] + (a["input"] + a["padded"] + 2 * a["output"]) // batch
    if rows > 1:
        return a["padded"] + a["output"] + 2 * a["output"] // rows
    return _loop_conv_memory(a)


_MIN_SLICE = 8
"""Samples per batch slice at least: smaller slices held more memory, not less."""


def _room(a: dict[str, int]) -> float:
    """The budget for a form's intermediates: ``MEMORY_BUDGET × (input + output)`` elements."""
    return MEMORY_BUDGET * (a["input"] + a["output"])


def _chunks(a: dict[str, int]) -> tuple[int, int]:
    """``(batch slices, row slices)`` of the chunked tap loop: the fewest equal slices of the
    batch (a divisor of ``N``, at least ``_MIN_SLICE`` samples each) that fit the budget; else
    the fewest equal slices of the output's first spatial axis that do (a few samples' volume,
    conv3d's single sample); ``(1, 1)`` (the plain loop) where none does."""
    n, rows, room = a["batch"], a["rows"], _room(a)
    batch = next((b for b in range(1, n // _MIN_SLICE + 1)
                  if n % b == 0 and _chunked_memory(a, b, 1) <= room), None)
    if batch is not None:
        return batch, 1
    return 1, next((r for r in range(2, rows + 1) if rows % r == 0 and _chunked_memory(a, 1, r) <= room), 1)


def chunked_loop_conv(x, w, spec: ConvSpec):
    """``loop_conv`` over slices of the batch or of the output's rows, as few as fit the memory
    budget (``_chunks``): the manual forward's last resort where the whole tap loop does not fit."""
    batch, rows = _chunks(activation_sizes(spec, x.shape, w.shape))
    return loop_conv(x, w, spec, batch_chunks=batch, row_chunks=rows)


# ----------------------------------------------------------------------------- the forms


@dataclasses.dataclass(frozen=True)
class Form:
    """One form of a piece: the function that computes it and its memory model, the estimated
    intermediate elements as a function of ``activation_sizes``."""

    function: Callable
    memory: Callable[[dict[str, int]], int]

    @property
    def name(self) -> str:
        return self.function.__name__


FORMS: tuple[Form, ...] = (
    Form(lax_conv, _none),
    Form(lax_input_grad, _none),
    Form(lax_weight_grad, _none),
    Form(native_conv, _none),
    Form(native_input_grad, _none),
    Form(native_weight_grad, _none),
    Form(manual_conv, _unrolled),
    Form(manual_input_grad, lambda a: a["padded"] + a["taps"] * a["dilated"]),
    Form(manual_weight_grad, _unrolled),
    Form(sample_batched_weight_grad, _unrolled),
    Form(depthwise_weight_grad, _unrolled),
    Form(im2col_conv, _stacked_taps),
    Form(im2col_weight_grad, _stacked_taps),
    Form(fold_depth_conv, _folded_depth),
    Form(fold_depth_input_grad, _folded_depth),
    Form(fold_depth_weight_grad, _folded_depth),
    Form(depth_tap_conv, _depth_tap_loop),
    Form(depth_tap_input_grad, _depth_tap_loop),
    Form(loop_conv, _loop_conv_memory),
    Form(loop_input_grad, _loop_input_grad_memory),
    Form(loop_weight_grad, _loop_weight_grad_memory),
    Form(loop_sample_batched_weight_grad, _loop_weight_grad_memory),
    Form(loop_depthwise_weight_grad, _loop_depthwise_memory),
    Form(chunked_loop_conv, lambda a: _chunked_memory(a, *_chunks(a))),
)
_BY_FUNCTION = {form.function: form for form in FORMS}


def form_of(function: Callable) -> Form:
    """The table's entry for ``function``; a function not in ``FORMS`` is an error, never a
    form that costs nothing."""
    try:
        return _BY_FUNCTION[function]
    except (KeyError, TypeError):
        raise KeyError(f"{getattr(function, '__name__', function)!r} is not a form of "
                       f"conv_forms.FORMS ({', '.join(f.name for f in FORMS)})") from None


def form_memory(form: Callable, spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int:
    """Estimated intermediate elements of ``form`` (0 for the one-lax-call and native pieces)."""
    return form_of(form).memory(activation_sizes(spec, in_shape, w_shape))


def fits(form: Callable, spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> bool:
    """Whether ``form``'s intermediates fit the budget (``MEMORY_BUDGET``)."""
    a = activation_sizes(spec, in_shape, w_shape)
    return form_of(form).memory(a) <= _room(a)


# ----------------------------------------------------------------------------- the rule


@dataclasses.dataclass(frozen=True)
class Case:
    """What the rule reads: one piece of one conv, as lowered."""

    piece: str
    impl: str
    spec: ConvSpec
    in_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    platform: str | None
    dtype: Any

    @property
    def channels_per_group(self) -> int:
        return self.in_shape[self.spec.channel_axis()] // self.spec.groups

    @property
    def depthwise(self) -> bool:
        return self.spec.groups > 1 and self.channels_per_group == 1

    @property
    def thin(self) -> bool:
        """``1 < C/g ≤ 4``: each tap's contraction is too shallow to be a good matmul."""
        return 1 < self.channels_per_group <= 4

    @property
    def lax_cpu(self) -> bool:
        """A CPU lowering of ``impl="lax"``: on a GPU cuDNN handles grouped and 3D convolutions."""
        return self.impl == "lax" and self.platform == "cpu"

    @property
    def manual(self) -> bool:
        return self.impl == "manual"


def _native(case: Case) -> bool:
    """The native kernels, wherever they compute the piece; not where the lowering takes no
    custom call (``custom_calls_allowed``: an op XLA's partitioner splits over devices, a
    program for ``jax.export``)."""
    return (case.lax_cpu and custom_calls_allowed()
            and native.supports(case.piece, case.spec, case.in_shape, case.w_shape, case.dtype))


def _depth_fold(case: Case) -> bool:
    """3D, one group, lax on CPU: XLA's CPU backend sends 2D convolutions to its fast library
    and 3D ones to a generic loop, so a 3D conv runs as a sum over its depth taps of 2D convs."""
    return case.lax_cpu and case.spec.n == 3 and case.spec.groups == 1


_THIN_FOLD = 32
"""A 3D weight gradient with at most this many folded channels (``K_d·C``) runs as one 2D
weight gradient of the folded input (``fold_depth_weight_grad``); with more, the per-tap forms
are as fast."""


def _thin_fold(case: Case) -> bool:
    return (_depth_fold(case)
            and kernel_sizes(case.w_shape, case.spec)[0] * case.channels_per_group <= _THIN_FOLD)


def _thin_many_taps(case: Case) -> bool:
    """2D, at most 4 input channels and more than 9 taps (the 7×7 stem, mnist5x5): every tap of
    a per-tap weight gradient re-reads all of ``dy`` for a thin product, and XLA's one
    convolution is faster; with 9 taps the loop wins."""
    return (case.spec.n == 2 and case.channels_per_group <= 4
            and math.prod(kernel_sizes(case.w_shape, case.spec)) > 9)


_SMALL_TAP = 4096
"""The largest ``C × O`` tap whose weight gradient runs batched over the samples."""


def _cpu_weight_grad(spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> Callable:
    """2D and 3D, one group: per-tap matmuls (XLA computes the weight gradient as a convolution
    whose "kernel" is the whole of ``dy``), batched over the samples when there are several
    and the tap's ``C × O`` output is small (≤ 4096): XLA's CPU matmul cannot split the long
    contraction over ``(n, i)`` of a small output into parallel work, a batch of ``N`` short
    ones it can. The 2D stem (few samples and channels): XLA's own is as fast."""
    o_ax, i_ax = spec.kernel_io_axes()
    if in_shape[0] >= 4 and w_shape[o_ax] * w_shape[i_ax] <= _SMALL_TAP:
        return sample_batched_weight_grad
    if spec.n == 2 and w_shape[i_ax] <= 4:
        return lax_weight_grad
    return manual_weight_grad


def _per_tap(form: Callable, *, loop: bool = False) -> Callable[[Case], bool]:
    """Where the per-tap CPU weight gradient (``_cpu_weight_grad``: 2D and 3D, one group) is
    ``form``; with ``loop``, its tap-loop twin. lax's skips the thin 2D kernels of many taps
    (``_thin_many_taps``), and takes the plain tap loop only in 3D, where XLA's weight gradient
    is the generic loop (in 2D XLA's convolution won on some rows and lost on others)."""
    def applies(case: Case) -> bool:
        spec = case.spec
        if case.platform != "cpu" or spec.n < 2 or spec.groups != 1 or case.piece != "weight_grad":
            return False
        if case.impl == "lax" and _thin_many_taps(case):
            return False
        if case.impl == "lax" and loop and form is manual_weight_grad and spec.n != 3:
            return False
        return _cpu_weight_grad(spec, case.in_shape, case.w_shape) is form
    return applies


def _thin_manual(case: Case) -> bool:
    """im2col: one contraction of depth ``∏K·C/g`` instead of ``∏K`` of depth ``C/g``."""
    return case.manual and case.thin


def _depthwise(case: Case) -> bool:
    """``C/g = 1``: XLA's grouped convolution runs 1×1 blocks; a tap sum is elementwise."""
    return case.depthwise and (case.manual or case.lax_cpu)


def _depthwise_lax(case: Case) -> bool:
    return case.depthwise and case.lax_cpu


@dataclasses.dataclass(frozen=True)
class Rule:
    """``function`` is a candidate wherever ``applies(case)``."""

    function: Callable
    applies: Callable[[Case], bool]


def _impl(impl: str) -> Callable[[Case], bool]:
    return lambda case: case.impl == impl


def _either(*tests: Callable[[Case], bool]) -> Callable[[Case], bool]:
    return lambda case: any(test(case) for test in tests)


_MANUAL = _impl("manual")

RULES: dict[str, tuple[Rule, ...]] = {
    # Fastest first; the last rule that applies is the last resort, used whatever its memory:
    # the lean tap loop (manual) or the one-lax-call piece (lax).
    "conv": (
        Rule(native_conv, _native),
        Rule(im2col_conv, _thin_manual),
        Rule(fold_depth_conv, _depth_fold),
        Rule(depth_tap_conv, _depth_fold),
        Rule(manual_conv, _either(_MANUAL, _depthwise_lax)),
        Rule(loop_conv, _either(_MANUAL, _depthwise_lax)),
        Rule(chunked_loop_conv, _MANUAL),
        Rule(lax_conv, _impl("lax")),
    ),
    "input_grad": (
        Rule(native_input_grad, _native),
        Rule(fold_depth_input_grad, _depth_fold),
        Rule(depth_tap_input_grad, _depth_fold),
        Rule(manual_input_grad, _either(_MANUAL, _depthwise_lax)),
        Rule(loop_input_grad, _either(_MANUAL, _depthwise_lax)),
        Rule(lax_input_grad, _impl("lax")),
    ),
    "weight_grad": (
        Rule(fold_depth_weight_grad, _thin_fold),
        Rule(native_weight_grad, _native),
        Rule(sample_batched_weight_grad, _per_tap(sample_batched_weight_grad)),
        Rule(loop_sample_batched_weight_grad, _per_tap(sample_batched_weight_grad, loop=True)),
        # On CPU the per-tap matmuls rank above im2col; elsewhere manual's own piece ranks below
        # it (the rules further down): one function, two places in the order.
        Rule(manual_weight_grad, _per_tap(manual_weight_grad)),
        Rule(loop_weight_grad, _per_tap(manual_weight_grad, loop=True)),
        Rule(im2col_weight_grad, _thin_manual),
        Rule(depthwise_weight_grad, _depthwise),
        Rule(loop_depthwise_weight_grad, _depthwise),
        Rule(manual_weight_grad, _MANUAL),
        Rule(loop_weight_grad, _MANUAL),
        Rule(lax_weight_grad, _impl("lax")),
    ),
}
LOOPS = (chunked_loop_conv, loop_input_grad, loop_weight_grad)   # manual's last resorts


def candidates(piece: str, impl: str, spec: ConvSpec, in_shape: tuple[int, ...],
               w_shape: tuple[int, ...], platform: str | None, dtype: Any = None) -> list[Callable]:
    """The forms that compute ``piece`` of ``impl`` on operands of ``dtype``, fastest first: the
    ``RULES`` of ``piece`` that apply, in order. The last is the last resort (the tap loop or
    the lax piece), used whether or not it fits."""
    if piece not in RULES:
        raise ValueError(f"piece: expected one of {PIECES}; got {piece!r}")
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {tuple(IMPLS)}; got {impl!r}")
    case = Case(piece, impl, spec, tuple(in_shape), tuple(w_shape), platform, dtype)
    return [rule.function for rule in RULES[piece] if rule.applies(case)]


def choose(piece: str, impl: str, spec: ConvSpec, in_shape: tuple[int, ...],
           w_shape: tuple[int, ...], platform: str | None, dtype: Any = None) -> Callable:
    """The function that computes ``piece`` of ``impl`` for a conv whose input ``x`` has
    ``in_shape`` and kernel ``w`` has ``w_shape``; ``platform`` is the lowering's (``"cpu"``)
    or None for the generic lowering: the first of ``candidates`` whose intermediates fit the
    memory budget. Every candidate computes the same map."""
    forms = candidates(piece, impl, spec, in_shape, w_shape, platform, dtype)
    forms = [f for f in forms[:-1] if fits(f, spec, in_shape, w_shape)] + forms[-1:]
    if len(forms) < 2 or not tuning.enabled():
        return forms[0]
    return _measuring(piece, impl, spec, forms)


def _measuring(piece: str, impl: str, spec: ConvSpec, forms: list[Callable]) -> Callable:
    """A piece that, when lowered, runs the fastest of ``forms`` for its operands' shapes and
    dtype as ``conv_tuning.measured`` finds it (cached on disk), else the rule's (``forms[0]``)."""
    def piece_fn(a, b, spec_, *shape):
        def operands():
            rng = np.random.default_rng(0)
            return [rng.standard_normal(o.shape).astype(o.dtype) for o in (a, b)]
        key = tuning.cache_key(piece, impl, spec_, (a.shape, b.shape, *shape), a.dtype)
        form = tuning.measured(key, forms, operands,
                                    lambda f: lambda x, y: f(x, y, spec_, *shape)) or forms[0]
        return form(a, b, spec_, *shape)
    piece_fn.__name__ = f"measured_{piece}"
    return piece_fn
