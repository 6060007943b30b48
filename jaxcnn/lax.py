r"""Drop-ins for ``jax.lax``'s convolutions whose every derivative is jaxcnn's hand-written rules.

``jaxcnn.lax.conv_general_dilated`` takes exactly the arguments of
``jax.lax.conv_general_dilated`` and computes the same values; ``jaxcnn.lax.conv_transpose``
those of ``jax.lax.conv_transpose``. Pass the first as the ``conv_general_dilated`` of a Flax
``Conv`` (NNX or Linen) and the model's gradients come from jaxcnn's verified rules.

lax's general form, for one spatial axis (window stride ``s``, lhs dilation ``l``, rhs
dilation ``d``, padding ``(lo, hi)``, kernel ``K``, ``B`` batch groups), maps onto the three
bilinear maps of ``jaxcnn.conv`` (the family), not onto a second implementation:

- **plain** (``l = 1``, ``B = 1``): ``y[i] = Σ_k w[k] · x_pad[i·s + k·d]`` is the family's
  ``conv``; a negative padding crops, as in lax.
- **lhs-dilated, s = 1** (a transposed convolution): with ``x_l[m·l] = x[m]``, tap ``k`` of
  output ``i`` reads input ``m`` where ``m·l + (K − 1 − k)·d = i + d·(K − 1) − lo``: the
  family's ``input_grad`` of a conv of stride ``l`` with the kernel flipped and its channel
  roles swapped, padding ``(d·(K − 1) − lo, d·(K − 1) − hi)`` (``_shapes.lhs_dilated_padding``).
- **batch-grouped** (``B > 1``, lax's weight-gradient form):
  ``y[n′, o, i] = Σ_c Σ_k w[o, c, k] · x_pad[b·N/B + n′, c, i·s + k·d]``, ``b = o // (O/B)``,
  is the family's ``weight_grad`` with roles swapped: ``x`` with batch and channels exchanged
  is the activation (its ``B`` channel groups are the batch groups), ``w`` with ``O`` and
  ``I`` exchanged the upstream gradient, stride ``d`` and dilation ``s`` exchanged, and the
  kernel positions of the result are the output positions ``i``.
- **lhs-dilated with a window stride or batch groups** (no framework emits it): the input
  dilated with ``lax.pad`` (interior padding; JAX transposes it to a strided slice), then one
  of the above.

Layout permutations, the kernel's flip and swap and the dilation are linear ``jnp``/``lax``
data movement that JAX differentiates itself; every arithmetic op is one of the family's
primitives, whose JVPs and transposes are each other. So ``jax.grad`` of either function, at
any order and in forward mode, shows ``jaxcnn_conv``, ``jaxcnn_conv_input_grad`` and
``jaxcnn_conv_weight_grad`` and no ``conv_general_dilated``.

Other dtypes, as lax takes them:

- **complex**: with ``x = a + ib``, ``w = c + id``, the bilinear map splits into four real
  ones, ``conv(x, w) = conv(a, c) − conv(b, d) + i·(conv(a, d) + conv(b, c))``, each the real
  drop-in above. ``real``, ``imag`` and ``complex`` are linear and JAX transposes them itself,
  so derivatives follow JAX's convention for complex numbers (``jax.grad`` of a real loss is
  ``∂L/∂Re − i·∂L/∂Im``, the conjugate of PyTorch's) and still run through the family's rules.
- **bool and integers**: lax's own convolution (exact; no derivative, as in lax: ``jax.grad``
  refuses integer inputs and ``jax.vjp`` returns ``float0`` cotangents), with lax's
  ``preferred_element_type`` rule (integer in, wider integer or float out).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._args import ConvSpec, int_tuple
from jaxcnn._args.lax import LaxConvArgs, dimension_numbers_of, normalize_lax_conv
from jaxcnn._shapes import (dilated_size, lax_transpose_padding, lhs_dilated_padding,
                            weight_grad_padding)
from jaxcnn._sharding import sharded_call
from jaxcnn.conv import conv_core, input_grad_core, weight_grad_core
from jaxcnn._conv.pieces import flip_swap_io

__all__ = ["conv_general_dilated", "conv_transpose"]


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                         feature_group_count: int = 1, batch_group_count: int = 1,
                         precision: Any = None, preferred_element_type: Any = None,
                         out_sharding: Any = None, *, impl: str = "lax") -> jax.Array:
    """``jax.lax.conv_general_dilated``, its derivatives jaxcnn's hand-written rules.

    Args (as ``jax.lax.conv_general_dilated``, whose docstring is the reference):
      lhs: a rank ``n + 2`` array of a dtype lax takes (bool, integer, floating, complex);
        rhs: the kernel, same rank and dtype.
      window_strides: ``n`` ints ≥ 1.
      padding: ``"SAME"``, ``"SAME_LOWER"``, ``"VALID"`` (any case) or ``n`` ``(lo, hi)`` pairs,
        negative ones cropping; a string with ``lhs_dilation`` ≠ 1 is refused, as lax does.
      lhs_dilation, rhs_dilation: None or ``n`` ints ≥ 1.
      dimension_numbers: None (``NCHW``/``OIHW``), a ``ConvDimensionNumbers`` or three layout
        strings in any permutation, e.g. ``("NHWC", "HWIO", "NHWC")``.
      feature_group_count, batch_group_count: as lax (at most one above 1).
      precision: None, a ``Precision``, its name, a pair, or a dot algorithm where lax takes one.
      preferred_element_type: the accumulation and result dtype, by lax's rule (bfloat16 in,
        float32 out; int8 in, int32 or float32 out; complex64 in, complex128 out).
      out_sharding: None, a ``NamedSharding`` or a ``PartitionSpec``; on an explicit mesh the
        default keeps ``lhs``'s batch and spatial and ``rhs``'s out-feature sharding.
      impl: ``"lax"`` or ``"manual"`` (no convolution primitive), as ``jaxcnn.conv``; bool and
        integer operands, which have no derivative to hand-write, take lax's conv either way.

    Returns:
      The convolution, in ``dimension_numbers``' output layout; differentiable to any order,
      in reverse and forward mode and under ``vmap``, through the family's rules.
    """
    args = normalize_lax_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                              dimension_numbers, feature_group_count, batch_group_count,
                              precision, preferred_element_type, impl)
    lhs_spec, rhs_spec, out_spec = args.dimension_numbers
    inherit: list[list[tuple[int, int]]] = [[] for _ in args.out_shape]
    inherit[out_spec[0]] = [(0, lhs_spec[0])]
    inherit[out_spec[1]] = [(1, rhs_spec[0])]
    for out_axis, lhs_axis in zip(out_spec[2:], lhs_spec[2:]):
        inherit[out_axis] = [(0, lhs_axis)]
    return sharded_call(lambda x, w: _compute(args, x, w), (args.lhs, args.rhs), ("lhs", "rhs"),
                        out_shape=args.out_shape, inherit=inherit, out_sharding=out_sharding)


def _compute(args: LaxConvArgs, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    """The family's layout in, the family's map, the user's layout out."""
    if jnp.issubdtype(lhs.dtype, jnp.complexfloating):
        return _complex(args, lhs, rhs)
    if not jnp.issubdtype(lhs.dtype, jnp.floating):
        return jax.lax.conv_general_dilated(
            lhs, rhs, args.strides, args.padding, args.lhs_dilation, args.rhs_dilation,
            args.dimension_numbers, args.feature_groups, args.batch_groups,
            precision=args.precision, preferred_element_type=args.preferred_element_type)
    x, w = jnp.transpose(lhs, args.lhs_perm), jnp.transpose(rhs, args.rhs_perm)
    shape = tuple(args.out_shape[a] for a in np.argsort(args.out_perm))    # family layout
    out_dtype = args.preferred_element_type or lhs.dtype
    if 0 in shape or x.size == 0 or w.size == 0:
        y = jnp.zeros(shape, out_dtype)              # an empty sum (or nothing to compute)
    elif not args.strides:                           # no spatial axis: one of length 1
        x_ax, w_ax = (1, 0) if args.channels_last else (2, 2)
        one = dataclasses.replace(args, strides=(1,), padding=((0, 0),), lhs_dilation=(1,),
                                  rhs_dilation=(1,))
        y = _family(one, jnp.expand_dims(x, x_ax), jnp.expand_dims(w, w_ax),
                    shape[:x_ax] + (1,) + shape[x_ax:])
        y = jnp.squeeze(y, x_ax)
    else:
        y = _family(args, x, w, shape)
    return jnp.transpose(y, args.out_perm)


def _complex(args: LaxConvArgs, lhs: jax.Array, rhs: jax.Array) -> jax.Array:
    """``(a + ib) ⋆ (c + id) = a ⋆ c − b ⋆ d + i·(a ⋆ d + b ⋆ c)``, four real convolutions
    (not Gauss's three: ``(a + b) ⋆ (c + d)`` would cancel digits that lax keeps)."""
    out = args.preferred_element_type
    real = dataclasses.replace(
        args, preferred_element_type=None if out is None else jnp.finfo(out).dtype)
    a, b, c, d = jnp.real(lhs), jnp.imag(lhs), jnp.real(rhs), jnp.imag(rhs)
    return jax.lax.complex(_compute(real, a, c) - _compute(real, b, d),
                           _compute(real, a, d) + _compute(real, b, c))


def _family(args: LaxConvArgs, x: jax.Array, w: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """lax's general form on operands in the family's layout (module docstring)."""
    spec = ConvSpec(args.strides, args.padding, args.rhs_dilation, args.feature_groups,
                    args.channels_last, args.precision, args.preferred_element_type)
    plain = all(l == 1 for l in args.lhs_dilation)
    if not plain and (any(s != 1 for s in args.strides) or args.batch_groups > 1):
        x = _dilate(x, args.lhs_dilation, spec)
        args, plain = dataclasses.replace(args, lhs_dilation=(1,) * spec.n), True
    if plain and args.batch_groups == 1:
        return conv_core(x, w, spec, args.impl)
    if args.preferred_element_type is not None:
        # The transposed forms return their operands' dtype (a cotangent's): compute in the
        # wider one, which is exact for the products and accumulates as lax does.
        x, w = x.astype(args.preferred_element_type), w.astype(args.preferred_element_type)
    spec = spec.replace(preferred_element_type=None)
    if args.batch_groups == 1:
        return _lhs_dilated(args, x, w, spec, shape)
    return _batch_grouped(args, x, w, spec, shape)


def _dilate(x: jax.Array, lhs_dilation: tuple[int, ...], spec: ConvSpec) -> jax.Array:
    """``x`` with ``l − 1`` zeros between its samples on each spatial axis."""
    config = [(0, 0, 0)] * x.ndim
    for axis, l in zip(spec.spatial_axes(), lhs_dilation):
        config[axis] = (0, 0, l - 1)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), config)


def _lhs_dilated(args: LaxConvArgs, x: jax.Array, w: jax.Array, spec: ConvSpec,
                 shape: tuple[int, ...]) -> jax.Array:
    """Window stride 1 on the ``l``-dilated input: the family's input gradient of a conv of
    stride ``l``, the kernel flipped and its channel roles swapped."""
    k_sizes = tuple(w.shape[a] for a in spec.kernel_spatial_axes())
    grad_spec = spec.replace(stride=args.lhs_dilation,
                             padding=lhs_dilated_padding(k_sizes, args.rhs_dilation, args.padding))
    return input_grad_core(x, flip_swap_io(w, spec), grad_spec, args.impl, shape)


def _batch_grouped(args: LaxConvArgs, x: jax.Array, w: jax.Array, spec: ConvSpec,
                   shape: tuple[int, ...]) -> jax.Array:
    """``B`` batch groups: the family's weight gradient with batch and channels exchanged."""
    n = spec.n
    if spec.channels_last:       # x (N, *S, C) → (C, *S, N); w (*K, I, O) → (I, *K, O)
        x_t, dy = jnp.swapaxes(x, 0, -1), jnp.moveaxis(w, n, 0)
        result = (*shape[1:-1], shape[0], shape[-1])                     # (*S_out, N/B, O)
    else:                        # x (N, C, *S) → (C, N, *S); w (O, I, *K) → (I, O, *K)
        x_t, dy = jnp.swapaxes(x, 0, 1), jnp.swapaxes(w, 0, 1)
        result = (shape[1], shape[0], *shape[2:])                        # (O, N/B, *S_out)
    in_sizes = tuple(x.shape[a] for a in spec.spatial_axes())
    k_sizes = tuple(w.shape[a] for a in spec.kernel_spatial_axes())
    out_sizes = tuple(shape[a] for a in spec.spatial_axes())
    pads = weight_grad_padding(in_sizes, k_sizes, out_sizes, args.strides, args.rhs_dilation,
                               args.padding)
    grad_spec = spec.replace(stride=args.rhs_dilation, dilation=args.strides, padding=pads,
                             groups=args.batch_groups)
    r = weight_grad_core(x_t, dy, grad_spec, args.impl, result)
    return jnp.moveaxis(r, n, 0) if spec.channels_last else jnp.swapaxes(r, 0, 1)


_TRANSPOSE_LAYOUTS = {0: ("NC", "IO", "NC"), 1: ("NHC", "HIO", "NHC"), 2: ("NHWC", "HWIO", "NHWC"),
                      3: ("NHWDC", "HWDIO", "NHWDC")}


def conv_transpose(lhs: jax.Array, rhs: jax.Array, strides: Sequence[int], padding: Any,
                   rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
                   transpose_kernel: bool = False, precision: Any = None,
                   preferred_element_type: Any = None, use_consistent_padding: bool = False,
                   *, impl: str = "lax") -> jax.Array:
    """``jax.lax.conv_transpose``, its derivatives jaxcnn's hand-written rules.

    lax's semantics (not PyTorch's: ``jaxcnn.conv_transpose`` keeps those): the input dilated
    by ``strides`` and correlated with ``rhs`` at window stride 1, i.e.
    ``conv_general_dilated(lhs, rhs, 1, pads, lhs_dilation=strides, ...)`` with ``pads`` from
    ``padding`` as ``_shapes.lax_transpose_padding`` (Keras's ``Conv2DTranspose`` sizes).

    Args:
      lhs, rhs: rank ``n + 2`` arrays; the default layout is channels last
        (``("NHWC", "HWIO", "NHWC")`` for n = 2, likewise for n = 0, 1, 3).
      strides: ``n`` ints ≥ 1, the fractional stride.
      padding: ``"SAME"``, ``"VALID"``, or ``n`` ``(lo, hi)`` pairs: the padding of the dilated
        input, or with ``use_consistent_padding`` the forward conv's (PyTorch's meaning).
      rhs_dilation, dimension_numbers, precision, preferred_element_type: as lax.
      transpose_kernel: flip the kernel's spatial axes and swap its I and O (TensorFlow's
        kernel of the forward conv).
      impl: ``"lax"`` or ``"manual"``.
    """
    if not hasattr(lhs, "ndim") or not hasattr(rhs, "ndim"):
        lhs, rhs = jnp.asarray(lhs), jnp.asarray(rhs)
    n = lhs.ndim - 2
    if dimension_numbers is None:
        if n not in _TRANSPOSE_LAYOUTS:
            raise ValueError(f"dimension_numbers: lax has no default layout for {n} spatial axes "
                             f"(lhs of shape {tuple(lhs.shape)}); give one")
        dimension_numbers = _TRANSPOSE_LAYOUTS[n]
    dn = dimension_numbers_of(lhs, rhs, dimension_numbers)
    rhs_dilation = (1,) * n if rhs_dilation is None else rhs_dilation
    k_sizes = tuple(rhs.shape[a] for a in dn.rhs_spec[2:])
    extents = tuple(dilated_size(k, d) for k, d in zip(k_sizes, int_tuple(rhs_dilation, n, "rhs_dilation")))
    strides = int_tuple(strides, n, "strides")
    # As lax: the exact strings "SAME" and "VALID", and with use_consistent_padding anything,
    # are the forward conv's padding, transposed; any other string goes on to
    # conv_general_dilated with lhs_dilation = strides, which takes it at stride 1 (the forward
    # conv's meaning, any case) and refuses it, naming padding, above.
    exact_string = isinstance(padding, str) and padding in ("SAME", "VALID")
    if use_consistent_padding or exact_string:
        if isinstance(padding, str) and not exact_string:
            raise ValueError(f"padding: with use_consistent_padding expected 'SAME', 'VALID' or "
                             f"{n} (lo, hi) pairs (as jax.lax); got {padding!r}")
        per_axis = (padding,) * n if isinstance(padding, str) else tuple(map(tuple, padding))
        pads = tuple(lax_transpose_padding(k, s, p) for k, s, p in zip(extents, strides, per_axis))
    else:
        pads = padding
    if transpose_kernel:
        rhs = jnp.flip(rhs, axis=tuple(dn.rhs_spec[2:])).swapaxes(dn.rhs_spec[0], dn.rhs_spec[1])
    return conv_general_dilated(lhs, rhs, (1,) * n, pads, strides, rhs_dilation, dn,
                                precision=precision, preferred_element_type=preferred_element_type,
                                impl=impl)
