r"""True convolution and the transposed convolution, both built from the conv VJP family.

- ``convolve``: true convolution ``[f * g](i) = Σ_a f(a) g(i − a)``, which is the
  cross-correlation ``[f ⋆ g](i) = Σ_a f(a) g(i + a)`` of ``conv`` with the kernel flipped
  along every spatial axis.
- ``conv_transpose``: the adjoint of ``conv`` with respect to its input, which is exactly
  ``conv``'s input gradient ``conv.input_grad_core``:
  ``⟨conv(x, w), y⟩ = ⟨x, conv_transpose(y, w)⟩``.

Neither op has arithmetic of its own: they route through ``conv.conv_core``,
``conv.input_grad_core`` and ``conv.weight_grad_core`` (whose hand-written derivative rules
are written in terms of one another) plus two linear index maps, the kernel flip (its own
adjoint) and the border ``padding.pad`` / ``padding.fold`` pair (each the other's adjoint).
So every derivative, to any order, is one of the hand-written rules.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn import padding as _padding
from jaxcnn._args import ConvTransposeArgs, normalize_conv, normalize_conv_transpose
from jaxcnn._sharding import sharded_call
from jaxcnn.conv import apply_conv, bias_add, input_grad_core

__all__ = ["convolve", "conv_transpose"]

# ----------------------------------------------------------------------------- the flip


def flip(w: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """``w`` reversed along ``axes``: ``flip(w)[k] = w[K − 1 − k]``.

    A permutation ``P`` with ``P = Pᵀ = P⁻¹``, so ``⟨flip(w), c⟩ = ⟨w, flip(c)⟩``: its VJP and
    its JVP are the flip itself. ``jnp.flip`` is ``lax.rev``, whose JAX transpose rule is
    exactly that and exact in every dtype, so no ``custom_vjp`` is wrapped around it (one
    would also cut ``convolve`` off from forward mode, which the conv family supports).
    """
    return jnp.flip(w, axis=axes)


# ----------------------------------------------------------------------------- convolve


def convolve(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
             padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
             channels_last: bool = False, impl: str = "lax", precision: Any = None,
             preferred_element_type: Any = None, out_sharding: Any = None) -> jax.Array:
    r"""N-D true convolution: ``conv`` with the kernel flipped along every spatial axis.

    The seed formulas (one channel, stride 1, no padding, ``a`` over the kernel)::

        convolution        [f * g](i) = Σ_a f(a) g(i − a)
        cross-correlation  [f ⋆ g](i) = Σ_a f(a) g(i + a)     (what ``conv`` computes)

    With every argument of ``conv`` (channels first, one group, ``p = pad_lo``)::

        y[n, o, i] = b[o] + Σ_c Σ_k w[o, c, K − 1 − k] · x[n, c, i·stride + k·dilation − p]

    so with ``padding="VALID"`` this is ``numpy.convolve(x, w, "valid")`` and with ``"FULL"``
    ``numpy.convolve(x, w, "full")``, and in full mode ``f * g = g * f``. Arguments, shapes
    and the output size are those of ``jaxcnn.conv``; its VJPs are ``conv``'s with the kernel
    gradient flipped back (the flip is its own adjoint), to any order, as ``conv``'s.
    """
    args = normalize_conv(x, w, b, stride=stride, padding=padding, dilation=dilation,
                          groups=groups, padding_mode=padding_mode, channels_last=channels_last,
                          impl=impl, precision=precision,
                          preferred_element_type=preferred_element_type)
    flipped = flip(args.w, args.spec.kernel_spatial_axes())
    return apply_conv(dataclasses.replace(args, w=flipped), out_sharding)


# ----------------------------------------------------------------------------- conv_transpose


def apply_conv_transpose(args: ConvTransposeArgs, out_sharding: Any = None) -> jax.Array:
    """Run validated conv_transpose arguments: input gradient, border fold, bias.

    The conv being transposed is ``y = conv_core(pad(x))`` (``pad`` is the identity for zeros
    mode, whose padding sits in ``spec``), so its adjoint is ``fold ∘ input_grad_core``: VJPs
    ``conv_core`` for ``y`` and ``weight_grad_core`` for ``w``, from the family's own rules.
    """
    def run(x, w, *bias):
        z = input_grad_core(x, w, args.spec, args.impl, args.core_shape)
        if args.padding_mode != "zeros":
            z = _padding.fold(z, args.pads, args.padding_mode, args.spec.spatial_axes())
        if bias:
            z = bias_add(z, bias[0], args.spec.channel_axis())
        return z

    operands = (args.x, args.w) + ((args.b,) if args.b is not None else ())
    inherit = [[(0, axis)] for axis in range(args.x.ndim)]       # batch and spatial from x
    inherit[args.spec.channel_axis()] = [(2, 0)] * (len(operands) > 2)
    return sharded_call(run, operands, ("x", "w", "b"), out_shape=args.out_shape, inherit=inherit,
                        out_sharding=out_sharding)


def conv_transpose(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
                   padding: Any = 0, output_padding: Any = 0, dilation: Any = 1, groups: int = 1,
                   padding_mode: str = "zeros", channels_last: bool = False,
                   impl: str = "lax", out_sharding: Any = None) -> jax.Array:
    r"""N-D transposed convolution, PyTorch's ``conv_transpose{1,2,3}d``: the adjoint of ``conv``.

    With ``s = stride``, ``d = dilation``, ``(lo, hi)`` the padding (channels first, one group)::

        z[n, c, j] = b[c] + Σ_o Σ_{i, k : i·s + k·d = j + lo} w[o, c, k] · x[n, o, i]

    every input sample is scattered through the kernel, spaced ``s`` apart, and the result
    cropped by ``lo`` / ``hi``. Output size per axis (``torch.nn.ConvTranspose{n}d``)::

        (L − 1)·s − (lo + hi) + d·(K − 1) + output_padding + 1

    This is ``conv``'s input gradient with the same ``w``: for a conv ``x (M) → y (L)``,
    ``⟨conv(x, w), y⟩ = ⟨x, conv_transpose(y, w)⟩`` with ``output_padding = (M + lo + hi −
    d·(K − 1) − 1) mod s``, which gives back ``M``. PyTorch's weight ``(C_in, C_out // groups,
    *K)`` is conv's ``(O, C // groups, *K)`` with ``O = C_in`` (this op's input channels are
    the conv's output channels). ``output_padding`` only adds samples at the high end; it
    must be < max(stride, dilation) per axis, as in PyTorch.

    Padding strings give the padding the adjoint conv would use on this op's output:
    ``"VALID"`` is 0, ``"FULL"`` / ``"CAUSAL"`` as in ``conv``, and ``"SAME"`` makes the
    output ``L·s`` (TensorFlow's ``conv2d_transpose``): ``lo + hi = t = max(d·(K − 1) + 1 − s,
    0)``, ``lo = ⌊t / 2⌋`` (odd extra at the high end, as conv's SAME on ``L·s`` samples),
    and an implicit ``output_padding = max(s − d·(K − 1) − 1, 0)``, so ``(L − 1)·s − t +
    d·(K − 1) + 1 + output_padding = L·s``. ``output_padding`` must then be 0.

    ``padding_mode`` other than ``"zeros"`` (PyTorch allows zeros only): the true adjoint of
    ``conv`` with that border, the input gradient over the padded size with the border folded
    back onto the samples it copied (``padding.fold``).

    Args:
      x: ``(N, C_in, *S)``, or ``(N, *S, C_in)`` with ``channels_last``.
      w: ``(C_in, C_out // groups, *K)``, or ``(*K, C_out // groups, C_in)`` with
        ``channels_last``.
      b: ``(C_out,)`` or None.
      stride, dilation: an int or one int per spatial axis, each ≥ 1.
      padding: an int, n ints, n ``(lo, hi)`` pairs, or a string as above.
      output_padding: an int or n ints, each ≥ 0 and < max(stride, dilation).
      groups: ``C_in`` and ``C_out`` split into this many independent groups.
      padding_mode: ``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
      channels_last: TensorFlow/Flax layout instead of PyTorch's.
      impl: ``"lax"`` (a conv with ``lhs_dilation``) or ``"manual"`` (strided slice sums).
      out_sharding: as ``conv``; by default the result keeps ``x``'s batch and spatial sharding.

    Returns:
      ``(N, C_out, *S_out)`` or ``(N, *S_out, C_out)``. Derivatives are the family's
      hand-written rules, to any order as ``conv``'s: w.r.t. ``x`` a plain strided conv of
      the cotangent, w.r.t. ``w`` conv's weight gradient with roles swapped, w.r.t. ``b`` a
      sum. The gradient w.r.t. ``x`` uses no ``lhs_dilation``: ``lhs_dilation``-based
      transposed-conv gradients are a known slow path of XLA on GPU, avoided here.
    """
    return apply_conv_transpose(normalize_conv_transpose(
        x, w, b, stride=stride, padding=padding, output_padding=output_padding,
        dilation=dilation, groups=groups, padding_mode=padding_mode,
        channels_last=channels_last, impl=impl), out_sharding)
