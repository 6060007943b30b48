"""What jaxcnn needs from JAX that JAX does not promise: every use in one place.

jaxcnn declares ``jax>=0.4.30`` and CI tests that lowest release beside the newest. Anything
here is either private to JAX or differs between the releases in that range; each entry says
which, and why no public name serves. No other jaxcnn module imports ``jax._src``.
"""
from __future__ import annotations

from functools import partial
from typing import Any, ContextManager

import jax

# ``jax.lax.DotAlgorithm`` and ``jax.lax.DotAlgorithmPreset`` (and their names as strings) are
# accepted as ``precision`` by ``jax.lax`` from the release that added them (after 0.4.30);
# on older releases they do not exist and lax accepts only ``Precision`` values and names.
DOT_ALGORITHM_TYPES: tuple[type, ...] = tuple(
    t for t in (getattr(jax.lax, name, None) for name in ("DotAlgorithm", "DotAlgorithmPreset"))
    if t is not None)


_PRESETS = getattr(jax.lax, "DotAlgorithmPreset", None)
_DOT_ALGORITHM_NAMES = frozenset(_PRESETS.__members__) if _PRESETS is not None else frozenset()


def _is_precision_name(name: str) -> bool:
    try:
        jax.lax.Precision(name)  # resolves lax's names and aliases ('highest', 'float32', ...)
    except ValueError:
        return False
    return True


def is_lax_precision(precision: Any) -> bool:
    """Whether ``jax.lax`` takes ``precision`` (a list already made a tuple) on this release.

    What ``jax.lax`` accepts, without its private ``canonicalize_precision``: None, a
    ``jax.lax.Precision``, one of its names ('default', 'high', 'highest' and the aliases
    ``Precision(name)`` resolves), a pair of Precisions or a pair of names, and, on releases
    that have them, a ``DotAlgorithm``, a ``DotAlgorithmPreset`` or a preset's name.
    """
    if precision is None or isinstance(precision, (jax.lax.Precision, *DOT_ALGORITHM_TYPES)):
        return True
    if isinstance(precision, str):
        return _is_precision_name(precision) or precision in _DOT_ALGORITHM_NAMES
    if isinstance(precision, tuple) and len(precision) == 2:
        return (all(isinstance(p, jax.lax.Precision) for p in precision)
                or all(isinstance(p, str) and _is_precision_name(p) for p in precision))
    return False


def enable_x64(enabled: bool = True) -> ContextManager[None]:
    """A context in which ``jax_enable_x64`` is ``enabled``, for this thread only.

    Release-dependent: ``jax.enable_x64(flag)`` is the public name from the release after
    0.4.30 on; 0.4.30 has only ``jax.experimental.enable_x64(flag)``, which newer releases
    removed. Both are used as ``with enable_x64(True): ...``.
    """
    context = getattr(jax, "enable_x64", None)
    if context is None:
        from jax.experimental import enable_x64 as context
    return context(enabled)


def jit_cache_size(jitted: Any) -> int:
    """How many programs a ``jax.jit`` function has compiled (one per distinct input signature).

    Private: ``_cache_size`` is a method of JAX's jitted-function object, present in every
    release from 0.4.30 to today, with no public equivalent (``jax.stages`` describes one
    lowering, not the cache). Used to report that a training step compiled exactly once.
    """
    return jitted._cache_size()


def explicit_axes(array: Any) -> tuple[str, ...]:
    """The mesh axes of ``AxisType.Explicit`` that ``array``'s type is sharded over or lives on.

    Release-dependent: explicit sharding (``jax.typeof``, ``jax.sharding.AxisType``, an array
    type that carries its sharding) came after 0.4.30; there every array is untyped in this
    sense and the answer is ``()``.
    """
    typeof = getattr(jax, "typeof", None)
    axis_type = getattr(jax.sharding, "AxisType", None)
    if typeof is None or axis_type is None or not hasattr(jax.sharding, "auto_axes"):
        return ()
    sharding = getattr(typeof(array), "sharding", None)
    mesh = getattr(sharding, "mesh", None)
    if mesh is None or mesh.empty:
        return ()
    return tuple(name for name, kind in zip(mesh.axis_names, mesh.axis_types)
                 if kind == axis_type.Explicit)


def array_spec(array: Any) -> tuple[Any, ...]:
    """The ``PartitionSpec`` entries of ``array``'s type, one per dimension (``None``:
    unsharded), on releases with explicit sharding; call only where ``explicit_axes`` is not
    empty."""
    spec = tuple(jax.typeof(array).sharding.spec)
    return spec + (None,) * (array.ndim - len(spec))


def mesh_axis_sizes(array: Any) -> dict[str, int]:
    """The sizes of the mesh axes ``array``'s type lives on (explicit sharding only)."""
    return dict(jax.typeof(array).sharding.mesh.shape)


def distributed_is_initialized() -> bool:
    """Whether ``jax.distributed.initialize`` has run in this process.

    Release-dependent: ``jax.distributed.is_initialized()`` is public after 0.4.30; 0.4.30
    has only the private ``global_state.client`` that the public function reads.
    """
    public = getattr(jax.distributed, "is_initialized", None)
    if public is not None:
        return bool(public())
    from jax._src import distributed
    return distributed.global_state.client is not None


# Several processes on one CPU platform, their collectives through gloo: on jax 0.4.30 the
# processes connect but the first collective times out building the gloo context (a key
# naming process 1's devices by their global ids is never written); 0.10.2 runs it. Releases
# in between are not known to fail, so only 0.4.30 and older are refused.
MULTIPROCESS_CPU_COLLECTIVES: bool = jax.__version_info__ > (0, 4, 30)


def shard_map(f: Any, mesh: Any, in_specs: Any, out_specs: Any, check: bool = True) -> Any:
    """``f`` mapped over ``mesh``'s blocks, each device running it on its block.

    Release-dependent: ``jax.shard_map`` (keyword arguments; ``check_vma``: values typed by the
    mesh axes they vary along) is public from JAX 0.6 on; 0.4.30 has only
    ``jax.experimental.shard_map.shard_map(f, mesh, in_specs, out_specs, check_rep)``, which
    newer releases removed. ``check`` is ``check_vma`` / ``check_rep``.
    """
    public = getattr(jax, "shard_map", None)
    if public is not None:
        return public(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=check)
    from jax.experimental.shard_map import shard_map as experimental
    return experimental(f, mesh, in_specs, out_specs, check_rep=check)


def axis_size(axis_name: Any) -> int:
    """The number of devices along a bound mesh axis, as a Python int (inside ``shard_map``).

    Release-dependent: ``jax.lax.axis_size`` exists from JAX 0.6 on; on 0.4.30 ``psum`` of the
    Python constant 1 is the documented way, and gives a Python int there.
    """
    size = getattr(jax.lax, "axis_size", None)
    return int(size(axis_name) if size is not None else jax.lax.psum(1, axis_name))


def axis_types() -> tuple[Any, ...]:
    """The mesh axis types this release offers, ``(AxisType.Explicit, AxisType.Auto)``, or
    ``()`` on releases before ``jax.sharding.AxisType`` (0.4.30: every mesh is automatic)."""
    kinds = getattr(jax.sharding, "AxisType", None)
    return () if kinds is None else (kinds.Explicit, kinds.Auto)


def make_mesh(shape: tuple[int, ...], names: tuple[str, ...], axis_type: Any = None) -> Any:
    """A ``jax.sharding.Mesh`` of the first ``prod(shape)`` devices, with ``axis_type`` for every
    axis where the release has axis types. ``jax.make_mesh`` is public after 0.4.30 only."""
    import math
    import numpy as np
    devices = np.asarray(jax.devices()[:math.prod(shape)]).reshape(shape)
    if axis_type is None:
        return jax.sharding.Mesh(devices, names)
    return jax.sharding.Mesh(devices, names, axis_types=(axis_type,) * len(names))


# Whether XLA compiles max pooling's argmax as a tap loop (``_pool.max_pool_argmax_loop``)
# sanely. Release-dependent: on jax/jaxlib 0.4.30 the loop (a ``fori_loop`` of dynamic slices)
# drove 3D max-pool programs past 10 GB of host memory (found by the fuzz sample and the
# gradcheck matrix there); 0.10.2 compiles it in megabytes. Older releases keep the unrolled scan.
MAX_POOL_ARGMAX_LOOP: bool = hasattr(jax, "shard_map")


def lowering_is_partitioned(ctx: Any) -> bool:
    """Whether XLA's SPMD partitioner will split the op that the lowering rule with ``ctx`` is
    lowering over several devices: a ``jax.jit`` over more than one device, or a mesh with an
    axis of size > 1 that is not manual (inside ``shard_map`` every axis is manual and the op
    runs per shard). Private: ``ctx.module_context.axis_context`` (``ShardingContext`` with
    ``num_devices``, ``SPMDAxisContext`` with ``mesh`` and ``manual_axes``); no public name says
    this. Unknown contexts count as not partitioned."""
    axis_context = getattr(getattr(ctx, "module_context", None), "axis_context", None)
    mesh = getattr(axis_context, "mesh", None)
    if mesh is not None:
        manual = getattr(axis_context, "manual_axes", frozenset())
        return any(size > 1 and name not in manual for name, size in mesh.shape.items())
    return getattr(axis_context, "num_devices", 1) > 1


def lowering_mesh(ctx: Any) -> Any:
    """The ``jax.sharding.Mesh`` (with its devices) over which XLA's SPMD partitioner splits the
    op that the lowering rule with ``ctx`` lowers, or None where the lowering does not know it.
    ``jax.experimental.custom_partitioning`` hands its partition rule shardings on this mesh.

    Private: ``ShardingContext.device_assignment`` and ``.abstract_mesh`` (set from the jit's
    ``NamedSharding``s when the program holds a primitive registered by
    ``needs_devices_during_lowering``), the fields custom partitioning's own lowering reads;
    else the concrete mesh of ``jax.set_mesh`` (``jax._src.mesh.get_concrete_mesh``:
    ``jax.sharding.get_mesh`` refuses to be read under a trace) where it has the program's
    device count. A partially manual ``shard_map`` (``SPMDAxisContext``) gives None."""
    axis_context = getattr(getattr(ctx, "module_context", None), "axis_context", None)
    devices = getattr(axis_context, "device_assignment", None)
    abstract = getattr(axis_context, "abstract_mesh", None)
    if devices is not None and abstract is not None and not abstract.empty:
        import numpy as np
        return jax.sharding.Mesh(np.array(devices).reshape(abstract.axis_sizes), abstract.axis_names)
    from jax._src import mesh as mesh_lib
    context = mesh_lib.get_concrete_mesh() if hasattr(mesh_lib, "get_concrete_mesh") else None
    if context is None or context.empty or context.size != getattr(axis_context, "num_devices", 0):
        return None
    return context


def lowering_on_mesh(ctx: Any, mesh: Any) -> Any:
    """``ctx`` whose axis context names ``mesh``'s devices and abstract mesh, as ``jax.jit``
    gives them to a program holding a primitive registered by ``needs_devices_during_lowering``
    (custom partitioning's lowering reads them). Private: ``ModuleContext.replace`` and the
    ``ShardingContext`` dataclass."""
    import dataclasses
    axis_context = ctx.module_context.axis_context
    if axis_context.device_assignment is not None and axis_context.abstract_mesh is not None:
        return ctx
    named = dataclasses.replace(axis_context, device_assignment=tuple(mesh.devices.flat),
                                abstract_mesh=mesh.abstract_mesh)
    return ctx.replace(module_context=ctx.module_context.replace(axis_context=named))


def context_mesh_known() -> bool:
    """Whether a mesh is set for the context (``jax.set_mesh``): its lowerings read the devices
    from it (``lowering_mesh``). ``jax.sharding.get_abstract_mesh`` is public after 0.4.30."""
    get = getattr(jax.sharding, "get_abstract_mesh", None)
    return get is not None and not get().empty


def needs_devices_during_lowering(primitive: Any) -> None:
    """Have ``jax.jit`` give the lowering of programs holding ``primitive`` their devices and
    mesh (``lowering_mesh``), as JAX does for ``custom_partitioning``'s own primitive.

    Private: ``jax._src.dispatch.prim_requires_devices_during_lowering``; a no-op where a
    release lacks it. The cost JAX names: such a program cannot be lowered for an abstract mesh
    alone (``jax.export`` with no devices)."""
    from jax._src import dispatch
    registry = getattr(dispatch, "prim_requires_devices_during_lowering", None)
    if registry is not None:
        registry.add(primitive)


def custom_partitioning() -> Any:
    """``jax.experimental.custom_partitioning.custom_partitioning`` where its ``def_partition``
    takes a ``sharding_rule`` (the Shardy partitioner, default in current JAX, needs one), else
    None. Public but experimental: the rule came after 0.4.30, whose ``def_partition`` has only
    GSPMD's callbacks."""
    import inspect
    try:
        from jax.experimental.custom_partitioning import custom_partitioning as decorator
    except ImportError:
        return None
    if "sharding_rule" not in inspect.signature(decorator.def_partition).parameters:
        return None
    return decorator


def lowering_for_export(ctx: Any) -> bool:
    """Whether the lowering rule with ``ctx`` lowers a program for ``jax.export`` (which takes no
    custom call to a library of this machine). Private: ``ctx.module_context.lowering_parameters
    .for_export``; False where the release lacks it."""
    parameters = getattr(getattr(ctx, "module_context", None), "lowering_parameters", None)
    return bool(getattr(parameters, "for_export", False))


# ----------------------------------------------------------------------------- varying types
# Inside ``jax.shard_map`` with ``check_vma=True`` (JAX 0.6 on) every value's type names the
# manual mesh axes it varies along (its "vma"): an operand split over an axis varies, a
# replicated one is invariant. A primitive's result varies along the union of its operands'
# axes; an operation of two values of different types first casts the invariant one to varying
# (``jax.lax.pcast(..., to="varying")``, earlier ``jax.lax.pvary``), whose transpose is the
# ``psum`` that sums a replicated weight's gradient over the devices. Release-dependent: the
# type's field is ``ShapedArray.vma`` (0.6 to 0.8) or ``manual_axis_type.varying`` (0.9 on);
# 0.4.30 has no such types (its ``check_rep`` tracks replication beside the values), and there
# every function below is the identity.

VARYING_TYPES: bool = hasattr(jax, "typeof") and (hasattr(jax.lax, "pcast") or hasattr(jax.lax, "pvary"))


def varying_axes(aval: Any) -> frozenset:
    """The manual mesh axes that values of the abstract value ``aval`` vary along (empty outside
    a checked ``shard_map`` and on releases without such types)."""
    mat = getattr(aval, "manual_axis_type", None)
    if mat is not None:
        return frozenset(mat.varying)
    return frozenset(getattr(aval, "vma", ()))


def to_varying(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """``values`` (arrays or tracers) each cast to vary along every axis any of them varies
    along: the operands of one primitive, typed alike as JAX's own primitives' are."""
    if not VARYING_TYPES:
        return values
    axes = [varying_axes(jax.typeof(v)) for v in values]
    union = frozenset().union(*axes)
    if not union:
        return values
    pcast = getattr(jax.lax, "pcast", None)
    cast = (partial(pcast, to="varying") if pcast is not None else jax.lax.pvary)
    return tuple(v if own == union else cast(v, tuple(sorted(union - own, key=str)))
                 for v, own in zip(values, axes))


def varying_like(aval: Any, operands: tuple[Any, ...]) -> Any:
    """``aval`` (a shape and dtype) typed as varying along every axis the abstract ``operands``
    vary along, on the mesh of the first one that does: a primitive's result type."""
    axes = frozenset().union(*(varying_axes(a) for a in operands))
    if not axes:
        return aval
    like = next(a for a in operands if varying_axes(a))
    fields = {"sharding": like.sharding.update(spec=jax.sharding.PartitionSpec())}
    if hasattr(like, "manual_axis_type"):
        fields["manual_axis_type"] = like.manual_axis_type.update(
            varying=axes, unreduced=frozenset(), reduced=frozenset())
    else:
        fields["vma"] = axes
    return like.update(shape=aval.shape, dtype=aval.dtype, weak_type=False, **fields)


def invariant(aval: Any) -> Any:
    """``aval`` with no varying axes: what a primitive's lowering traces its computation on,
    one shard's values, whose arithmetic the type does not change."""
    if not varying_axes(aval):
        return aval
    if hasattr(aval, "manual_axis_type"):
        return aval.update(manual_axis_type=aval.manual_axis_type.update(varying=frozenset()))
    return aval.update(vma=frozenset())


def exclude_from_tracebacks(path: str) -> None:
    """Leave the file ``path`` out of the source locations JAX records for the ops traced through
    it (as JAX does for its own files), so that an op's location names the jaxcnn function that
    called it, not a shim (``jax._src.source_info_util.register_exclusion``; a no-op where a
    release lacks it)."""
    from jax._src import source_info_util
    register = getattr(source_info_util, "register_exclusion", None)
    if register is not None:
        register(path)
