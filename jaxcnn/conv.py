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
placed back with ``lax.pad`` (interior padding = the stride's holes). Both live in
``jaxcnn._conv.pieces``; ``jaxcnn._conv.rules`` picks faster forms of the same maps per shape
(depthwise, 3D and few-channel convolutions; on CPU).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.interpreters import ad, batching

from jaxcnn import padding as _padding
from jaxcnn._args import ConvArgs, ConvSpec, check_cotangent, normalize_conv, shape_tuple
from jaxcnn._args import as_float_array as _as_float
from jaxcnn._primitives import (ShapedArray, fold_mapped, make_primitive, mapped_axis_first,
                                unfold_mapped)
from jaxcnn._shapes import conv_output_shape
from jaxcnn._sharding import sharded_call
from jaxcnn._conv.rules import choose, lhs_dilated_lax, may_be_native
from jaxcnn._conv.pieces import output_dtype

__all__ = ["conv", "conv1d", "conv2d", "conv3d", "conv_input_grad", "conv_weight_grad"]


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
# them: every order stays inside these rules. Each primitive lowers to the form of its impl
# that _conv.rules.choose picks for the shapes ("lax": conv_general_dilated; "manual": slices
# and einsums; on CPU also per-tap and depth-folded forms), one generic lowering and one for
# CPU. Static parameters: the spec, the impl and the shape to rebuild. A cotangent always has
# its primal's dtype. Each primitive's section below holds, in this order, its lowering
# (``_conv_compute``), abstract eval (``_conv_abstract_eval``), the bind, its transpose for each
# operand (``_conv_transpose_x``, ``_conv_transpose_w``; ``ad.defbilinear`` builds the JVP from
# the primitive itself) and its vmap rule (``_conv_batch_rule``); alike for input_grad and
# weight_grad.


def _meet(dy, operand):
    """``dy`` and the operand in one dtype, as lax's transposes: the operand in ``dy``'s when
    that is at least as wide (conv's ``preferred_element_type`` output; exact), so the gradient
    is rounded once, at the end, not also ``dy`` on the way in."""
    if dy.dtype.itemsize >= operand.dtype.itemsize:
        return dy, operand.astype(dy.dtype)
    return dy.astype(operand.dtype), operand


def _cast(value, dtype):
    """``value`` in ``dtype``, with no convert op when it already is: conv's output comes in its
    accumulation dtype (``preferred_element_type``), so a cotangent may not match the operand
    it meets in a transpose."""
    return value.astype(dtype) if value.dtype != dtype else value


# ----------------------------------------------------------------------------- conv
# y = conv(x, w). Transposes: x̄ = input_grad(δ, w), w̄ = weight_grad(x, δ).


def _conv_compute(x, w, *, spec, impl, shape, platform=None):
    return choose("conv", impl, spec, x.shape, w.shape, platform, x.dtype)(x, w, spec)


def _conv_abstract_eval(x, w, *, spec, impl, shape):
    return ShapedArray(shape, output_dtype(spec, x.dtype))


def _may_be_native(a, b, *, spec, impl, shape):
    """Whether this bind may lower to the native kernels (split per shard where the partitioner
    splits the op: ``jaxcnn._primitives``)."""
    return may_be_native(impl, spec, (a.dtype, b.dtype))


conv_p = make_primitive("conv", _conv_compute, _conv_abstract_eval, platforms=("cpu",),
                        splits_custom_calls=_may_be_native)


def conv_core(x: jax.Array, w: jax.Array, spec: ConvSpec, impl: str) -> jax.Array:
    """Zero-padded correlation ``y[i] = Σ_k w[k] · x_pad[i·s + k·d]``, no bias."""
    return conv_p.bind(x, w, spec=spec, impl=impl, shape=conv_output_shape(x.shape, w.shape, spec))


def _conv_transpose_x(ct, x, w, *, spec, impl, shape):
    return input_grad_core(ct, w, spec, impl, x.aval.shape)


def _conv_transpose_w(ct, x, w, *, spec, impl, shape):
    return weight_grad_core(x, ct, spec, impl, w.aval.shape)


def _conv_batch_rule(args, dims, **params):
    return _family_batch_rule(conv_p, args, dims, kernel_slot=1, **params)


ad.defbilinear(conv_p, _conv_transpose_x, _conv_transpose_w)
batching.primitive_batchers[conv_p] = _conv_batch_rule


# ----------------------------------------------------------------------------- input_grad
# dx = input_grad(dy, w). Transposes (c: the cotangent of dx): δ̄ = conv(c, w), w̄ = weight_grad(c, δ).


def _input_grad_compute(dy, w, *, spec, impl, shape, platform=None):
    if 0 in dy.shape:
        return jnp.zeros(shape, w.dtype)
    dy, w_met = _meet(dy, w)
    return choose("input_grad", impl, spec, shape, w.shape, platform, w_met.dtype)(
        dy, w_met, spec, shape).astype(w.dtype)


def _input_grad_abstract_eval(dy, w, *, spec, impl, shape):
    return ShapedArray(shape, w.dtype)


def _may_split(dy, w, *, spec, impl, shape):
    """``_may_be_native``, or a strided lax input gradient: split per batch shard where the
    partitioner splits the op (``rules._lhs_dilated_split``)."""
    return _may_be_native(dy, w, spec=spec, impl=impl, shape=shape) or lhs_dilated_lax(impl, spec)


input_grad_p = make_primitive("conv_input_grad", _input_grad_compute, _input_grad_abstract_eval,
                              platforms=("cpu",), splits_custom_calls=_may_split)


def input_grad_core(dy: jax.Array, w: jax.Array, spec: ConvSpec, impl: str,
                    in_shape: tuple[int, ...]) -> jax.Array:
    """``dx[j] = Σ_{i·s + k·d = j + lo} w[k]ᵀ · dy[i]``, shaped as the input ``in_shape``."""
    return input_grad_p.bind(dy, w, spec=spec, impl=impl, shape=tuple(in_shape))


def _input_grad_transpose_dy(ct, dy, w, *, spec, impl, shape):
    return _cast(conv_core(_cast(ct, w.dtype), w, spec, impl), dy.aval.dtype)


def _input_grad_transpose_w(ct, dy, w, *, spec, impl, shape):
    return weight_grad_core(ct, dy, spec, impl, w.aval.shape)


def _input_grad_batch_rule(args, dims, **params):
    return _family_batch_rule(input_grad_p, args, dims, kernel_slot=1, **params)


ad.defbilinear(input_grad_p, _input_grad_transpose_dy, _input_grad_transpose_w)
batching.primitive_batchers[input_grad_p] = _input_grad_batch_rule


# ----------------------------------------------------------------------------- weight_grad
# dw = weight_grad(x, dy). Transposes (c: the cotangent of dw): x̄ = input_grad(δ, c), δ̄ = conv(x, c).


def _weight_grad_compute(x, dy, *, spec, impl, shape, platform=None):
    if 0 in x.shape or 0 in dy.shape:
        return jnp.zeros(shape, x.dtype)
    dy, x_met = _meet(dy, x)
    return choose("weight_grad", impl, spec, x.shape, shape, platform, x_met.dtype)(
        x_met, dy, spec, shape).astype(x.dtype)


def _weight_grad_abstract_eval(x, dy, *, spec, impl, shape):
    return ShapedArray(shape, x.dtype)


weight_grad_p = make_primitive("conv_weight_grad", _weight_grad_compute, _weight_grad_abstract_eval,
                               platforms=("cpu",), splits_custom_calls=_may_be_native)


def weight_grad_core(x: jax.Array, dy: jax.Array, spec: ConvSpec, impl: str,
                     w_shape: tuple[int, ...]) -> jax.Array:
    """``dw[k] = Σ_n Σ_i dy[n, i] ⊗ x_pad[n, i·s + k·d]``, shaped as the kernel ``w_shape``."""
    return weight_grad_p.bind(x, dy, spec=spec, impl=impl, shape=tuple(w_shape))


def _weight_grad_transpose_x(ct, x, dy, *, spec, impl, shape):
    return input_grad_core(dy, ct, spec, impl, x.aval.shape)


def _weight_grad_transpose_dy(ct, x, dy, *, spec, impl, shape):
    return _cast(conv_core(x, _cast(ct, x.dtype), spec, impl), dy.aval.dtype)


def _weight_grad_batch_rule(args, dims, **params):
    return _family_batch_rule(weight_grad_p, args, dims, kernel_slot=None, **params)


ad.defbilinear(weight_grad_p, _weight_grad_transpose_x, _weight_grad_transpose_dy)
batching.primitive_batchers[weight_grad_p] = _weight_grad_batch_rule


# ----------------------------------------------------------------------------- vmap
# A mapped axis B of the activations alone folds into the batch N. A mapped kernel folds,
# with the activations, into the channels: B independent convs are one conv with B·groups
# groups (channel b·C + c of the merged input belongs to group b·G + c // (C/G)).

def _merged_shape(shape, axis, size):
    """``shape`` as ``fold_mapped`` leaves it: ``axis`` holds ``size`` times as many entries."""
    shape = list(shape)
    shape[axis] *= size
    return tuple(shape)


def _family_batch_rule(prim, args, dims, *, kernel_slot, spec, impl, shape):
    """The vmap rule of the three: ``kernel_slot`` is the operand that is w-shaped (1 for
    conv and input_grad; None for weight_grad, whose output is)."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    kernel_out = kernel_slot is None
    if not kernel_out and dims[kernel_slot] is None:
        act = fold_mapped(jnp.moveaxis(args[0], dims[0], 0), 0)
        out_shape = _merged_shape(shape, 0, size)
        out = prim.bind(act, args[1], spec=spec, impl=impl, shape=out_shape)
        return unfold_mapped(out, 0, size), 0
    c_ax, o_ax = spec.channel_axis(), spec.kernel_io_axes()[0]
    merged = [fold_mapped(mapped_axis_first(a, d, size), o_ax if i == kernel_slot else c_ax)
              for i, (a, d) in enumerate(zip(args, dims))]
    grouped = spec.replace(groups=spec.groups * size)
    out_axis = o_ax if kernel_out else c_ax
    out = prim.bind(*merged, spec=grouped, impl=impl, shape=_merged_shape(shape, out_axis, size))
    return unfold_mapped(out, out_axis, size), 0


def bias_add(y: jax.Array, b: jax.Array, channel_axis: int) -> jax.Array:
    """``y[n, o, i] + b[o]``: a broadcast add, whose VJP ``db[o] = Σ_{n, i} dy[n, o, i]`` is
    the reduction JAX's transpose of the broadcast gives."""
    shape = [1] * y.ndim
    shape[channel_axis] = b.shape[0]
    return y + b.astype(y.dtype).reshape(shape)


# ----------------------------------------------------------------------------- public


def conv_inherit(spec: ConvSpec, operands: int) -> list[list[tuple[int, int]]]:
    """Where each axis of a conv's result comes from, for its default sharding
    (``jaxcnn._sharding``): batch and spatial axes from ``x`` (operand 0), the channels from
    ``w``'s out-channel axis (operand 1) and the bias (operand 2, if given)."""
    inherit: list[list[tuple[int, int]]] = [[] for _ in range(spec.n + 2)]
    inherit[0] = [(0, 0)]
    inherit[spec.channel_axis()] = [(1, spec.kernel_io_axes()[0])] + [(2, 0)] * (operands > 2)
    for axis in spec.spatial_axes():
        inherit[axis] = [(0, axis)]
    return inherit


def apply_conv(args: ConvArgs, out_sharding: Any = None) -> jax.Array:
    """Run a validated conv: border padding (its own VJP folds it back), core, bias; sharded
    as ``out_sharding`` or its operands imply (``jaxcnn._sharding``)."""
    def run(x, w, *bias):
        if args.padding_mode != "zeros":
            x = _padding.pad(x, args.mode_pads, args.padding_mode, args.spec.spatial_axes())
        y = conv_core(x, w, args.spec, args.impl)
        if bias:
            y = bias_add(y, bias[0], args.spec.channel_axis())
        return y

    operands = (args.x, args.w) + ((args.b,) if args.b is not None else ())
    return sharded_call(run, operands, ("x", "w", "b"), out_shape=output_shape(args),
                        inherit=conv_inherit(args.spec, len(operands)), out_sharding=out_sharding)


def conv(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
         padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
         channels_last: bool = False, impl: str = "lax", precision: Any = None,
         preferred_element_type: Any = None, out_sharding: Any = None) -> jax.Array:
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
      out_sharding: as in ``jax.lax``: None, a ``NamedSharding`` or a ``PartitionSpec`` for the
        result. On a mesh of ``AxisType.Explicit`` the default keeps ``x``'s batch and spatial
        sharding and ``w``'s out-channel sharding (``jaxcnn._sharding``).

    Returns:
      ``y``: ``(N, O, *S_out)`` or ``(N, *S_out, O)``, differentiable to any order, in reverse
      and forward mode (``jax.grad``, grad-of-grad, ``jax.hessian``, ``jax.jvp``), always
      through the hand-written rules, and batched by ``jax.vmap``.
    """
    return apply_conv(normalize_conv(
        x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode, channels_last=channels_last, impl=impl, precision=precision,
        preferred_element_type=preferred_element_type), out_sharding)


def _conv_nd(ndim: int):
    name = f"conv{ndim}d"

    def conv_nd(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
                padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
                channels_last: bool = False, impl: str = "lax", precision: Any = None,
                preferred_element_type: Any = None, out_sharding: Any = None) -> jax.Array:
        return apply_conv(normalize_conv(
            x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
            padding_mode=padding_mode, channels_last=channels_last, impl=impl,
            precision=precision, preferred_element_type=preferred_element_type,
            ndim=ndim, op=name), out_sharding)
    conv_nd.__name__ = conv_nd.__qualname__ = name
    conv_nd.__doc__ = _CONV_ND_DOC.format(ndim=ndim, rank=ndim + 2, name=name)
    return conv_nd


_CONV_ND_DOC = """``conv`` with {ndim} spatial axes, checked: ``w`` (and so ``x``) must be {rank}-d.

    Args (as ``conv``):
      x: ``(N, C, *S)``, or ``(N, *S, C)`` with ``channels_last``; ``len(S) = {ndim}``.
      w: ``(O, C // groups, *K)``, or ``(*K, C // groups, O)`` with ``channels_last``.
      b: ``(O,)`` or None.
      stride, dilation: an int or {ndim} ints, each ≥ 1.
      padding: an int, {ndim} ints, {ndim} ``(lo, hi)`` pairs, or ``"VALID"``, ``"SAME"``,
        ``"FULL"``, ``"CAUSAL"``.
      groups, padding_mode, channels_last, impl, precision, preferred_element_type,
        out_sharding: as ``conv``.

    Returns:
      ``y``: ``(N, O, *S_out)`` or ``(N, *S_out, O)``; a wrong rank is a ``ValueError`` naming
      ``{name}``.
    """
conv1d = _conv_nd(1)
conv2d = _conv_nd(2)
conv3d = _conv_nd(3)


def output_shape(args: ConvArgs) -> tuple[int, ...]:
    """Shape of ``conv``'s output for validated arguments (no arrays touched): the core
    conv's shape on the input widened by the border padding, if any."""
    padded = list(args.x.shape)
    for axis, (lo, hi) in zip(args.spec.spatial_axes(), args.mode_pads):
        padded[axis] += lo + hi
    return conv_output_shape(tuple(padded), args.w.shape, args.spec)


def conv_input_grad(dy: jax.Array, w: jax.Array, input_shape: tuple[int, ...], *, stride: Any = 1,
                    padding: Any = 0, dilation: Any = 1, groups: int = 1,
                    channels_last: bool = False, impl: str = "lax",
                    out_sharding: Any = None) -> jax.Array:
    """``dx`` of ``conv(x, w)`` for an upstream gradient ``dy`` (``torch.nn.grad.conv2d_input``).

    ``dx[n, c, j] = Σ_o Σ_{i, k : i·s + k·d = j + lo} w[o, c, k] · dy[n, o, i]``: a full
    correlation of the stride-dilated ``dy`` with the flipped, channel-swapped kernel. The very
    function ``conv``'s VJP calls; differentiable to any order.

    Args:
      dy: the conv's output shape, ``(N, O, *S_out)`` (or channels last).
      w: ``(O, C // groups, *K)`` (or ``(*K, C // groups, O)``).
      input_shape: the shape of ``x``.
      out_sharding: as ``conv``; by default ``dx`` keeps ``dy``'s batch and spatial sharding.
    """
    w = _as_float(w, "w")
    input_shape = shape_tuple(input_shape, w.ndim, "input_shape")
    args = normalize_conv(jax.ShapeDtypeStruct(input_shape, w.dtype), w, None, stride=stride,
                          padding=padding, dilation=dilation, groups=groups, padding_mode="zeros",
                          channels_last=channels_last, impl=impl)
    dy = check_cotangent(dy, output_shape(args), w.dtype)
    spec = args.spec
    inherit = [[(0, axis)] for axis in range(w.ndim)]            # batch and spatial from dy
    inherit[spec.channel_axis()] = [(1, spec.kernel_io_axes()[1])] * (spec.groups == 1)
    return sharded_call(lambda dy, w: input_grad_core(dy, w, spec, args.impl, input_shape),
                        (dy, w), ("dy", "w"), out_shape=input_shape, inherit=inherit,
                        out_sharding=out_sharding)


def conv_weight_grad(x: jax.Array, dy: jax.Array, weight_shape: tuple[int, ...], *,
                     stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                     channels_last: bool = False, impl: str = "lax",
                     out_sharding: Any = None) -> jax.Array:
    """``dw`` of ``conv(x, w)`` for an upstream gradient ``dy`` (``torch.nn.grad.conv2d_weight``).

    ``dw[o, c, k] = Σ_n Σ_i dy[n, o, i] · x_pad[n, c, i·s + k·d]``: the input correlated with
    the upstream gradient. The very function ``conv``'s VJP calls; differentiable to any order.

    Args:
      x: ``(N, C, *S)`` (or channels last).
      dy: the conv's output shape.
      weight_shape: the shape of ``w``.
      out_sharding: as ``conv``; by default ``dw`` keeps ``dy``'s channel sharding on its
        out-channel axis and is replicated otherwise (a batch-sharded ``x`` and ``dy`` are
        summed across their devices: the data-parallel gradient).
    """
    x = _as_float(x, "x")
    weight_shape = shape_tuple(weight_shape, x.ndim, "weight_shape")
    args = normalize_conv(x, jax.ShapeDtypeStruct(weight_shape, x.dtype), None, stride=stride,
                          padding=padding, dilation=dilation, groups=groups, padding_mode="zeros",
                          channels_last=channels_last, impl=impl)
    dy = check_cotangent(dy, output_shape(args), x.dtype)
    spec = args.spec
    o_ax, i_ax = spec.kernel_io_axes()
    inherit: list[list[tuple[int, int]]] = [[] for _ in weight_shape]
    inherit[o_ax] = [(1, spec.channel_axis())]
    inherit[i_ax] = [(0, spec.channel_axis())] * (spec.groups == 1)
    return sharded_call(lambda x, dy: weight_grad_core(x, dy, spec, args.impl, weight_shape),
                        (args.x, dy), ("x", "dy"), out_shape=weight_shape, inherit=inherit,
                        out_sharding=out_sharding)
