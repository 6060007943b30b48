"""The oracle: jaxcnn's ops from plain ``jax.lax`` / ``jax.numpy``, differentiated by JAX
autodiff. No ``custom_vjp`` anywhere in this module: the hand-written VJPs are checked
against ``jax.grad`` of these functions.

Arguments are validated by the same front door as the real ops, so both accept and reject the
same inputs; the arithmetic here shares nothing else with them.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn._args import as_float_array, check_cotangent, normalize_conv, shape_tuple

_NUMPY_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, stride: Any = 1,
         padding: Any = 0, dilation: Any = 1, groups: int = 1, padding_mode: str = "zeros",
         channels_last: bool = False, impl: str = "lax", precision: Any = None,
         preferred_element_type: Any = None) -> jax.Array:
    """``jaxcnn.conv`` as ``jnp.pad`` + ``lax.conv_general_dilated`` + broadcast bias.
    ``impl`` is accepted (and validated) for signature parity and ignored."""
    a = normalize_conv(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups,
                       padding_mode=padding_mode, channels_last=channels_last, impl=impl,
                       precision=precision, preferred_element_type=preferred_element_type)
    spec, x = a.spec, a.x
    if a.padding_mode != "zeros":
        widths = [(0, 0)] * x.ndim
        for axis, pads in zip(spec.spatial_axes(), a.mode_pads):
            widths[axis] = pads
        x = jnp.pad(x, widths, mode=_NUMPY_PAD_MODE[a.padding_mode])
    y = jax.lax.conv_general_dilated(
        x, a.w, spec.stride, spec.padding, rhs_dilation=spec.dilation,
        dimension_numbers=spec.dimension_numbers(), feature_group_count=spec.groups,
        precision=spec.precision, preferred_element_type=spec.preferred_element_type)
    if a.b is not None:
        shape = [1] * y.ndim
        shape[spec.channel_axis()] = -1
        y = y + a.b.astype(y.dtype).reshape(shape)
    return y


def conv_input_grad(dy: jax.Array, w: jax.Array, input_shape: Any, *, stride: Any = 1,
                    padding: Any = 0, dilation: Any = 1, groups: int = 1,
                    channels_last: bool = False, impl: str = "lax") -> jax.Array:
    """``jaxcnn.conv_input_grad`` as ``jax.vjp`` of ``conv`` with respect to ``x``. ``conv`` is
    linear in ``x``, so its VJP taken at ``x = 0`` is the VJP everywhere."""
    w = as_float_array(w, "w")
    x = jnp.zeros(shape_tuple(input_shape, w.ndim, "input_shape"), w.dtype)
    y, pull = jax.vjp(lambda x: conv(x, w, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, channels_last=channels_last, impl=impl), x)
    return pull(check_cotangent(dy, y.shape, w.dtype))[0]


def conv_weight_grad(x: jax.Array, dy: jax.Array, weight_shape: Any, *, stride: Any = 1,
                     padding: Any = 0, dilation: Any = 1, groups: int = 1,
                     channels_last: bool = False, impl: str = "lax") -> jax.Array:
    """``jaxcnn.conv_weight_grad`` as ``jax.vjp`` of ``conv`` with respect to ``w`` (at
    ``w = 0``: ``conv`` is linear in ``w``)."""
    x = as_float_array(x, "x")
    w = jnp.zeros(shape_tuple(weight_shape, x.ndim, "weight_shape"), x.dtype)
    y, pull = jax.vjp(lambda w: conv(x, w, stride=stride, padding=padding, dilation=dilation,
                                     groups=groups, channels_last=channels_last, impl=impl), w)
    return pull(check_cotangent(dy, y.shape, x.dtype))[0]
