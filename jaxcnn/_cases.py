"""One op call's geometry (``Case``): the one description of a case that the gradcheck rows,
the fuzz configurations, the bench cases and the test helpers extend, so that a new argument
is added here once.

A case names the op and every argument that fixes its shapes, as the user passes them (an int
or one value per axis, a padding string or ``(lo, hi)`` pairs), and derives the shapes of its
arrays in its layout from ``jaxcnn._shapes``, the one source of each shape formula:

- ``x_shape()``: the activation, ``(N, C, *S)`` or ``(N, *S, C)``;
- ``w_shape()``: the kernel, ``(O, C/g, *K)`` or ``(*K, C/g, O)`` (``conv_transpose``, as
  PyTorch: ``(C, O/g, *K)`` or ``(*K, O/g, C)``); None for pooling and normalisation;
- ``y_shape()``: the output, ``(N, O, *S_out)`` or ``(N, *S_out, O)`` (pooling: ``O = C``); for
  ``conv_input_grad`` and ``conv_weight_grad`` that of the conv they differentiate (``dy``).

Fields are checked for their type only, each message naming its field: a case may describe a
call the op refuses (the fuzzer draws such calls on purpose); the op's own checks judge it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from jaxcnn._shapes import (conv_transpose_output_size, is_int, kernel_to_channels_last,
                            output_sizes, pool_output_size, resolve_padding)

CONV_OPS = ("conv", "convolve", "conv_input_grad", "conv_weight_grad")
POOL_OPS = ("max_pool", "avg_pool")


def _ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(is_int(v) for v in value)


def _int_or_ints(value: Any) -> bool:
    return is_int(value) or _ints(value)


def _padding(value: Any) -> bool:
    return (isinstance(value, str) or _int_or_ints(value)
            or (isinstance(value, tuple) and all(_ints(p) and len(p) == 2 for p in value)))


def _frozen(value: Any) -> Any:
    """Lists (as JSON gives them) made tuples, all the way down: a case is hashable."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


# Each field's check and what its message says was expected.
CHECKS = {
    "op": (lambda v: isinstance(v, str), "a string"),
    "sizes": (_ints, "a tuple of ints"),
    "kernel": (_ints, "a tuple of ints"),
    "batch": (is_int, "an int"),
    "channels": (is_int, "an int"),
    "out_channels": (is_int, "an int"),
    "stride": (lambda v: v is None or _int_or_ints(v), "an int, a tuple of ints or None"),
    "padding": (_padding, "an int, a string, a tuple of ints or of (lo, hi) pairs"),
    "dilation": (_int_or_ints, "an int or a tuple of ints"),
    "groups": (is_int, "an int"),
    "output_padding": (_int_or_ints, "an int or a tuple of ints"),
    "channels_last": (lambda v: isinstance(v, bool), "a bool"),
    "padding_mode": (lambda v: isinstance(v, str), "a string"),
    "bias": (lambda v: isinstance(v, bool), "a bool"),
    "ceil_mode": (lambda v: isinstance(v, bool), "a bool"),
    "impl": (lambda v: v is None or isinstance(v, str), "a string or None"),
    "dtype": (lambda v: isinstance(v, str), "a dtype's name"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case:
    """One call of ``jaxcnn.<op>``: its arrays' geometry and every argument, as passed.

    ``kernel`` is a pooling's window; ``stride`` None (pooling) is the window. An extension
    adds its own fields (a name, a seed) and checks them in ``CHECKS`` of its own.
    """

    op: str = "conv"
    sizes: tuple[int, ...]
    kernel: tuple[int, ...] = ()
    batch: int = 2
    channels: int = 1
    out_channels: int = 1
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    output_padding: Any = 0
    channels_last: bool = False
    padding_mode: str = "zeros"
    bias: bool = False
    ceil_mode: bool = False
    impl: str | None = None
    dtype: str = "float64"

    CHECKS = CHECKS

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = _frozen(getattr(self, field.name))
            object.__setattr__(self, field.name, value)
            check, expected = self.CHECKS.get(field.name, (None, ""))
            if check is not None and not check(value):
                raise TypeError(f"{type(self).__name__}.{field.name}: expected {expected}; "
                                f"got {value!r}")
        if self.kernel and len(self.kernel) != self.n:
            raise ValueError(f"{type(self).__name__}.kernel: expected {self.n} sizes (one per "
                             f"spatial axis, as sizes {self.sizes}); got {self.kernel}")

    @property
    def n(self) -> int:
        """The number of spatial axes."""
        return len(self.sizes)

    def per_axis(self, name: str) -> tuple[int, ...]:
        """Field ``name`` (an int or one per axis) as one int per spatial axis."""
        value = getattr(self, name)
        return (value,) * self.n if is_int(value) else tuple(value)

    def replace(self, **changes: Any) -> "Case":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------------- shapes

    def activation_shape(self, channels: int, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """``(N, channels, *sizes)`` or ``(N, *sizes, channels)`` in this case's layout."""
        return ((self.batch, *sizes, channels) if self.channels_last
                else (self.batch, channels, *sizes))

    def x_shape(self) -> tuple[int, ...]:
        return self.activation_shape(self.channels, self.sizes)

    def w_shape(self) -> tuple[int, ...] | None:
        """The kernel's shape; None for an op without one."""
        if self.op in CONV_OPS:
            first, second = self.out_channels, self.channels // self.groups
        elif self.op == "conv_transpose":
            first, second = self.channels, self.out_channels // self.groups
        else:
            return None
        shape = (first, second, *self.kernel)
        if self.channels_last:
            return tuple(shape[a] for a in kernel_to_channels_last(self.n))
        return shape

    def y_shape(self) -> tuple[int, ...]:
        channels = self.channels if self.op in POOL_OPS else self.out_channels
        return self.activation_shape(channels, self.out_sizes())

    def pads(self) -> tuple[tuple[int, int], ...]:
        """The conv's explicit ``(lo, hi)`` padding per axis (``_shapes.resolve_padding``); a
        transposed conv's strings are resolved on its output, ``stride × sizes``."""
        stride, dilation = self.per_axis("stride"), self.per_axis("dilation")
        sizes = self.sizes
        if self.op == "conv_transpose":
            sizes = tuple(length * s for length, s in zip(sizes, stride))
        return resolve_padding(self.padding, sizes, self.kernel, stride, dilation)

    def out_sizes(self) -> tuple[int, ...]:
        """The output's spatial sizes (those of ``y_shape``)."""
        if self.op in POOL_OPS:
            stride = self.kernel if self.stride is None else self.per_axis("stride")
            return tuple(pool_output_size(length, k, s, d, p, self.ceil_mode) for length, k, s, d, p
                         in zip(self.sizes, self.kernel, stride, self.per_axis("dilation"),
                                self.per_axis("padding")))
        stride, dilation, pads = self.per_axis("stride"), self.per_axis("dilation"), self.pads()
        if self.op != "conv_transpose":
            return output_sizes(self.sizes, self.kernel, stride, dilation, pads)
        if isinstance(self.padding, str) and self.padding.upper() == "SAME":
            return tuple(length * s for length, s in zip(self.sizes, stride))
        return tuple(conv_transpose_output_size(length, k, s, d, lo, hi, p)
                     for length, k, s, d, (lo, hi), p in zip(
                         self.sizes, self.kernel, stride, dilation, pads,
                         self.per_axis("output_padding")))
