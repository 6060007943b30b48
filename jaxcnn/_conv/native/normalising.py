r"""Native CPU forms of the GroupNorm primitives (``jaxcnn.norm``): ``norm_cpu.cc``'s kernels.

XLA's CPU backend compiles ``jaxcnn.norm``'s forms into fusions over the whole batch, each pass
reading the activation from memory again: ~10 reads and 3 writes of it per forward and VJP (a
128×28×28×32 float32 activation is 12.8 MB; fashion-resnet's GroupNorms took 27 of a 128 ms
step). The kernels work one sample at a time, its activation in the core's cache: the forward
reads ``x`` once from memory (then the mean, the centred variance and ``y`` from the cache), the
VJP ``x`` and ``dy`` once. Both take a ``relu`` flag (``jaxcnn.norm.group_norm_relu``): the
forward writes ``max(0, z)``, ``z = γ·x̂ + β``, and the VJP masks ``dy`` by ``z > 0``, recomputed
from ``x``, so a ReLU after a GroupNorm costs no pass of its own.

- ``jaxcnn_group_norm``: ``y = (x − μ)·γr + β`` (and its ReLU);
- ``jaxcnn_group_norm_vjp``: ``dx = r·(γ·dy − mean(γ·dy) − x̂·mean(γ·dy·x̂))`` and per sample the
  channel sums ``Σ dy·x̂`` and ``Σ dy`` (``(N, 2, C)``), which ``jaxcnn.norm`` sums over the batch
  into the scale and bias gradients.

They take float32, channels last, 1 to 3 spatial axes, at least ``MIN_CHANNELS`` channels;
everything else (other dtypes, channels first, other platforms, a program for ``jax.export``:
``custom_calls_allowed``) keeps the XLA forms of ``jaxcnn.norm``. The kernels are built and
loaded with the conv kernels (one library, ``jaxcnn._conv.native``), ``JAXCNN_NATIVE=0`` turns
them off. Under a batch-sharded ``jax.jit`` each call is split per batch shard
(``partition.split_samples``: a sample's statistics are its own; the per-sample sums leave the
call batch-leading and are summed over the batch by XLA).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._conv import native
from jaxcnn._conv.native.partition import split_samples
from jaxcnn._primitives import custom_calls_allowed, partitioning_mesh

MIN_CHANNELS = 4
"""Fewer channels run the XLA forms: the kernel's inner loops run along the channels of a
position, which below a few floats cannot fill a vector (GroupNorm + ReLU fwd+VJP at
128×28×28×C, CPU time of one run on a loaded machine, XLA / kernel: 0.73 at C = 1, 1.03 at 2,
1.07 at 4, 1.29 at 8, 1.39 at 16)."""

__all__ = ["MIN_CHANNELS", "may_use", "uses_kernels", "native_group_norm", "native_group_norm_vjp"]


def may_use(dtype: Any, channels_last: bool, rank: int) -> bool:
    """The conditions of ``uses_kernels`` that the dtype and layout decide (float32, channels
    last, 1 to 3 spatial axes), read without building the kernels."""
    return jnp.dtype(dtype) == jnp.float32 and channels_last and 3 <= rank <= 5


def uses_kernels(x: Any, platform: str | None, channels_last: bool) -> bool:
    """Whether this lowering runs the kernels: on the CPU, where the lowering takes a custom
    call, ``may_use``, at least ``MIN_CHANNELS`` channels, a non-empty ``x`` (XLA calls no custom
    call with an empty result), and the kernels built."""
    return (platform == "cpu" and custom_calls_allowed() and may_use(x.dtype, channels_last, x.ndim)
            and x.shape[-1] >= MIN_CHANNELS and int(np.prod(x.shape)) > 0 and native.available())


def _run(kernel: Callable[..., Any], operands: tuple[jax.Array, ...], results: tuple[str, ...]) -> Any:
    """``kernel(*operands)`` (``x`` first, the per-channel ``scale, bias`` next); in an op the
    partitioner splits, one call per batch shard."""
    native.library()
    if partitioning_mesh() is None:
        return kernel(*operands)
    sample = " ".join(["b", *(f"s{a}" for a in range(operands[0].ndim - 2)), "c"])
    terms = tuple("c" if a.ndim == 1 else sample for a in operands)
    return split_samples(kernel, operands, terms, tuple(sample if r == "x" else "b two c" for r in results))


def _attributes(groups: int, eps: float, relu: bool) -> dict[str, Any]:
    return dict(groups=np.int64(groups), eps=np.float64(eps), relu=np.int64(relu))


def native_group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, *, groups: int, eps: float,
                      relu: bool) -> jax.Array:
    """``y = (x − μ)·γr + β``, or ``max(0, ·)`` of it with ``relu``; ``x: (N, *S, C)``."""
    def kernel(x, scale, bias):
        return jax.ffi.ffi_call("jaxcnn_group_norm", jax.ShapeDtypeStruct(x.shape, jnp.float32))(
            x, scale, bias, **_attributes(groups, eps, relu))
    return _run(kernel, (x, scale.astype(jnp.float32), bias.astype(jnp.float32)), ("x",))


def native_group_norm_vjp(x: jax.Array, scale: jax.Array, bias: jax.Array, dy: jax.Array, *, groups: int,
                          eps: float, relu: bool) -> tuple[jax.Array, jax.Array]:
    """``(dx, partials)``: ``dx`` and, per sample and channel, ``partials[n, 0] = Σ_S dy·x̂`` and
    ``partials[n, 1] = Σ_S dy`` (``(N, 2, C)``), ``dy`` masked by ``γ·x̂ + β > 0`` with ``relu``."""
    def kernel(x, scale, bias, dy):
        results = (jax.ShapeDtypeStruct(x.shape, jnp.float32),
                   jax.ShapeDtypeStruct((x.shape[0], 2, x.shape[-1]), jnp.float32))
        return tuple(jax.ffi.ffi_call("jaxcnn_group_norm_vjp", results)(
            x, scale, bias, dy, **_attributes(groups, eps, relu)))
    operands = (x, scale.astype(jnp.float32), bias.astype(jnp.float32), dy.astype(jnp.float32))
    return _run(kernel, operands, ("x", "partials"))
