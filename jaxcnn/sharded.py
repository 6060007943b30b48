r"""Spatially sharded convolution and pooling: a hand-written halo exchange inside ``shard_map``.

For inputs too large for one device (3D volumes, long 1D signals), split along one spatial
axis over a mesh axis of ``P`` devices: shard ``p`` holds samples ``p·m … p·m + m − 1``
(``L = P·m``). The global op's output ``i`` reads ``x[i·s + k·d − lo]`` (stride ``s``,
dilation ``d``, padding ``(lo, hi)``, window extent ``e = d·(K − 1) + 1``). When every shard's
outputs start where its block starts (``s | m`` and ``L / s`` outputs, ``_shapes.tiles_shards``),
shard ``p`` computes outputs ``p·m/s … (p + 1)·m/s − 1`` from its block widened by a halo::

    x_ext = [ left neighbour's last lo samples | own block (m) | right neighbour's first e − s − lo ]

and the op with no padding on that axis (the halo *is* the padding there). At the outer ends
the halo is the global padding: zeros (−∞ for max pooling), or the border mode of the end
block (reflect, replicate: the first shard's left border of the global array is its own
block's, and likewise on the right); circular padding wraps around the ring of shards.

The exchange is ``halo_extend``: two ``lax.ppermute`` (tail to the right neighbour, head to the
left one), a gather for the border modes at the ends, a concatenation. Linear (affine with
max pooling's −∞ ends), and its VJP is written by hand (``_extend_bwd``): its transpose
``halo_fold`` sends each halo's cotangent back with the inverse permutation and adds it into
the edge of the neighbour that supplied it. The two are each other's transposes, so higher
derivatives stay in these rules. The local op (``jaxcnn.conv``, ``max_pool``, ``avg_pool``)
keeps jaxcnn's own rules; the weight's cotangent is summed over shards by ``shard_map``'s
transpose (the weight is replicated).

Two ways in: inside your own ``jax.shard_map`` call ``conv(x_block, w, b, axis_name=...,
spatial_axis=...)`` on the local block (output: the local block of the global output, split
the same way); or pass ``mesh=`` and the global array, and ``conv`` runs the ``shard_map``.
Your own ``shard_map`` may check types (``check_vma=True``, JAX's default: jaxcnn's primitives
type their results by the mesh axes they vary along, ``jaxcnn._primitives``) or not; on JAX
0.4.30 it needs ``check_rep=False`` (that release's replication checker has no rules for
jaxcnn's primitives). ``mesh=`` runs an unchecked one, on any release.

Why the exchange is a ``jax.custom_vjp`` and not a primitive: the ``ppermute``s stay visible
in the jaxpr (no all-gather hides there), at the price of forward mode (``jax.jvp`` of a
custom_vjp is refused); a primitive pair with JVP and transpose rules gives both modes but
hides the collectives inside its lowering.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Hashable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxcnn import padding as _padding
from jaxcnn._args import PoolSpec, check_bool
from jaxcnn._args.sharded import (HaloSpec, bound_axis_size, check_mesh_axis, check_split,
                                  normalize_sharded_conv, normalize_sharded_pool, split_axis)
from jaxcnn._compat import shard_map
from jaxcnn.conv import conv as _conv
from jaxcnn.pool import avg_pool as _avg_pool
from jaxcnn.pool import max_pool as _max_pool
from jaxcnn._pool import avg_divisor

__all__ = ["conv", "max_pool", "avg_pool"]

# ----------------------------------------------------------------------------- the exchange
# Shard p, block x_p of m samples along the axis, halo widths (A, B) = (left, right). With
# R = "p → p + 1" (the ring's wrap P − 1 → 0 when circular) and its inverse R⁻¹ = "p + 1 → p":
#
#   forward   ext_p = [ ℓ_p | x_p | r_p ]     ℓ_p = (R x_tail)_p   = x_{p−1}[m − A:]
#                                             r_p = (R⁻¹ x_head)_p = x_{p+1}[:B]
#             at the ends (no neighbour; ppermute gives zeros there): ℓ_0 = fill or
#             border(x_0)[:A], r_{P−1} = fill or border(x_{P−1})[−B:].
#   transpose ⟨ext, g⟩ = Σ_p ⟨x_p, g_p[A:A+m]⟩ + ⟨x_{p−1}[m−A:], gℓ_p⟩ + ⟨x_{p+1}[:B], gr_p⟩ + ends
#             so x̄_p = g_p[A:A+m]
#                    + (R⁻¹ gℓ)_p   added on the tail [m − A:]   (ℓ came from the left: send back left)
#                    + (R gr)_p     added on the head [:B]       (r came from the right: send back right)
#                    + fold(border cotangent) on the end shards (padding's own adjoint);
#             the transpose of a ppermute is the ppermute with the inverse permutation, and a
#             constant fill gets no cotangent. B < 0 crops: its transpose pads zeros back.


def _ring(shards: int, circular: bool, step: int) -> list[tuple[int, int]]:
    """``p → p + step`` for each shard that has such a neighbour (all of them on a ring)."""
    return [(p, (p + step) % shards) for p in range(shards)
            if circular or 0 <= p + step < shards]


def _ends(halo: HaloSpec) -> tuple[jax.Array, jax.Array]:
    """Whether this shard is the first / last along the axis (traced: the shard index)."""
    index = jax.lax.axis_index(halo.axis_name)
    return index == 0, index == halo.shards - 1


def _slice(x: jax.Array, axis: int, start: int, stop: int) -> jax.Array:
    return jax.lax.slice_in_dim(x, start, stop, axis=axis)


def _place(part: jax.Array, axis: int, before: int, after: int) -> jax.Array:
    """``part`` with ``before`` / ``after`` zeros along ``axis`` (the adjoint of a slice)."""
    config = [(0, 0, 0)] * part.ndim
    config[axis] = (before, after, 0)
    return jax.lax.pad(part, jnp.zeros((), part.dtype), config)


def _border_mode(halo: HaloSpec) -> bool:
    return halo.mode in ("reflect", "replicate")


def _extend(x: jax.Array, halo: HaloSpec, fill: float) -> jax.Array:
    axis, a, b, m = halo.axis, halo.left, halo.right, x.shape[halo.axis]
    circular = halo.mode == "circular"
    pieces = [x if b >= 0 else _slice(x, axis, 0, m + b)]
    first, last = _ends(halo)
    border = (_padding.pad(x, ((a, max(b, 0)),), halo.mode, (axis,))
              if _border_mode(halo) else None)
    if a:
        left = jax.lax.ppermute(_slice(x, axis, m - a, m), halo.axis_name,
                                _ring(halo.shards, circular, +1))
        if not circular:
            end = (_slice(border, axis, 0, a) if border is not None
                   else jnp.full_like(left, fill))
            left = jnp.where(first, end, left)
        pieces.insert(0, left)
    if b > 0:
        right = jax.lax.ppermute(_slice(x, axis, 0, b), halo.axis_name,
                                 _ring(halo.shards, circular, -1))
        if not circular:
            end = (_slice(border, axis, a + m, a + m + b) if border is not None
                   else jnp.full_like(right, fill))
            right = jnp.where(last, end, right)
        pieces.append(right)
    return jnp.concatenate(pieces, axis=axis) if len(pieces) > 1 else pieces[0]


def _fold(g: jax.Array, halo: HaloSpec) -> jax.Array:
    axis, a, b = halo.axis, halo.left, halo.right
    m = g.shape[axis] - a - b                     # the block's size (b < 0: its tail was cropped)
    circular = halo.mode == "circular"
    first, last = _ends(halo)
    zero = jnp.zeros((), g.dtype)
    dx = _place(_slice(g, axis, a, a + m + min(b, 0)), axis, 0, max(-b, 0))
    border = [jnp.zeros_like(dx)]
    if a:
        # from the non-circular first shard, no pair of the ring sends: its g_left stays
        g_left = _slice(g, axis, 0, a)
        back = jax.lax.ppermute(g_left, halo.axis_name, _ring(halo.shards, circular, -1))
        dx = dx + _place(back, axis, m - a, 0)
        border.insert(0, jnp.where(first, g_left, zero))
    if b > 0:
        g_right = _slice(g, axis, a + m, a + m + b)
        back = jax.lax.ppermute(g_right, halo.axis_name, _ring(halo.shards, circular, +1))
        dx = dx + _place(back, axis, 0, m - b)
        border.append(jnp.where(last, g_right, zero))
    if _border_mode(halo) and len(border) > 1:
        g_border = jnp.concatenate(border, axis=axis)
        dx = dx + _padding.fold(g_border, ((a, max(b, 0)),), halo.mode, (axis,))
    return dx


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def halo_extend(x: jax.Array, halo: HaloSpec) -> jax.Array:
    """The block ``x`` widened by its halo along ``halo.axis``: ``[left | x | right]``, the
    neighbours' edges (``ppermute``), the global padding at the two outer ends."""
    return _extend(x, halo, halo.fill)


def _extend_fwd(x, halo):
    return _extend(x, halo, halo.fill), None      # linear (its fill a constant): nothing saved


def _extend_bwd(halo, _, g):
    return (halo_fold(g, halo),)                  # x̄ = the transpose, derived above


halo_extend.defvjp(_extend_fwd, _extend_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def halo_fold(g: jax.Array, halo: HaloSpec) -> jax.Array:
    """The adjoint of ``halo_extend``: ``⟨halo_extend(x) − fill, g⟩ = ⟨x, halo_fold(g)⟩``. Each
    halo's cotangent goes back to the shard it came from, added onto that shard's edge."""
    return _fold(g, halo)


def _fold_fwd(g, halo):
    return _fold(g, halo), None


def _fold_bwd(halo, _, c):
    return (halo_extend(c, dataclasses.replace(halo, fill=0.0)),)   # extend's linear part


halo_fold.defvjp(_fold_fwd, _fold_bwd)


# ----------------------------------------------------------------------------- the ops


def conv(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, axis_name: Hashable,
         spatial_axis: int = 0, mesh: jax.sharding.Mesh | None = None, stride: Any = 1,
         padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
         channels_last: bool = False, impl: str = "lax", precision: Any = None,
         preferred_element_type: Any = None) -> jax.Array:
    r"""``jaxcnn.conv`` of an input split along one spatial axis, shard by shard.

    Equal to ``jaxcnn.conv(x_global, w, b, ...)`` with the same arguments, block by block:
    ``y[n, o, i] = b[o] + Σ_c Σ_k w[o, c, k] · x[n, c, i·s + k·d − lo]``, each shard computing
    the outputs of its block from the block and a halo of its neighbours (``halo_extend``).

    Args:
      x: without ``mesh``, the local block inside ``jax.shard_map``: ``(N, C, *S)`` (or
        ``(N, *S, C)``) with ``S[spatial_axis] = m``, this shard's part of ``L = P·m``. With
        ``mesh``, the global array (``L`` a multiple of ``P``).
      w, b, stride, padding, dilation, groups, padding_mode, channels_last, impl, precision,
        preferred_element_type: as ``jaxcnn.conv``, meaning what they mean for the global
        array (``"SAME"`` resolves on ``L``); replicated on every shard.
      axis_name: the mesh axis the spatial axis is split over (``P`` devices).
      spatial_axis: which spatial axis is split (0 is the first spatial axis in either layout).
      mesh: if given, ``x`` is global and this runs the ``shard_map`` itself: ``x`` split along
        ``spatial_axis`` over ``axis_name``, ``w`` and ``b`` replicated, the output split like
        ``x``. A mesh of ``Auto`` axes works anywhere; one of ``Explicit`` axes (what
        ``jax.make_mesh`` gives in current JAX) under ``jax.set_mesh(mesh)``, as any op on it.

    The split must tile the output: ``stride | m`` and ``L / stride`` outputs, i.e.
    ``e − s ≤ lo + hi ≤ e − 1`` on that axis (``e`` the dilated kernel extent; ``"SAME"`` and
    ``"CAUSAL"`` always qualify), and each halo (``lo`` samples from the left, ``e − s − lo``
    from the right) must fit in one shard. Anything else is a ``ValueError`` naming the axis
    and the sizes, never a silently different result.

    Returns:
      The block of the global output held by this shard (``m / s`` samples along the axis),
      or with ``mesh`` the global output, split like ``x``. Differentiable to any order in
      reverse mode (the exchange's VJP is ``halo_fold``; the conv's its own rules).
    """
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                  padding_mode=padding_mode, channels_last=channels_last, impl=impl,
                  precision=precision, preferred_element_type=preferred_element_type)
    if mesh is not None:
        return _on_mesh(conv, x, (w,) if b is None else (w, b), mesh=mesh, axis_name=axis_name,
                        spatial_axis=spatial_axis, **kwargs)
    shards = bound_axis_size(axis_name)
    x, halo, local = normalize_sharded_conv(x, w, b, axis_name=axis_name,
                                            spatial_axis=spatial_axis, shards=shards, **kwargs)
    return _conv(halo_extend(x, halo), w, b, **dict(kwargs, padding=local))


def max_pool(x: jax.Array, window: Any, stride: Any = None, padding: Any = 0, *,
             axis_name: Hashable, spatial_axis: int = 0, mesh: jax.sharding.Mesh | None = None,
             dilation: Any = 1, ceil_mode: bool = False, channels_last: bool = False) -> jax.Array:
    """``jaxcnn.max_pool`` of an input split along one spatial axis (see ``conv`` for
    ``axis_name``, ``spatial_axis``, ``mesh`` and the split's conditions; here ``lo = hi =
    padding``, ``e = dilation·(window − 1) + 1``). The halo at the outer ends is −∞, the
    padding that never wins. (One edge case differs: a window whose only real samples are
    ``−∞`` and that starts in the global padding sends its gradient to the real sample, as
    the global op does, but its value is −∞ either way.)"""
    kwargs = dict(dilation=dilation, ceil_mode=ceil_mode, channels_last=channels_last)
    if mesh is not None:
        return _on_mesh(max_pool, x, (), mesh=mesh, axis_name=axis_name,
                        spatial_axis=spatial_axis, window=window, stride=stride,
                        padding=padding, **kwargs)
    x, halo, spec = normalize_sharded_pool(x, window, stride, padding, axis_name=axis_name,
                                           spatial_axis=spatial_axis,
                                           shards=bound_axis_size(axis_name), op="max_pool",
                                           **kwargs)
    return _max_pool(halo_extend(x, halo), spec.window, spec.stride, _local_padding(spec, halo),
                     **kwargs)


def avg_pool(x: jax.Array, window: Any, stride: Any = None, padding: Any = 0, *,
             axis_name: Hashable, spatial_axis: int = 0, mesh: jax.sharding.Mesh | None = None,
             ceil_mode: bool = False, count_include_pad: bool = True,
             channels_last: bool = False) -> jax.Array:
    """``jaxcnn.avg_pool`` of an input split along one spatial axis (see ``conv`` and
    ``max_pool``). Each shard sums its windows over the widened block (zeros at the ends) and
    divides by PyTorch's divisor of the global op: the local pooling divides by the window
    along the split axis, and the global divisor's factor there (``count_include_pad``,
    ceil_mode's overhang) differs only at the ends, a static table sliced by shard index."""
    if mesh is not None:
        return _on_mesh(avg_pool, x, (), mesh=mesh, axis_name=axis_name,
                        spatial_axis=spatial_axis, window=window, stride=stride,
                        padding=padding, ceil_mode=ceil_mode,
                        count_include_pad=count_include_pad, channels_last=channels_last)
    count_include_pad = check_bool(count_include_pad, "count_include_pad")
    x, halo, spec = normalize_sharded_pool(x, window, stride, padding, axis_name=axis_name,
                                           spatial_axis=spatial_axis,
                                           shards=bound_axis_size(axis_name), op="avg_pool",
                                           dilation=1, ceil_mode=ceil_mode,
                                           channels_last=channels_last)
    y = _avg_pool(halo_extend(x, halo), spec.window, spec.stride, _local_padding(spec, halo),
                  ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                  channels_last=channels_last)
    return _divisor_correction(y, spec, halo, count_include_pad)


def _split_index(spec: PoolSpec, halo: HaloSpec) -> int:
    return spec.spatial_axes().index(halo.axis)


def _local_padding(spec: PoolSpec, halo: HaloSpec) -> tuple[int, ...]:
    """The pooling's symmetric padding per axis, none on the split axis (the halo is it)."""
    split = _split_index(spec, halo)
    return tuple(0 if i == split else lo for i, (lo, _) in enumerate(spec.padding))


def _divisor_correction(y: jax.Array, spec: PoolSpec, halo: HaloSpec,
                        count_include_pad: bool) -> jax.Array:
    """``y · K / c_global[i]`` along the split axis, ``c_global`` PyTorch's divisor there (the
    local pooling, unpadded on that axis, divided by the window ``K``); nothing where equal."""
    split = _split_index(spec, halo)
    along = PoolSpec(*(field[split:split + 1] for field in (
        spec.window, spec.stride, spec.dilation, spec.padding, spec.in_sizes)), False)
    counts = avg_divisor(along, count_include_pad, 3).ravel()
    factor = spec.window[split] / counts
    if np.all(factor == 1):
        return y
    block = y.shape[halo.axis]
    start = jax.lax.axis_index(halo.axis_name) * block
    local = jax.lax.dynamic_slice_in_dim(jnp.asarray(factor, y.dtype), start, block)
    shape = [1] * y.ndim
    shape[halo.axis] = block
    return y * local.reshape(shape)


def _on_mesh(block_op: Callable, x: Any, operands: tuple, *, mesh: jax.sharding.Mesh,
             axis_name: Hashable, spatial_axis: int, channels_last: bool = False,
             **kwargs: Any) -> jax.Array:
    """``block_op`` under ``shard_map`` on ``mesh``: ``x`` split along its spatial axis over
    ``axis_name``, the ``operands`` (weights) replicated, the output split like ``x``."""
    shards = check_mesh_axis(mesh, axis_name)
    x, spatial_axis, axis = split_axis(x, spatial_axis, channels_last, block_op.__name__)
    check_split(tuple(x.shape), axis, spatial_axis, shards, axis_name)
    split = PartitionSpec(*(axis_name if i == axis else None for i in range(x.ndim)))

    def body(block, *weights):
        return block_op(block, *weights, axis_name=axis_name, spatial_axis=spatial_axis,
                        channels_last=channels_last, **kwargs)

    in_specs = (split,) + (PartitionSpec(),) * len(operands)
    # placed as shard_map expects them (an Explicit mesh's shard_map takes no other layout)
    placed = [jax.device_put(a, jax.sharding.NamedSharding(mesh, spec))
              for a, spec in zip((x, *operands), in_specs)]
    return shard_map(body, mesh, in_specs, split, check=False)(*placed)
