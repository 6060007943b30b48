r"""Faster forms of the conv family's three pieces, and the rule that picks one per shape.

Every form computes exactly the map of its piece (``jaxcnn.conv_impls``), in an order of
operations XLA runs faster for some shapes; each is linear in each operand, so the VJP family
(every piece's transpose is another piece) is untouched. ``choose`` is called when a primitive
is lowered, with static shapes, so the choice costs nothing at run time. Measured on a 2-core
CPU (BENCHMARKS.md, "Where the time goes"):

- **native** (``jaxcnn.conv_native``; channels last, one group, float32, ``C ≥ 8``): C++
  kernels called as FFI custom calls, register-blocked sums over a table of input rows, for
  each piece in 1D, 2D and 3D where they apply (the input gradient at stride 1); first where
  they do (fwd+bwd of the bench's eligible rows 0.12–0.91× ``jax.grad`` of lax). The forms below
  serve every other dtype, layout and shape, and every machine without a compiler.
- **depthwise** (``C/g = 1``, ``g > 1``): XLA's grouped convolution runs 1×1 blocks at ~0.3 %
  of peak. The manual tap sum is an elementwise multiply per tap (20–28× faster forward), and
  the weight gradient a multiply-and-sum per tap:
  ``dw[g·M + m, 0, k] = Σ_{n,i} x_pad[n, g, i·s + k·d] · dy[n, g·M + m, i]``.
- **fold depth** (n = 3, one group; ``jaxcnn.conv_depth``): XLA's CPU backend sends 2D
  convolutions to its fast library and 3D ones to a generic loop (4–12 % of peak). A 3D conv
  is a sum over its ``K_d`` depth taps of 2D convs over a batch of ``N·D_out`` depth slices:
  the taps stacked into the channels (one 2D conv; ``K_d`` copies of the input), or, where
  those do not fit the memory budget, a loop over the taps (one depth slice alive at a time;
  the clips model's 16 → 32 layer fwd+bwd 24 vs 67 ms for lax's 3D convolution).
- **2D and 3D weight gradient** (one group): XLA computes it as a convolution whose "kernel"
  is the whole of ``dy`` (0.9–4.7× the forward's time). Per-tap matmuls (the manual form)
  are 1.3–3.6× faster; with ``N ≥ 4`` samples and a small ``C × O`` tap they run batched over
  the samples and summed after, 2.5–4× faster than XLA's (the long contraction over
  ``(n, i)`` of a small output is the shape XLA's CPU matmul cannot parallelise).
- **im2col** (``impl="manual"``, ``1 < C/g ≤ 4``): with few input channels each tap's
  contraction is a matmul of depth ``C/g`` that writes the whole output; stacking the ``∏K``
  slices along a tap axis makes one contraction of depth ``∏K·C/g`` (the 3-channel 7×7 stem:
  6–9× faster forward).

Memory weighs as much as time: each form's intermediates are estimated from shapes
(``FORM_MEMORY``; an unrolled tap sum holds ``∏K`` slices, XLA's CPU compiler computing every
tap before summing) and a form is used only within ``MEMORY_BUDGET`` of its piece's
activations; otherwise the next candidate: the tap loops of ``jaxcnn.conv_loops`` (one tap
alive at a time; the manual forward's over slices of the batch, or of the output's rows, where
the whole loop does not fit), and at last the one-lax-call piece (``impl="lax"``). fwd+bwd stays
within 1.5× (lax) of the compiled temp memory of ``jax.grad`` of lax on every bench row
(``experiments/bench/memory.md``).

The native, depthwise, fold-depth and channels-last forms are CPU lowerings of ``impl="lax"`` (on a
GPU, cuDNN handles grouped and 3D convolutions itself); im2col and the depthwise weight
gradient are ``impl="manual"`` forms everywhere (no convolution primitive in either).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import conv_native, conv_tuning
from jaxcnn._args import ConvSpec
from jaxcnn._primitives import custom_calls_allowed
from jaxcnn._shapes import (dilated_size, kernel_sizes, output_sizes,
                            spatial_sizes)
from jaxcnn._taps import offsets
from jaxcnn.conv_depth import (depth_tap_conv, depth_tap_input_grad, fold_depth_conv,
                               fold_depth_input_grad, fold_depth_weight_grad)
from jaxcnn.conv_loops import (loop_conv, loop_input_grad, loop_sample_batched_weight_grad, loop_stack,
                                loop_weight_grad, tap_offsets, tap_reader)
from jaxcnn.conv_impls import (IMPLS, contract, conv_output_sizes,
                               manual_conv, manual_input_grad, manual_weight_grad, output_dtype,
                               stack_taps, sum_dtype, tap_window, zero_pad)


PIECES = ("conv", "input_grad", "weight_grad")


def _channels_per_group(shape: tuple[int, ...], spec: ConvSpec) -> int:
    return shape[spec.channel_axis()] // spec.groups


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
``impl="lax"`` the one-lax-call piece). Keeps fwd+bwd within ~1.5× (lax) and ~2× (manual) the
compiled temp memory of ``jax.grad`` of lax."""


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


def _unrolled(a):
    return a["padded"] + a["taps"] * max(a["slice"], a["output"])


FORM_MEMORY: dict[str, Callable[[dict[str, int]], int]] = {   # form name → elements
    "manual_conv": _unrolled,
    "manual_input_grad": lambda a: a["padded"] + a["taps"] * a["dilated"],
    "manual_weight_grad": _unrolled,
    "sample_batched_weight_grad": _unrolled,
    "depthwise_weight_grad": _unrolled,
    "im2col_conv": lambda a: a["padded"] + 2 * a["taps"] * a["slice"],
    "im2col_weight_grad": lambda a: a["padded"] + 2 * a["taps"] * a["slice"],
    "fold_depth_conv": lambda a: 2 * a["depth_taps"] * a["depth_slice"],
    "fold_depth_input_grad": lambda a: 2 * a["depth_taps"] * a["depth_slice"],
    "fold_depth_weight_grad": lambda a: 2 * a["depth_taps"] * a["depth_slice"],
    # The depth-tap loops: x_pad (or dx_pad; padded along depth only), one tap's depth slice,
    # and the tap's (n−1)-D result beside the accumulator (the forward's temp memory measured
    # within 2 % of this on the bench's 3D rows; the input gradient's is smaller, given the
    # same so that fwd+bwd stays within 1.5× jax.grad's: conv3d_3x3x3 N…C was 1.58 without).
    "depth_tap_conv": lambda a: a["depth_padded"] + a["depth_slice"] + a["output"],
    "depth_tap_input_grad": lambda a: a["depth_padded"] + a["depth_slice"] + a["output"],
    # A loop holds x_pad (or dx_pad), one tap's product and its accumulator (a lax conv feeds
    # its consumer's fusion directly: a depthwise loop_conv measured +0.9× jax.grad's memory).
    # A weight-gradient loop that reads dy channels first also holds a transposed copy of it
    # (``dy_copy``); the weight gradient's dot copies its slice too;
    # the depthwise tap is a fused multiply-and-sum. The input gradient adds each tap's
    # input-sized part onto the phases of dx_pad (no stride holes written).
    "loop_conv": lambda a: a["padded"] + 2 * a["output"],
    "loop_input_grad": lambda a: a["padded"] + a["slice"] + a["output"],
    "loop_weight_grad": lambda a: a["padded"] + a["slice"] + a["dy_copy"],
    "loop_sample_batched_weight_grad": lambda a: a["padded"] + a["slice"] + a["dy_copy"],
    "loop_depthwise_weight_grad": lambda a: a["padded"] + a["output"],
    # Chunked over the batch: the stacked results and their reshaped copy, and per slice its
    # input, x_pad, accumulator and product. Over the output's rows: x_pad and the output,
    # and per slice the accumulator and product (conv3d_3x3x3 N…C fwd+bwd, 1 → 4 slices:
    # 3.73 → 2.97 MiB; 8 slices no less).
    "chunked_loop_conv": lambda a: _chunked_memory(a, *_chunks(a)),
}


def _chunked_memory(a: dict[str, int], batch: int, rows: int) -> int:
    if batch > 1:
        return 2 * a["output"] + (a["input"] + a["padded"] + 2 * a["output"]) // batch
    if rows > 1:
        return a["padded"] + a["output"] + 2 * a["output"] // rows
    return FORM_MEMORY["loop_conv"](a)


_MIN_SLICE = 8   # samples per slice: per-sample slices of conv1d_k7 (N = 8) held more, not less


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


def _elements(form: Callable, a: dict[str, int]) -> int:
    model = FORM_MEMORY.get(form.__name__)
    return 0 if model is None else model(a)


def form_memory(form: Callable, spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int:
    """Estimated intermediate elements of ``form`` (0 for the one-lax-call pieces)."""
    return _elements(form, activation_sizes(spec, in_shape, w_shape))


def fits(form: Callable, spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> bool:
    """Whether ``form``'s intermediates fit the budget (``MEMORY_BUDGET``)."""
    a = activation_sizes(spec, in_shape, w_shape)
    return _elements(form, a) <= _room(a)


# ----------------------------------------------------------------------------- the choice

LOOPS = (chunked_loop_conv, loop_input_grad, loop_weight_grad)   # manual's last resorts


def candidates(piece: str, impl: str, spec: ConvSpec, in_shape: tuple[int, ...],
               w_shape: tuple[int, ...], platform: str | None, dtype: Any = None) -> list[Callable]:
    """The forms that compute ``piece`` of ``impl`` on operands of ``dtype``, fastest first (the
    measurements of the module docstring); the last one always fits (``fits``): the tap loop or
    the lax piece."""
    index = PIECES.index(piece)
    c_per_group = _channels_per_group(in_shape, spec)
    depthwise = spec.groups > 1 and c_per_group == 1
    depthwise_forms = ((manual_conv, loop_conv), (manual_input_grad, loop_input_grad),
                       (depthwise_weight_grad, loop_depthwise_weight_grad))[index]
    forms: list[Callable] = []
    if impl == "manual":
        if piece == "weight_grad" and platform == "cpu" and spec.n >= 2 and spec.groups == 1:
            form = _cpu_weight_grad(spec, in_shape, w_shape)
            if form is not IMPLS["lax"][2]:     # manual never falls back to a conv primitive
                forms += [form, _looped(form)]
        if 1 < c_per_group <= 4 and piece != "input_grad":
            forms.append((im2col_conv, None, im2col_weight_grad)[index])
        if depthwise and piece == "weight_grad":
            forms.extend(depthwise_forms)
        return forms + [IMPLS["manual"][index], *([loop_conv] if piece == "conv" else []), LOOPS[index]]
    if platform == "cpu":
        if _native(piece, spec, in_shape, w_shape, dtype):
            forms.append(conv_native.FORMS[piece])
        if depthwise:
            forms.extend(depthwise_forms)
        elif piece == "weight_grad" and spec.n >= 2 and spec.groups == 1 and not _thin_many_taps(spec, c_per_group, w_shape):
            form = _cpu_weight_grad(spec, in_shape, w_shape)
            # The plain per-tap loop only in 3D, where XLA's weight gradient is the generic loop
            # (clips 16 → 32: 12 vs 32 ms); in 2D the library's convolution beat it on some rows
            # and lost on others (resnet3x3_64 N…C 1.27×, resnet3x3_256 N…C 0.81×). The
            # sample-batched loop wins in both (fashion_conv2 N…C 0.75×).
            loop = [_looped(form)] if spec.n == 3 or form is sample_batched_weight_grad else []
            forms.extend([form, *loop] if form is not IMPLS["lax"][2] else [])
            if spec.n == 3 and kernel_sizes(w_shape, spec)[0] * c_per_group <= _THIN_FOLD:
                forms.insert(0, fold_depth_weight_grad)
        elif spec.n == 3 and spec.groups == 1 and piece != "weight_grad":
            forms.extend(((fold_depth_conv, depth_tap_conv), (fold_depth_input_grad, depth_tap_input_grad))[index])
    return forms + [IMPLS["lax"][index]]


def _native(piece: str, spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...],
            dtype: Any) -> bool:
    """The native kernels (``jaxcnn.conv_native``) wherever they compute the piece: fwd+bwd of
    the bench's eligible conv rows, channels last, 0.12–0.91× ``jax.grad`` of lax where the
    XLA forms ran 0.13–1.08× in the same run (resnet3x3_64 0.49 vs 1.00, fashion_conv2 0.51 vs
    0.75, conv3d_3x3x3 0.12 vs 0.13); the clips model's 16 → 32 layer at 8³, 64 clips,
    forward / input gradient / weight gradient ~3.5 / 5 / 3.7 ms vs 6.0 / 6.7 / 8.1 for the
    depth-tap loops. Not where the lowering takes no custom call (``custom_calls_allowed``: an
    op XLA's partitioner splits over devices, a program for ``jax.export``)."""
    return custom_calls_allowed() and conv_native.supports(piece, spec, in_shape, w_shape, dtype)


_THIN_FOLD = 32
"""A 3D weight gradient with at most this many folded channels (``K_d·C``) runs as one 2D
weight gradient of the folded input (``fold_depth_weight_grad``): the clips model's 1 → 16
layer (64 × 8 × 16² samples, 3 folded channels) 5.7 vs 9.4 ms for the sample-batched tap loop,
clip3d_conv2 (24) 19 vs 65 ms where it fits; with 48 folded channels (16 → 32) 14.4 vs 13.2."""


def _thin_many_taps(spec: ConvSpec, c_per_group: int, w_shape: tuple[int, ...]) -> bool:
    """2D, at most 4 input channels and more than 9 taps (the 7×7 stem, mnist5x5): every tap of
    a per-tap weight gradient re-reads all of ``dy`` for a thin product, and XLA's one
    convolution is faster (mnist5x5 0.8 vs 1.2 ms); with 9 taps the loop wins (fashion_conv1,
    128 samples: 3.3 vs 5.5 ms)."""
    return spec.n == 2 and c_per_group <= 4 and math.prod(kernel_sizes(w_shape, spec)) > 9


def _looped(form: Callable) -> Callable:
    """The tap-loop twin of a per-tap weight-gradient form."""
    return loop_sample_batched_weight_grad if form is sample_batched_weight_grad else loop_weight_grad


def choose(piece: str, impl: str, spec: ConvSpec, in_shape: tuple[int, ...],
           w_shape: tuple[int, ...], platform: str | None, dtype: Any = None) -> Callable:
    """The function that computes ``piece`` of ``impl`` for a conv whose input ``x`` has
    ``in_shape`` and kernel ``w`` has ``w_shape``; ``platform`` is the lowering's (``"cpu"``)
    or None for the generic lowering: the first of ``candidates`` whose intermediates fit the
    memory budget. Every candidate computes the same map."""
    forms = candidates(piece, impl, spec, in_shape, w_shape, platform, dtype)
    forms = [f for f in forms[:-1] if fits(f, spec, in_shape, w_shape)] + forms[-1:]
    if len(forms) < 2 or not conv_tuning.enabled():
        return forms[0]
    return _measuring(piece, impl, spec, forms)


def _measuring(piece: str, impl: str, spec: ConvSpec, forms: list[Callable]) -> Callable:
    """A piece that, when lowered, runs the fastest of ``forms`` for its operands' shapes and
    dtype as ``conv_tuning.measured`` finds it (cached on disk), else the rule's (``forms[0]``)."""
    def piece_fn(a, b, spec_, *shape):
        def operands():
            rng = np.random.default_rng(0)
            return [rng.standard_normal(o.shape).astype(o.dtype) for o in (a, b)]
        key = conv_tuning.cache_key(piece, impl, spec_, (a.shape, b.shape, *shape), a.dtype)
        form = conv_tuning.measured(key, forms, operands,
                                    lambda f: lambda x, y: f(x, y, spec_, *shape)) or forms[0]
        return form(a, b, spec_, *shape)
    piece_fn.__name__ = f"measured_{piece}"
    return piece_fn


_SMALL_TAP = 4096


def _cpu_weight_grad(spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> Callable:
    """2D and 3D, one group: per-tap matmuls, batched over the samples when there are several
    and the tap's ``C × O`` output is small (≤ 4096: fashion_conv2 20 vs 51 ms, fashion_conv1
    4.7 vs 8.0, mnist5x5 2.0 vs 2.1; resnet3x3_256's 256 × 256 taps 24 vs 7.1 ms)."""
    o_ax, i_ax = spec.kernel_io_axes()
    if in_shape[0] >= 4 and w_shape[o_ax] * w_shape[i_ax] <= _SMALL_TAP:
        return sample_batched_weight_grad
    if spec.n == 2 and w_shape[i_ax] <= 4:   # the stem: few samples and channels, XLA's is as fast
        return IMPLS["lax"][2]
    return manual_weight_grad
