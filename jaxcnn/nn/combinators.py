"""Combinators of layers (``serial``, ``Residual``, ``PerFrame``) and the model summary."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxcnn import _args
from jaxcnn.nn.layers import Conv, Layer, Row, Shape, count_params, init_shapes, subkeys


# ----------------------------------------------------------------------------- combinators

def serial(*layers: Layer) -> Layer:
    """Compose layers in order; params are a tuple, one entry per layer; the key is split
    into one per layer (``None`` stays ``None``). A ``GroupNorm`` followed by a ``ReLU`` runs
    as one op (``Layer.then_relu``): the same params, rows and results."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers: expected Layer instances; got {type(layer).__name__} at position {i}")

    def init(key: jax.Array, input_shape: Shape) -> tuple[tuple, Shape]:
        params, shape = [], tuple(input_shape)
        for layer, layer_key in zip(layers, subkeys(key, len(layers))):
            layer_params, shape = layer.init(layer_key, shape)
            params.append(layer_params)
        return tuple(params), shape

    def keys(key: Any) -> Sequence[Any]:
        return [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))

    # A layer with a fused ReLU (then_relu: GroupNorm's) followed by a ReLU runs as one op: the
    # same values and derivatives in one kernel call each way instead of three passes.
    fuses = [a.then_relu is not None and b.is_relu for a, b in zip(layers, layers[1:])] + [False]

    def apply(params: tuple, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        for i, (layer, layer_params, layer_key) in enumerate(zip(layers, params, keys(key))):
            if i and fuses[i - 1]:
                continue                        # the ReLU the layer before ran with itself
            x = (layer.then_relu(layer_params, x) if fuses[i]
                 else layer.apply(layer_params, x, train=train, key=layer_key))
        return x

    def trace(params: tuple, x: jax.Array) -> tuple[jax.Array, list]:
        maps = []
        for i, (layer, layer_params) in enumerate(zip(layers, params)):
            x, inner = layer.trace(layer_params, x)
            maps += [(f"{i}.{name}", y) for name, y in inner]
        return x, maps

    def rows(input_shape: Shape, depth: int) -> tuple[list[Row], Shape]:
        result, shape = [], tuple(input_shape)
        for layer in layers:
            inner, shape = layer.rows(shape, depth)
            result += inner
        return result, shape

    return Layer(init, apply, "serial", "serial", trace, rows)


def Residual(block: Layer, impl: str = "lax", channels_last: bool = False) -> Layer:
    """``y = block(x) + shortcut(x)``: the identity when ``block`` keeps the shape, else a 1x1
    ``Conv`` with stride ``ceil(S / S_out)`` (He et al., 2016, option B). No activation
    after the sum: put a ``ReLU`` after it in ``serial``."""

    def projection(input_shape: Shape, out_shape: Shape) -> Layer | None:
        if tuple(out_shape) == tuple(input_shape):
            return None
        n = len(input_shape) - 2
        spatial = slice(1, 1 + n) if channels_last else slice(2, 2 + n)
        stride = tuple(-(-i // max(o, 1)) for i, o in zip(input_shape[spatial], out_shape[spatial]))
        return Conv(out_shape[-1 if channels_last else 1], (1,) * n, stride=stride, impl=impl,
                    channels_last=channels_last)

    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        block_key, shortcut_key = subkeys(key, 2)
        block_params, out_shape = block.init(block_key, input_shape)
        shortcut = projection(input_shape, out_shape)
        if shortcut is None:
            return {"block": block_params, "shortcut": {}}, out_shape
        shortcut_params, shortcut_shape = shortcut.init(shortcut_key, input_shape)
        if shortcut_shape != out_shape:
            raise ValueError(f"block: Residual expects a block whose output shape {out_shape} a "
                             f"strided 1x1 conv can match; the projection gives {shortcut_shape}")
        return {"block": block_params, "shortcut": shortcut_params}, out_shape

    def shortcut_apply(params: dict, x: jax.Array, y_shape: Shape) -> jax.Array:
        if not params["shortcut"]:
            return x
        return projection(x.shape, y_shape).apply(params["shortcut"], x)

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        y = block.apply(params["block"], x, train=train, key=key)
        return y + shortcut_apply(params, x, y.shape)

    def trace(params: dict, x: jax.Array) -> tuple[jax.Array, list]:
        y, maps = block.trace(params["block"], x)
        return y + shortcut_apply(params, x, y.shape), [(f"res.{name}", m) for name, m in maps]

    def rows(input_shape: Shape, depth: int) -> tuple[list[Row], Shape]:
        inner, out_shape = block.rows(input_shape, depth + 1)
        params, _ = init_shapes(layer, input_shape)
        shortcut = projection(input_shape, out_shape)
        if shortcut is not None:
            inner += [Row(f"shortcut {shortcut.name}", out_shape, count_params(params["shortcut"]), depth + 1)]
        return [Row("Residual", out_shape, count_params(params), depth)] + inner, out_shape

    layer = Layer(init, apply, "Residual", "residual", trace, rows)
    return layer


def PerFrame(block: Layer, axis: int = 2) -> Layer:
    """Apply ``block`` to every frame: ``(N, C, T, *S)`` with the frames on ``axis`` →
    ``(N, T, *block_out)``; ``block`` sees ``(N·T, C, *S)``. Frames never meet inside ``block``,
    so a model built on it cannot see motion."""

    def frames(shape: Shape) -> Shape:
        a = _args.axis_index(axis, len(shape), "axis")
        rest = tuple(s for i, s in enumerate(shape) if i not in (0, a))
        return (shape[0] * shape[a],) + rest

    def to_frames(x: jax.Array) -> jax.Array:
        return jnp.moveaxis(x, axis, 1).reshape(frames(x.shape))

    def init(key: jax.Array, input_shape: Shape) -> tuple[Any, Shape]:
        params, out = block.init(key, frames(tuple(input_shape)))
        return params, (input_shape[0], input_shape[axis], *out[1:])

    def apply(params: Any, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        y = block.apply(params, to_frames(x), train=train, key=key)
        return y.reshape(x.shape[0], x.shape[axis], *y.shape[1:])

    def trace(params: Any, x: jax.Array) -> tuple[jax.Array, list]:
        y, maps = block.trace(params, to_frames(x))
        return y.reshape(x.shape[0], x.shape[axis], *y.shape[1:]), [(f"frames.{n}", m) for n, m in maps]

    def rows(input_shape: Shape, depth: int) -> tuple[list[Row], Shape]:
        inner, out = block.rows(frames(tuple(input_shape)), depth + 1)
        params, shape = init_shapes(layer, input_shape)
        return [Row("PerFrame", shape, count_params(params), depth)] + inner, shape

    layer = Layer(init, apply, "PerFrame", "perframe", trace, rows)
    return layer


# ----------------------------------------------------------------------------- summary

def summary(model: Layer, input_shape: Shape) -> list[Row]:
    """One ``Row(name, output_shape, params, depth)`` per layer (containers then their
    children), computed abstractly (``jax.eval_shape``: no arrays allocated)."""
    rows, _ = model.rows(tuple(input_shape), 0)
    return rows


def format_summary(rows: Sequence[Row], title: str = "") -> str:
    """``summary``'s rows as a text table with a total (containers not double-counted)."""
    lines = [title] if title else []
    width = max([len("  " * r.depth + r.name) for r in rows] + [5])
    lines.append(f"{'layer':<{width}}  {'output shape':<22}  {'params':>10}")
    lines.append("-" * (width + 36))
    for r in rows:
        shape = "(" + ", ".join(map(str, r.output_shape)) + ")"
        lines.append(f"{'  ' * r.depth + r.name:<{width}}  {shape:<22}  {r.params:>10,}")
    total = sum(r.params for r in rows if r.depth == min(row.depth for row in rows))
    lines.append("-" * (width + 36))
    lines.append(f"{'total':<{width}}  {'':<22}  {total:>10,}")
    return "\n".join(lines)
