r"""The input gradient of a strided convolution in the native kernel, one output phase at a time.

Along an axis with stride ``s`` (dilation 1, low pad ``lo``), kernel size ``K``:

    dx[j] = Σ_{i, k : i·s + k − lo = j} dy[i] · w[k]

As a stride-1 correlation of the stride-dilated ``dy`` (``native_input_grad``'s form) it would
multiply ``s − 1`` zeros for every sample of ``dy``. Split ``j`` by its phase ``φ = j mod s``,
``j = s·q + φ``: only the taps ``k ≡ φ + lo (mod s)`` meet ``dy``, ``k = s·m + κ`` with
``κ = (φ + lo) mod s``, and then ``i = q + e − m`` with ``e = (φ + lo − κ) / s`` (a whole
number). Flipping the ``K_φ = ⌈(K − κ) / s⌉`` taps of the phase (``m' = K_φ − 1 − m``):

    dx[s·q + φ] = Σ_{m'} dy[q + m' − lo_φ] · w[κ::s][K_φ − 1 − m'],   lo_φ = K_φ − 1 − e

a stride-1 correlation of ``dy`` itself with the phase's flipped sub-kernel, ``dy`` read as
zeros outside its range: the native ``conv`` with the geometry of ``phase_geometry``, for
``Q_φ = ⌈(L − φ) / s⌉`` positions ``q``. In ``n`` dimensions the phases are the products of the
axes' phases; a phase with no taps along some axis (a 1×1 kernel at stride 2) is zeros. The
phases are then interleaved into ``dx`` (one copy of it). Every product the sum needs is done
once, none with a zero of the dilation.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxcnn._conv.pieces import flip_swap_io
from jaxcnn._shapes import ConvSpec, kernel_sizes, spatial_sizes
from jaxcnn._taps import interleave_phases, offsets


def phase_geometry(k: int, s: int, lo: int, length: int, phase: int) -> tuple[int, int, int, int]:
    """``(κ, K_φ, lo_φ, Q_φ)`` of output phase ``phase`` along one axis (kernel size ``k``,
    stride ``s``, low pad ``lo``, input length ``length``): its first tap, its number of taps,
    the low pad of its stride-1 correlation with ``dy`` and its number of positions."""
    kappa = (phase + lo) % s
    taps = max(0, -(-(k - kappa) // s))
    e = (phase + lo - kappa) // s
    return kappa, taps, taps - 1 - e, max(0, -(-(length - phase) // s))


def native_strided_input_grad(dy: jax.Array, w: jax.Array, spec: ConvSpec, in_shape: tuple[int, ...],
                              correlate: Callable[..., jax.Array]) -> jax.Array:
    """``dx`` of a strided conv (channels last, dilation 1; ``native.supports``): each output
    phase's stride-1 correlation of ``dy`` with its flipped sub-kernel, interleaved.
    ``correlate(dy, kernel, out_shape, k_sizes, lo)`` is the native kernel's stride-1
    correlation (``native_input_grad`` passes it, and calls this for a stride above 1)."""
    stride = spec.stride
    lengths, k_sizes = spatial_sizes(in_shape, spec), kernel_sizes(w.shape, spec)
    counts = [-(-length // s) for length, s in zip(lengths, stride)]   # positions of phase 0
    batch, channels = in_shape[0], in_shape[-1]
    pieces = []
    for phases in offsets(stride):     # the order interleave_phases reads them in
        geometry = [phase_geometry(k, s, lo, length, phase)
                    for k, s, (lo, _), length, phase in zip(k_sizes, stride, spec.padding, lengths, phases)]
        out_sizes = [q for *_, q in geometry]
        if any(taps == 0 for _, taps, _, _ in geometry) or 0 in out_sizes:
            piece = jnp.zeros((batch, *out_sizes, channels), jnp.float32)
        else:
            sub = w[tuple(slice(kappa, None, s) for (kappa, *_), s in zip(geometry, stride))]
            piece = correlate(dy, flip_swap_io(sub, spec), (batch, *out_sizes, channels),
                              [t for _, t, _, _ in geometry], [lo for _, _, lo, _ in geometry])
        pad = [(0, 0)] + [(0, c - q) for c, q in zip(counts, out_sizes)] + [(0, 0)]
        pieces.append(jnp.pad(piece, pad))
    dx = interleave_phases(pieces, stride, spec.spatial_axes())    # (N, *counts·s, C), cropped
    return dx[(slice(None), *(slice(0, length) for length in lengths))]


__all__ = ["phase_geometry", "native_strided_input_grad"]
