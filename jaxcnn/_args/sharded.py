"""``jaxcnn.sharded``: the split, the mesh axis and the halo, validated and made canonical.

A spatially sharded op is the global op computed block by block: shard ``p`` of ``P`` holds
samples ``p·m … p·m + m − 1`` of one spatial axis (``L = P·m``). Everything the global op
accepts is checked by its own front door on the global shape (``normalize_conv``,
``normalize_pool``); here only what sharding adds: the axis, the mesh axis, blocks that
tile the output (``_shapes.tiles_shards``) and halos that a neighbour can supply.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Hashable

import jax
import numpy as np

from jaxcnn._args.common import as_float_array
from jaxcnn._args.conv import normalize_conv
from jaxcnn._args.pool import check_bool, normalize_pool
from jaxcnn._compat import axis_size
from jaxcnn._shapes import (ConvSpec, Pads, PoolSpec, conv_output_size, dilated_size, halo_widths,
                            is_int, kernel_sizes, spatial_axes, tiles_shards)


@dataclasses.dataclass(frozen=True)
class HaloSpec:
    """How a block is widened along ``axis``: ``left`` samples from the left neighbour's tail
    and ``right`` from the right neighbour's head (a negative ``right`` crops the block's
    tail instead), over ``shards`` devices of mesh axis ``axis_name``. At the two outer ends
    (``mode`` not circular) the halo is the global padding: ``fill`` for ``"zeros"`` (−∞ for
    max pooling), else the border ``mode`` of the block itself; circular wraps the ring."""

    axis: int
    left: int
    right: int
    axis_name: Hashable
    shards: int
    mode: str
    fill: float = 0.0


def check_spatial_axis(spatial_axis: Any, n: int) -> int:
    """``spatial_axis`` indexes the ``n`` spatial axes (0 is the first, whatever the layout)."""
    if not is_int(spatial_axis):
        raise TypeError(f"spatial_axis: expected an int (which of the {n} spatial axes is "
                        f"split); got {spatial_axis!r}")
    if not 0 <= int(spatial_axis) < n:
        raise ValueError(f"spatial_axis: expected an int in [0, {n}) for {n} spatial axes; "
                         f"got {spatial_axis}")
    return int(spatial_axis)


def bound_axis_size(axis_name: Any) -> int:
    """The number of shards along ``axis_name``, which ``shard_map`` must have bound."""
    try:
        hash(axis_name)
        return axis_size(axis_name)
    except (NameError, TypeError, KeyError) as err:
        raise ValueError(f"axis_name: expected a mesh axis bound by an enclosing jax.shard_map "
                         f"(or pass mesh= to shard a global array); got {axis_name!r}, which is "
                         f"not bound here") from err


def check_mesh_axis(mesh: Any, axis_name: Any) -> int:
    """``axis_name`` is an axis of ``mesh``; its size."""
    if not isinstance(mesh, jax.sharding.Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh; got {type(mesh).__name__}")
    if axis_name not in mesh.shape:
        raise ValueError(f"axis_name: expected one of the mesh's axes {tuple(mesh.shape)}; "
                         f"got {axis_name!r}")
    return int(mesh.shape[axis_name])


def check_split(shape: tuple[int, ...], axis: int, spatial_axis: int, shards: int,
                axis_name: Any) -> None:
    """The global array splits into ``shards`` equal blocks along ``axis``."""
    if shape[axis] % shards:
        raise ValueError(f"x: spatial axis {spatial_axis} (array axis {axis}) of size "
                         f"{shape[axis]} does not split into {shards} equal shards over mesh "
                         f"axis {axis_name!r}; expected a multiple of {shards}")


def halo_spec(*, axis: int, spatial_axis: int, local: int, shards: int, axis_name: Any,
              window: int, stride: int, dilation: int, pads: tuple[int, int], mode: str,
              fill: float, op: str) -> HaloSpec:
    """The halo of one sharded axis, after checking that shards tile the output and that
    each halo comes from the nearest neighbour."""
    length, (lo, hi) = local * shards, pads
    extent = dilated_size(window, dilation)
    where = (f"spatial axis {spatial_axis} (split into {shards} shards of {local} over mesh "
             f"axis {axis_name!r})")
    if local % stride:
        raise ValueError(f"stride: {stride} on {where} does not tile the shard boundaries; "
                         f"expected a shard size that is a multiple of the stride")
    out = conv_output_size(length, window, stride, dilation, lo, hi)
    if not tiles_shards(length, shards, stride, out):
        raise ValueError(
            f"padding: sharded {op} on {where} needs an output of input / stride = "
            f"{length} / {stride} = {length // stride} samples, so that each shard's outputs "
            f"start where its block starts; padding ({lo}, {hi}) gives {out}; expected "
            f"lo + hi between {extent - stride} and {extent - 1} (window extent {extent}), "
            f"such as padding='SAME'")
    left, right = halo_widths(extent, stride, lo)
    # reflect's border of width w reads block samples 1 … w; a halo must come from one shard
    limit = local - 1 if mode == "reflect" else local
    if left > limit or right > limit:
        raise ValueError(
            f"x: {op}'s halo on {where} is wider than a shard: {left} samples from the left and "
            f"{right} from the right; expected at most {limit}{' (reflect)' if mode == 'reflect' else ''}"
            f" (fewer shards or a smaller window)")
    return HaloSpec(axis, left, right, axis_name, shards, mode, fill)


def split_axis(x: Any, spatial_axis: Any, channels_last: Any, op: str) -> tuple[jax.Array, int, int]:
    """``x`` (a block or the global array) as a float array with a batch, a channel and at
    least one spatial axis; the checked ``spatial_axis`` and its position in ``x``."""
    x = as_float_array(x, "x")
    check_bool(channels_last, "channels_last")
    if x.ndim < 3:
        raise ValueError(f"x: sharded {op} expects a batch, a channel and at least one spatial "
                         f"axis; got shape {tuple(x.shape)}")
    spatial_axis = check_spatial_axis(spatial_axis, x.ndim - 2)
    return x, spatial_axis, spatial_axes(x.ndim - 2, bool(channels_last))[spatial_axis]


def _global_struct(x: Any, spatial_axis: Any, channels_last: Any, shards: int, op: str):
    """The checked block and axis, and the global shape the block is one of ``shards`` of."""
    x, spatial_axis, axis = split_axis(x, spatial_axis, channels_last, op)
    shape = list(x.shape)
    shape[axis] *= shards
    return x, spatial_axis, axis, jax.ShapeDtypeStruct(tuple(shape), x.dtype)


def normalize_sharded_conv(x: Any, w: Any, b: Any, *, axis_name: Any, spatial_axis: Any,
                           shards: int, **conv_kwargs: Any) -> tuple[jax.Array, HaloSpec, Pads]:
    """The block, its halo and the local padding (the global pads, none on the split axis)."""
    x, spatial_axis, axis, whole = _global_struct(x, spatial_axis,
                                                  conv_kwargs.get("channels_last", False),
                                                  shards, "conv")
    args = normalize_conv(whole, w, b, **conv_kwargs)
    spec: ConvSpec = args.spec
    pads = spec.padding if args.padding_mode == "zeros" else args.mode_pads
    halo = halo_spec(axis=axis, spatial_axis=spatial_axis, local=x.shape[axis], shards=shards,
                     axis_name=axis_name, window=kernel_sizes(args.w.shape, spec)[spatial_axis],
                     stride=spec.stride[spatial_axis], dilation=spec.dilation[spatial_axis],
                     pads=pads[spatial_axis], mode=args.padding_mode, fill=0.0, op="conv")
    local = tuple((0, 0) if i == spatial_axis else p for i, p in enumerate(pads))
    return x, halo, local


def normalize_sharded_pool(x: Any, window: Any, stride: Any, padding: Any, *, axis_name: Any,
                           spatial_axis: Any, shards: int, dilation: Any, ceil_mode: Any,
                           channels_last: Any, op: str) -> tuple[jax.Array, HaloSpec, PoolSpec]:
    """The block, its halo (zeros at the ends for average pooling, −∞ for max pooling) and the
    global pooling's spec."""
    x, spatial_axis, axis, whole = _global_struct(x, spatial_axis, channels_last, shards, op)
    _, spec = normalize_pool(whole, window, stride, padding, dilation=dilation,
                             ceil_mode=ceil_mode, channels_last=channels_last, op=op)
    halo = halo_spec(axis=axis, spatial_axis=spatial_axis, local=x.shape[axis], shards=shards,
                     axis_name=axis_name, window=spec.window[spatial_axis],
                     stride=spec.stride[spatial_axis], dilation=spec.dilation[spatial_axis],
                     pads=spec.padding[spatial_axis], mode="zeros",
                     fill=-np.inf if op == "max_pool" else 0.0, op=op)
    return x, halo, spec
