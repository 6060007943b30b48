"""A fuzz configuration's arrays: their shapes (channels first, as PyTorch takes them), their
move into the configuration's layout and back, and jaxcnn's keyword arguments for it.

A configuration is a ``FuzzCase`` (``configs``); ``kind`` names what an array is: ``x`` (an
activation), ``w`` (a kernel), ``b`` (one value per channel) or ``dy`` (a cotangent).
"""
from __future__ import annotations

import numpy as np

from jaxcnn.fuzz import torch_side
from jaxcnn.fuzz.configs import FuzzCase


def channels_first(c: FuzzCase) -> FuzzCase:
    """``c`` in PyTorch's layout, whose shapes are the arrays' here."""
    return c.replace(channels_last=False)


def input_shape(c: FuzzCase) -> tuple[int, ...]:
    """``x``'s shape, channels first: ``(N, C, *S)``."""
    return channels_first(c).x_shape()


def weight_shape(c: FuzzCase) -> tuple[int, ...]:
    """The conv's kernel shape, channels first: ``(O, C / groups, *K)``."""
    return channels_first(c).replace(op="conv").w_shape()


def array_shapes(c: FuzzCase) -> list[tuple[str, tuple[int, ...]]]:
    """The op's array arguments, channels first: ``(kind, shape)`` with kind x/w/b/dy (b: one
    per channel, whatever the layout, as group_norm's scale and bias). ``dy``'s sizes are
    PyTorch's (``torch_side``), at least 1."""
    case = channels_first(c)
    x = case.x_shape()
    if c.op in ("max_pool", "avg_pool", "global_avg_pool"):
        return [("x", x)]
    if c.op == "group_norm":
        return [("x", x)] + [("b", (c.channels,))] * (2 if c.affine else 0)
    w = case.w_shape()
    out = tuple(max(o, 1) for o in torch_side.conv_out_sizes(c))
    dy = (c.batch, c.out_channels, *out)
    shapes = {"conv_input_grad": [("dy", dy), ("w", w)],
              "conv_weight_grad": [("x", x), ("dy", dy)]}.get(c.op, [("x", x), ("w", w)])
    if c.bias:
        shapes.append(("b", (c.out_channels,)))
    return shapes


def _to_last(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "w":
        return np.moveaxis(a, (0, 1), (-1, -2))
    return a if kind == "b" else np.moveaxis(a, 1, -1)


def _to_first(a: np.ndarray, kind: str) -> np.ndarray:
    if kind == "w":
        return np.moveaxis(a, (-1, -2), (0, 1))
    return a if kind == "b" or a.ndim < 3 else np.moveaxis(a, -1, 1)


def relayout(c: FuzzCase, a: np.ndarray, kind: str, to_library: bool) -> np.ndarray:
    if not c.channels_last:
        return a
    return _to_last(a, kind) if to_library else _to_first(a, kind)


def output_kind(c: FuzzCase) -> str:
    return {"conv_weight_grad": "w", "global_avg_pool": "b"}.get(c.op, "x")


def relayout_shape(c: FuzzCase, shape, kind: str, to_library: bool = True) -> tuple[int, ...]:
    """``shape`` moved as ``relayout`` moves an array of it."""
    return tuple(relayout(c, np.empty(shape, np.uint8), kind, to_library).shape)


# jaxcnn's keyword arguments of each op, by the name of the case's field that holds each
# (pooling's ``window`` is the case's ``kernel``); a new argument is a field of ``Case`` and
# its name here.
OPTIONS = {"conv": ("stride", "padding", "dilation", "groups", "padding_mode", "impl"),
           "conv_transpose": ("stride", "padding", "output_padding", "dilation", "groups",
                              "padding_mode", "impl"),
           "conv_input_grad": ("stride", "padding", "dilation", "groups", "impl"),
           "max_pool": ("window", "stride", "padding", "dilation", "ceil_mode"),
           "avg_pool": ("window", "stride", "padding", "ceil_mode", "count_include_pad"),
           "global_avg_pool": (), "group_norm": ("groups", "eps")}
OPTIONS["convolve"], OPTIONS["conv_weight_grad"] = OPTIONS["conv"], OPTIONS["conv_input_grad"]
FIELDS = {"window": "kernel"}


def op_options(c: FuzzCase) -> dict:
    """jaxcnn's keyword arguments: the op's ``OPTIONS`` the case sets (None: the op's default)."""
    values = {name: getattr(c, FIELDS.get(name, name)) for name in OPTIONS[c.op]}
    options = {name: value for name, value in values.items() if value is not None}
    options["channels_last"] = c.channels_last
    if c.op == "conv_input_grad":
        options["input_shape"] = relayout_shape(c, input_shape(c), "x")
    if c.op == "conv_weight_grad":
        options["weight_shape"] = relayout_shape(c, weight_shape(c), "w")
    return options
