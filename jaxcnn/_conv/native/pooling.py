r"""Native CPU forms of the pooling primitives (``jaxcnn.pool``): ``pool_cpu.cc``'s kernels.

XLA's CPU backend compiles a pooling into loop fusions that read each window tap as a strided
slice, the argmax as a loop whose result it cannot fuse, and the input gradient as one select
per tap (or a loop over the taps); a pass that moves a few MB took milliseconds of the clips
model's step. The kernels compute the same maps in one pass over channel rows (channels last,
so a tap's row is ``C`` contiguous floats; the measurements: ``docs/lowering.md``):

- ``max_pool``: ``y[n, i, c] = max_k x_pad[n, i·s + k·d, c]`` and its argmax by PyTorch's scan
  (``jaxcnn._pool.max_pool_argmax``: ties to the first tap in row-major order, a NaN wins), both
  written by one call, the max for ``max_pool_p`` and the argmax for ``argmax_p`` (XLA merges
  the two identical calls of a training step into one);
- ``max_pool_gather`` and its adjoint ``max_pool_scatter`` (``ẏ = ẋ`` at the argmax; ``dx`` the
  sum of ``dy`` over the windows whose argmax is ``x``'s sample);
- ``avg_pool`` (PyTorch's divisor) and its adjoint ``avg_pool_transpose``.

They take float32, channels last, 1 to 3 spatial axes, at least ``MIN_CHANNELS`` channels,
any window, stride, padding and dilation; everything else (other dtypes, channels first, other platforms, a program for
``jax.export``: ``custom_calls_allowed``) keeps the XLA forms of ``jaxcnn._pool``, as conv does.
The kernels are built and loaded with the conv kernels (one library, ``jaxcnn._conv.native``),
``JAXCNN_NATIVE=0`` turns both off. Under a batch-sharded ``jax.jit`` each call is split per
batch shard (``partition.split_per_sample``: pooling reads one sample, no sum over the batch).
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._conv import native
from jaxcnn._conv.native.partition import split_per_sample
from jaxcnn._primitives import custom_calls_allowed, partitioning_mesh
from jaxcnn._shapes import PoolSpec

MIN_CHANNELS = 8
"""Fewer channels run the XLA forms: a kernel's work per window tap is one row of ``C`` floats,
and below a vector's width the per-position bookkeeping costs more than XLA's fusions, which
vectorise along the positions (the clips model's one-channel input: its average pooling was
several times slower in the kernel)."""

__all__ = ["MIN_CHANNELS", "may_use", "uses_kernels", "native_max_pool", "native_argmax", "native_max_pool_gather",
           "native_max_pool_scatter", "native_avg_pool", "native_avg_pool_transpose"]


def may_use(spec: PoolSpec, dtype: Any) -> bool:
    """The conditions of ``uses_kernels`` that the spec and dtype decide (float32, channels
    last, 1 to 3 spatial axes), read without building the kernels."""
    return jnp.dtype(dtype) == jnp.float32 and spec.channels_last and 1 <= spec.n <= 3


def uses_kernels(spec: PoolSpec, dtype: Any, platform: str | None, shapes: tuple[tuple[int, ...], ...]) -> bool:
    """Whether this lowering runs the kernels: on the CPU, where the lowering takes a custom
    call, ``may_use``, at least ``MIN_CHANNELS`` channels, no empty operand (XLA calls no custom
    call with an empty result), and the kernels built."""
    return (platform == "cpu" and custom_calls_allowed() and may_use(spec, dtype)
            and shapes[0][-1] >= MIN_CHANNELS and all(int(np.prod(s)) > 0 for s in shapes)
            and native.available())


def _sizes(spec: PoolSpec) -> np.ndarray:
    """The pooling kernels' geometry: six triples (in, out, k, s, d, lo)."""
    return native.geometry((spec.in_sizes, 1), (spec.out_sizes(), 1), (spec.window, 1), (spec.stride, 1),
                           (spec.dilation, 1), ([lo for lo, _ in spec.padding], 0))


def _shape(batch: int, spec: PoolSpec, pooled: bool) -> tuple[int, ...]:
    """``(N, *S, C)`` of ``batch`` samples with the pooled (or the input's) spatial sizes;
    ``C`` is filled in by the caller."""
    return (batch, *(spec.out_sizes() if pooled else spec.in_sizes))


def _run(kernel: Callable[..., jax.Array], operands: tuple[jax.Array, ...], pooled: tuple[bool, ...],
         result_pooled: bool) -> jax.Array:
    """``kernel(*operands)``; in an op the partitioner splits, one call per batch shard."""
    native.library()
    if partitioning_mesh() is None:
        return kernel(*operands)
    return split_per_sample(kernel, operands, pooled, result_pooled)


def _struct(a: jax.Array, spec: PoolSpec, pooled: bool, dtype: Any = jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((*_shape(a.shape[0], spec, pooled), a.shape[-1]), dtype)


def _max_pool_call(x: jax.Array, spec: PoolSpec) -> tuple[jax.Array, jax.Array]:
    results = (_struct(x, spec, True), _struct(x, spec, True, jnp.int32))
    return jax.ffi.ffi_call("jaxcnn_max_pool", results)(x, sizes=_sizes(spec))


def native_max_pool(x: jax.Array, spec: PoolSpec) -> jax.Array:
    """``y[n, i, c] = max_k x_pad[n, i·s + k·d, c]`` (the first result of ``jaxcnn_max_pool``)."""
    return _run(lambda x: _max_pool_call(x, spec)[0], (x,), (False,), True)


def native_argmax(x: jax.Array, spec: PoolSpec) -> jax.Array:
    """Each window's argmax by PyTorch's scan (the second result of the same call)."""
    return _run(lambda x: _max_pool_call(x, spec)[1], (x,), (False,), True)


def native_max_pool_gather(v: jax.Array, argmax: jax.Array, spec: PoolSpec) -> jax.Array:
    """``y[i] = v_pad[i·s + a[i]·d]``."""
    def kernel(v, argmax):
        return jax.ffi.ffi_call("jaxcnn_max_pool_gather", _struct(v, spec, True))(v, argmax, sizes=_sizes(spec))
    return _run(kernel, (v, argmax), (False, True), True)


def native_max_pool_scatter(dy: jax.Array, argmax: jax.Array, spec: PoolSpec) -> jax.Array:
    """``dx[j] = Σ_{i : i·s + a[i]·d = j + lo} dy[i]``."""
    def kernel(dy, argmax):
        return jax.ffi.ffi_call("jaxcnn_max_pool_scatter", _struct(dy, spec, False))(dy, argmax, sizes=_sizes(spec))
    return _run(kernel, (dy, argmax), (True, True), False)


def native_avg_pool(x: jax.Array, spec: PoolSpec, count_include_pad: bool) -> jax.Array:
    """``y[i] = (Σ_k x_pad[i·s + k]) / c[i]`` with PyTorch's divisor."""
    def kernel(x):
        return jax.ffi.ffi_call("jaxcnn_avg_pool", _struct(x, spec, True))(
            x, sizes=_sizes(spec), count_include_pad=np.int64(count_include_pad))
    return _run(kernel, (x,), (False,), True)


def native_avg_pool_transpose(dy: jax.Array, spec: PoolSpec, count_include_pad: bool) -> jax.Array:
    """``dx[j] = Σ_{i, k : i·s + k = j + lo} dy[i] / c[i]``."""
    def kernel(dy):
        return jax.ffi.ffi_call("jaxcnn_avg_pool_transpose", _struct(dy, spec, False))(
            dy, sizes=_sizes(spec), count_include_pad=np.int64(count_include_pad))
    return _run(kernel, (dy,), (True,), False)
