"""``jaxcnn bench --train``'s JAX baseline: every bench model in stock Flax NNX.

``build(name, rngs)`` is the model of ``jaxcnn.models`` as a Flax user writes it: an
``nnx.Sequential`` of ``nnx.Conv``, ``nnx.GroupNorm``, ``nnx.relu``, ``nnx.max_pool`` /
``nnx.avg_pool``, a flatten, ``nnx.Dropout`` and ``nnx.Linear`` (a ``Residual`` module for the
basic blocks), on Flax's own layout, channels last: ``(N, *S, C)`` batches, ``(*K, I, O)``
kernels. Its convolutions are ``lax.conv_general_dilated``, differentiated by JAX autodiff.
``load_jaxcnn_params`` copies a channels-first jaxcnn parameter tree into it (the dense rows
after a flatten reordered: Flax flattens ``(*S, C)``, jaxcnn ``(C, *S)``): the same function.

``train_step`` is one optimizer step as the Flax docs write it: ``nnx.value_and_grad`` of the
loss (``optax.softmax_cross_entropy_with_integer_labels``), ``nnx.Optimizer`` over
``optax.adamw``, the whole step under ``nnx.jit``.

This module imports flax and optax: ``jaxcnn.bench.train_step`` imports it only where they
are installed.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxcnn.bench import model_params

MODELS = ("mnist1d-resnet", "fashion-cnn", "fashion-resnet", "clips-cnn3d")


class Residual(nnx.Module):
    """``block(x) + shortcut(x)``, the shortcut the identity where it is None."""

    def __init__(self, block: nnx.Module, shortcut: nnx.Module | None = None) -> None:
        self.block = block
        self.shortcut = shortcut

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))


def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def _global_avg_pool(x: jax.Array) -> jax.Array:
    return x.mean(axis=tuple(range(1, x.ndim - 1)))


def _pool(kind: Callable, window: tuple[int, ...]) -> Callable:
    return functools.partial(kind, window_shape=window, strides=window)


def build(name: str, rngs: nnx.Rngs) -> nnx.Sequential:
    """The bench model ``name`` in Flax NNX (channels last)."""
    def conv(c_in, c, k, n, stride=1, padding=1, bias=True):
        return nnx.Conv(c_in, c, (k,) * n, strides=stride, padding=padding, use_bias=bias, rngs=rngs)

    def norm(c):
        return nnx.GroupNorm(c, num_groups=min(8, c), epsilon=1e-5, rngs=rngs)

    def block(n, c_in, c, stride):
        body = nnx.Sequential(conv(c_in, c, 3, n, stride, bias=False), norm(c), nnx.relu,
                              conv(c, c, 3, n, bias=False), norm(c))
        shortcut = conv(c_in, c, 1, n, stride, padding=0) if stride != 1 or c_in != c else None
        return [Residual(body, shortcut), nnx.relu]

    if name == "mnist1d-resnet":
        return nnx.Sequential(
            conv(1, 64, 5, 1, padding=2, bias=False), norm(64), nnx.relu,
            *block(1, 64, 64, 1), *block(1, 64, 64, 2), *block(1, 64, 64, 2),
            _flatten, nnx.Linear(64 * 10, 10, rngs=rngs))
    if name == "fashion-cnn":
        return nnx.Sequential(
            conv(1, 32, 3, 2), nnx.relu, _pool(nnx.max_pool, (2, 2)),
            conv(32, 64, 3, 2), norm(64), nnx.relu, _pool(nnx.max_pool, (2, 2)),
            conv(64, 128, 3, 2), norm(128), nnx.relu,
            _flatten, nnx.Dropout(0.3, rngs=rngs), nnx.Linear(128 * 7 * 7, 10, rngs=rngs))
    if name == "fashion-resnet":
        return nnx.Sequential(
            conv(1, 32, 3, 2, bias=False), norm(32), nnx.relu,
            *block(2, 32, 32, 1), *block(2, 32, 64, 2), *block(2, 64, 128, 2),
            _global_avg_pool, nnx.Linear(128, 10, rngs=rngs))
    if name == "clips-cnn3d":
        return nnx.Sequential(
            _pool(nnx.avg_pool, (1, 2, 2)),
            conv(1, 16, 3, 3), nnx.relu, _pool(nnx.max_pool, (1, 2, 2)),
            conv(16, 32, 3, 3), norm(32), nnx.relu, _pool(nnx.max_pool, (2, 2, 2)),
            conv(32, 64, 3, 3), norm(64), nnx.relu,
            _global_avg_pool, nnx.Linear(64, 40, rngs=rngs))
    raise ValueError(f"name: expected one of {MODELS}; got {name!r}")


def _layers(module: Any) -> Iterator[nnx.Module]:
    """The parameterised layers in order (a residual: its block, then its shortcut)."""
    if isinstance(module, nnx.Sequential):
        for layer in module.layers:
            yield from _layers(layer)
    elif isinstance(module, Residual):
        yield from _layers(module.block)
        if module.shortcut is not None:
            yield module.shortcut
    elif isinstance(module, (nnx.Conv, nnx.GroupNorm, nnx.Linear)):
        yield module


def param_count(model: nnx.Module) -> int:
    """The number of parameters (of a model or of ``nnx.eval_shape``'s abstract one)."""
    return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param)))


def _set(param: nnx.Param, value: Any, what: str) -> None:
    value = jnp.asarray(value)   # its own dtype: float64 parameters make a float64 model
    if value.shape != param[...].shape:
        raise ValueError(f"params: expected {what} of shape {param[...].shape}; got {value.shape}")
    if hasattr(param, "set_value"):   # flax >= 0.12 (``.value =`` deprecated there)
        param.set_value(value)
    else:
        param.value = value


def load_jaxcnn_params(model: nnx.Module, params: Any) -> nnx.Module:
    """Copy a channels-first jaxcnn parameter tree into ``model`` (``build``'s), layer by
    layer: kernels ``(O, I, *K)`` → ``(*K, I, O)``, GroupNorm's ``scale`` and ``bias``, dense
    ``w`` with its rows reordered from jaxcnn's ``(C, *S)`` flatten to Flax's ``(*S, C)``
    (``C``: the channels of the conv before it). Raises a ``ValueError`` naming ``params``
    where the layers or their shapes differ."""
    channels = 1
    for p, m, where in model_params.paired(params, list(_layers(model))):
        if isinstance(m, nnx.GroupNorm):
            _set(m.scale, p["scale"], f"{where} scale")
            _set(m.bias, p["bias"], f"{where} bias")
            continue
        w = np.asarray(p["w"])
        if isinstance(m, nnx.Conv):
            w = np.moveaxis(w, (0, 1), (-1, -2))
            channels = w.shape[-1]
        else:
            features, out = w.shape
            w = w.reshape(channels, features // channels, out).transpose(1, 0, 2).reshape(features, out)
        _set(m.kernel, w, f"{where} w")
        model_params.check_bias(p, m.bias is not None, where)
        if m.bias is not None:
            _set(m.bias, p["b"], f"{where} b")
    return model


def in_layer_order(model: nnx.Module) -> list[np.ndarray]:
    """``model``'s parameters as ``model_params.in_layer_order`` lists a jaxcnn tree's, in
    jaxcnn's shapes (``load_jaxcnn_params`` undone). Of a clone updated with a gradient
    ``nnx.State``: the gradients."""
    out, channels = [], 1
    for m in _layers(model):
        if isinstance(m, nnx.GroupNorm):
            out += [np.asarray(m.scale[...]), np.asarray(m.bias[...])]
            continue
        w = np.asarray(m.kernel[...])
        if isinstance(m, nnx.Conv):
            channels = w.shape[-1]
            w = np.moveaxis(w, (-1, -2), (0, 1))
        else:
            features, classes = w.shape
            w = w.reshape(features // channels, channels, classes).transpose(1, 0, 2).reshape(features, classes)
        out += [w] + ([] if m.bias is None else [np.asarray(m.bias[...])])
    return out


def channels_last_batch(x: np.ndarray) -> jax.Array:
    """A channels-first batch ``(N, C, *S)`` as Flax takes it, ``(N, *S, C)``."""
    return jnp.asarray(np.moveaxis(np.asarray(x), 1, -1))


def _loss(model: nnx.Module, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def loss_and_grads(model: nnx.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """The cross-entropy on a channels-first batch and its gradients in
    ``model_params.in_layer_order``'s order and jaxcnn's shapes; dropout off (``model.eval()``)."""
    model.eval()
    loss, grads = nnx.jit(nnx.value_and_grad(_loss))(model, channels_last_batch(x), jnp.asarray(y))
    holder = nnx.clone(model)
    nnx.update(holder, grads)
    return float(loss), in_layer_order(holder)


def train_step(name: str, params: Any, x: np.ndarray, y: np.ndarray, *, lr: float = 3e-3,
               weight_decay: float = 5e-2) -> Callable[[], jax.Array]:
    """One ``nnx.jit`` AdamW step of ``build(name)`` holding ``params`` (``None``: Flax's own
    init) on ``(x, y)``, as a closure returning the loss (it trains in place; its first call
    traces and compiles). The batch is moved channels last once, outside the step."""
    model = build(name, nnx.Rngs(0))
    if params is not None:
        load_jaxcnn_params(model, params)
    model.train()
    optimizer = nnx.Optimizer(model, optax.adamw(lr, weight_decay=weight_decay), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        with jax.numpy_dtype_promotion("standard"):   # optax's Adam: float ** int32 count
            loss, grads = nnx.value_and_grad(_loss)(model, x, y)
            optimizer.update(model, grads)
        return loss

    xj, yj = channels_last_batch(x), jnp.asarray(y)
    return lambda: step(model, optimizer, xj, yj)
