"""The layers: convolutions, pooling, dense, activations, dropout, GroupNorm (see ``jaxcnn.nn``)."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn import _args, _shapes
from jaxcnn.norm import group_norm, group_norm_relu

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Layer:
    """A pure layer. ``trace(params, x) -> (y, [(name, feature_map), ...])`` lists the output
    of every conv inside (for plots); ``rows(input_shape, depth)`` feeds ``summary``.
    ``then_relu(params, x)``, where a layer has it, is ``relu(apply(params, x))`` as one op
    (``GroupNorm``'s: ``jaxcnn.norm.group_norm_relu``), which ``serial`` runs for the layer and a
    ``ReLU`` after it (``is_relu``)."""

    init: Callable[[jax.Array, Shape], tuple[Any, Shape]]
    apply: Callable[..., jax.Array]
    name: str
    kind: str = "leaf"
    trace: Callable[[Any, jax.Array], tuple[jax.Array, list]] | None = None
    rows: Callable[[Shape, int], tuple[list["Row"], Shape]] | None = None
    then_relu: Callable[[Any, jax.Array], jax.Array] | None = None
    is_relu: bool = False

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


def subkeys(key: jax.Array, count: int) -> list[jax.Array]:
    """``count`` independent keys: ``fold_in(key, i)`` (one compilation for any count)."""
    return [jax.random.fold_in(key, i) for i in range(count)]


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
        params = _conv_params(key, (out_channels, channels // groups, *kernel), channels // groups * math.prod(kernel),
                              out_channels, bias, spec.channels_last)
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
        params = _conv_params(key, (channels, out_channels // groups, *kernel),
                              out_channels // groups * math.prod(kernel), out_channels, bias, bool(channels_last))
        out = jax.eval_shape(lambda p, x: apply(p, x), params,
                             jax.ShapeDtypeStruct(input_shape, jnp.float32))
        return params, tuple(out.shape)

    return Layer(init, apply, _conv_name("ConvTranspose", out_channels, kernel, stride, padding), "conv")


def _conv_params(key: jax.Array, first_shape: Shape, fan_in: int, out_channels: int, bias: bool,
                 channels_last: bool) -> dict:
    """``w`` drawn in its channels-first shape ``first_shape`` and, channels last, moved to
    ``(*K, ., .)``: one key gives one kernel in either layout, so a model built channels last
    starts as the same function as its channels-first twin."""
    w_key, b_key = subkeys(key, 2)
    w = _uniform(w_key, first_shape, fan_in)
    if channels_last:
        w = jnp.transpose(w, _shapes.kernel_to_channels_last(len(first_shape) - 2))
    params = {"w": w}
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
        w_key, b_key = subkeys(key, 2)
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


def elementwise(fn: Callable[[jax.Array], jax.Array], name: str, **fields: Any) -> Layer:
    """A parameter-free, shape-preserving layer ``y = fn(x)``; ``fields``: ``Layer``'s others."""
    return Layer(lambda key, input_shape: ({}, tuple(input_shape)),
                 lambda params, x, *, train=False, key=None: fn(x), name, **fields)


def ReLU() -> Layer:
    return elementwise(jax.nn.relu, "ReLU", is_relu=True)


def GELU() -> Layer:
    return elementwise(jax.nn.gelu, "GELU")


def Tanh() -> Layer:
    return elementwise(jnp.tanh, "Tanh")


def Sigmoid() -> Layer:
    return elementwise(jax.nn.sigmoid, "Sigmoid")


# Dropout draws 16 random bits per element, the top half of a keyed 32-bit hash of its index.
_DROP_BITS = 16


def drop_threshold(rate: float) -> int:
    """``t = round(rate·2¹⁶)``, at most ``2¹⁶ − 1``: an element is dropped when its 16 random bits,
    read as an integer ``u`` uniform on ``[0, 2¹⁶)``, are below ``t``. The drop probability is
    ``t / 2¹⁶``, within ``2⁻¹⁷`` of ``rate``."""
    return min(round(rate * 2 ** _DROP_BITS), 2 ** _DROP_BITS - 1)


def _triple32(h: jax.Array) -> jax.Array:
    """Wellons' ``triple32`` (2018, "Prospecting for hash functions"): a bijection of uint32
    whose every input bit flips every output bit with probability ½ ± 0.02."""
    for shift, factor in ((17, 0xED5AD4BB), (11, 0xAC4C1B51), (15, 0x31848BAB)):
        h = (h ^ (h >> shift)) * jnp.uint32(factor)
    return h ^ (h >> 14)


def _flat_index(shape: tuple[int, ...], limit: int = 2 ** 32) -> tuple[jax.Array, jax.Array]:
    """``(high, low)``, uint32 arrays of ``shape``: each element's C-order flat index over the
    trailing axes whose product stays below ``limit`` (``low``) and over the others (``high``:
    0 unless the array has ``limit`` elements or more)."""
    split, inner = len(shape), 1
    while split > 0 and inner * shape[split - 1] < limit:
        split, inner = split - 1, inner * shape[split - 1]
    if split > 0 and (shape[split - 1] >= limit or math.prod(shape[:split]) >= limit):
        raise ValueError(f"x: expected fewer than {limit} elements along each axis and before the last "
                         f"{len(shape) - split} axes; got shape {shape}")

    def flat(axes: range) -> jax.Array:
        index, step = jnp.zeros(shape, jnp.uint32), 1
        for axis in reversed(axes):
            index, step = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(step), step * shape[axis]
        return index
    return flat(range(split)), flat(range(split, len(shape)))


def drop_mask(key: Any, shape: Sequence[int], rate: float) -> jax.Array:
    """``keep: bool[shape]``, each element kept with probability ``1 − t/2¹⁶``
    (``t = drop_threshold(rate)``), independently.

    With ``k₀, k₁ = jax.random.bits(key, (2,), uint32)`` and ``h = triple32`` (``_triple32``),
    the element at flat (C-order) index ``i = high·2ˢ + low`` (``_flat_index``; ``high = 0``
    below ``2³²`` elements) draws ``u = h(h(low + k₀) ⊕ (k₁ + high·0x9E3779B9)) >> 16``, 16 bits,
    and is kept when ``u ≥ t``: a function of the key and the element's index alone, computed
    in the pass that applies the mask. Counter-based hashing in the manner of Salmon et al.
    (2011, Philox): ``jax.random.bits``' threefry (20 rounds per 64 bits) cost most of
    dropout's time."""
    shape = tuple(shape)
    k0, k1 = jax.random.bits(key, (2,), jnp.uint32)
    high, low = _flat_index(shape)
    u = _triple32(_triple32(low + k0) ^ (k1 + high * jnp.uint32(0x9E3779B9))) >> (32 - _DROP_BITS)
    return u >= jnp.uint32(drop_threshold(rate))


def Dropout(rate: float) -> Layer:
    """Zero each element with probability ``rate`` (the *drop* probability, as PyTorch) and
    scale the rest by the inverse keep probability in training; the identity in evaluation.

    The mask is ``drop_mask(key, x.shape, rate)``: the drop probability is ``rate`` rounded to
    a multiple of ``2⁻¹⁶`` (``drop_threshold``), and the kept elements are scaled by
    ``1 / (1 − t/2¹⁶)``, the inverse of the keep probability actually drawn, so that
    ``E[y] = x`` exactly."""
    rate = _args.drop_rate(rate, "rate")
    keep_probability = 1.0 - drop_threshold(rate) / 2 ** _DROP_BITS

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        if not train or rate == 0.0:
            return x
        if key is None:
            raise ValueError(f"key: Dropout(rate={rate}) with train=True expects a PRNG key; got None")
        keep = drop_mask(key, x.shape, rate)
        return jnp.where(keep, x * jnp.asarray(1.0 / keep_probability, x.dtype), jnp.zeros((), x.dtype))

    return Layer(lambda key, input_shape: ({}, tuple(input_shape)), apply, f"Dropout({rate})")


def GroupNorm(groups: int, eps: float = 1e-5, channels_last: bool = False) -> Layer:
    """``y = (x − μ) / √(σ² + eps) · scale + bias`` with ``μ, σ²`` per example and per group of
    ``C / groups`` channels over all spatial positions (Wu & He, 2018; ``torch.nn.GroupNorm``).
    ``scale: (C,)`` ones, ``bias: (C,)`` zeros. Statistics in float32 at least; the derivative
    rules are ``jaxcnn.group_norm``'s."""
    groups = _args.positive_int(groups, "groups")

    def init(key: jax.Array, input_shape: Shape) -> tuple[dict, Shape]:
        input_shape = _args.layer_input_shape(input_shape, None, "GroupNorm", channels_last)
        channels = input_shape[-1 if channels_last else 1]
        _args.check_groups(groups, channels, None)
        return {"scale": jnp.ones(channels, jnp.float32), "bias": jnp.zeros(channels, jnp.float32)}, tuple(input_shape)

    def apply(params: dict, x: jax.Array, *, train: bool = False, key: Any = None) -> jax.Array:
        return group_norm(x, groups, params["scale"], params["bias"], eps=eps, channels_last=channels_last)

    def then_relu(params: dict, x: jax.Array) -> jax.Array:
        return group_norm_relu(x, groups, params["scale"], params["bias"], eps=eps, channels_last=channels_last)

    return Layer(init, apply, f"GroupNorm({groups})", then_relu=then_relu)
