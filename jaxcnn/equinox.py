r"""Equinox's convolution, pooling and group-norm layers with jaxcnn's hand-written gradients.

``equinox.nn.Conv`` and ``ConvTranspose`` call ``jax.lax.conv_general_dilated`` directly and
take no convolution argument (Flax's ``Conv`` does: pass it ``jaxcnn.lax.conv_general_dilated``).
The classes here are subclasses of Equinox's, with the same constructor, fields (and one more,
the static ``impl``), parameters (the same ``key`` draws the same weights), padding and
``padding_mode`` handling, unbatched ``(C, *S)`` input (``jax.vmap`` a batch, as with the stock
layers) and ``(O, *S_out)`` output; only the convolution in ``__call__`` is
``jaxcnn.lax.conv_general_dilated``, so every derivative of the layer runs through jaxcnn's
rule family::

    import jaxcnn.equinox as jqx
    layer = jqx.Conv2d(3, 8, kernel_size=3, padding="SAME", key=key)   # instead of eqx.nn.Conv2d
    model = jqx.convert(model)    # or: every stock conv of a built model, parameters kept

Equinox's layout is PyTorch's: ``x (C, *S)``, ``weight (O, C // groups, *K)``, ``bias (O, 1, …)``,
lax's default dimension numbers. ``Conv`` pads a non-zero ``padding_mode`` with ``jnp.pad``
(differentiated by JAX: data movement) and then convolves with ``"VALID"``; ``ConvTranspose``
is lax's lhs-dilated convolution of Equinox's transposed padding (Dumoulin & Visin 2016,
relationship 14), which ``jaxcnn.lax`` maps onto the family's input gradient. The padding
arithmetic is Equinox's own (its ``_nonzero_pad``, ``_padding_transpose``, ``_circular_pad``),
so the two layers cannot drift apart; ``tests/test_equinox.py`` holds them to the stock layers.

Pooling and normalisation: ``MaxPool1d/2d/3d`` and ``AvgPool1d/2d/3d`` (subclasses of
Equinox's, the same fields) pool with ``jaxcnn.max_pool`` / ``jaxcnn.avg_pool``, over Equinox's
``(lo, hi)`` padding, its ``use_ceil`` (``stride`` more padding on the high side where the last
window would not fit, so unlike PyTorch's ceil_mode the average still divides by the whole
window) and its check that no padding exceeds the window; pairs that jaxcnn's symmetric padding
cannot express are padded explicitly (``jaxcnn._interop``). ``GroupNorm`` normalises with
``jaxcnn.group_norm`` (``weight``/``bias`` its ``scale``/``bias``; ``state`` passed through, as
Equinox). ``convert`` swaps these too. Left alone, on purpose: the generic ``eqx.nn.Pool`` (any
``init`` and ``operation``: jaxcnn has no general reduction, and a sum pool is not an average),
and ``AdaptivePool`` and its subclasses (their windows come from Equinox's own head/tail split of
each axis, which no fixed window and stride of jaxcnn's reproduces).

``import jaxcnn`` never imports this module (nor Equinox); import ``jaxcnn.equinox``.
Requires ``equinox>=0.13`` (the ``interop`` extra; earlier releases declared these layers strict).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jaxcnn._interop import pool_pairs, require

eqx = require("equinox", "jaxcnn.equinox")

from jaxcnn._args import IMPLS, choice  # noqa: E402
from jaxcnn.lax import conv_general_dilated  # noqa: E402
from jaxcnn.norm import group_norm  # noqa: E402

__all__ = ["Conv", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose", "ConvTranspose1d",
           "ConvTranspose2d", "ConvTranspose3d", "MaxPool1d", "MaxPool2d", "MaxPool3d",
           "AvgPool1d", "AvgPool2d", "AvgPool3d", "GroupNorm", "convert"]


def _check_unbatched(layer: eqx.Module, x: Any) -> None:
    """Equinox's input convention: one example, ``(C, *S)``."""
    rank = layer.num_spatial_dims + 1
    if getattr(x, "ndim", None) != rank:
        raise ValueError(f"x: expected one example of rank {rank}, (C, *S) with "
                         f"{layer.num_spatial_dims} spatial axes (jax.vmap a batch); got shape "
                         f"{getattr(x, 'shape', type(x).__name__)}")


def _add_bias(layer: eqx.Module, y: jax.Array) -> jax.Array:
    return y + layer.bias if layer.use_bias else y


class Conv(eqx.nn.Conv):
    """``equinox.nn.Conv`` whose convolution is ``jaxcnn.lax.conv_general_dilated``.

    ``y[o, i] = bias[o] + Σ_c Σ_k weight[o, c, k] · x_pad[g·C/G + c, i·stride + k·dilation]``
    (``g`` the group of ``o``), ``x_pad`` padded by ``padding`` with ``padding_mode``.
    Arguments as ``equinox.nn.Conv``; ``impl`` (``"lax"`` or ``"manual"``) as ``jaxcnn.conv``,
    set by ``convert``.
    """

    impl: str = eqx.field(static=True, default="lax")

    def __call__(self, x: jax.Array, *, key: Any = None) -> jax.Array:
        """``x: (in_channels, *S)`` → ``(out_channels, *S_out)``; ``key`` is ignored."""
        _check_unbatched(self, x)
        if self.padding_mode != "ZEROS":
            x, padding = self._nonzero_pad(x), "VALID"
        else:
            padding = self.padding
        y = conv_general_dilated(x[None], self.weight, self.stride, padding,
                                 rhs_dilation=self.dilation, feature_group_count=self.groups,
                                 impl=self.impl)
        return _add_bias(self, y[0])


class Conv1d(eqx.nn.Conv1d, Conv):
    """As ``jaxcnn.equinox.Conv`` with ``num_spatial_dims=1``."""


class Conv2d(eqx.nn.Conv2d, Conv):
    """As ``jaxcnn.equinox.Conv`` with ``num_spatial_dims=2``."""


class Conv3d(eqx.nn.Conv3d, Conv):
    """As ``jaxcnn.equinox.Conv`` with ``num_spatial_dims=3``."""


class ConvTranspose(eqx.nn.ConvTranspose):
    """``equinox.nn.ConvTranspose`` whose convolution is ``jaxcnn.lax.conv_general_dilated``.

    The input dilated by ``stride`` (``stride − 1`` zeros between samples), padded by
    ``(d·(K − 1) − p_lo, d·(K − 1) − p_hi + output_padding)`` and correlated at stride 1 with
    ``weight (O, C // groups, *K)`` as it is stored (Equinox does not flip it: its layer has the
    connectivity of a conv's transpose, not its exact adjoint). Arguments as
    ``equinox.nn.ConvTranspose``; ``impl`` as ``jaxcnn.conv``, set by ``convert``.
    """

    impl: str = eqx.field(static=True, default="lax")

    def __call__(self, x: jax.Array, *, key: Any = None) -> jax.Array:
        """``x: (in_channels, *S)`` → ``(out_channels, *S_out)``; ``key`` is ignored."""
        _check_unbatched(self, x)
        padding = self._padding_transpose()
        if self.padding_mode == "CIRCULAR":
            x, padding = self._circular_pad(x, padding)
        y = conv_general_dilated(x[None], self.weight, (1,) * self.num_spatial_dims, padding,
                                 lhs_dilation=self.stride, rhs_dilation=self.dilation,
                                 feature_group_count=self.groups, impl=self.impl)
        return _add_bias(self, y[0])


class ConvTranspose1d(eqx.nn.ConvTranspose1d, ConvTranspose):
    """As ``jaxcnn.equinox.ConvTranspose`` with ``num_spatial_dims=1``."""


class ConvTranspose2d(eqx.nn.ConvTranspose2d, ConvTranspose):
    """As ``jaxcnn.equinox.ConvTranspose`` with ``num_spatial_dims=2``."""


class ConvTranspose3d(eqx.nn.ConvTranspose3d, ConvTranspose):
    """As ``jaxcnn.equinox.ConvTranspose`` with ``num_spatial_dims=3``."""


def _pooled(layer: eqx.nn.Pool, x: jax.Array, kind: str) -> jax.Array:
    """Equinox's ``Pool.__call__`` with jaxcnn's pooling: ``(C, *S)`` → ``(C, *S_out)``."""
    _check_unbatched(layer, x)
    padding = layer._update_padding_for_ceil(x.shape) if layer.use_ceil else layer.padding
    layer._check_is_padding_valid(padding)
    return pool_pairs(kind, x[None], layer.kernel_size, layer.stride, padding,
                      channels_last=False)[0]


class _MaxPool(eqx.nn.Pool):
    def __call__(self, x: jax.Array, *, key: Any = None) -> jax.Array:
        """``x: (C, *S)`` → ``(C, *S_out)``; ``key`` is ignored."""
        return _pooled(self, x, "max")


class _AvgPool(eqx.nn.Pool):
    def __call__(self, x: jax.Array, *, key: Any = None) -> jax.Array:
        """``x: (C, *S)`` → ``(C, *S_out)``; ``key`` is ignored."""
        return _pooled(self, x, "avg")


class MaxPool1d(_MaxPool, eqx.nn.MaxPool1d):
    """``equinox.nn.MaxPool1d`` computed by ``jaxcnn.max_pool``: ``y[c, i] = max_k x_pad[c, i·s + k]``
    (padding −∞), the gradient to each window's first maximum. Arguments as Equinox's.

    >>> import jax.numpy as jnp
    >>> import jaxcnn.equinox
    >>> jaxcnn.equinox.MaxPool1d(2, stride=2)(jnp.array([[1.0, 3.0, 2.0, 0.0]], jnp.float32))
    Array([[3., 2.]], dtype=float32)
    """


class MaxPool2d(_MaxPool, eqx.nn.MaxPool2d):
    """As ``jaxcnn.equinox.MaxPool1d``, two spatial axes."""


class MaxPool3d(_MaxPool, eqx.nn.MaxPool3d):
    """As ``jaxcnn.equinox.MaxPool1d``, three spatial axes."""


class AvgPool1d(_AvgPool, eqx.nn.AvgPool1d):
    """``equinox.nn.AvgPool1d`` computed by ``jaxcnn.avg_pool``:
    ``y[c, i] = Σ_k x_pad[c, i·s + k] / Π kernel_size`` (zero padding, which counts, as Equinox).

    >>> import jax.numpy as jnp
    >>> import jaxcnn.equinox
    >>> jaxcnn.equinox.AvgPool1d(2, padding=((1, 0),))(jnp.array([[2.0, 4.0]], jnp.float32))
    Array([[1., 3.]], dtype=float32)
    """


class AvgPool2d(_AvgPool, eqx.nn.AvgPool2d):
    """As ``jaxcnn.equinox.AvgPool1d``, two spatial axes."""


class AvgPool3d(_AvgPool, eqx.nn.AvgPool3d):
    """As ``jaxcnn.equinox.AvgPool1d``, three spatial axes."""


_NO_STATE = object()


class GroupNorm(eqx.nn.GroupNorm):
    """``equinox.nn.GroupNorm`` computed by ``jaxcnn.group_norm``:
    ``y = (x − μ) / √(σ² + eps) · weight + bias``, ``μ, σ²`` (biased) over each group of
    ``channels / groups`` channels and every position (Wu & He 2018). Arguments as Equinox's.

    >>> import jax.numpy as jnp
    >>> import jaxcnn.equinox
    >>> norm = jaxcnn.equinox.GroupNorm(groups=1, channels=2, dtype=jnp.float32)
    >>> norm(jnp.array([[1.0, 3.0], [1.0, 3.0]], jnp.float32)).round(3)
    Array([[-1.,  1.],
           [-1.,  1.]], dtype=float32)
    """

    def __call__(self, x: jax.Array, state: Any = _NO_STATE, *, key: Any = None) -> Any:
        """``x: (channels, *S)`` → the same shape; with ``state``, ``(y, state)``."""
        y = group_norm(x[None], self.groups, self.weight, self.bias, eps=self.eps)[0]
        return y if state is _NO_STATE else (y, state)


_OURS = {eqx.nn.Conv: Conv, eqx.nn.Conv1d: Conv1d, eqx.nn.Conv2d: Conv2d, eqx.nn.Conv3d: Conv3d,
         eqx.nn.ConvTranspose: ConvTranspose, eqx.nn.ConvTranspose1d: ConvTranspose1d,
         eqx.nn.ConvTranspose2d: ConvTranspose2d, eqx.nn.ConvTranspose3d: ConvTranspose3d,
         eqx.nn.MaxPool1d: MaxPool1d, eqx.nn.MaxPool2d: MaxPool2d, eqx.nn.MaxPool3d: MaxPool3d,
         eqx.nn.AvgPool1d: AvgPool1d, eqx.nn.AvgPool2d: AvgPool2d, eqx.nn.AvgPool3d: AvgPool3d,
         eqx.nn.GroupNorm: GroupNorm}
_OURS.update({ours: ours for ours in list(_OURS.values())})
# What convert swaps: these and their subclasses (a user's subclass is an error, not skipped).
# The generic Pool and AdaptivePool are not here (module docstring).
_SWAPPED = (eqx.nn.Conv, eqx.nn.ConvTranspose, eqx.nn.MaxPool1d, eqx.nn.MaxPool2d,
            eqx.nn.MaxPool3d, eqx.nn.AvgPool1d, eqx.nn.AvgPool2d, eqx.nn.AvgPool3d,
            eqx.nn.GroupNorm)


def _is_swapped(node: Any) -> bool:
    return isinstance(node, _SWAPPED)


def _converted(layer: eqx.Module, impl: str) -> eqx.Module:
    """``layer``'s fields, unchanged, in the matching class of this module."""
    cls = _OURS.get(type(layer))
    if cls is None:
        raise TypeError(f"model: cannot convert {type(layer).__module__}.{type(layer).__qualname__}, "
                        f"a subclass of an Equinox layer that jaxcnn.equinox does not know; "
                        f"expected one of Equinox's or jaxcnn.equinox's Conv*/ConvTranspose*/"
                        f"MaxPool*/AvgPool*/GroupNorm (subclass jaxcnn.equinox's instead)")
    new = object.__new__(cls)      # as Equinox's own unflatten: fields set, __init__ not rerun
    for field in dataclasses.fields(layer):
        if field.name != "impl":
            object.__setattr__(new, field.name, getattr(layer, field.name))
    if any(field.name == "impl" for field in dataclasses.fields(cls)):
        object.__setattr__(new, "impl", impl)
    return new


def convert(model: Any, *, impl: str = "lax") -> Any:
    """``model`` with every Equinox ``Conv*``, ``ConvTranspose*``, ``MaxPool*``, ``AvgPool*``
    and ``GroupNorm`` replaced by this module's (the generic ``Pool`` and ``AdaptivePool`` are
    kept: module docstring).

    Parameters and configuration are kept as they are (no copy of the arrays), so the converted
    model computes the same values; its gradients are jaxcnn's rules. Works on any pytree
    (an ``eqx.nn.Sequential``, a user ``Module``, a list of layers).

    Args:
      model: a pytree of Equinox modules.
      impl: ``"lax"`` or ``"manual"``, as ``jaxcnn.conv`` (for the convolutions).

    Returns:
      The same pytree with those layers converted.

    Raises:
      TypeError: a layer whose class is a user's subclass of one of those (its own
        ``__call__`` could not be kept).

    >>> import equinox as eqx, jax
    >>> import jaxcnn.equinox
    >>> key = jax.random.key(0)
    >>> model = eqx.nn.Sequential([eqx.nn.Conv2d(1, 4, 3, key=key), eqx.nn.GroupNorm(2, 4),
    ...                            eqx.nn.MaxPool2d(2, stride=2)])
    >>> [type(layer).__module__ for layer in jaxcnn.equinox.convert(model).layers]
    ['jaxcnn.equinox', 'jaxcnn.equinox', 'jaxcnn.equinox']
    """
    impl = choice(impl, IMPLS, "impl")
    return jax.tree_util.tree_map(lambda node: _converted(node, impl) if _is_swapped(node) else node,
                                  model, is_leaf=_is_swapped)
