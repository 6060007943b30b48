r"""Unrolled forms of the conv pieces that reorder the sum for XLA's CPU backend.

Each computes exactly the map of its piece (``pieces``), in an order of operations XLA runs
faster for some shapes; ``rules`` says where each is a candidate and why:

- **depthwise** (``C/g = 1``, ``g > 1``): the weight gradient as a fused multiply-and-sum per
  tap, ``dw[g·M + m, 0, k] = Σ_{n,i} x_pad[n, g, i·s + k·d] · dy[n, g·M + m, i]``, instead of
  XLA's grouped convolution of 1×1 blocks; and its tap loop.
- **sample-batched weight gradient** (one group): per tap, one matmul per sample batched over
  ``n``, summed after.
- **im2col** (few channels per group): the ``∏K`` tap slices stacked along a tap axis, one
  contraction of depth ``∏K·C/g`` instead of ``∏K`` of depth ``C/g``.
- **single channel** (one group, ``C = 1``): the forward as a sum of broadcast products, one
  fused loop.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._conv.loops import loop_stack
from jaxcnn._conv.pieces import (contract, conv_operands, conv_output_sizes, output_dtype, stack_taps,
                                 sum_dtype, tap_window, zero_pad)
from jaxcnn._shapes import ConvSpec, kernel_sizes, spatial_sizes
from jaxcnn._taps import offsets, tap_offsets, tap_reader


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
    """``depthwise_weight_grad`` one tap at a time (a tap loop, as ``loops``)."""
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


# ----------------------------------------------------------------------------- one input channel


def single_channel_conv(x, w, spec: ConvSpec):
    """One group, one input channel (a first layer on grey images or clips):
    ``y[n, o, i] = Σ_k x_pad[n, 0, i·s + k·d] · w[o, 0, k]``, each tap a product of its slice of
    ``x_pad`` broadcast over ``o``, which XLA's CPU compiler fuses with the sum over the taps
    into one loop over the output; its convolution of a single channel (and the 3D depth fold's)
    spends most of its time on a contraction of depth 1."""
    x_pad, k_sizes, out, act_axis = conv_operands(x, w, spec)
    total = sum_dtype(spec, x.dtype)
    broadcast = [1] * x.ndim
    broadcast[act_axis] = -1
    y = None
    for offset in offsets(k_sizes):
        index = [slice(None)] * w.ndim
        for axis, k in zip(spec.kernel_spatial_axes(), offset):
            index[axis] = k
        term = (x_pad[tap_window(spec, offset, out, x.ndim)].astype(total)
                * w[tuple(index)].astype(total).reshape(broadcast))
        y = term if y is None else y + term
    return y.astype(output_dtype(spec, x.dtype))
