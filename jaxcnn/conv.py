r"""N-D cross-correlation with hand-written VJPs, two ways: ``jax.lax`` and manual.

The seed formula (channels first, one group, ``p = pad_lo``)::

    y[n, o, i] = b[o] + Σ_c Σ_k w[o, c, k] · x_pad[n, c, i·s + k·d]

summed over every kernel offset ``k`` of the n spatial axes. It is bilinear in ``(x, w)``, so
its VJP splits into two more correlations, the three forming a family closed under
differentiation (each one's VJP is written in terms of the other two):

- ``conv(x, w)``:            ``y[i]  = Σ_k w[k] · x[i·s + k·d]``
- ``input_grad(dy, w)``:     ``dx[j] = Σ_{i,k : i·s + k·d = j} w[k]ᵀ · dy[i]``
  — every output position sends its gradient back along the taps that read it. As a
  correlation: dilate ``dy`` by ``s`` (zeros between samples), pad it by ``d·(K−1) − p`` and
  correlate with the kernel flipped and its channel roles swapped.
- ``weight_grad(x, dy)``:    ``dw[k]  = Σ_n Σ_i dy[n, i] ⊗ x_pad[n, i·s + k·d]``
  — the input correlated with the upstream gradient, the batch axis contracted: a conv whose
  batch and feature roles are swapped, ``dy`` acting as the kernel with dilation ``s`` and
  the kernel offsets ``k`` playing the output positions with stride ``d``.
- ``db[o] = Σ_{n, i} dy[n, o, i]``.

All three are linear in each argument, so the VJP of ``input_grad`` with respect to ``dy`` is
``conv`` and with respect to ``w`` is ``weight_grad``, and so on: grad-of-grad never leaves
these hand-written rules.

``impl="lax"`` computes each of the three with one ``lax.conv_general_dilated`` call.
``impl="manual"`` uses no convolution primitive: a static sum over kernel offsets of strided
slices, each contracted over channels with ``einsum``, and in ``input_grad`` the same slices
placed back with ``lax.pad`` (interior padding = the stride's holes).
"""
from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax._src import dispatch  # eager evaluation of a primitive through its lowering
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from jaxcnn import padding as _padding
from jaxcnn._args import (ConvArgs, ConvSpec, Pads, check_cotangent, dilated_size, normalize_conv,
                          shape_tuple)
from jaxcnn._args import as_float_array as _as_float

# ----------------------------------------------------------------------------- shape helpers


def spatial_sizes(shape: tuple[int, ...], spec: ConvSpec) -> tuple[int, ...]:
    return tuple(shape[a] for a in spec.spatial_axes())


def kernel_sizes(w_shape: tuple[int, ...], spec: ConvSpec) -> tuple[int, ...]:
    return tuple(w_shape[a] for a in spec.kernel_spatial_axes())


def output_sizes(in_sizes, k_sizes, spec: ConvSpec) -> tuple[int, ...]:
    return tuple((length + lo + hi - dilated_size(k, d)) // s + 1
                 for length, k, s, d, (lo, hi)
                 in zip(in_sizes, k_sizes, spec.stride, spec.dilation, spec.padding))


def input_grad_padding(in_sizes, k_sizes, out_sizes, spec: ConvSpec) -> Pads:
    """Padding of the stride-dilated ``dy`` for the correlation that gives ``dx``.

    Tap ``k`` of output ``i`` reads ``x_pad[i·s + k·d]``; flipping the kernel turns that into
    a correlation over the dilated ``dy`` that must start ``d·(K−1) − lo`` before it and end
    where ``x`` ends: ``hi' = L + lo − dilated(out, s)``. Either side may be negative (crop).
    """
    pads = []
    for length, k, o, s, d, (lo, _) in zip(in_sizes, k_sizes, out_sizes, spec.stride,
                                           spec.dilation, spec.padding):
        before = dilated_size(k, d) - 1 - lo
        pads.append((before, length + lo - dilated_size(o, s)))
    return tuple(pads)


def weight_grad_padding(in_sizes, k_sizes, out_sizes, spec: ConvSpec) -> Pads:
    """Padding of ``x`` for the correlation that gives ``dw``: ``dy`` is the kernel (dilation
    ``s``), the result has ``K`` positions (stride ``d``): ``hi' = dilated(out, s) − L +
    d·(K−1) − lo``, so that ``(L + lo + hi' − dilated(out, s)) / d + 1 = K``."""
    return tuple((lo, dilated_size(o, s) - length + dilated_size(k, d) - 1 - lo)
                 for length, k, o, s, d, (lo, _)
                 in zip(in_sizes, k_sizes, out_sizes, spec.stride, spec.dilation, spec.padding))


def _flip_swap_io(w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``w (O, C/g, *K)`` → ``(C, O/g, *K)`` flipped along ``K`` (either layout): the kernel
    of the input-gradient correlation, channel roles swapped within each group."""
    o_ax, i_ax = spec.kernel_io_axes()
    wc = jnp.moveaxis(w, (o_ax, i_ax), (0, 1))          # (O, Cg, *K) in both layouts
    out_ch, in_per_group, *k = wc.shape
    g = spec.groups
    wc = wc.reshape(g, out_ch // g, in_per_group, *k).swapaxes(1, 2)
    wc = wc.reshape(g * in_per_group, out_ch // g, *k)
    wc = jnp.flip(wc, axis=tuple(range(2, wc.ndim)))
    return jnp.moveaxis(wc, (0, 1), (o_ax, i_ax))


def _acc_dtype(spec: ConvSpec, dtype) -> Any:
    return spec.preferred_element_type if spec.preferred_element_type is not None else dtype


# ----------------------------------------------------------------------------- impl="lax"


def _lax_conv(x, w, spec: ConvSpec):
    return jax.lax.conv_general_dilated(
        x, w, spec.stride, spec.padding, rhs_dilation=spec.dilation,
        dimension_numbers=spec.dimension_numbers(), feature_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=spec.preferred_element_type)


def _lax_input_grad(dy, w, spec: ConvSpec, in_shape):
    in_sizes = spatial_sizes(in_shape, spec)
    pads = input_grad_padding(in_sizes, kernel_sizes(w.shape, spec),
                              spatial_sizes(dy.shape, spec), spec)
    return jax.lax.conv_general_dilated(
        dy.astype(w.dtype), _flip_swap_io(w, spec), (1,) * spec.n, pads,
        lhs_dilation=spec.stride, rhs_dilation=spec.dilation,
        dimension_numbers=spec.dimension_numbers(), feature_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=spec.preferred_element_type)


def _lax_weight_grad(x, dy, spec: ConvSpec, w_shape):
    k_sizes = kernel_sizes(w_shape, spec)
    pads = weight_grad_padding(spatial_sizes(x.shape, spec), k_sizes,
                               spatial_sizes(dy.shape, spec), spec)
    # Roles swapped: x's channels are the batch, its batch the features; dy is the kernel
    # (out-features = its channels, in-features = its batch); the result's "batch" is w's
    # in-channel axis and its features w's out-channel axis.
    c_ax, spatial = spec.channel_axis(), spec.spatial_axes()
    o_ax, i_ax = spec.kernel_io_axes()
    dn = jax.lax.ConvDimensionNumbers((c_ax, 0) + spatial, (c_ax, 0) + spatial,
                                      (i_ax, o_ax) + spec.kernel_spatial_axes())
    return jax.lax.conv_general_dilated(
        x, dy.astype(x.dtype), spec.dilation, pads, rhs_dilation=spec.stride,
        dimension_numbers=dn, batch_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=spec.preferred_element_type)


# ----------------------------------------------------------------------------- impl="manual"
# Channel contractions of one kernel tap, per layout: x slice (N, C, *O) or (N, *O, C) with
# C split into (groups, C/g); the tap w[k] is (O, C/g) or (C/g, O) with O split likewise.
_EINSUM = {  # (forward, input_grad, weight_grad)
    False: ("ngc...,goc->ngo...", "ngo...,goc->ngc...", "ngc...,ngo...->goc"),
    True: ("n...gc,cgo->n...go", "n...go,cgo->n...gc", "n...gc,n...go->cgo"),
}


def _split_channels(a: jax.Array, axis: int, groups: int) -> jax.Array:
    axis = axis % a.ndim
    return a.reshape(a.shape[:axis] + (groups, a.shape[axis] // groups) + a.shape[axis + 1:])


def _merge_channels(a: jax.Array, axis: int) -> jax.Array:
    axis = axis % a.ndim
    return a.reshape(a.shape[:axis] + (a.shape[axis] * a.shape[axis + 1],) + a.shape[axis + 2:])


def _split_axes(spec: ConvSpec) -> tuple[int, int]:
    """Channel axis of an activation and of a tap ``w[k]`` (``(O, C/g)`` or ``(C/g, O)``)."""
    return (-1, 1) if spec.channels_last else (1, 0)


def _taps(k_sizes):
    return itertools.product(*(range(k) for k in k_sizes))


def _tap(w: jax.Array, spec: ConvSpec, offset) -> jax.Array:
    """``w[k]`` as ``(G, O/g, C/g)`` (channels first) or ``(C/g, G, O/g)`` (channels last)."""
    index = [slice(None)] * w.ndim
    for axis, k in zip(spec.kernel_spatial_axes(), offset):
        index[axis] = k
    tap = w[tuple(index)]
    return _split_channels(tap, _split_axes(spec)[1], spec.groups)


def _window(spec: ConvSpec, offset, out_sizes, ndim) -> tuple[slice, ...]:
    """The strided slice of ``x_pad`` that tap ``k`` reads: ``x_pad[k·d + i·s]``, i < out."""
    index = [slice(None)] * ndim
    for axis, k, o, s, d in zip(spec.spatial_axes(), offset, out_sizes, spec.stride, spec.dilation):
        index[axis] = slice(k * d, k * d + (o - 1) * s + 1, s)
    return tuple(index)


def _zero_pad(a: jax.Array, spec: ConvSpec, pads, interior=None) -> jax.Array:
    config = [(0, 0, 0)] * a.ndim
    for i, axis in enumerate(spec.spatial_axes()):
        config[axis] = (pads[i][0], pads[i][1], 0 if interior is None else interior[i])
    return jax.lax.pad(a, jnp.zeros((), a.dtype), config)


def _contract(subscripts: str, a, b, spec: ConvSpec):
    # Half-precision taps are summed in float32 and rounded once by the caller, as
    # lax.conv_general_dilated accumulates; summing them in bfloat16 lost ~1e-2 over 25 taps.
    total = spec.preferred_element_type
    if total is None and jnp.finfo(a.dtype).bits < 32:
        total = jnp.float32
    return jnp.einsum(subscripts, a, b, precision=spec.precision, preferred_element_type=total)


def _manual_conv(x, w, spec: ConvSpec):
    x_pad = _zero_pad(x, spec, spec.padding)
    k_sizes = kernel_sizes(w.shape, spec)
    out = output_sizes(spatial_sizes(x.shape, spec), k_sizes, spec)
    act_axis = _split_axes(spec)[0]
    y = None
    for offset in _taps(k_sizes):
        xs = _split_channels(x_pad[_window(spec, offset, out, x.ndim)], act_axis, spec.groups)
        term = _contract(_EINSUM[spec.channels_last][0], xs, _tap(w, spec, offset), spec)
        y = term if y is None else y + term
    return _merge_channels(y, act_axis - spec.channels_last).astype(_acc_dtype(spec, x.dtype))


def _manual_input_grad(dy, w, spec: ConvSpec, in_shape):
    in_sizes = spatial_sizes(in_shape, spec)
    out = spatial_sizes(dy.shape, spec)
    padded = [length + lo + hi for length, (lo, hi) in zip(in_sizes, spec.padding)]
    act_axis = _split_axes(spec)[0]
    dy_g = _split_channels(dy.astype(w.dtype), act_axis, spec.groups)
    dx_pad = None
    for offset in _taps(kernel_sizes(w.shape, spec)):
        part = _contract(_EINSUM[spec.channels_last][1], dy_g, _tap(w, spec, offset), spec)
        part = _merge_channels(part, act_axis - spec.channels_last)
        # Tap k's contribution lands on x_pad[k·d + i·s]: pad k·d before, s − 1 between.
        pads = [(k * d, size - k * d - dilated_size(o, s))
                for k, d, size, o, s in zip(offset, spec.dilation, padded, out, spec.stride)]
        part = _zero_pad(part, spec, pads, [s - 1 for s in spec.stride])
        dx_pad = part if dx_pad is None else dx_pad + part
    return _zero_pad(dx_pad, spec, [(-lo, -hi) for lo, hi in spec.padding])


def _manual_weight_grad(x, dy, spec: ConvSpec, w_shape):
    x_pad = _zero_pad(x, spec, spec.padding)
    out = spatial_sizes(dy.shape, spec)
    act_axis, tap_axis = _split_axes(spec)
    dy_g = _split_channels(dy.astype(x.dtype), act_axis, spec.groups)
    taps = []
    for offset in _taps(kernel_sizes(w_shape, spec)):
        xs = _split_channels(x_pad[_window(spec, offset, out, x.ndim)], act_axis, spec.groups)
        tap = _contract(_EINSUM[spec.channels_last][2], xs, dy_g, spec)
        taps.append(_merge_channels(tap, tap_axis))
    # Taps in row-major order of K, stacked where K sits in w: (O, Cg, *K) or (*K, Cg, O).
    return jnp.stack(taps, axis=0 if spec.channels_last else 2).reshape(w_shape)


_IMPLS = {
    "lax": (_lax_conv, _lax_input_grad, _lax_weight_grad),
    "manual": (_manual_conv, _manual_input_grad, _manual_weight_grad),
}
# ----------------------------------------------------------------------------- the VJP family
# The three bilinear maps are JAX primitives whose derivative rules are written here by hand:
#
#   JVP (bilinear):  d conv(x, w)          = conv(dx, w) + conv(x, dw),  and alike for the others
#   transposes (the VJPs), from ⟨conv(x, w), δ⟩ = ⟨x, input_grad(δ, w)⟩ = ⟨w, weight_grad(x, δ)⟩:
#     conv:         x̄ = input_grad(δ, w)       w̄ = weight_grad(x, δ)
#     input_grad:   δ̄ = conv(c, w)             w̄ = weight_grad(c, δ)     (c: cotangent of dx)
#     weight_grad:  x̄ = input_grad(δ, c)       δ̄ = conv(x, c)            (c: cotangent of dw)
#
# So reverse mode (jax.grad, jax.vjp) runs the hand-written transposes, grad-of-grad transposes
# them again, and forward-over-reverse (jax.hessian, jax.jvp, jax.jacfwd) applies the JVP to
# them: every order stays inside these rules. Each primitive lowers to its impl ("lax": one
# conv_general_dilated; "manual": slices and einsums). Static parameters: the spec, the impl
# and the shape to rebuild. A cotangent always has its primal's dtype.


def _make_primitive(name: str, compute, out_aval):
    prim = Primitive(f"jaxcnn_{name}")
    prim.def_impl(partial(dispatch.apply_primitive, prim))
    prim.def_abstract_eval(out_aval)
    mlir.register_lowering(prim, mlir.lower_fun(compute, multiple_results=False))
    return prim


def _conv_compute(x, w, *, spec, impl, shape):
    return _IMPLS[impl][0](x, w, spec)


def _input_grad_compute(dy, w, *, spec, impl, shape):
    if 0 in dy.shape:
        return jnp.zeros(shape, w.dtype)
    return _IMPLS[impl][1](dy, w, spec, shape).astype(w.dtype)


def _weight_grad_compute(x, dy, *, spec, impl, shape):
    if 0 in x.shape or 0 in dy.shape:
        return jnp.zeros(shape, x.dtype)
    return _IMPLS[impl][2](x, dy, spec, shape).astype(x.dtype)


conv_p = _make_primitive("conv", _conv_compute, lambda x, w, *, spec, impl, shape: ShapedArray(
    shape, _acc_dtype(spec, x.dtype)))
input_grad_p = _make_primitive("conv_input_grad", _input_grad_compute,
                               lambda dy, w, *, spec, impl, shape: ShapedArray(shape, w.dtype))
weight_grad_p = _make_primitive("conv_weight_grad", _weight_grad_compute,
                                lambda x, dy, *, spec, impl, shape: ShapedArray(shape, x.dtype))


def _conv_shape(x_shape, w_shape, spec: ConvSpec) -> tuple[int, ...]:
    out = output_sizes(spatial_sizes(x_shape, spec), kernel_sizes(w_shape, spec), spec)
    channels = w_shape[spec.kernel_io_axes()[0]]
    return (x_shape[0], *out, channels) if spec.channels_last else (x_shape[0], channels, *out)


def conv_core(x: jax.Array, w: jax.Array, spec: ConvSpec, impl: str) -> jax.Array:
    """Zero-padded correlation ``y[i] = Σ_k w[k] · x_pad[i·s + k·d]``, no bias."""
    return conv_p.bind(x, w, spec=spec, impl=impl, shape=_conv_shape(x.shape, w.shape, spec))


def input_grad_core(dy: jax.Array, w: jax.Array, spec: ConvSpec, impl: str,
                    in_shape: tuple[int, ...]) -> jax.Array:
    """``dx[j] = Σ_{i·s + k·d = j + lo} w[k]ᵀ · dy[i]``, shaped as the input ``in_shape``."""
    return input_grad_p.bind(dy, w, spec=spec, impl=impl, shape=tuple(in_shape))


def weight_grad_core(x: jax.Array, dy: jax.Array, spec: ConvSpec, impl: str,
                     w_shape: tuple[int, ...]) -> jax.Array:
    """``dw[k] = Σ_n Σ_i dy[n, i] ⊗ x_pad[n, i·s + k·d]``, shaped as the kernel ``w_shape``."""
    return weight_grad_p.bind(x, dy, spec=spec, impl=impl, shape=tuple(w_shape))


def _as(value, dtype):
    return value.astype(dtype) if value.dtype != dtype else value


# conv: x̄ = input_grad(δ, w), w̄ = weight_grad(x, δ).
ad.defbilinear(
    conv_p,
    lambda ct, x, w, *, spec, impl, shape: input_grad_core(ct, w, spec, impl, x.aval.shape),
    lambda ct, x, w, *, spec, impl, shape: weight_grad_core(x, ct, spec, impl, w.aval.shape))
# input_grad: δ̄ = conv(c, w), w̄ = weight_grad(c, δ).
ad.defbilinear(
    input_grad_p,
    lambda ct, dy, w, *, spec, impl, shape: _as(conv_core(_as(ct, w.dtype), w, spec, impl), dy.aval.dtype),
    lambda ct, dy, w, *, spec, impl, shape: weight_grad_core(ct, dy, spec, impl, w.aval.shape))
# weight_grad: x̄ = input_grad(δ, c), δ̄ = conv(x, c).
ad.defbilinear(
    weight_grad_p,
    lambda ct, x, dy, *, spec, impl, shape: input_grad_core(dy, ct, spec, impl, x.aval.shape),
    lambda ct, x, dy, *, spec, impl, shape: _as(conv_core(x, _as(ct, x.dtype), spec, impl), dy.aval.dtype))


# vmap. A mapped axis B of the activations alone folds into the batch N. A mapped kernel folds,
# with the activations, into the channels: B independent convs are one conv with B·groups
# groups (channel b·C + c of the merged input belongs to group b·G + c // (C/G)).

def _merge(a, axis):
    """``a`` with its leading mapped axis folded into ``axis`` (mapped index major)."""
    a = jnp.moveaxis(a, 0, axis)
    return a.reshape(a.shape[:axis] + (a.shape[axis] * a.shape[axis + 1],) + a.shape[axis + 2:])


def _split(a, axis, size):
    """Undo ``_merge``: the mapped axis comes back to the front."""
    a = a.reshape(a.shape[:axis] + (size, a.shape[axis] // size) + a.shape[axis + 1:])
    return jnp.moveaxis(a, axis, 0)


def _front(a, bdim, size):
    if bdim is None:
        return jnp.broadcast_to(a, (size,) + a.shape)
    return jnp.moveaxis(a, bdim, 0)


def _scaled(shape, axis, size):
    shape = list(shape)
    shape[axis] *= size
    return tuple(shape)


def _batch_rule(prim, kernel_slot):
    """vmap rule for one of the three: ``kernel_slot`` is the operand that is w-shaped (1 for
    conv and input_grad; for weight_grad the output is)."""
    def rule(args, dims, *, spec, impl, shape):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        kernel_mapped = kernel_slot is not None and dims[kernel_slot] is not None
        if not kernel_mapped and prim is not weight_grad_p:
            act = _merge(jnp.moveaxis(args[0], dims[0], 0), 0)
            out_shape = _scaled(shape, 0, size)
            out = prim.bind(act, args[1], spec=spec, impl=impl, shape=out_shape)
            return _split(out, 0, size), 0
        c_ax, o_ax = spec.channel_axis(), spec.kernel_io_axes()[0]
        merged = [_merge(_front(a, d, size), o_ax if i == kernel_slot else c_ax)
                  for i, (a, d) in enumerate(zip(args, dims))]
        grouped = spec.replace(groups=spec.groups * size)
        out_axis = o_ax if prim is weight_grad_p else c_ax
        out = prim.bind(*merged, spec=grouped, impl=impl, shape=_scaled(shape, out_axis, size))
        return _split(out, out_axis, size), 0
    return rule


batching.primitive_batchers[conv_p] = _batch_rule(conv_p, 1)
batching.primitive_batchers[input_grad_p] = _batch_rule(input_grad_p, 1)
batching.primitive_batchers[weight_grad_p] = _batch_rule(weight_grad_p, None)


def bias_add(y: jax.Array, b: jax.Array, channel_axis: int) -> jax.Array:
    """``y[n, o, i] + b[o]``: a broadcast add, whose VJP ``db[o] = Σ_{n, i} dy[n, o, i]`` is
    the reduction JAX's transpose of the broadcast gives."""
    shape = [1] * y.ndim
    shape[channel_axis] = b.shape[0]
    return y + b.astype(y.dtype).reshape(shape)


# ----------------------------------------------------------------------------- public


def apply_conv(args: ConvArgs) -> jax.Array:
    """Run a validated conv: border padding (its own VJP folds it back), core, bias."""
    x = args.x
    if args.padding_mode != "zeros":
        x = _padding.pad(x, args.mode_pads, args.padding_mode, args.spec.spatial_axes())
    y = conv_core(x, args.w, args.spec, args.impl)
    if args.b is not None:
        y = bias_add(y, args.b, args.spec.channel_axis())
    return y


def conv(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
         padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
         channels_last: bool = False, impl: str = "lax", precision: Any = None,
         preferred_element_type: Any = None) -> jax.Array:
    r"""N-D cross-correlation, what deep learning calls convolution.

    ``y[n, o, i] = b[o] + Σ_c Σ_k w[o, c, k] · x[n, c, i·stride + k·dilation − pad_lo]``
    (channels first; with groups, ``c`` runs over the ``C/groups`` channels of ``o``'s group).
    Output size per axis: ``floor((L + lo + hi − dilation·(K − 1) − 1) / stride) + 1``.

    Args:
      x: ``(N, C, *S)``, or ``(N, *S, C)`` with ``channels_last``.
      w: ``(O, C // groups, *K)``, or ``(*K, C // groups, O)`` with ``channels_last``.
      b: ``(O,)`` or None.
      stride, dilation: an int or one int per spatial axis, each ≥ 1.
      padding: an int, n ints, n ``(lo, hi)`` pairs, or ``"VALID"``, ``"SAME"``, ``"FULL"``,
        ``"CAUSAL"`` (case-insensitive).
      groups: channels split into this many independent groups (``groups = C``: depthwise).
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (PyTorch).
      channels_last: TensorFlow/Flax layout instead of PyTorch's.
      impl: ``"lax"`` (``lax.conv_general_dilated``) or ``"manual"`` (no conv primitive: a
        sum over kernel offsets of strided slices contracted over channels).
      precision, preferred_element_type: as in ``jax.lax`` (bfloat16 in, float32 out).

    Returns:
      ``y``: ``(N, O, *S_out)`` or ``(N, *S_out, O)``, differentiable to any order, in reverse
      and forward mode (``jax.grad``, grad-of-grad, ``jax.hessian``, ``jax.jvp``), always
      through the hand-written rules, and batched by ``jax.vmap``.
    """
    return apply_conv(normalize_conv(
        x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode, channels_last=channels_last, impl=impl, precision=precision,
        preferred_element_type=preferred_element_type))


def _conv_nd(ndim: int, name: str):
    def conv_nd(x: jax.Array, w: jax.Array, b: jax.Array | None = None, **kwargs: Any) -> jax.Array:
        return apply_conv(normalize_conv(x, w, b, **{**_CONV_DEFAULTS, **kwargs}, ndim=ndim, op=name))
    conv_nd.__name__ = conv_nd.__qualname__ = name
    conv_nd.__doc__ = f"``conv`` with {ndim} spatial axes checked: ``w`` must be {ndim + 2}-d."
    return conv_nd


_CONV_DEFAULTS = dict(stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros",
                      channels_last=False, impl="lax", precision=None, preferred_element_type=None)
conv1d = _conv_nd(1, "conv1d")
conv2d = _conv_nd(2, "conv2d")
conv3d = _conv_nd(3, "conv3d")


def output_shape(args: ConvArgs) -> tuple[int, ...]:
    """Shape of ``conv``'s output for validated arguments (no arrays touched): the core
    conv's shape on the input widened by the border padding, if any."""
    padded = list(args.x.shape)
    for axis, (lo, hi) in zip(args.spec.spatial_axes(), args.mode_pads):
        padded[axis] += lo + hi
    return _conv_shape(tuple(padded), args.w.shape, args.spec)


def conv_input_grad(dy: jax.Array, w: jax.Array, input_shape: tuple[int, ...], *, stride: Any = 1,
                    padding: Any = 0, dilation: Any = 1, groups: int = 1,
                    channels_last: bool = False, impl: str = "lax") -> jax.Array:
    """``dx`` of ``conv(x, w)`` for an upstream gradient ``dy`` (``torch.nn.grad.conv2d_input``).

    ``dx[n, c, j] = Σ_o Σ_{i, k : i·s + k·d = j + lo} w[o, c, k] · dy[n, o, i]``: a full
    correlation of the stride-dilated ``dy`` with the flipped, channel-swapped kernel. The very
    function ``conv``'s VJP calls; differentiable to any order.

    Args:
      dy: the conv's output shape, ``(N, O, *S_out)`` (or channels last).
      w: ``(O, C // groups, *K)`` (or ``(*K, C // groups, O)``).
      input_shape: the shape of ``x``.
    """
    w = _as_float(w, "w")
    input_shape = shape_tuple(input_shape, w.ndim, "input_shape")
    args = normalize_conv(jax.ShapeDtypeStruct(input_shape, w.dtype), w, None, stride=stride,
                          padding=padding, dilation=dilation, groups=groups, padding_mode="zeros",
                          channels_last=channels_last, impl=impl)
    dy = check_cotangent(dy, output_shape(args), w.dtype)
    return input_grad_core(dy, w, args.spec, args.impl, input_shape)


def conv_weight_grad(x: jax.Array, dy: jax.Array, weight_shape: tuple[int, ...], *,
                     stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                     channels_last: bool = False, impl: str = "lax") -> jax.Array:
    """``dw`` of ``conv(x, w)`` for an upstream gradient ``dy`` (``torch.nn.grad.conv2d_weight``).

    ``dw[o, c, k] = Σ_n Σ_i dy[n, o, i] · x_pad[n, c, i·s + k·d]``: the input correlated with
    the upstream gradient. The very function ``conv``'s VJP calls; differentiable to any order.

    Args:
      x: ``(N, C, *S)`` (or channels last).
      dy: the conv's output shape.
      weight_shape: the shape of ``w``.
    """
    x = _as_float(x, "x")
    weight_shape = shape_tuple(weight_shape, x.ndim, "weight_shape")
    args = normalize_conv(x, jax.ShapeDtypeStruct(weight_shape, x.dtype), None, stride=stride,
                          padding=padding, dilation=dilation, groups=groups, padding_mode="zeros",
                          channels_last=channels_last, impl=impl)
    dy = check_cotangent(dy, output_shape(args), x.dtype)
    return weight_grad_core(args.x, dy, args.spec, args.impl, weight_shape)
