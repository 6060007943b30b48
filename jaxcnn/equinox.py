r"""Equinox's convolution layers with jaxcnn's hand-written gradients.

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

``import jaxcnn`` never imports this module (nor Equinox); import ``jaxcnn.equinox``.
Requires ``equinox>=0.13`` (the ``interop`` extra; earlier releases declared these layers strict).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax

from jaxcnn._args import IMPLS, choice
from jaxcnn.lax import conv_general_dilated

__all__ = ["Conv", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose", "ConvTranspose1d",
           "ConvTranspose2d", "ConvTranspose3d", "convert"]


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


_OURS = {eqx.nn.Conv: Conv, eqx.nn.Conv1d: Conv1d, eqx.nn.Conv2d: Conv2d, eqx.nn.Conv3d: Conv3d,
         eqx.nn.ConvTranspose: ConvTranspose, eqx.nn.ConvTranspose1d: ConvTranspose1d,
         eqx.nn.ConvTranspose2d: ConvTranspose2d, eqx.nn.ConvTranspose3d: ConvTranspose3d}
_OURS.update({ours: ours for ours in list(_OURS.values())})


def _is_conv(node: Any) -> bool:
    return isinstance(node, (eqx.nn.Conv, eqx.nn.ConvTranspose))


def _converted(layer: eqx.Module, impl: str) -> eqx.Module:
    """``layer``'s fields, unchanged, in the matching class of this module."""
    cls = _OURS.get(type(layer))
    if cls is None:
        raise TypeError(f"model: cannot convert {type(layer).__module__}.{type(layer).__qualname__}, "
                        f"a subclass of Equinox's convolution that jaxcnn.equinox does not know; "
                        f"expected one of Equinox's or jaxcnn.equinox's Conv*/ConvTranspose* "
                        f"(subclass jaxcnn.equinox's instead)")
    new = object.__new__(cls)      # as Equinox's own unflatten: fields set, __init__ not rerun
    for field in dataclasses.fields(layer):
        if field.name != "impl":
            object.__setattr__(new, field.name, getattr(layer, field.name))
    object.__setattr__(new, "impl", impl)
    return new


def convert(model: Any, *, impl: str = "lax") -> Any:
    """``model`` with every Equinox ``Conv*`` and ``ConvTranspose*`` replaced by this module's.

    Parameters and configuration are kept as they are (no copy of the arrays), so the converted
    model computes the same values; its gradients are jaxcnn's rules. Works on any pytree
    (an ``eqx.nn.Sequential``, a user ``Module``, a list of layers).

    Args:
      model: a pytree of Equinox modules.
      impl: ``"lax"`` or ``"manual"``, as ``jaxcnn.conv``.

    Returns:
      The same pytree with the convolutions converted.

    Raises:
      TypeError: a convolution whose class is a user's subclass of Equinox's (its own
        ``__call__`` could not be kept).
    """
    impl = choice(impl, IMPLS, "impl")
    return jax.tree_util.tree_map(lambda node: _converted(node, impl) if _is_conv(node) else node,
                                  model, is_leaf=_is_conv)
