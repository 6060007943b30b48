r"""Layers as pure ``(init, apply)`` pairs on plain pytrees, composed with ``serial``.

A ``Layer`` holds two pure functions (stax's design, with the order of ``init``'s results
as the rest of jaxcnn reads it):

- ``init(key, input_shape) -> (params, output_shape)``: ``input_shape`` includes the batch
  axis, ``(N, C, *S)`` (or ``(N, *S, C)`` with ``channels_last``); ``params`` is a dict of
  arrays (float32), a tuple of children's params, or ``{}``.
- ``apply(params, x, *, train=False, key=None) -> y``: ``key`` feeds ``Dropout`` when
  ``train`` is true. The compute dtype is ``x``'s: parameters are cast to it, so float32
  master weights run in bfloat16 when ``x`` is bfloat16 (gradients flow back in float32).

No layer keeps state: normalisation is ``GroupNorm`` (Wu & He, 2018), which uses each
example's own statistics, so ``apply`` is the same function in training and evaluation.

Output shapes come from the ops' own shape rules: ``_shapes.resolve_padding`` and
``_shapes.conv_output_shape`` (as ``conv.output_shape``) for convolutions, ``jax.eval_shape``
of the op for pooling and transposed convolution; ``tests/test_nn.py`` checks that they equal
``apply``'s shapes.

Initialisation follows PyTorch: ``kaiming_uniform_(a=√5)`` for weights, which is
``U(−1/√fan_in, 1/√fan_in)``, and the same bound for biases (``torch.nn.Conv*d.reset_parameters``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn import _args, _shapes

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layer:
    """A pure layer. ``trace(params, x) -> (y, [(name, feature_map), ...])`` lists the output
    of every conv inside (for plots); ``rows(input_shape, depth)`` feeds ``summary``."""

    init: Callable[[jax.Array, Shape], tuple[Any, Shape]]
    apply: Callable[..., jax.Array]
    name: str
    kind: str = "leaf"
    trace: Callable[[Any, jax.Array], tuple[jax.Array, list]] | None = None
    rows: Callable[[Shape, int], tuple[list["Row"], Shape]] | None = None

    def __post_init__(self) -> None:
        if self.trace is None:
            def trace(params: Any, x: jax.Array) -> tuple[jax.Array, list]:
                y = self.apply(params, x)
                return y, ([(self.name, y)] if self.kind == "conv" else [])
            object.__setattr__(self, "trace", trace)
        if self.rows is None:
            def rows(input_shape: Shape, depth: int) -> tuple[list[Row], Shape]:
                params, out = init_shapes(self, input_shape)
                return [Row(self.name, out, count_params(params), depth)], out
            object.__setattr__(self, "rows", rows)


class Row(NamedTuple):
    """One line of ``summary``: a layer, its output shape, its parameter count, its depth."""

    name: str
    output_shape: Shape
    params: int
    depth: int


def count_params(params: Any) -> int:
    """Number of scalars in a pytree of arrays (or of ``ShapeDtypeStruct``)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


def init_shapes(layer: Layer, input_shape: Shape) -> tuple[Any, Shape]:
    """``layer.init`` run abstractly: params as ``ShapeDtypeStruct``, no arrays allocated."""
    output_shape = {}     # init's second result, a plain tuple, kept out of eval_shape

    def params_only(key: jax.Array) -> Any:
        params, output_shape["value"] = layer.init(key, input_shape)
        return params
    return jax.eval_shape(params_only, jax.random.key(0)), output_shape["value"]


def _uniform(key: jax.Array, shape: Shape, fan_in: int) -> jax.Array:
    """``U(−1/√fan_in, 1/√fan_in)`` float32 samples, drawn by numpy from the key's data.

    numpy, not ``jax.random``: eager ``jax.random.uniform`` compiles one XLA program per
    parameter shape (seconds per model on a small CPU). Under ``jit`` the same numpy draw runs
    as a ``pure_callback``, so traced and eager inits give the same numbers.
    """
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def draw(key_data: Any) -> np.ndarray:
        rng = np.random.default_rng(np.asarray(key_data, np.uint32).ravel().tolist())
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    data = jax.random.key_data(key)
    if isinstance(data, jax.core.Tracer):
        return jax.pure_callback(draw, jax.ShapeDtypeStruct(shape, jnp.float32), data)
    return jnp.asarray(draw(data))


def _subkeys(key: jax.Array, count: int) -> list[jax.Array]:
    """``count`` independent keys: ``fold_in(key, i)`` (one compilation for any count)."""
    return [jax.random.fold_in(key, i) for i in range(count)]


def _channel_shape(ndim: int, axis: int) -> Shape:
    shape = [1] * ndim
    shape[axis] = -1
    return tuple(shape)


# ----------------------------------------------------------------------------- convolutions

def Conv(out_channels: int, kernel: Sequence[int], stride: Any = 1, padding: Any = 0,
         dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros", impl: str = "lax",
         channels_last: bool = False, bias: bool = True) -> Layer:
    """``jaxcnn.conv`` with learned ``w: (O, C // groups, *K)`` (or ``(*K, C // groups, O)``)
    and ``b: (O,)``; the number of spatial axes is ``len(kernel)``.

    Parameters: ``O · C / groups · ΠK (+ O)``. Arguments as in ``jaxcnn.conv``.
    """
    kernel = _args.kernel_tuple(kernel, "kernel")
    n = len(kernel)
    out_channels = _args.positive_int(out_channels, "out_channels")
    groups = _args.positive_int(groups, "groups")
    stride, dilation = _args.int_tuple(stride, n, "stride"), _args.int_tuple(dilation, n, "dilation")
    padding_mode = _args.choice(padding_mode, _args.PADDING_MODES, "padding_mode")
    impl = _args.choice(impl, _args.IMPLS, "impl")
    spec = _args.ConvSpec(stride, ((0, 0),) * n, dilation, groups, bool(channels_last))
    options = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                   padding_mode=padding_mode, channels_last=spec.channels_last, impl=impl)

    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        input_shape = _args.layer_input_shape(input_shape, n, "Conv", spec.channels_last)
        channels = input_shape[spec.channel_axis()]
        _args.check_groups(groups, channels, out_channels)
        sizes = _shapes.spatial_sizes(input_shape, spec)
        pads = _shapes.resolve_padding(padding, sizes, kernel, stride, dilation)
        w_shape = ((*kernel, channels // groups, out_channels) if spec.channels_last
                   else (out_channels, channels // groups, *kernel))
        padded = spec.replace(padding=pads)     # every padding mode pads to the same sizes
        out_shape = _shapes.conv_output_shape(input_shape, w_shape, padded)
        _args.check_positive_size("input_shape", _shapes.spatial_sizes(out_shape, spec),
                                  f"Conv with kernel {kernel} on {sizes}")
        params = _conv_params(key, w_shape, channels // groups * math.prod(kernel), out_channels, bias)
        return params, out_shape

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        b = params["b"].astype(x.dtype) if bias else None
        return jaxcnn.conv(x, params["w"].astype(x.dtype), b, **options)

    return Layer(init, apply, _conv_name("Conv", out_channels, kernel, stride, padding), "conv")


def _conv_nd(n: int, layout: str) -> Callable[..., Layer]:
    def conv_nd(out_channels: int, kernel: int | Sequence[int], **kwargs: Any) -> Layer:
        return Conv(out_channels, _args.int_tuple(kernel, n, "kernel"), **kwargs)
    conv_nd.__name__ = conv_nd.__qualname__ = f"Conv{n}d"
    conv_nd.__doc__ = f"``Conv`` with {n} spatial axes, ``x {layout}``; ``kernel`` may be an int."
    return conv_nd


Conv1d, Conv2d, Conv3d = _conv_nd(1, "(N, C, L)"), _conv_nd(2, "(N, C, H, W)"), _conv_nd(3, "(N, C, D, H, W)")


def ConvTranspose(out_channels: int, kernel: Sequence[int], stride: Any = 1, padding: Any = 0,
                  output_padding: Any = 0, dilation: Any = 1, groups: int = 1,
                  impl: str = "lax", channels_last: bool = False, bias: bool = True) -> Layer:
    """``jaxcnn.conv_transpose`` with ``w: (C, O // groups, *K)`` (PyTorch's layout and its
    init: ``fan_in = O / groups · ΠK``, from ``w``'s second axis)."""
    kernel = _args.kernel_tuple(kernel, "kernel")
    n = len(kernel)
    out_channels = _args.positive_int(out_channels, "out_channels")
    groups = _args.positive_int(groups, "groups")
    impl = _args.choice(impl, _args.IMPLS, "impl")
    options = dict(stride=stride, padding=padding, output_padding=output_padding,
                   dilation=dilation, groups=groups, channels_last=bool(channels_last), impl=impl)

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        b = params["b"].astype(x.dtype) if bias else None
        return jaxcnn.conv_transpose(x, params["w"].astype(x.dtype), b, **options)

    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        input_shape = _args.layer_input_shape(input_shape, n, "ConvTranspose", bool(channels_last))
        channels = input_shape[-1 if channels_last else 1]
        _args.check_groups(groups, channels, out_channels)
        w_shape = ((*kernel, out_channels // groups, channels) if channels_last
                   else (channels, out_channels // groups, *kernel))
        params = _conv_params(key, w_shape, out_channels // groups * math.prod(kernel), out_channels, bias)
        out = jax.eval_shape(lambda p, x: apply(p, x), params,
                             jax.ShapeDtypeStruct(input_shape, jnp.float32))
        return params, tuple(out.shape)

    return Layer(init, apply, _conv_name("ConvTranspose", out_channels, kernel, stride, padding), "conv")


def _conv_params(key: jax.Array, w_shape: Shape, fan_in: int, out_channels: int, bias: bool) -> dict:
    w_key, b_key = _subkeys(key, 2)
    params = {"w": _uniform(w_key, w_shape, fan_in)}
    if bias:
        params["b"] = _uniform(b_key, (out_channels,), fan_in)
    return params


def _conv_name(kind: str, out_channels: int, kernel: Shape, stride: Any, padding: Any) -> str:
    """``Conv2d(32, 3x3, stride=2, padding='SAME')``: the arguments that shape the output."""
    name = f"{kind}{len(kernel)}d({out_channels}, {'x'.join(map(str, kernel))}"
    stride = _args.int_tuple(stride, len(kernel), "stride")
    if set(stride) != {1}:
        name += f", stride={stride[0] if len(set(stride)) == 1 else stride}"
    if padding not in (0, "VALID", "valid"):
        name += f", padding={padding!r}"
    return name + ")"


# ----------------------------------------------------------------------------- pooling

def _pool(op_name: str, label: str, window: Any, channels_last: bool, **options: Any) -> Layer:
    """A parameter-free layer around ``jaxcnn.<op_name>``; its shape is the op's own."""
    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        op = getattr(jaxcnn, op_name)
        if window is None:
            return op(x, channels_last=channels_last)
        return op(x, window, channels_last=channels_last, **options)

    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        input_shape = _args.layer_input_shape(input_shape, None, label, channels_last)
        out = jax.eval_shape(lambda x: apply({}, x), jax.ShapeDtypeStruct(input_shape, jnp.float32))
        return {}, tuple(out.shape)

    return Layer(init, apply, label)


def MaxPool(window: Any, stride: Any = None, padding: int = 0, dilation: Any = 1,
            ceil_mode: bool = False, channels_last: bool = False) -> Layer:
    """``jaxcnn.max_pool``; ``stride=None`` means ``stride = window``. No parameters."""
    return _pool("max_pool", f"MaxPool({window})", window, channels_last, stride=stride,
                 padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def AvgPool(window: Any, stride: Any = None, padding: int = 0, ceil_mode: bool = False,
            count_include_pad: bool = True, channels_last: bool = False) -> Layer:
    """``jaxcnn.avg_pool``; ``stride=None`` means ``stride = window``. No parameters."""
    return _pool("avg_pool", f"AvgPool({window})", window, channels_last, stride=stride,
                 padding=padding, ceil_mode=ceil_mode, count_include_pad=count_include_pad)


def GlobalAvgPool(channels_last: bool = False) -> Layer:
    """``jaxcnn.global_avg_pool``: ``(N, C, *S) -> (N, C)``, the mean over every spatial axis."""
    return _pool("global_avg_pool", "GlobalAvgPool", None, channels_last)


# ----------------------------------------------------------------------------- dense, shape

def Dense(out_features: int, bias: bool = True) -> Layer:
    """``y = x @ w + b``, ``x: (N, F)``, ``w: (F, O)``, ``b: (O,)``: ``F·O (+ O)`` parameters."""
    out_features = _args.positive_int(out_features, "out_features")

    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        input_shape = _args.layer_input_shape(input_shape, 0, "Dense", False)
        features = input_shape[1]
        w_key, b_key = _subkeys(key, 2)
        params = {"w": _uniform(w_key, (features, out_features), features)}
        if bias:
            params["b"] = _uniform(b_key, (out_features,), features)
        return params, (input_shape[0], out_features)

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        y = x @ params["w"].astype(x.dtype)
        return y + params["b"].astype(x.dtype)[None, :] if bias else y

    return Layer(init, apply, f"Dense({out_features})")


def Flatten() -> Layer:
    """``(N, *rest) -> (N, Π rest)``."""
    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        return {}, (input_shape[0], math.prod(input_shape[1:]))

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        return x.reshape(x.shape[0], -1)

    return Layer(init, apply, "Flatten")


def Mean(axis: int) -> Layer:
    """The mean over one axis (e.g. frames after ``PerFrame``): ``(N, T, F) -> (N, F)``."""
    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        a = _args.axis_index(axis, len(input_shape), "axis")
        return {}, tuple(s for i, s in enumerate(input_shape) if i != a)

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        return jnp.mean(x, axis=axis)

    return Layer(init, apply, f"Mean(axis={axis})")


def elementwise(fn: Callable[[jax.Array], jax.Array], name: str) -> Layer:
    """A parameter-free, shape-preserving layer ``y = fn(x)``."""
    return Layer(lambda key, input_shape: ({}, tuple(input_shape)),
                 lambda params, x, *, train=False, key=None: fn(x), name)


def ReLU() -> Layer:
    return elementwise(jax.nn.relu, "ReLU")


def GELU() -> Layer:
    return elementwise(jax.nn.gelu, "GELU")


def Tanh() -> Layer:
    return elementwise(jnp.tanh, "Tanh")


def Sigmoid() -> Layer:
    return elementwise(jax.nn.sigmoid, "Sigmoid")


def Dropout(rate: float) -> Layer:
    """Zero each element with probability ``rate`` (the *drop* probability, as PyTorch) and
    scale the rest by ``1 / (1 − rate)`` in training; the identity in evaluation."""
    rate = _args.drop_rate(rate, "rate")

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        if not train or rate == 0.0:
            return x
        if key is None:
            raise ValueError(f"key: Dropout(rate={rate}) with train=True expects a PRNG key; got None")
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))

    return Layer(lambda key, input_shape: ({}, tuple(input_shape)), apply, f"Dropout({rate})")


def GroupNorm(groups: int, eps: float = 1e-5, channels_last: bool = False) -> Layer:
    """``y = (x − μ) / √(σ² + eps) · scale + bias`` with ``μ, σ²`` per example and per group of
    ``C / groups`` channels over all spatial positions (Wu & He, 2018; ``torch.nn.GroupNorm``).
    ``scale: (C,)`` ones, ``bias: (C,)`` zeros. Statistics in float32 at least."""
    groups = _args.positive_int(groups, "groups")

    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        input_shape = _args.layer_input_shape(input_shape, None, "GroupNorm", channels_last)
        channels = input_shape[-1 if channels_last else 1]
        _args.check_groups(groups, channels, None)
        return {"scale": jnp.ones(channels, jnp.float32), "bias": jnp.zeros(channels, jnp.float32)}, tuple(input_shape)

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        axis = x.ndim - 1 if channels_last else 1
        xc = jnp.moveaxis(x, axis, 1)
        grouped = xc.reshape(x.shape[0], groups, -1).astype(np.promote_types(x.dtype, jnp.float32))
        mean = jnp.mean(grouped, axis=2, keepdims=True)
        var = jnp.mean(jnp.square(grouped - mean), axis=2, keepdims=True)
        normed = ((grouped - mean) * jax.lax.rsqrt(var + eps)).reshape(xc.shape).astype(x.dtype)
        shape = _channel_shape(x.ndim, 1)
        y = normed * params["scale"].astype(x.dtype).reshape(shape) + params["bias"].astype(x.dtype).reshape(shape)
        return jnp.moveaxis(y, 1, axis)

    return Layer(init, apply, f"GroupNorm({groups})")


# ----------------------------------------------------------------------------- combinators

def serial(*layers: Layer) -> Layer:
    """Compose layers in order; params are a tuple, one entry per layer; the key is split
    into one per layer (``None`` stays ``None``)."""
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(f"layers: expected Layer instances; got {type(layer).__name__} at position {i}")

    def init(key: jax.Array, input_shape: Shape) -> tuple[tuple, Shape]:
        params, shape = [], tuple(input_shape)
        for layer, layer_key in zip(layers, _subkeys(key, len(layers))):
            layer_params, shape = layer.init(layer_key, shape)
            params.append(layer_params)
        return tuple(params), shape

    def keys(key: Any) -> Sequence[Any]:
        return [None] * len(layers) if key is None else list(jax.random.split(key, len(layers)))

    def apply(params: tuple, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        for layer, layer_params, layer_key in zip(layers, params, keys(key)):
            x = layer.apply(layer_params, x, train=train, key=layer_key)
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
        block_key, shortcut_key = _subkeys(key, 2)
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
