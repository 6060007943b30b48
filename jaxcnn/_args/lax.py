"""``jaxcnn.lax``'s arguments: ``jax.lax.conv_general_dilated``'s, validated and made canonical.

Every form lax accepts is accepted (and checked here, with a message naming the argument,
before anything reaches XLA); the result is one of the family's two layouts with the
permutations that lead to and from it. So is every dtype lax accepts (bool, integers, floats,
complex), with lax's ``preferred_element_type`` rule; what lax refuses is a ``TypeError`` here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn._shapes import (LAX_PADDING_STRINGS, Pads, dilated_size, is_int, lax_output_size,
                            lax_padding)
from jaxcnn._args.common import IMPLS, choice, hashable_precision, int_tuple, parse_element_type

Perm = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class LaxConvArgs:
    """Validated ``conv_general_dilated`` arguments, in the spatial order of the dimension
    numbers (``window_strides[i]`` belongs to the i-th spatial axis of ``rhs_spec``).

    ``lhs_perm`` / ``rhs_perm`` take the operands to the family's layout (``channels_last``:
    ``(N, *S, C)`` and ``(*K, I, O)``, else ``(N, C, *S)`` and ``(O, I, *K)``); ``out_perm``
    takes the family's result back to the user's output layout.
    """

    lhs: jax.Array
    rhs: jax.Array
    channels_last: bool
    lhs_perm: Perm
    rhs_perm: Perm
    out_perm: Perm
    strides: tuple[int, ...]
    padding: Pads
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    feature_groups: int
    batch_groups: int
    precision: Any
    preferred_element_type: Any
    impl: str
    dimension_numbers: jax.lax.ConvDimensionNumbers
    out_shape: tuple[int, ...]


def dimension_numbers_of(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any,
                         name: str = "dimension_numbers") -> jax.lax.ConvDimensionNumbers:
    """``jax.lax.conv_dimension_numbers`` (None, three layout strings in any permutation, or a
    ``ConvDimensionNumbers``), its errors named."""
    try:
        return jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    except (TypeError, ValueError, AssertionError, KeyError) as err:
        raise ValueError(f"{name}: expected None, a ConvDimensionNumbers or three layout strings "
                         f"such as ('NCHW', 'OIHW', 'NCHW') for operands of shapes "
                         f"{tuple(lhs.shape)} and {tuple(rhs.shape)}; got {dimension_numbers!r} "
                         f"({err})") from err


# The element kinds lax's conv takes (its ``_any``), in the words of the messages.
_KINDS = ((np.bool_, "bool"), (np.signedinteger, "signed integer"),
          (np.unsignedinteger, "unsigned integer"), (np.floating, "floating"),
          (np.complexfloating, "complex"))


def _kind(dtype: Any) -> str | None:
    return next((name for kind, name in _KINDS if jnp.issubdtype(dtype, kind)), None)


def _operand(value: Any, name: str) -> jax.Array:
    """``value`` as an array of a dtype lax's conv takes, else ``TypeError`` naming ``name``."""
    if value is None:
        raise TypeError(f"{name}: expected an array; got None")
    try:
        array = value if isinstance(value, jax.Array) else jnp.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array; got {type(value).__name__}") from err
    if _kind(array.dtype) is None:
        raise TypeError(f"{name}: expected a bool, integer, floating or complex dtype (as "
                        f"jax.lax.conv_general_dilated); got {array.dtype}")
    return array


def preferred_type(operands: Any, preferred_element_type: Any) -> Any:
    """lax's rule for ``preferred_element_type`` given the operands' dtype (``None``: theirs).

    As ``jax.lax``'s ``_validate_preferred_element_type``: integers may widen to integers of
    their signedness (unsigned ones also to signed) or go to any float; floats to floats,
    complex to complex; bool to anything; never to fewer bytes.
    """
    if preferred_element_type is None:
        return None
    out = parse_element_type(preferred_element_type, "a dtype")
    source, target = _kind(operands), _kind(out)
    integer = ("signed integer", "unsigned integer")
    allowed = {"bool": {t for _, t in _KINDS}, "signed integer": {"signed integer", "floating"},
               "unsigned integer": {*integer, "floating"}, "floating": {"floating"},
               "complex": {"complex"}}[source]
    if target not in allowed:
        raise TypeError(f"preferred_element_type: expected a {' or '.join(sorted(allowed))} "
                        f"dtype for {operands} operands (as jax.lax); got {out}")
    if out.itemsize < jnp.dtype(operands).itemsize:
        raise TypeError(f"preferred_element_type: expected a dtype at least as wide as the "
                        f"operands' {operands}; got {out}")
    return out


def _dilation(value: Any, n: int, name: str) -> tuple[int, ...]:
    return (1,) * n if value is None else int_tuple(value, n, name)


def _group_count(value: Any, name: str) -> int:
    if not is_int(value) or int(value) < 1:
        raise ValueError(f"{name}: expected a positive int; got {value!r}")
    return int(value)


def _pairs(padding: Any, n: int) -> Pads:
    pairs = padding if isinstance(padding, Sequence) and not isinstance(padding, str) else None
    if (pairs is None or len(pairs) != n
            or not all(isinstance(p, Sequence) and len(p) == 2 and all(is_int(v) for v in p)
                       for p in pairs)):
        raise ValueError(f"padding: expected one of {LAX_PADDING_STRINGS} or {n} (lo, hi) pairs of "
                         f"ints; got {padding!r}")
    return tuple((int(lo), int(hi)) for lo, hi in pairs)


def _layout(dn: jax.lax.ConvDimensionNumbers) -> tuple[bool, Perm, Perm, Perm]:
    """The family layout needing the fewest transposes, and the permutations to and from it."""
    lhs, rhs, out = dn
    candidates = []
    for channels_last in (False, True):
        if channels_last:
            lhs_perm = (lhs[0], *lhs[2:], lhs[1])
            rhs_perm = (*rhs[2:], rhs[1], rhs[0])
            family_out = (out[0], *out[2:], out[1])
        else:
            lhs_perm, rhs_perm, family_out = tuple(lhs), tuple(rhs), tuple(out)
        out_perm = tuple(int(a) for a in np.argsort(family_out))
        moves = sum(p != tuple(range(len(p))) for p in (lhs_perm, rhs_perm, out_perm))
        candidates.append((moves, channels_last, tuple(lhs_perm), tuple(rhs_perm), out_perm))
    _, channels_last, lhs_perm, rhs_perm, out_perm = min(candidates)
    return channels_last, lhs_perm, rhs_perm, out_perm


def normalize_lax_conv(lhs: Any, rhs: Any, window_strides: Any, padding: Any, lhs_dilation: Any,
                       rhs_dilation: Any, dimension_numbers: Any, feature_group_count: Any,
                       batch_group_count: Any, precision: Any, preferred_element_type: Any,
                       impl: Any) -> LaxConvArgs:
    """Validate ``jaxcnn.lax.conv_general_dilated``'s arguments as lax would, naming each."""
    lhs = _operand(lhs, "lhs")
    rhs = _operand(rhs, "rhs")
    if lhs.ndim != rhs.ndim or lhs.ndim < 2:
        raise ValueError(f"rhs: expected as many dimensions as lhs (at least 2); got shapes "
                         f"{tuple(lhs.shape)} and {tuple(rhs.shape)}")
    if lhs.dtype != rhs.dtype:
        raise TypeError(f"rhs: expected the dtype of lhs ({lhs.dtype}); got {rhs.dtype}")
    n = lhs.ndim - 2
    dn = dimension_numbers_of(lhs, rhs, dimension_numbers)
    strides = int_tuple(window_strides, n, "window_strides")
    lhs_dil = _dilation(lhs_dilation, n, "lhs_dilation")
    rhs_dil = _dilation(rhs_dilation, n, "rhs_dilation")
    groups = _group_count(feature_group_count, "feature_group_count")
    batch_groups = _group_count(batch_group_count, "batch_group_count")
    impl = choice(impl, IMPLS, "impl")
    precision = hashable_precision(precision)
    out_type = preferred_type(lhs.dtype, preferred_element_type)

    lhs_shape = tuple(lhs.shape[a] for a in dn.lhs_spec)      # (N, C, *S)
    rhs_shape = tuple(rhs.shape[a] for a in dn.rhs_spec)      # (O, I, *K)
    batch, channels, in_sizes = lhs_shape[0], lhs_shape[1], lhs_shape[2:]
    out_features, in_features, k_sizes = rhs_shape[0], rhs_shape[1], rhs_shape[2:]
    if groups > 1 and batch_groups > 1:
        raise ValueError(f"batch_group_count: at most one of feature_group_count ({groups}) and "
                         f"batch_group_count ({batch_groups}) may exceed 1")
    if channels % groups:
        raise ValueError(f"feature_group_count: expected a divisor of lhs's {channels} feature "
                         f"channels; got {groups}")
    if in_features * groups != channels:
        raise ValueError(f"rhs: expected {channels // groups} input features (lhs's {channels} "
                         f"channels / feature_group_count {groups}); got {in_features} in shape "
                         f"{tuple(rhs.shape)}")
    for count, name in ((groups, "feature_group_count"), (batch_groups, "batch_group_count")):
        if out_features % count:
            raise ValueError(f"{name}: expected a divisor of rhs's {out_features} output "
                             f"features; got {count}")
    if batch % batch_groups:
        raise ValueError(f"batch_group_count: expected a divisor of lhs's batch {batch}; "
                         f"got {batch_groups}")

    if isinstance(padding, str):
        mode = padding.upper()
        if mode not in LAX_PADDING_STRINGS:
            raise ValueError(f"padding: expected one of {LAX_PADDING_STRINGS} or {n} (lo, hi) "
                             f"pairs; got {padding!r}")
        if any(d != 1 for d in lhs_dil):
            raise ValueError(f"padding: a string padding ({padding!r}) is not defined with "
                             f"lhs_dilation {lhs_dil} (as in jax.lax): give (lo, hi) pairs or use "
                             f"conv_transpose")
        pads = lax_padding(mode, in_sizes, k_sizes, strides, rhs_dil)
    else:
        pads = _pairs(padding, n)
    for axis, (length, l, (lo, hi)) in enumerate(zip(in_sizes, lhs_dil, pads)):
        if dilated_size(length, l) + lo + hi < 0:
            raise ValueError(f"padding: ({lo}, {hi}) on spatial axis {axis} crops more than the "
                             f"{dilated_size(length, l)} samples of the (dilated) input")
    if any(k < 1 for k in k_sizes):
        raise ValueError(f"rhs: expected every kernel size >= 1; got kernel sizes {k_sizes}")
    out_sizes = tuple(lax_output_size(length, k, s, l, d, lo, hi) for length, k, s, l, d, (lo, hi)
                      in zip(in_sizes, k_sizes, strides, lhs_dil, rhs_dil, pads))
    family = (batch // batch_groups, out_features, *out_sizes)     # (N, O, *S) in dn's order
    out_shape = tuple(int(family[i]) for i in np.argsort(dn.out_spec))

    channels_last, lhs_perm, rhs_perm, out_perm = _layout(dn)
    return LaxConvArgs(lhs, rhs, channels_last, lhs_perm, rhs_perm, out_perm, strides, pads,
                       lhs_dil, rhs_dil, groups, batch_groups, precision, out_type, impl, dn,
                       out_shape)
