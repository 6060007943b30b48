r"""Every shape formula of jaxcnn (output sizes, padding resolution, the VJP paddings) and the
canonical specs the lowering reads (``ConvSpec``, ``PoolSpec``).

Shape-only: the functions take ints and tuples, never arrays, so each can be tested on its
own without tracing (as JAX tests ``_conv_general_vjp_lhs_padding``; ``tests/test_shapes.py``
checks them against PyTorch's and TensorFlow's documented formulas and brute-force
enumeration). One spatial axis of a conv has input size ``L``, kernel ``K``, stride ``s``,
dilation ``d`` and padding ``(lo, hi)``; tap ``k`` of output ``i`` reads ``x_pad[i·s + k·d]``.
The specs are frozen, hashable records of tuples: ``jaxcnn._args`` builds them from what users
pass (and checks it), the primitives carry them as static parameters, and the lowering
(``jaxcnn._conv``, ``jaxcnn._pool``) reads them without ever meeting a user's argument.
"""
from __future__ import annotations

import dataclasses
import operator
from typing import Any, Sequence

import jax
import numpy as np

PADDING_STRINGS = ("VALID", "SAME", "FULL", "CAUSAL")

Shape = tuple[int, ...]
Pads = tuple[tuple[int, int], ...]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy; bools are not)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def spatial_axes(n: int, channels_last: bool) -> tuple[int, ...]:
    """Positions of the ``n`` spatial axes of an activation: ``(N, C, *S)`` or ``(N, *S, C)``."""
    first = 1 if channels_last else 2
    return tuple(range(first, first + n))


def kernel_to_channels_last(n: int) -> tuple[int, ...]:
    """The axis permutation taking a channels-first kernel ``(O, I, *K)`` to the
    channels-last ``(*K, I, O)`` (a transposed conv's ``(C, O, *K)`` to ``(*K, O, C)``)."""
    return (*range(2, 2 + n), 1, 0)


def dilated_size(size: int, dilation: int) -> int:
    """Extent of ``size`` taps spaced ``dilation`` apart: ``dilation·(size − 1) + 1`` (0 if empty)."""
    return 0 if size == 0 else dilation * (size - 1) + 1


# ----------------------------------------------------------------------------- the specs


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A convolution's static configuration, canonical and hashable.

    ``padding`` holds explicit ``(lo, hi)`` zero padding per spatial axis. Internally (in the
    VJPs) entries may be negative, which crops; users can never ask for that.
    """

    stride: tuple[int, ...]
    padding: Pads
    dilation: tuple[int, ...]
    groups: int
    channels_last: bool
    precision: Any = None
    preferred_element_type: Any = None

    @property
    def n(self) -> int:
        return len(self.stride)

    def spatial_axes(self) -> tuple[int, ...]:
        """Positions of the spatial axes in x / y: ``(N, C, *S)`` or ``(N, *S, C)``."""
        return spatial_axes(self.n, self.channels_last)

    def channel_axis(self) -> int:
        return self.n + 1 if self.channels_last else 1

    def kernel_spatial_axes(self) -> tuple[int, ...]:
        """Positions of the kernel axes in w: ``(O, I, *K)`` or ``(*K, I, O)``."""
        return tuple(range(self.n)) if self.channels_last else tuple(range(2, 2 + self.n))

    def kernel_io_axes(self) -> tuple[int, int]:
        """Positions of (out-channel, in-channel) in w."""
        return (self.n + 1, self.n) if self.channels_last else (0, 1)

    def dimension_numbers(self) -> jax.lax.ConvDimensionNumbers:
        """``lax`` dimension numbers for this layout, for any number of spatial axes."""
        spatial = self.spatial_axes()
        lhs = (0, self.channel_axis()) + spatial
        o_ax, i_ax = self.kernel_io_axes()
        rhs = (o_ax, i_ax) + self.kernel_spatial_axes()
        return jax.lax.ConvDimensionNumbers(lhs, rhs, lhs)

    def replace(self, **changes: Any) -> "ConvSpec":
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class PoolSpec:
    """A pooling's static configuration, canonical and hashable.

    ``padding`` holds ``(lo, hi)`` per spatial axis: the user's symmetric padding, ``hi``
    grown by ceil_mode's overhang so that every window fits the padded input. ``in_sizes``
    are the input's spatial sizes (the VJPs rebuild the input shape from them).
    """

    window: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Pads
    in_sizes: tuple[int, ...]
    channels_last: bool

    @property
    def n(self) -> int:
        return len(self.window)

    def spatial_axes(self) -> tuple[int, ...]:
        return spatial_axes(self.n, self.channels_last)

    def out_sizes(self) -> tuple[int, ...]:
        """``floor((L + lo + hi − dilation·(K − 1) − 1) / stride) + 1`` per axis."""
        return output_sizes(self.in_sizes, self.window, self.stride, self.dilation, self.padding)


# ----------------------------------------------------------------------------- conv


def conv_output_size(length: int, kernel: int, stride: int, dilation: int, lo: int, hi: int) -> int:
    """``floor((L + lo + hi − dilation·(K − 1) − 1) / stride) + 1``, never below 0."""
    span = length + lo + hi - dilated_size(kernel, dilation)
    return span // stride + 1 if span >= 0 else 0


def output_sizes(in_sizes: Sequence[int], k_sizes: Sequence[int], stride: Sequence[int],
                 dilation: Sequence[int], padding: Pads) -> tuple[int, ...]:
    """``conv_output_size`` per spatial axis."""
    return tuple(conv_output_size(length, k, s, d, lo, hi) for length, k, s, d, (lo, hi)
                 in zip(in_sizes, k_sizes, stride, dilation, padding))


def spatial_sizes(shape: Sequence[int], spec: ConvSpec) -> tuple[int, ...]:
    """The spatial sizes of an activation shape in ``spec``'s layout."""
    return tuple(shape[a] for a in spec.spatial_axes())


def kernel_sizes(w_shape: Sequence[int], spec: ConvSpec) -> tuple[int, ...]:
    """The kernel sizes of a weight shape in ``spec``'s layout."""
    return tuple(w_shape[a] for a in spec.kernel_spatial_axes())


def conv_output_shape(x_shape: Sequence[int], w_shape: Sequence[int],
                      spec: ConvSpec) -> tuple[int, ...]:
    """The shape of the zero-padded correlation of ``x_shape`` with ``w_shape`` under ``spec``:
    ``(N, O, *S_out)`` or ``(N, *S_out, O)``."""
    out = output_sizes(spatial_sizes(x_shape, spec), kernel_sizes(w_shape, spec), spec.stride,
                       spec.dilation, spec.padding)
    channels = w_shape[spec.kernel_io_axes()[0]]
    return (x_shape[0], *out, channels) if spec.channels_last else (x_shape[0], channels, *out)


def resolve_padding(padding: Any, in_sizes: Sequence[int], kernel_sizes: Sequence[int],
                    stride: Sequence[int], dilation: Sequence[int], name: str = "padding") -> Pads:
    """Turn any accepted ``padding`` form into explicit ``(lo, hi)`` pairs per spatial axis.

    ``SAME``: output ``ceil(L / stride)``, the odd extra at the high end (TensorFlow, PyTorch).
    ``FULL``: ``dilation·(K − 1)`` on both sides. ``CAUSAL``: the same on the low side only.
    """
    n = len(in_sizes)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in PADDING_STRINGS:
            raise ValueError(f"{name}: expected one of {PADDING_STRINGS} (any case), an int, "
                             f"a tuple of {n} ints or {n} (lo, hi) pairs; got {padding!r}")
        return tuple(_string_padding(mode, length, k, s, d)
                     for length, k, s, d in zip(in_sizes, kernel_sizes, stride, dilation))
    if is_int(padding):
        pads = ((int(padding), int(padding)),) * n
    elif isinstance(padding, Sequence) and len(padding) == n and all(is_int(p) for p in padding):
        pads = tuple((int(p), int(p)) for p in padding)
    elif (isinstance(padding, Sequence) and len(padding) == n
          and all(isinstance(p, Sequence) and len(p) == 2 and all(is_int(q) for q in p)
                  for p in padding)):
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    else:
        raise ValueError(f"{name}: expected one of {PADDING_STRINGS}, an int, a tuple of {n} ints "
                         f"or {n} (lo, hi) pairs for {n} spatial axes; got {padding!r}")
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        raise ValueError(f"{name}: expected non-negative padding; got {padding!r}")
    return pads


def _string_padding(mode: str, length: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """One axis of ``resolve_padding`` for an upper-case padding string."""
    extent = dilated_size(kernel, dilation)
    if mode == "VALID":
        return (0, 0)
    if mode == "FULL":
        return (extent - 1, extent - 1)
    if mode == "CAUSAL":
        return (extent - 1, 0)
    out = -(-length // stride)
    total = max((out - 1) * stride + extent - length, 0)
    return (total // 2, total - total // 2)


# ----------------------------------------------------------------------------- the VJPs


def input_grad_padding(in_sizes: Sequence[int], k_sizes: Sequence[int], out_sizes: Sequence[int],
                       stride: Sequence[int], dilation: Sequence[int], padding: Pads) -> Pads:
    """Padding of the stride-dilated ``dy`` for the correlation that gives ``dx``.

    Tap ``k`` of output ``i`` reads ``x_pad[i·s + k·d]``; flipping the kernel turns that into
    a correlation over the dilated ``dy`` that must start ``d·(K−1) − lo`` before it and end
    where ``x`` ends: ``hi' = L + lo − dilated(out, s)``. Either side may be negative (crop).
    """
    return tuple((dilated_size(k, d) - 1 - lo, length + lo - dilated_size(o, s))
                 for length, k, o, s, d, (lo, _)
                 in zip(in_sizes, k_sizes, out_sizes, stride, dilation, padding))


def weight_grad_padding(in_sizes: Sequence[int], k_sizes: Sequence[int], out_sizes: Sequence[int],
                        stride: Sequence[int], dilation: Sequence[int], padding: Pads) -> Pads:
    """Padding of ``x`` for the correlation that gives ``dw``: ``dy`` is the kernel (dilation
    ``s``), the result has ``K`` positions (stride ``d``): ``hi' = dilated(out, s) − L +
    d·(K−1) − lo``, so that ``(L + lo + hi' − dilated(out, s)) / d + 1 = K``."""
    return tuple((lo, dilated_size(o, s) - length + dilated_size(k, d) - 1 - lo)
                 for length, k, o, s, d, (lo, _)
                 in zip(in_sizes, k_sizes, out_sizes, stride, dilation, padding))


def tap_placement(offset: Sequence[int], out_sizes: Sequence[int], stride: Sequence[int],
                  dilation: Sequence[int], padded_sizes: Sequence[int]) -> Pads:
    """Where tap ``k``'s contribution ``part[i]`` lands in ``x_pad`` (size ``P`` per axis):
    at ``k·d + i·s``, so ``k·d`` before it and ``P − k·d − dilated(out, s)`` after it (with
    ``s − 1`` between its samples, the interior padding)."""
    return tuple((k * d, size - k * d - dilated_size(o, s))
                 for k, o, s, d, size in zip(offset, out_sizes, stride, dilation, padded_sizes))


# ----------------------------------------------------------------------------- conv_transpose


def conv_transpose_output_size(length: int, kernel: int, stride: int, dilation: int, lo: int,
                               hi: int, output_padding: int) -> int:
    """``(L − 1)·stride − (lo + hi) + dilation·(K − 1) + output_padding + 1`` (PyTorch's
    ``ConvTranspose`` formula); may come out non-positive, which the caller rejects."""
    return (length - 1) * stride - (lo + hi) + dilated_size(kernel, dilation) + output_padding


# ----------------------------------------------------------------------------- jax.lax's forms
# ``jaxcnn.lax`` takes ``lax.conv_general_dilated``'s arguments; these turn its general form
# (``lhs_dilation`` l: the input dilated, l − 1 zeros between samples) into the family's.

LAX_PADDING_STRINGS = ("SAME", "SAME_LOWER", "VALID")


def lax_padding(mode: str, in_sizes: Sequence[int], k_sizes: Sequence[int], stride: Sequence[int],
                dilation: Sequence[int]) -> Pads:
    """``lax.padtype_to_pads`` for an upper-case ``mode`` of ``LAX_PADDING_STRINGS`` on the
    dilated kernel: ``SAME`` as conv's (odd extra at the high end), ``SAME_LOWER`` its mirror."""
    pads = tuple(_string_padding("VALID" if mode == "VALID" else "SAME", length, k, s, d)
                 for length, k, s, d in zip(in_sizes, k_sizes, stride, dilation))
    return tuple((hi, lo) for lo, hi in pads) if mode == "SAME_LOWER" else pads


def lax_output_size(length: int, kernel: int, stride: int, lhs_dilation: int, rhs_dilation: int,
                    lo: int, hi: int) -> int:
    """``lax.conv_general_dilated``'s output size: ``conv_output_size`` of the dilated input
    ``dilated(L, l)``; the padded input ``dilated(L, l) + lo + hi`` must be ≥ 0 (the caller
    checks)."""
    return conv_output_size(dilated_size(length, lhs_dilation), kernel, stride, rhs_dilation, lo, hi)


def lhs_dilated_padding(k_sizes: Sequence[int], dilation: Sequence[int], padding: Pads) -> Pads:
    """A stride-1 conv of the ``l``-dilated input is the input gradient of a conv of stride
    ``l`` (``jaxcnn.conv``'s family) with the kernel flipped: tap ``k`` of output ``i`` reads
    dilated sample ``i + k·d − lo``, i.e. input ``m`` with ``m·l + (K − 1 − k)·d = i + d·(K − 1)
    − lo``, so that conv's padding is ``(d·(K − 1) − lo, d·(K − 1) − hi)``; with it the
    conv maps the output size back to ``L`` (``(l·(L − 1)) / l + 1``). Either side may be
    negative (a crop)."""
    return tuple((dilated_size(k, d) - 1 - lo, dilated_size(k, d) - 1 - hi)
                 for k, d, (lo, hi) in zip(k_sizes, dilation, padding))


def lax_transpose_padding(kernel: int, stride: int, padding: Any) -> tuple[int, int]:
    """``lax.conv_transpose``'s padding of the ``stride``-dilated input for one axis of a
    (dilated) kernel ``kernel``: ``"SAME"``: ``K + s − 2`` in all, ``K − 1`` before when
    ``s > K − 1`` else half rounded up; ``"VALID"``: ``K + s − 2 + max(K − s, 0)``, ``K − 1``
    before; a forward conv's ``(lo, hi)``: ``(K − 1 − lo, K − 1 − hi)``."""
    if padding == "SAME":
        total = kernel + stride - 2
        before = kernel - 1 if stride > kernel - 1 else -(-total // 2)
    elif padding == "VALID":
        total = kernel + stride - 2 + max(kernel - stride, 0)
        before = kernel - 1
    else:
        before, after = (kernel - 1 - p for p in padding)
        total = before + after
    return (before, total - before)


# ----------------------------------------------------------------------------- pooling


def pool_output_size(length: int, window: int, stride: int, dilation: int, pad: int,
                     ceil_mode: bool) -> int:
    """PyTorch's ``pooling_output_shape``: ``⌊(L + 2p − d(K−1) − 1 [+ s − 1]) / s⌋ + 1``, the
    ``s − 1`` with ceil_mode, whose last window must start inside the input or the left padding:
    ``if ceil_mode and (out − 1)·s ≥ L + p: out −= 1``. May be ≤ 0 (the caller rejects it)."""
    span = length + 2 * pad - dilated_size(window, dilation) + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and out > 0 and (out - 1) * stride >= length + pad:
        out -= 1
    return out


def pool_padding(length: int, window: int, stride: int, dilation: int, pad: int,
                 out: int) -> tuple[int, int]:
    """``(lo, hi)`` for a pooling of ``out`` windows: the symmetric ``pad``, ``hi`` grown by
    ceil_mode's overhang so that the last window ``(out − 1)·s + extent`` fits."""
    return (pad, max(pad, (out - 1) * stride + dilated_size(window, dilation) - length - pad))


# ----------------------------------------------------------------------------- spatial sharding
# An axis of length L = P·m split into P blocks of m samples, one per shard; output i reads
# x_pad[i·s + k·d], i.e. x[i·s + k·d − lo]. The shards' outputs tile the global output in
# equal, aligned blocks of q = m / s when shard p's first output p·q reads from the start of
# its block (p·q·s = p·m): that needs s | m and an output of exactly L / s.


def tiles_shards(length: int, shards: int, stride: int, out: int) -> bool:
    """Whether the output (``out`` samples) of an axis of ``length = shards·m`` samples splits
    into ``shards`` aligned blocks of ``m / stride``: ``stride | m`` and ``out = length / stride``.
    For a window of extent ``e`` and padding ``(lo, hi)`` the second holds iff
    ``e − s ≤ lo + hi ≤ e − 1`` (``"SAME"`` always; ``"CAUSAL"`` always; ``"VALID"`` iff ``e ≤ s``)."""
    local = length // shards
    return local * shards == length and local % stride == 0 and out * stride == length


def halo_widths(extent: int, stride: int, lo: int) -> tuple[int, int]:
    """``(left, right)`` samples a shard needs beyond its block, for aligned blocks.

    Local output ``i' < q = m / s`` reads local positions ``i'·s + k·d − lo``: from ``−lo``
    (``i' = k = 0``) to ``(q − 1)·s + (e − 1) − lo = m − 1 + (e − s − lo)``. So ``lo`` samples
    from the left neighbour's tail and ``e − s − lo`` from the right neighbour's head; a
    negative right width (``> −s``) is the block's tail that no window of the shard reads."""
    return lo, extent - stride - lo
