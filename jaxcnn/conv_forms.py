r"""Faster forms of the conv family's three pieces, and the rule that picks one per shape.

Every form computes exactly the map of its piece (``jaxcnn.conv_impls``), in an order of
operations XLA runs faster for some shapes; each is linear in each operand, so the VJP family
(every piece's transpose is another piece) is untouched. ``choose`` is called when a primitive
is lowered, with static shapes, so the choice costs nothing at run time. Measured on a 2-core
CPU (BENCHMARKS.md, "Where the time goes"):

- **depthwise** (``C/g = 1``, ``g > 1``): XLA's grouped convolution runs 1×1 blocks at ~0.3 %
  of peak. The manual tap sum is an elementwise multiply per tap (20–28× faster forward), and
  the weight gradient a multiply-and-sum per tap:
  ``dw[g·M + m, 0, k] = Σ_{n,i} x_pad[n, g, i·s + k·d] · dy[n, g·M + m, i]``.
- **fold depth** (n = 3, one group): XLA's CPU backend sends 2D convolutions to its fast
  library and 3D ones to a generic loop (4–12 % of peak). Stack the ``K_d`` depth taps
  ``x_pad[t·s + k·d]`` into the channels and run one 2D conv over batch ``N·D_out``:
  ``y[n, t] = Σ_k conv2d(x_pad[n, t·s + k·d], w[k])``. Its transpose is one 2D input gradient
  with the depth taps as extra output channels, ``G[t, k] = input_grad2d(dy[t], w[k])``, added
  back where they were read, ``dx_pad[t·s + k·d] += G[t, k]`` (col2im on depth alone).
- **2D and 3D weight gradient** (one group): XLA computes it as a convolution whose "kernel"
  is the whole of ``dy`` (0.9–4.7× the forward's time). Per-tap matmuls (the manual form)
  are 1.3–3.6× faster; with ``N ≥ 4`` samples and a small ``C × O`` tap they run batched over
  the samples and summed after, 2.5–4× faster than XLA's (the long contraction over
  ``(n, i)`` of a small output is the shape XLA's CPU matmul cannot parallelise).
- **im2col** (``impl="manual"``, ``1 < C/g ≤ 4``): with few input channels each tap's
  contraction is a matmul of depth ``C/g`` that writes the whole output; stacking the ``∏K``
  slices along a tap axis makes one contraction of depth ``∏K·C/g`` (the 3-channel 7×7 stem:
  6–9× faster forward).

The depthwise, fold-depth and channels-last forms are CPU lowerings of ``impl="lax"`` (on a
GPU, cuDNN handles grouped and 3D convolutions itself); im2col and the depthwise weight
gradient are ``impl="manual"`` forms everywhere (no convolution primitive in either).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._args import ConvSpec
from jaxcnn._shapes import conv_output_size, kernel_sizes, spatial_sizes
from jaxcnn._taps import crop, offsets, pad_axes, place, window
from jaxcnn.conv_impls import (IMPLS, contract, conv_output_sizes, lax_conv, lax_input_grad,
                               manual_conv, manual_input_grad, manual_weight_grad, output_dtype,
                               stack_taps, sum_dtype, tap_window, zero_pad)


PIECES = ("conv", "input_grad", "weight_grad")


def _channels_per_group(shape: tuple[int, ...], spec: ConvSpec) -> int:
    return shape[spec.channel_axis()] // spec.groups


# ----------------------------------------------------------------------------- depthwise


def depthwise_weight_grad(x, dy, spec: ConvSpec, w_shape):
    """``dw[g·M + m, 0, k] = Σ_{n,i} x_pad[n, g, i·s + k·d] · dy[n, g·M + m, i]`` per tap ``k``
    (one input channel per group, channel multiplier ``M = O/g``): a fused multiply-and-sum
    instead of a batched matmul of 1×1 blocks."""
    x_pad = zero_pad(x, spec, spec.padding)
    out = spatial_sizes(dy.shape, spec)
    g, acc = spec.groups, sum_dtype(spec, x.dtype)
    if spec.channels_last:          # x slice (N, *O, G, 1) × dy (N, *O, G, M) → (G, M) per tap
        dy_g = dy.reshape(*dy.shape[:-1], g, dy.shape[-1] // g).astype(acc)
        axes = tuple(range(dy.ndim - 1))
        taps = [jnp.sum(x_pad[tap_window(spec, k, out, x.ndim)][..., None].astype(acc) * dy_g, axis=axes)
                for k in offsets(kernel_sizes(w_shape, spec))]
        return jnp.stack(taps).reshape(w_shape)                # (T, G, M) → (*K, 1, O)
    dy_g = dy.reshape(dy.shape[0], g, dy.shape[1] // g, *dy.shape[2:]).astype(acc)
    axes = (0, *range(3, dy_g.ndim))
    taps = [jnp.sum(x_pad[tap_window(spec, k, out, x.ndim)][:, :, None].astype(acc) * dy_g, axis=axes)
            for k in offsets(kernel_sizes(w_shape, spec))]
    return jnp.stack(taps, axis=-1).reshape(w_shape)           # (G, M, T) → (O, 1, *K)


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


# ----------------------------------------------------------------------------- fold depth


def _to_channels_last(a: jax.Array, spec: ConvSpec, kernel: bool = False) -> jax.Array:
    """An activation ``(N, *S, C)`` or kernel ``(*K, C, O)`` in channels-last layout."""
    if spec.channels_last:
        return a
    return jnp.moveaxis(a, (0, 1), (-1, -2)) if kernel else jnp.moveaxis(a, 1, -1)


def _to_channels_first(a: jax.Array, spec: ConvSpec, kernel: bool = False) -> jax.Array:
    """Undo ``_to_channels_last``."""
    if spec.channels_last:
        return a
    return jnp.moveaxis(a, (-1, -2), (0, 1)) if kernel else jnp.moveaxis(a, -1, 1)


_DEPTH = (1,)   # the depth axis of a channels-last activation (N, D, *S', C)


def _without_depth(spec: ConvSpec) -> ConvSpec:
    """The spec of the (n−1)-D conv over the remaining axes, channels last."""
    return spec.replace(stride=spec.stride[1:], padding=spec.padding[1:],
                        dilation=spec.dilation[1:], channels_last=True)


def _fold_kernel(w_last: jax.Array) -> jax.Array:
    """``(K_d, *K', C, O)`` → ``(*K', K_d·C, O)``: depth taps stacked tap-major into C."""
    k_depth, *inner, c, o = w_last.shape
    return jnp.moveaxis(w_last, 0, -3).reshape(*inner, k_depth * c, o)


def fold_depth_conv(x, w, spec: ConvSpec):
    """``y[n, t] = Σ_k conv_{n−1}(x_pad[n, t·s + k·d], w[k])`` as one (n−1)-D conv over batch
    ``N·D_out`` with the ``K_d`` depth taps stacked into the channels."""
    x_last, w_last = _to_channels_last(x, spec), _to_channels_last(w, spec, kernel=True)
    k_depth = w_last.shape[0]
    (lo, hi), s, d = spec.padding[0], spec.stride[0], spec.dilation[0]
    out_depth = conv_output_size(x_last.shape[1], k_depth, s, d, lo, hi)
    x_pad = pad_axes(x_last, _DEPTH, ((lo, hi),))
    taps = jnp.stack([x_pad[window((k,), (out_depth,), (s,), (d,), _DEPTH, x.ndim)]
                      for k in range(k_depth)], axis=-2)       # (N, D_out, *S', K_d, C)
    folded = taps.reshape(taps.shape[0] * taps.shape[1], *taps.shape[2:-2], taps.shape[-2] * taps.shape[-1])
    y = lax_conv(folded, _fold_kernel(w_last), _without_depth(spec))
    return _to_channels_first(y.reshape(x_last.shape[0], out_depth, *y.shape[1:]), spec)


def fold_depth_input_grad(dy, w, spec: ConvSpec, in_shape):
    """The transpose of ``fold_depth_conv``: ``G[t, k] = input_grad_{n−1}(dy[t], w[k])`` as one
    input gradient with the depth taps as extra channels, then ``dx_pad[t·s + k·d] += G[t, k]``."""
    dy_last, w_last = _to_channels_last(dy.astype(w.dtype), spec), _to_channels_last(w, spec, kernel=True)
    k_depth, c = w_last.shape[0], w_last.shape[-2]
    n, out_depth = dy_last.shape[:2]
    in_last = tuple(in_shape) if spec.channels_last else (in_shape[0], *in_shape[2:], in_shape[1])
    inner_shape = (n * out_depth, *in_last[2:-1], k_depth * c)
    g = lax_input_grad(dy_last.reshape(n * out_depth, *dy_last.shape[2:]), _fold_kernel(w_last),
                       _without_depth(spec), inner_shape).astype(w.dtype)
    g = g.reshape(n, out_depth, *in_last[2:-1], k_depth, c)
    (lo, hi), s, d = spec.padding[0], spec.stride[0], spec.dilation[0]
    padded = in_last[1] + lo + hi
    dx_pad = None
    for k in range(k_depth):    # tap k of output t lands on t·s + k·d: k·d below, s − 1 between
        part = place(g[..., k, :], (k,), (out_depth,), (s,), (d,), _DEPTH, (padded,))
        dx_pad = part if dx_pad is None else dx_pad + part
    # Crop the padding back off; a negative side (conv_transpose's output_padding) means
    # samples the conv never read, whose gradient is zero.
    return _to_channels_first(crop(dx_pad, _DEPTH, ((lo, hi),)), spec)


# ----------------------------------------------------------------------------- the choice


def choose(piece: str, impl: str, spec: ConvSpec, in_shape: tuple[int, ...],
           w_shape: tuple[int, ...], platform: str | None) -> Callable:
    """The function that computes ``piece`` of ``impl`` for a conv whose input ``x`` has
    ``in_shape`` and kernel ``w`` has ``w_shape``; ``platform`` is the lowering's (``"cpu"``)
    or None for the generic lowering. Every candidate computes the same map; the rules are
    the measurements of the module docstring."""
    index = PIECES.index(piece)
    c_per_group = _channels_per_group(in_shape, spec)
    depthwise = spec.groups > 1 and c_per_group == 1
    if impl == "manual":
        if piece == "weight_grad" and platform == "cpu" and spec.n >= 2 and spec.groups == 1:
            form = _cpu_weight_grad(spec, in_shape, w_shape)
            if form is not IMPLS["lax"][2]:     # manual never falls back to a conv primitive
                return form
        if 1 < c_per_group <= 4 and piece != "input_grad":
            return (im2col_conv, None, im2col_weight_grad)[index]
        if depthwise and piece == "weight_grad":
            return depthwise_weight_grad
        return IMPLS["manual"][index]
    if platform == "cpu":
        if depthwise:
            return (manual_conv, manual_input_grad, depthwise_weight_grad)[index]
        if piece == "weight_grad" and spec.n >= 2 and spec.groups == 1:
            return _cpu_weight_grad(spec, in_shape, w_shape)
        if spec.n == 3 and spec.groups == 1:
            return (fold_depth_conv, fold_depth_input_grad)[index]
    return IMPLS["lax"][index]


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
