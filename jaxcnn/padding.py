"""Border padding modes (reflect, replicate, circular) and their adjoint, the fold.

Padding along one axis is a gather with static indices: the padded signal is
``x_pad[j] = x[idx[j]]`` where ``idx`` lists ``lo`` border indices, ``0 … L−1``, then ``hi``
border indices (PyTorch's modes):

- reflect   ``lo: lo, lo−1, …, 1``        ``hi: L−2, L−3, …, L−1−hi``   (edge not repeated)
- replicate ``lo: 0, …, 0``               ``hi: L−1, …, L−1``
- circular  ``lo: L−lo, …, L−1``          ``hi: 0, …, hi−1``

Its VJP is the adjoint gather, a scatter-add: ``dx[i] = Σ_{j : idx[j] = i} g[j]``, the
middle of ``g`` plus each border folded back onto the samples it copied. The fold is linear
too, and its VJP is the padding again: two linear primitives, each the other's transpose,
differentiable to any order in both modes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import ad, batching

from jaxcnn._args import Pads
from jaxcnn._primitives import ShapedArray, make_primitive

__all__ = ["pad", "fold"]


def border_indices(length: int, lo: int, hi: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Static source indices of the ``lo`` and ``hi`` border samples along one axis."""
    if mode == "reflect":
        return np.arange(lo, 0, -1), np.arange(length - 2, length - 2 - hi, -1)
    if mode == "replicate":
        return np.zeros(lo, dtype=int), np.full(hi, length - 1)
    if mode == "circular":
        return np.arange(length - lo, length), np.arange(hi)
    raise ValueError(f"padding_mode: expected reflect, replicate or circular; got {mode!r}")


def _take(x: jax.Array, indices: np.ndarray, axis: int) -> jax.Array:
    return jnp.take(x, jnp.asarray(indices, dtype=jnp.int32), axis=axis)


def _pad_axis(x: jax.Array, lo: int, hi: int, mode: str, axis: int) -> jax.Array:
    if lo == 0 and hi == 0:
        return x
    lo_idx, hi_idx = border_indices(x.shape[axis], lo, hi, mode)
    return jnp.concatenate([_take(x, lo_idx, axis), x, _take(x, hi_idx, axis)], axis=axis)


def _add_at(dx: jax.Array, indices: np.ndarray, g: jax.Array, axis: int) -> jax.Array:
    """``dx`` with ``g``'s samples added at the static ``indices`` along ``axis``: the transpose
    of ``_take``. Every border is a run (a step of +1 for circular, −1 for reflect) or one index
    repeated (replicate), so it is a zero pad of ``g`` (flipped, or summed) added to ``dx``, no
    scatter: the scatter-add gave wrong sums on an axis split over devices of an Explicit mesh
    (found by ``jaxcnn fuzz``'s ``sharded_input``; ``tests/test_sharding.py``)."""
    if len(indices) == 0:
        return dx
    steps = set(np.diff(indices).tolist())
    if steps <= {0}:
        g, indices = jnp.sum(g, axis=axis, keepdims=True), indices[:1]
    elif steps == {-1}:
        g, indices = jnp.flip(g, axis=axis), indices[::-1]
    elif steps != {1}:
        lead = (slice(None),) * axis
        return dx.at[lead + (jnp.asarray(indices, dtype=jnp.int32),)].add(g)
    widths = [(0, 0)] * dx.ndim
    widths[axis] = (int(indices[0]), dx.shape[axis] - int(indices[-1]) - 1)
    return dx + jnp.pad(g, widths)


def _fold_axis(g: jax.Array, lo: int, hi: int, mode: str, axis: int) -> jax.Array:
    if lo == 0 and hi == 0:
        return g
    length = g.shape[axis] - lo - hi
    lo_idx, hi_idx = border_indices(length, lo, hi, mode)
    g_lo, dx, g_hi = jnp.split(g, [lo, lo + length], axis=axis)
    return _add_at(_add_at(dx, lo_idx, g_lo, axis), hi_idx, g_hi, axis)


def _pad_compute(x, *, pads, mode, axes):
    for (lo, hi), axis in zip(pads, axes):
        x = _pad_axis(x, lo, hi, mode, axis)
    return x


def _fold_compute(g, *, pads, mode, axes):
    for (lo, hi), axis in reversed(tuple(zip(pads, axes))):
        g = _fold_axis(g, lo, hi, mode, axis)
    return g


def _resized(shape, pads, axes, sign):
    shape = list(shape)
    for (lo, hi), axis in zip(pads, axes):
        shape[axis] += sign * (lo + hi)
    return tuple(shape)


def _pad_abstract_eval(x, *, pads, mode, axes):
    return ShapedArray(_resized(x.shape, pads, axes, +1), x.dtype)


def _fold_abstract_eval(g, *, pads, mode, axes):
    return ShapedArray(_resized(g.shape, pads, axes, -1), g.dtype)


pad_p = make_primitive("border_pad", _pad_compute, _pad_abstract_eval)
fold_p = make_primitive("border_fold", _fold_compute, _fold_abstract_eval)

# Both are linear: JVP = the op on the tangent. The transpose of the gather is the scatter-add
# (fold the borders back), and the transpose of the fold is the gather again.


def _pad_transpose(ct, x, *, pads, mode, axes):
    return [fold_p.bind(ct, pads=pads, mode=mode, axes=axes)]


def _fold_transpose(ct, g, *, pads, mode, axes):
    return [pad_p.bind(ct, pads=pads, mode=mode, axes=axes)]


ad.deflinear2(pad_p, _pad_transpose)
ad.deflinear2(fold_p, _fold_transpose)


# vmap: the mapped axis goes in front; the padded axes move one along.

def _border_batch_rule(prim, args, dims, *, pads, mode, axes):
    """The vmap rule of ``pad_p`` and ``fold_p``."""
    (x,), (dim,) = args, dims
    x = jnp.moveaxis(x, dim, 0)
    return prim.bind(x, pads=pads, mode=mode, axes=tuple(a + 1 for a in axes)), 0


def _pad_batch_rule(args, dims, **params):
    return _border_batch_rule(pad_p, args, dims, **params)


def _fold_batch_rule(args, dims, **params):
    return _border_batch_rule(fold_p, args, dims, **params)


batching.primitive_batchers[pad_p] = _pad_batch_rule
batching.primitive_batchers[fold_p] = _fold_batch_rule


def pad(x: jax.Array, pads: Pads, mode: str, axes: tuple[int, ...]) -> jax.Array:
    """Pad ``x`` by ``pads[i] = (lo, hi)`` along ``axes[i]`` with a border ``mode``."""
    axes = tuple(a % x.ndim for a in axes)
    return pad_p.bind(x, pads=tuple(map(tuple, pads)), mode=mode, axes=axes)


def fold(g: jax.Array, pads: Pads, mode: str, axes: tuple[int, ...]) -> jax.Array:
    """The adjoint of ``pad``: ``⟨pad(x), g⟩ = ⟨x, fold(g)⟩``; the padded borders of ``g``
    are added back onto the samples they were copied from."""
    axes = tuple(a % g.ndim for a in axes)
    return fold_p.bind(g, pads=tuple(map(tuple, pads)), mode=mode, axes=axes)
