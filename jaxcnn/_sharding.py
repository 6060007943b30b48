"""``out_sharding`` and explicit meshes, for every public op, in one place.

On a mesh whose axes are ``AxisType.Explicit`` (what ``jax.make_mesh`` gives by default in
current JAX) an array's type carries its sharding, and every op must say how its result is
sharded. jaxcnn's primitives lower to many lax ops (pads, strided slices, per-tap
contractions), and those ops' own sharding rules refuse, for instance, to pad a spatially
sharded axis. So a public op called on explicitly sharded operands runs inside
``jax.sharding.auto_axes``: within it the mesh axes are ``Auto`` and XLA's partitioner places
the work, halo exchanges included, as it does for any op on an ``Auto`` mesh; the result
comes out sharded as ``out_sharding`` says, or by default as the operands imply.

The default: each result axis keeps the sharding of the operand axis it comes from (the
batch and spatial axes of the input, a conv's output channels from the kernel's out-channel
axis or the bias); every other result axis is replicated, so an operand axis that is sharded
and summed over (a batch axis in a weight gradient, a split channel axis) is reduced across
its devices, as XLA's partitioner does on an ``Auto`` mesh. (``jax.lax.conv_general_dilated``
asks for ``out_sharding`` there; the data-parallel weight gradient is the common case, and a
replicated result is what it needs.) A result axis whose size differs from its operand's must
still divide over its mesh axes, else ``out_sharding`` is asked for by name. The derivatives
run inside the same ``auto_axes`` (its transpose is another), so gradients come back sharded
like their primals.

Without explicit axes (no mesh, an ``Auto`` mesh, jax 0.4.30) the op runs as it is and
``out_sharding``, if given, is a ``jax.lax.with_sharding_constraint`` on the result.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax

from jaxcnn._compat import array_spec, explicit_axes, mesh_axis_sizes

# For each result axis: the (operand index, operand axis) pairs it comes from.
Inherit = Sequence[Sequence[tuple[int, int]]]


def _check_out_sharding(out_sharding: Any) -> Any:
    if not isinstance(out_sharding, (jax.sharding.NamedSharding, jax.sharding.PartitionSpec)):
        raise TypeError(f"out_sharding: expected None, a jax.sharding.NamedSharding or a "
                        f"PartitionSpec; got {out_sharding!r}")
    return out_sharding


def _axis_size(sizes: dict[str, int], entry: Any) -> int:
    names = entry if isinstance(entry, tuple) else (entry,)
    return math.prod(sizes[name] for name in names)


def default_spec(operands: Sequence[jax.Array], names: Sequence[str], out_shape: Sequence[int],
                 inherit: Inherit) -> jax.sharding.PartitionSpec:
    """The result's ``PartitionSpec`` that the operands' shardings imply (module docstring).

    ``inherit[axis]`` lists the operand axes ``(operand, axis)`` result axis ``axis`` comes
    from; it keeps the first sharded one's sharding. A ``ValueError`` naming ``out_sharding``
    where two sources disagree or the result's size does not divide over the devices.
    """
    specs = [array_spec(a) for a in operands]
    result = []
    for axis, (size, sources) in enumerate(zip(out_shape, inherit)):
        entries = {(i, a): specs[i][a] for i, a in sources if specs[i][a] is not None}
        if len(set(entries.values())) > 1:
            found = ", ".join(f"{names[i]} axis {a}: {e!r}" for (i, a), e in entries.items())
            raise ValueError(f"out_sharding: the result's axis {axis} comes from operand axes "
                             f"sharded differently ({found}); pass out_sharding")
        if not entries:
            result.append(None)
            continue
        (i, a), entry = next(iter(entries.items()))
        ways = _axis_size(mesh_axis_sizes(operands[i]), entry)
        if size % ways:
            raise ValueError(
                f"out_sharding: the result's axis {axis} has {size} entries, which do not divide "
                f"over {ways} devices ({entry!r}, the sharding of {names[i]}'s axis {a}); pass "
                f"out_sharding")
        result.append(entry)
    return jax.sharding.PartitionSpec(*result)


def sharded_call(fn: Callable[..., jax.Array], operands: Sequence[jax.Array], names: Sequence[str],
                 *, out_shape: Sequence[int], inherit: Inherit, out_sharding: Any) -> jax.Array:
    """``fn(*operands)``, its result sharded as ``out_sharding`` or the default above.

    Args:
      fn: the op on validated operands (closing over its static arguments).
      operands: the arrays ``fn`` takes (no ``None``s), named in messages by ``names``.
      out_shape: the result's shape; ``inherit``: for each result axis, the operand axis whose
        sharding it keeps by default.
      out_sharding: None, a ``NamedSharding`` or a ``PartitionSpec`` (resolved against the mesh
        of ``jax.set_mesh``).
    """
    if out_sharding is not None:
        _check_out_sharding(out_sharding)
    explicit = any(explicit_axes(a) for a in operands)
    try:
        if not explicit:
            result = fn(*operands)
            if out_sharding is None:
                return result
            return jax.lax.with_sharding_constraint(result, out_sharding)
        spec = out_sharding if out_sharding is not None else default_spec(operands, names, out_shape, inherit)
        # Under jit also when called eagerly: an eager VJP would run auto_axes' transpose op
        # by op, with the Auto context mesh meeting the cotangents' Explicit types (an error in
        # JAX 0.10); a jitted call is transposed as one program.
        return jax.jit(jax.sharding.auto_axes(fn, out_sharding=spec))(*operands)
    except ValueError as err:
        if str(err).startswith("out_sharding:") or out_sharding is None:
            raise
        raise ValueError(f"out_sharding: {out_sharding!r} does not fit the result of shape "
                         f"{tuple(out_shape)}: {err}") from err
