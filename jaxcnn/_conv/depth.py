r"""3D convolutions as 2D ones: the depth axis folded into the batch (CPU forms of ``impl="lax"``).

XLA's CPU backend sends 2D convolutions to its fast library and 3D ones to a generic loop
(4–12 % of peak). A 3D conv is a sum over its ``K_d`` depth taps of 2D convs, each over a batch
of ``N·D_out`` depth slices:

    ``y[n, t] = Σ_k conv2d(x_pad[n, t·s + k·d], w[k])``

and its input gradient the transpose of that, each depth tap's 2D input gradient added back
where the tap read (col2im on depth alone):

    ``dx_pad[n, t·s + k·d] += input_grad2d(dy[n, t], w[k])``

Two forms of each:

- **fold** (``fold_depth_*``): the ``K_d`` taps stacked into the channels, one 2D conv with
  ``K_d·C`` input (or, transposed, output) channels. Fastest; holds ``K_d`` copies of the input.
- **depth-tap loop** (``depth_tap_*``): a ``lax.fori_loop`` over the ``K_d`` taps, one 2D conv
  each, accumulated in place: one depth slice alive at a time (the memory of a plain conv).

Both run channels last inside (the fast library's layout) and return the caller's layout.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcnn._shapes import ConvSpec, conv_output_size
from jaxcnn._conv.pieces import lax_conv, lax_input_grad, lax_weight_grad
from jaxcnn._taps import crop, pad_axes, place, tap_reader, tap_sum_adjoint, window

_DEPTH = (1,)   # the depth axis of a channels-last activation (N, D, *S', C)


def _to_channels_last(a: jax.Array, spec: ConvSpec, kernel: bool = False) -> jax.Array:
    """An activation ``(N, *S, C)`` or kernel ``(*K, C, O)`` in channels-last layout."""
    if spec.channels_last:
        return a
    return jnp.moveaxis(a, (0, 1), (-1, -2)) if kernel else jnp.moveaxis(a, 1, -1)


def _to_channels_first(a: jax.Array, spec: ConvSpec, kernel: bool = False) -> jax.Array:
    """Undo ``_to_channels_last``: back in the spec's layout."""
    if spec.channels_last:
        return a
    return jnp.moveaxis(a, (-1, -2), (0, 1)) if kernel else jnp.moveaxis(a, -1, 1)


def _without_depth(spec: ConvSpec) -> ConvSpec:
    """The spec of the (n−1)-D conv over the remaining axes, channels last."""
    return spec.replace(stride=spec.stride[1:], padding=spec.padding[1:],
                        dilation=spec.dilation[1:], channels_last=True)


def _depth_spec(spec: ConvSpec) -> ConvSpec:
    """The depth axis alone, as ``jaxcnn._taps.tap_reader`` and ``tap_sum_adjoint`` see it: the
    one spatial axis (1) of a channels-last activation ``(N, D, *S', C)``."""
    return spec.replace(stride=spec.stride[:1], padding=spec.padding[:1],
                        dilation=spec.dilation[:1], channels_last=True)


def _depth_geometry(spec: ConvSpec, in_depth: int, k_depth: int) -> tuple[int, int]:
    """``(D_out, D_pad)``: the output depth and the zero-padded input depth."""
    (lo, hi), s, d = spec.padding[0], spec.stride[0], spec.dilation[0]
    return conv_output_size(in_depth, k_depth, s, d, lo, hi), in_depth + lo + hi


def _last_shape(shape: tuple[int, ...], spec: ConvSpec) -> tuple[int, ...]:
    return tuple(shape) if spec.channels_last else (shape[0], *shape[2:], shape[1])


def _batched(a: jax.Array) -> jax.Array:
    """``(N, D, *S', C)`` → ``(N·D, *S', C)``: depth slices as a batch of (n−1)-D inputs."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


# ----------------------------------------------------------------------------- fold


def _fold_kernel(w_last: jax.Array) -> jax.Array:
    """``(K_d, *K', C, O)`` → ``(*K', K_d·C, O)``: depth taps stacked tap-major into C."""
    k_depth, *inner, c, o = w_last.shape
    return jnp.moveaxis(w_last, 0, -3).reshape(*inner, k_depth * c, o)


def _folded_input(x, spec: ConvSpec, k_depth: int) -> tuple[jax.Array, int]:
    """``(N·D_out, *S', K_d·C)``: the ``K_d`` strided depth slices of ``x_pad`` (channels last)
    stacked tap-major into the channels, and ``D_out``."""
    out_depth, _ = _depth_geometry(spec, x.shape[1], k_depth)
    x_pad = pad_axes(x, _DEPTH, spec.padding[:1])
    s, d = spec.stride[0], spec.dilation[0]
    taps = jnp.stack([x_pad[window((k,), (out_depth,), (s,), (d,), _DEPTH, x.ndim)]
                      for k in range(k_depth)], axis=-2)       # (N, D_out, *S', K_d, C)
    return _batched(taps.reshape(*taps.shape[:-2], taps.shape[-2] * taps.shape[-1])), out_depth


def fold_depth_conv(x, w, spec: ConvSpec):
    """``y[n, t] = Σ_k conv_{n−1}(x_pad[n, t·s + k·d], w[k])`` as one (n−1)-D conv over batch
    ``N·D_out`` with the ``K_d`` depth taps stacked into the channels."""
    x_last, w_last = _to_channels_last(x, spec), _to_channels_last(w, spec, kernel=True)
    folded, out_depth = _folded_input(x_last, spec, w_last.shape[0])
    y = lax_conv(folded, _fold_kernel(w_last), _without_depth(spec))
    return _to_channels_first(y.reshape(x_last.shape[0], out_depth, *y.shape[1:]), spec)


def fold_depth_weight_grad(x, dy, spec: ConvSpec, w_shape):
    """The transpose of ``fold_depth_conv`` in ``w``: ``dw[k] = Σ_t weight_grad_{n−1}(x_pad[t·s
    + k·d], dy[t])`` as one (n−1)-D weight gradient of the folded input (``K_d·C`` channels)
    against ``dy`` over batch ``N·D_out``, unstacked: ``(*K', K_d·C, O)`` → ``(K_d, *K', C, O)``."""
    x_last, dy_last = _to_channels_last(x, spec), _to_channels_last(dy.astype(x.dtype), spec)
    k_depth = w_shape[spec.kernel_spatial_axes()[0]]
    o_ax, i_ax = spec.kernel_io_axes()
    c, o = w_shape[i_ax], w_shape[o_ax]
    folded, _ = _folded_input(x_last, spec, k_depth)
    inner_k = [w_shape[a] for a in spec.kernel_spatial_axes()[1:]]
    dw = lax_weight_grad(folded, _batched(dy_last), _without_depth(spec), (*inner_k, k_depth * c, o))
    dw = jnp.moveaxis(dw.reshape(*inner_k, k_depth, c, o), -3, 0)      # (K_d, *K', C, O)
    return _to_channels_first(dw, spec, kernel=True)


def fold_depth_input_grad(dy, w, spec: ConvSpec, in_shape):
    """The transpose of ``fold_depth_conv``: ``G[t, k] = input_grad_{n−1}(dy[t], w[k])`` as one
    input gradient with the depth taps as extra channels, then ``dx_pad[t·s + k·d] += G[t, k]``."""
    dy_last, w_last = _to_channels_last(dy.astype(w.dtype), spec), _to_channels_last(w, spec, kernel=True)
    k_depth, c = w_last.shape[0], w_last.shape[-2]
    n, out_depth = dy_last.shape[:2]
    in_last = _last_shape(in_shape, spec)
    inner_shape = (n * out_depth, *in_last[2:-1], k_depth * c)
    g = lax_input_grad(_batched(dy_last), _fold_kernel(w_last), _without_depth(spec),
                       inner_shape).astype(w.dtype)
    g = g.reshape(n, out_depth, *in_last[2:-1], k_depth, c)
    _, padded = _depth_geometry(spec, in_last[1], k_depth)
    s, d = spec.stride[0], spec.dilation[0]
    dx_pad = None
    for k in range(k_depth):    # tap k of output t lands on t·s + k·d: k·d below, s − 1 between
        part = place(g[..., k, :], (k,), (out_depth,), (s,), (d,), _DEPTH, (padded,))
        dx_pad = part if dx_pad is None else dx_pad + part
    # Crop the padding back off; a negative side (conv_transpose's output_padding) means
    # samples the conv never read, whose gradient is zero.
    return _to_channels_first(crop(dx_pad, _DEPTH, spec.padding[:1]), spec)


# ----------------------------------------------------------------------------- depth-tap loop


def depth_tap_conv(x, w, spec: ConvSpec):
    """``y[n, t] = Σ_k conv_{n−1}(x_pad[n, t·s + k·d], w[k])``, one depth tap ``k`` per loop
    step: the depth slices ``x_pad[n, k·d + t·s]`` (``jaxcnn._taps.tap_reader``), an (n−1)-D conv
    over batch ``N·D_out``, added to the accumulator."""
    x_last, w_last = _to_channels_last(x, spec), _to_channels_last(w, spec, kernel=True)
    k_depth, n = w_last.shape[0], x_last.shape[0]
    out_depth, _ = _depth_geometry(spec, x_last.shape[1], k_depth)
    x_pad = pad_axes(x_last, _DEPTH, spec.padding[:1])
    read_tap, inner = tap_reader(x_pad, _depth_spec(spec), (out_depth,)), _without_depth(spec)

    def tap(k):
        return lax_conv(_batched(read_tap([k])), w_last[k], inner)

    # The first tap starts the sum (zeros written and added to cost the clips step ~2 ms).
    y = jax.lax.fori_loop(1, k_depth, lambda k, acc: acc + tap(k), tap(0))
    return _to_channels_first(y.reshape(n, out_depth, *y.shape[1:]), spec)


def depth_tap_input_grad(dy, w, spec: ConvSpec, in_shape):
    """The transpose of ``depth_tap_conv``, one depth tap per loop step:
    ``dx_pad[n, k·d + t·s] += input_grad_{n−1}(dy[n, t], w[k])``, each tap's gradient added onto
    the depth slices it read (``jaxcnn._taps.tap_sum_adjoint``), the padding cropped off after."""
    dy_last, w_last = _to_channels_last(dy.astype(w.dtype), spec), _to_channels_last(w, spec, kernel=True)
    k_depth, c = w_last.shape[0], w_last.shape[-2]
    n, out_depth = dy_last.shape[:2]
    in_last = _last_shape(in_shape, spec)
    _, padded = _depth_geometry(spec, in_last[1], k_depth)
    inner = _without_depth(spec)
    dy_batch, inner_shape = _batched(dy_last), (n * out_depth, *in_last[2:-1], c)

    def part(k):
        g = lax_input_grad(dy_batch, w_last[k], inner, inner_shape).astype(w.dtype)
        return g.reshape(n, out_depth, *g.shape[1:])

    dx_pad = tap_sum_adjoint((k_depth,), part, (n, padded, *in_last[2:]), _depth_spec(spec), w.dtype)
    return _to_channels_first(crop(dx_pad, _DEPTH, spec.padding[:1]), spec)
