"""Named architectures for MNIST-1D, Fashion-MNIST and the moving-item clips, and
``jaxcnn summary``.

``MODELS[name](num_classes=..., impl=...)`` builds a ``jaxcnn.nn.Layer``; ``impl`` ("lax" or
"manual") goes to every convolution. ``channels_last=True`` (``LAYOUT_MODELS``) runs every
layer channels last, as XLA's CPU convolutions want it (no transpose around each conv); the
model still takes channels-first input, moved once at its entrance, and flattens in the
channels-first order: from one init key it is the same function as its channels-first build
(``nn.Conv`` draws a kernel alike in both layouts). ``channels_last=None``, the default, is
the platform's faster layout (``default_channels_last``). ``INPUT_SHAPES[name]`` is one
example's ``(C, *S)`` and ``DATASETS[name]`` the dataset the model is made for.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxcnn import _args, nn

__all__ = ["mnist1d_cnn", "mnist1d_resnet", "fashion_cnn", "fashion_resnet", "clips_cnn3d",
           "clips_frame2d", "MODELS", "INPUT_SHAPES", "NUM_CLASSES", "DATASETS", "LAYOUT_MODELS",
           "CHANNELS_LAST_PLATFORMS", "default_channels_last", "resolve_channels_last", "check_layout", "build",
           "channels_first_params", "main"]

Builder = Callable[..., nn.Layer]


def resolve_channels_last(name: str, channels_last: bool | None) -> bool | None:
    """``channels_last``, or model ``name``'s default layout on this platform where it is
    ``None`` (``default_channels_last``): where ``build``, the layout models and a new run of
    ``jaxcnn train`` turn ``None`` into a layout."""
    return default_channels_last(name) if channels_last is None else channels_last


def _norm_relu(channels: int, groups: int = 8, channels_last: bool = False) -> list[nn.Layer]:
    return [nn.GroupNorm(min(groups, channels), channels_last=channels_last), nn.ReLU()]


def _in_layout(channels_last: bool, *layers: nn.Layer) -> nn.Layer:
    """``nn.serial(*layers)``; channels last, the same serial behind one move of the input
    ``(N, C, *S)`` → ``(N, *S, C)`` that has no parameters and passes the key on as it came.
    The two builds thus have the same parameter tree (kernels transposed) and hand every
    layer the same init and dropout keys."""
    body = nn.serial(*layers)
    if not channels_last:
        return body
    move = lambda x: jnp.moveaxis(x, 1, -1)
    moved = lambda s: (s[0], *s[2:], s[1])

    def rows(input_shape: tuple[int, ...], depth: int) -> tuple[list[nn.Row], tuple[int, ...]]:
        inner, out_shape = body.rows(moved(tuple(input_shape)), depth)
        return [nn.Row("ToChannelsLast", moved(tuple(input_shape)), 0, depth), *inner], out_shape
    return nn.Layer(lambda key, s: body.init(key, moved(tuple(s))),
                    lambda params, x, *, train=False, key=None: body.apply(params, move(x), train=train, key=key),
                    "serial", "serial", lambda params, x: body.trace(params, move(x)), rows)


def _flatten(channels_last: bool) -> nn.Layer:
    """``nn.Flatten``; channels last, ``(N, *S, C)`` flattened in the channels-first order
    ``(C, *S)`` (one small transpose), so that the dense layer's rows and a dropout mask
    drawn on the flat features mean the same features in both layouts."""
    if not channels_last:
        return nn.Flatten()
    return nn.Layer(lambda key, s: ({}, (s[0], math.prod(s[1:]))),
                    lambda params, x, *, train=False, key=None: jnp.moveaxis(x, -1, 1).reshape(x.shape[0], -1),
                    "Flatten")


def mnist1d_cnn(num_classes: int = 10, *, impl: str = "lax") -> nn.Layer:
    """The CNN of the MNIST-1D paper (Greydanus & Kobak, 2020; ``ConvBase`` in its notebook):
    three ``Conv1d`` of 25 channels (kernels 5, 3, 3, stride 2, padding 1), ReLU, and a linear
    layer on the flattened ``25 × 5`` maps. 5,210 parameters for 10 classes."""
    return nn.serial(
        nn.Conv1d(25, 5, stride=2, padding=1, impl=impl), nn.ReLU(),
        nn.Conv1d(25, 3, stride=2, padding=1, impl=impl), nn.ReLU(),
        nn.Conv1d(25, 3, stride=2, padding=1, impl=impl), nn.ReLU(),
        nn.Flatten(), nn.Dense(num_classes))


def _basic_block(conv: Callable[..., nn.Layer], channels: int, stride: int, impl: str,
                 channels_last: bool = False) -> list[nn.Layer]:
    """He et al. (2016)'s basic block with GroupNorm: conv-norm-relu-conv-norm + shortcut, relu."""
    cl = channels_last
    body = nn.serial(conv(channels, 3, stride=stride, padding=1, impl=impl, bias=False, channels_last=cl),
                     *_norm_relu(channels, channels_last=cl),
                     conv(channels, 3, padding=1, impl=impl, bias=False, channels_last=cl),
                     nn.GroupNorm(min(8, channels), channels_last=cl))
    return [nn.Residual(body, impl=impl, channels_last=cl), nn.ReLU()]


def mnist1d_resnet(num_classes: int = 10, *, impl: str = "lax", channels: int = 64,
                   channels_last: bool | None = None) -> nn.Layer:
    """A residual 1D CNN: a kernel-5 stem of ``channels`` maps, three basic blocks (the last
    two halve the length, 40 → 20 → 10), then the flattened maps into a linear layer.
    Flattening (not global pooling) keeps where along the signal a feature fired."""
    conv, cl = nn.Conv1d, resolve_channels_last("mnist1d-resnet", channels_last)
    return _in_layout(
        cl,
        conv(channels, 5, padding=2, impl=impl, bias=False, channels_last=cl), *_norm_relu(channels, channels_last=cl),
        *_basic_block(conv, channels, 1, impl, cl),
        *_basic_block(conv, channels, 2, impl, cl),
        *_basic_block(conv, channels, 2, impl, cl),
        _flatten(cl), nn.Dense(num_classes))


def fashion_cnn(num_classes: int = 10, *, impl: str = "lax", channels_last: bool | None = None) -> nn.Layer:
    """A small 2D CNN: 3x3 convs of 32 maps at 28x28, 64 at 14x14 and 128 at 7x7, each
    followed by ReLU (GroupNorm from the second on) and 2x2 max pooling between sizes, then
    dropout and a linear layer on the flattened maps. Only the one-channel first layer runs
    at full resolution: on CPU, XLA's weight-gradient convolution is slowest there. Its ReLU
    comes after the pooling (``max`` and ReLU commute: the same values and derivatives, on a
    quarter of the samples; XLA would otherwise recompute the fused first conv for the ReLU's
    derivative)."""
    cl = resolve_channels_last("fashion-cnn", channels_last)
    return _in_layout(
        cl,
        nn.Conv2d(32, 3, padding=1, impl=impl, channels_last=cl), nn.MaxPool(2, channels_last=cl), nn.ReLU(),
        nn.Conv2d(64, 3, padding=1, impl=impl, channels_last=cl), *_norm_relu(64, channels_last=cl),
        nn.MaxPool(2, channels_last=cl),
        nn.Conv2d(128, 3, padding=1, impl=impl, channels_last=cl), *_norm_relu(128, channels_last=cl),
        _flatten(cl), nn.Dropout(0.3), nn.Dense(num_classes))


def fashion_resnet(num_classes: int = 10, *, impl: str = "lax", channels_last: bool | None = None) -> nn.Layer:
    """A small ResNet: a 3x3 stem of 32 maps, basic blocks of 32, 64 (stride 2) and 128
    (stride 2) maps (28 → 14 → 7), global average pooling, a linear layer."""
    conv, cl = nn.Conv2d, resolve_channels_last("fashion-resnet", channels_last)
    return _in_layout(
        cl,
        conv(32, 3, padding=1, impl=impl, bias=False, channels_last=cl), *_norm_relu(32, channels_last=cl),
        *_basic_block(conv, 32, 1, impl, cl),
        *_basic_block(conv, 64, 2, impl, cl),
        *_basic_block(conv, 128, 2, impl, cl),
        nn.GlobalAvgPool(channels_last=cl), nn.Dense(num_classes))


def clips_cnn3d(num_classes: int = 40, *, impl: str = "lax", channels_last: bool | None = None) -> nn.Layer:
    """A 3D CNN for ``(N, 1, T, H, W)`` clips: 3x3x3 convs see three frames at once, so they
    can respond to motion. Frames are first averaged 2x2 to 16x16 (a 2-pixel step becomes 1
    pixel: still visible); pooling shrinks space first, then time: (8,16,16) → (8,8,8) →
    (4,4,4), then global average pooling and a linear layer. The first ReLU comes after the
    first pooling, as in ``fashion_cnn`` (the same values and derivatives)."""
    cl = resolve_channels_last("clips-cnn3d", channels_last)
    return _in_layout(
        cl,
        nn.AvgPool((1, 2, 2), channels_last=cl),
        nn.Conv3d(16, 3, padding=1, impl=impl, channels_last=cl), nn.MaxPool((1, 2, 2), channels_last=cl), nn.ReLU(),
        nn.Conv3d(32, 3, padding=1, impl=impl, channels_last=cl), *_norm_relu(32, channels_last=cl),
        nn.MaxPool((2, 2, 2), channels_last=cl),
        nn.Conv3d(64, 3, padding=1, impl=impl, channels_last=cl), *_norm_relu(64, channels_last=cl),
        nn.GlobalAvgPool(channels_last=cl), nn.Dense(num_classes))


def clips_frame2d(num_classes: int = 40, *, impl: str = "lax") -> nn.Layer:
    """The baseline that cannot see motion: ``clips_cnn3d`` with 3x3 kernels instead of
    3x3x3, run on every frame alone (``PerFrame``), its features averaged over the frames (an
    order-free mean), then a linear layer. It can tell the item; the direction by chance."""
    frame = nn.serial(
        nn.AvgPool(2),
        nn.Conv2d(16, 3, padding=1, impl=impl), nn.ReLU(), nn.MaxPool(2),
        nn.Conv2d(32, 3, padding=1, impl=impl), *_norm_relu(32), nn.MaxPool(2),
        nn.Conv2d(64, 3, padding=1, impl=impl), *_norm_relu(64),
        nn.GlobalAvgPool())
    return nn.serial(nn.PerFrame(frame), nn.Mean(axis=1), nn.Dense(num_classes))


MODELS: dict[str, Builder] = {
    "mnist1d-cnn": mnist1d_cnn,
    "mnist1d-resnet": mnist1d_resnet,
    "fashion-cnn": fashion_cnn,
    "fashion-resnet": fashion_resnet,
    "clips-cnn3d": clips_cnn3d,
    "clips-frame2d": clips_frame2d,
}
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mnist1d-cnn": (1, 40), "mnist1d-resnet": (1, 40),
    "fashion-cnn": (1, 28, 28), "fashion-resnet": (1, 28, 28),
    "clips-cnn3d": (1, 8, 32, 32), "clips-frame2d": (1, 8, 32, 32),
}
NUM_CLASSES = {"mnist1d": 10, "fashion": 10, "clips": 40}
DATASETS = {name: name.split("-")[0] for name in MODELS}


LAYOUT_MODELS = ("mnist1d-resnet", "fashion-cnn", "fashion-resnet", "clips-cnn3d")  # take channels_last
# The platforms (``jax.default_backend()`` names, and the GPU ones' own) whose convolutions
# prefer channels last: see ``default_channels_last``.
CHANNELS_LAST_PLATFORMS = ("cpu", "gpu", "cuda", "rocm")


def default_channels_last(name: str, platform: str | None = None) -> bool:
    """Whether model ``name`` runs channels last when not told (``channels_last=None`` in
    ``build``, no ``--channels-last``/``--channels-first`` in ``jaxcnn train``) on ``platform``
    (``None``: ``jax.default_backend()``, which starts JAX's backends, asked for the models of
    ``LAYOUT_MODELS`` only).

    Channels last for the models of ``LAYOUT_MODELS`` on ``CHANNELS_LAST_PLATFORMS``; else
    channels first, the layout every model has. Why: both layouts compute the same model from
    the same key (to float32 rounding), so the default is the faster one. On CPU, XLA's
    convolutions take channels last without a transpose around each, and jaxcnn's native
    kernels take float32 channels last only (measured: docs/performance.md, docs/training.md);
    on GPU, cuDNN's fastest convolutions (tensor cores) are NHWC. On other platforms (TPU)
    XLA chooses the physical layout itself and nothing was measured: channels first stays.
    """
    if name not in MODELS:
        raise ValueError(f"name: expected one of {tuple(MODELS)}; got {name!r}")
    if platform is not None and not isinstance(platform, str):
        raise TypeError(f"platform: expected a platform name such as 'cpu' or 'gpu', or None; got {platform!r}")
    if name not in LAYOUT_MODELS:
        return False
    return (jax.default_backend() if platform is None else platform).lower() in CHANNELS_LAST_PLATFORMS


def check_layout(name: str, channels_last: bool | None) -> None:
    """Raise the ``ValueError`` naming ``channels_last`` unless it is ``False`` or ``None``
    (the default layout) or ``name`` is one of ``LAYOUT_MODELS``."""
    if channels_last not in (False, None) and name not in LAYOUT_MODELS:
        raise ValueError(f"channels_last: expected False for {name!r} (channels last for {LAYOUT_MODELS}); "
                         f"got {channels_last!r}")


def build(name: str, num_classes: int | None = None, *, impl: str = "lax",
          channels_last: bool | None = None) -> nn.Layer:
    """``MODELS[name]`` with its dataset's class count unless ``num_classes`` is given.

    ``channels_last``: ``True`` for the models of ``LAYOUT_MODELS`` runs every layer channels
    last, ``False`` channels first, ``None`` the platform's faster layout
    (``default_channels_last``). The model takes channels-first input ``(N, C, *S)`` either
    way and computes the same function from the same init key; only its kernels' layout
    differs (``channels_first_params`` maps them)."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {tuple(MODELS)}; got {name!r}")
    channels_last = _args.check_bool(resolve_channels_last(name, channels_last), "channels_last")
    check_layout(name, channels_last)
    kwargs = {"channels_last": channels_last} if name in LAYOUT_MODELS else {}
    return MODELS[name](NUM_CLASSES[DATASETS[name]] if num_classes is None else num_classes, impl=impl, **kwargs)


def channels_first_params(params: Any) -> Any:
    """The parameters of a ``channels_last=True`` build as its channels-first twin's: every
    kernel (the leaves of 3+ axes; dense weights have 2) moved ``(*K, I, O)`` → ``(O, I, *K)``."""
    return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, (-1, -2), (0, 1)) if a.ndim >= 3 else a, params)


def seed_example() -> str:
    """The seed notes' contrast on a 32×32×3 image: one fully connected unit is a 3072-weight
    template of the whole image, one 5×5×3 kernel a 75-weight dot product slid everywhere."""
    shape = (1, 3, 32, 32)
    dense = nn.summary(nn.serial(nn.Flatten(), nn.Dense(1)), shape)
    conv = nn.summary(nn.serial(nn.Conv2d(1, 5)), shape)
    text = [nn.format_summary(dense, "A fully connected unit on a 32x32x3 image: one template"),
            "",
            nn.format_summary(conv, "One 5x5x3 kernel on the same image: one feature map"),
            "",
            f"weights: fully connected {3 * 32 * 32} (+1 bias) vs kernel {5 * 5 * 3} (+1 bias); "
            f"the kernel is reused at all {28 * 28} output positions (28 = 32 - 5 + 1)."]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    """``jaxcnn summary MODEL [--batch N]`` or ``jaxcnn summary seed-example``."""
    parser = argparse.ArgumentParser(prog="jaxcnn summary", description=main.__doc__)
    parser.add_argument("model", choices=[*MODELS, "seed-example"])
    parser.add_argument("--batch", type=int, default=1, help="batch size shown in the shapes")
    args = parser.parse_args(argv)
    if args.model == "seed-example":
        print(seed_example())
        return 0
    rows = nn.summary(build(args.model), (args.batch, *INPUT_SHAPES[args.model]))
    print(nn.format_summary(rows, f"{args.model} on input {(args.batch, *INPUT_SHAPES[args.model])}"))
    return 0
