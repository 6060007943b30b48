r"""Flax's transposed convolution and pooling with jaxcnn's hand-written gradients.

Flax's ``Conv`` takes a convolution (``conv_general_dilated=jaxcnn.lax.conv_general_dilated``);
its ``ConvTranspose`` (NNX and Linen) calls ``jax.lax.conv_transpose`` itself and has no such
hook, and ``flax.linen.max_pool`` / ``avg_pool`` are ``lax.reduce_window``. This module holds:

- ``ConvTranspose`` (a subclass of ``flax.nnx.ConvTranspose``) and ``LinenConvTranspose`` (of
  ``flax.linen.ConvTranspose``): the same constructor (plus ``impl``), the same parameters from
  the same seed, the same batch-axis, mask, dtype, ``CIRCULAR`` and bias handling; the
  convolution is ``jaxcnn.lax.conv_transpose``, lax's semantics (the input dilated by
  ``strides`` and correlated with the kernel as stored), every derivative jaxcnn's rules.
- ``max_pool`` and ``avg_pool`` with ``flax.linen``'s signatures (channels last, zero, one or
  several batch axes; ``strides=None`` is stride 1, as Flax, not the window as ``jaxcnn``),
  computed by ``jaxcnn.max_pool`` / ``jaxcnn.avg_pool``. Flax's ``(lo, hi)`` pairs that jaxcnn's
  symmetric padding cannot express are padded explicitly (``jaxcnn._interop``), so values and
  gradients are Flax's; negative padding is refused.

A model switches with one line::

    layer = jaxcnn.flax.ConvTranspose(3, 8, (3, 3), strides=2, rngs=rngs)  # nnx.ConvTranspose
    y = jaxcnn.flax.max_pool(x, (2, 2), strides=(2, 2))                    # nn.max_pool

``import jaxcnn`` never imports this module (nor Flax); it needs the ``interop`` extra.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxcnn._interop import check_pairs, pool_pairs, require

require("flax", "jaxcnn.flax")
from flax import linen, nnx  # noqa: E402
from flax.linen.linear import canonicalize_padding  # noqa: E402

from jaxcnn._args import IMPLS, choice, int_tuple  # noqa: E402
from jaxcnn.lax import conv_transpose  # noqa: E402

__all__ = ["ConvTranspose", "LinenConvTranspose", "max_pool", "avg_pool"]


# ----------------------------------------------------------------------------- ConvTranspose

def _broadcast(value: int | Sequence[int] | None, n: int) -> tuple[int, ...]:
    """Flax's ``maybe_broadcast``: None is 1, an int is repeated."""
    value = 1 if value is None else value
    return (value,) * n if isinstance(value, int) else tuple(value)


def _kernel_size(kernel_size: int | Sequence[int]) -> tuple[int, ...]:
    return (kernel_size,) if isinstance(kernel_size, int) else tuple(kernel_size)


def _check_mask(mask: Any, kernel_shape: tuple[int, ...]) -> None:
    if mask is not None and mask.shape != tuple(kernel_shape):
        raise ValueError(f"mask: expected the kernel's shape {tuple(kernel_shape)}; "
                         f"got {mask.shape}")


def _wrap_circular(y: jax.Array, in_sizes: tuple[int, ...], strides: tuple[int, ...],
                   transpose_kernel: bool) -> jax.Array:
    """Flax's ``CIRCULAR``: the VALID result padded to whole periods ``L·s`` (the odd sample on
    the low side, or the high side with ``transpose_kernel``) and summed period by period."""
    periods = [size * s for size, s in zip(in_sizes, strides)]
    diffs = [-(size - p) % (2 * p) for size, p in zip(y.shape[1:-1], periods)]
    pads = [(d // 2, (d + 1) // 2) if transpose_kernel else ((d + 1) // 2, d // 2) for d in diffs]
    y = jnp.pad(y, [(0, 0), *pads, (0, 0)])
    for axis, period in enumerate(periods, start=1):
        y = y.reshape(y.shape[:axis] + (-1, period) + y.shape[axis + 1:]).sum(axis=axis)
    return y


def _transposed(layer: Any, inputs: jax.Array, kernel: jax.Array, bias: jax.Array | None,
                impl: str) -> jax.Array:
    """Flax's ``ConvTranspose.__call__`` after the parameters, the convolution jaxcnn's:
    ``inputs (*batch, *S, C)`` → ``(*batch, *S_out, features)``."""
    n = len(_kernel_size(layer.kernel_size))
    batch = inputs.ndim - (n + 1)
    batch_shape = inputs.shape[:batch]
    if batch != 1:               # no batch axis or several: one, as Flax
        inputs = inputs.reshape((math.prod(batch_shape),) + inputs.shape[batch:])
    strides = _broadcast(layer.strides, n)
    padding = canonicalize_padding(layer.padding, n)
    y = conv_transpose(inputs, kernel, strides, "VALID" if padding == "CIRCULAR" else padding,
                       rhs_dilation=_broadcast(layer.kernel_dilation, n),
                       transpose_kernel=layer.transpose_kernel, precision=layer.precision,
                       preferred_element_type=layer.preferred_element_type, impl=impl)
    if layer.padding == "CIRCULAR":
        y = _wrap_circular(y, inputs.shape[1:-1], strides, layer.transpose_kernel)
    if bias is not None:
        y = y + bias.reshape((1,) * (y.ndim - 1) + (-1,))
    return y.reshape(batch_shape + y.shape[1:]) if batch != 1 else y


class ConvTranspose(nnx.ConvTranspose):
    """``flax.nnx.ConvTranspose`` whose convolution is ``jaxcnn.lax.conv_transpose``.

    ``y = conv_general_dilated(x, kernel, 1, pads, lhs_dilation=strides,
    rhs_dilation=kernel_dilation) + bias`` (lax's transposed convolution, the kernel
    ``(*K, in_features, out_features)`` as stored, or flipped and swapped with
    ``transpose_kernel``). Arguments as ``flax.nnx.ConvTranspose``, plus ``impl`` (``"lax"`` or
    ``"manual"``, as ``jaxcnn.conv``).

    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> import jaxcnn.flax
    >>> layer = jaxcnn.flax.ConvTranspose(3, 4, (3, 3), strides=2, rngs=nnx.Rngs(0))
    >>> stock = nnx.ConvTranspose(3, 4, (3, 3), strides=2, rngs=nnx.Rngs(0))
    >>> x = jnp.ones((1, 5, 5, 3), jnp.float32)
    >>> layer(x).shape
    (1, 10, 10, 4)
    >>> bool(jnp.allclose(layer(x), stock(x), atol=1e-5))
    True
    """

    def __init__(self, *args: Any, impl: str = "lax", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.impl = choice(impl, IMPLS, "impl")

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """``inputs: (*batch, *S, in_features)`` → ``(*batch, *S_out, out_features)``."""
        _check_mask(self.mask, self.kernel_shape)
        kernel = self.kernel[...]
        if self.mask is not None:
            kernel = kernel * self.mask
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, kernel, bias), dtype=self.dtype)
        return _transposed(self, inputs, kernel, bias, self.impl)


class LinenConvTranspose(linen.ConvTranspose):
    """``flax.linen.ConvTranspose`` whose convolution is ``jaxcnn.lax.conv_transpose``.

    As ``jaxcnn.flax.ConvTranspose``; attributes as ``flax.linen.ConvTranspose`` (the same
    ``kernel`` and ``bias`` parameters), plus ``impl``.

    >>> import jax, jax.numpy as jnp
    >>> import jaxcnn.flax
    >>> layer = jaxcnn.flax.LinenConvTranspose(features=4, kernel_size=(3,), padding="VALID")
    >>> x = jnp.ones((1, 8, 3), jnp.float32)
    >>> y, variables = layer.init_with_output(jax.random.key(0), x)
    >>> jax.tree_util.tree_map(jnp.shape, variables)
    {'params': {'bias': (4,), 'kernel': (3, 3, 4)}}
    >>> y.shape
    (1, 10, 4)
    """

    impl: str = "lax"

    @linen.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        """``inputs: (*batch, *S, C)`` → ``(*batch, *S_out, features)``."""
        impl = choice(self.impl, IMPLS, "impl")
        in_features = inputs.shape[-1]
        channels = (self.features, in_features) if self.transpose_kernel else (in_features, self.features)
        kernel_shape = _kernel_size(self.kernel_size) + channels
        _check_mask(self.mask, kernel_shape)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        if self.mask is not None:
            kernel = kernel * self.mask
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        inputs, kernel, bias = self.promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        return _transposed(self, inputs, kernel, bias, impl)


# ----------------------------------------------------------------------------- pooling

def _pool(kind: str, inputs: jax.Array, window_shape: Sequence[int], strides: Any, padding: Any,
          count_include_pad: bool = True) -> jax.Array:
    """``flax.linen.pooling.pool`` by jaxcnn: ``inputs (*batch, *S, C)``, batch axes folded
    into one (or one added), the padding resolved to pairs, ``pool_pairs``."""
    if isinstance(window_shape, int) or not isinstance(window_shape, Sequence):
        raise TypeError(f"window_shape: expected a tuple of ints, one per spatial axis; "
                        f"got {window_shape!r}")
    n = len(window_shape)
    window = int_tuple(window_shape, n, "window_shape")
    stride = (1,) * n if strides is None else int_tuple(strides, n, "strides")
    batch = getattr(inputs, "ndim", 0) - (n + 1)
    if batch < 0:
        raise ValueError(f"inputs: expected (*batch, *S, C) with {n} spatial axes "
                         f"(window_shape {window}); got shape {getattr(inputs, 'shape', None)}")
    batch_shape = inputs.shape[:batch]
    x = inputs.reshape((math.prod(batch_shape),) + inputs.shape[batch:])
    if isinstance(padding, str):
        padding = jax.lax.padtype_to_pads(x.shape[1:-1], window, stride, padding)
    pairs = check_pairs(padding, n)
    y = pool_pairs(kind, x, window, stride, pairs, channels_last=True,
                   count_include_pad=count_include_pad)
    return y.reshape(batch_shape + y.shape[1:])


def max_pool(inputs: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID") -> jax.Array:
    """``flax.linen.max_pool`` computed by ``jaxcnn.max_pool``: ``y[i] = max_k x_pad[i·s + k]``,
    padding −∞; the gradient to the first maximum of each window.

    Args:
      inputs: ``(*batch, *S, C)``, zero or more batch axes.
      window_shape: one int per spatial axis.
      strides: as window_shape; None is 1 on every axis (Flax's default).
      padding: ``"SAME"``, ``"VALID"`` or one ``(lo, hi)`` pair of ints ≥ 0 per spatial axis.

    >>> import jax.numpy as jnp
    >>> import jaxcnn.flax
    >>> x = jnp.arange(16.0, dtype=jnp.float32).reshape(1, 4, 4, 1)
    >>> jaxcnn.flax.max_pool(x, (2, 2), strides=(2, 2))[0, ..., 0]
    Array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    """
    return _pool("max", inputs, window_shape, strides, padding)


def avg_pool(inputs: jax.Array, window_shape: Sequence[int], strides: Sequence[int] | None = None,
             padding: str | Sequence[tuple[int, int]] = "VALID",
             count_include_pad: bool = True) -> jax.Array:
    """``flax.linen.avg_pool`` computed by ``jaxcnn.avg_pool``: ``y[i] = Σ_k x_pad[i·s + k] / c``
    (zero padding), ``c`` the window's size, or with ``count_include_pad=False`` the number of
    input samples in the window.

    Args: as ``jaxcnn.flax.max_pool``; count_include_pad: as above.

    >>> import jax.numpy as jnp
    >>> import jaxcnn.flax
    >>> x = jnp.ones((1, 3, 1), jnp.float32)
    >>> jaxcnn.flax.avg_pool(x, (2,), padding=((1, 0),))[0, :, 0]
    Array([0.5, 1. , 1. ], dtype=float32)
    >>> jaxcnn.flax.avg_pool(x, (2,), padding=((1, 0),), count_include_pad=False)[0, :, 0]
    Array([1., 1., 1.], dtype=float32)
    """
    return _pool("avg", inputs, window_shape, strides, padding, bool(count_include_pad))
