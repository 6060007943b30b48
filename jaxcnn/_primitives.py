"""One way to make a jaxcnn primitive: a name, a computation, its output's shape and dtype.

A primitive is what lets jaxcnn write its own derivative rules (``ad``) and ``vmap`` rules
(``batching``) for an op and still lower it to whatever ``jnp``/``lax`` code computes it. The
factory below does the part every primitive shares:

- eager evaluation (``impl``): compile and run the single primitive through its lowering, as
  JAX does for its own primitives (``jax.interpreters.xla.apply_primitive``);
- abstract evaluation: the output's ``ShapedArray`` from the inputs' and the static params;
- lowering: ``compute`` traced by ``mlir.lower_fun`` for every platform, and once more for each
  platform named in ``platforms`` with ``platform=<name>`` passed, so ``compute`` can choose a
  form that is faster on that backend (conv's per-tap forms on CPU); while it is traced,
  ``custom_calls_allowed()`` says whether a form may be a custom call to a library of this
  machine (not in a program lowered for ``jax.export``), and ``partitioning_mesh()`` names the
  mesh over which XLA's SPMD partitioner will split the op. The partitioner cannot split a
  custom call by itself (it would gather the operands onto every device), so there a custom
  call must come wrapped in ``jax.experimental.custom_partitioning`` with a rule saying how it
  splits; where the lowering does not know the mesh, or the release has no such rules, custom
  calls are not allowed in a split op.

Custom partitioning's rules need the lowering to know the program's devices and mesh. Under
``jax.set_mesh`` the lowering reads them from the context; otherwise ``jax.jit`` hands them to
a lowering only when the program holds a primitive registered for it (as JAX registers
``custom_partitioning``'s own). Registering the op primitives themselves would hold every
program with a conv to JAX's checks for such programs (one mesh for all of its shardings, which
an eager VJP on an ``Explicit`` mesh, mixing that mesh and its ``Auto`` twin, fails). So a bind
that may lower to a split custom call (``make_primitive``'s ``splits_custom_calls``), outside
``jax.set_mesh``, passes its result through ``devices_p``, an identity that alone is registered.

Each op module registers its own JVP/transpose and batching rules beside its forward, since
those are the op's mathematics.
"""
from __future__ import annotations

import contextvars
import dataclasses
from functools import partial
from typing import Any, Callable, Sequence

import jax.numpy as jnp
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.interpreters.xla import apply_primitive

from jaxcnn._compat import (context_mesh_known, custom_partitioning, exclude_from_tracebacks,
                            invariant, lowering_for_export, lowering_is_partitioned, lowering_mesh,
                            lowering_on_mesh, needs_devices_during_lowering, to_varying,
                            varying_like)

__all__ = ["ShapedArray", "custom_calls_allowed", "devices_p", "fold_mapped",
           "make_primitive", "mapped_axis_first", "partitioning_mesh", "unfold_mapped"]


@dataclasses.dataclass(frozen=True)
class _CallSite:
    """What a platform lowering tells ``compute`` about where it runs (module docstring)."""

    custom_calls: bool = True
    mesh: Any = None


_CALL_SITE = contextvars.ContextVar("jaxcnn_call_site", default=_CallSite())


def custom_calls_allowed() -> bool:
    """While a platform lowering traces ``compute``: whether a form may be a custom call (in an
    op the partitioner splits, only one wrapped for it: ``partitioning_mesh``)."""
    return _CALL_SITE.get().custom_calls


def partitioning_mesh() -> Any:
    """While a platform lowering traces ``compute``: the ``jax.sharding.Mesh`` over which XLA's
    SPMD partitioner splits the op, where custom calls are allowed in it; None where the op runs
    whole on each device (one device, or inside ``shard_map``)."""
    return _CALL_SITE.get().mesh


def _call_site(ctx) -> _CallSite:
    """A custom call is allowed but in a program for ``jax.export``; in an op the partitioner
    splits, only where it can be wrapped for the partitioner: the mesh known, the rules there."""
    if lowering_for_export(ctx):
        return _CallSite(custom_calls=False)
    if not lowering_is_partitioned(ctx):
        return _CallSite()
    mesh = lowering_mesh(ctx)
    return _CallSite(custom_calls=mesh is not None and custom_partitioning() is not None, mesh=mesh)


def _lowering(compute: Callable, multiple_results: bool = False) -> Callable:
    """``compute`` as a lowering rule, traced on invariant operands (one shard's values)."""
    lowered = mlir.lower_fun(compute, multiple_results=multiple_results)

    def rule(ctx, *args, **params):
        return lowered(ctx.replace(avals_in=[invariant(a) for a in ctx.avals_in]), *args, **params)
    return rule


def _platform_lowering(compute: Callable, platform: str, multiple_results: bool = False) -> Callable:
    lowered = _lowering(partial(compute, platform=platform), multiple_results)

    def rule(ctx, *args, **params):
        site = _call_site(ctx)
        token = _CALL_SITE.set(site)
        try:
            if site.mesh is not None and site.custom_calls:
                ctx = lowering_on_mesh(ctx, site.mesh)
            return lowered(ctx, *args, **params)
        finally:
            _CALL_SITE.reset(token)
    return rule


# ----------------------------------------------------------------------------- devices at lowering
# devices_p(a) = a: its JVP and transpose are the identity, its vmap maps the same axis.

def _same(a):
    return a


def _devices_lowering(ctx, a):
    return [a]


def _devices_transpose(ct, a):
    return [ct]


def _devices_batch_rule(args, dims):
    return args[0], dims[0]


devices_p = Primitive("jaxcnn_devices_at_lowering")
devices_p.def_impl(_same)
devices_p.def_abstract_eval(_same)
mlir.register_lowering(devices_p, _devices_lowering)
ad.deflinear2(devices_p, _devices_transpose)
batching.primitive_batchers[devices_p] = _devices_batch_rule
needs_devices_during_lowering(devices_p)


# Its bind below is a shim every op passes through: the op's source location is its caller's.
exclude_from_tracebacks(__file__)


class _Primitive(Primitive):
    """A primitive whose operands are cast alike to varying types before each bind (the module
    docstring): every bind, the op's own and its rules', goes through here; one that may lower
    to a split custom call marks its result with ``devices_p``."""

    splits_custom_calls: Callable[..., bool] | None = None

    def bind(self, *args, **params):
        result = super().bind(*to_varying(args), **params)
        if (self.splits_custom_calls is not None and not context_mesh_known()
                and self.splits_custom_calls(*args, **params)):
            return [devices_p.bind(r) for r in result] if self.multiple_results else devices_p.bind(result)
        return result


def make_primitive(name: str, compute: Callable, abstract_eval: Callable[..., ShapedArray], *,
                   platforms: Sequence[str] = (),
                   splits_custom_calls: Callable[..., bool] | None = None,
                   multiple_results: bool = False) -> Primitive:
    """A primitive ``jaxcnn_<name>`` with one array result, or a list of them.

    Args:
      name: the primitive's name, shown in jaxprs as ``jaxcnn_<name>``.
      compute: ``compute(*arrays, **params)`` in ``jnp``/``lax``; with ``platforms``, it also
        takes ``platform=`` (``None`` for the generic lowering).
      abstract_eval: ``abstract_eval(*avals, **params) -> ShapedArray``, the output's shape and
        dtype (the params are the static keyword arguments given to ``bind``); its varying
        axes are added here.
      platforms: backends (``"cpu"``, ``"cuda"``, ...) with a lowering of their own.
      splits_custom_calls: ``splits_custom_calls(*operands, **params)``, whether a bind may
        lower to a custom call split by custom partitioning (its result then goes through
        ``devices_p``); a cheap, static test on the operands' types and the params.
      multiple_results: ``compute`` returns a tuple of arrays and ``abstract_eval`` a list of
        their ``ShapedArray``s.

    Returns:
      The primitive, with impl, abstract eval and lowerings registered; derivative and batching
      rules are the caller's.
    """
    prim = _Primitive(f"jaxcnn_{name}")
    prim.multiple_results = multiple_results
    if custom_partitioning() is not None:
        prim.splits_custom_calls = splits_custom_calls
    prim.def_impl(partial(apply_primitive, prim))
    def typed_abstract_eval(*avals, **params):
        """The op's result shape and dtype, varying along its operands' mesh axes."""
        out = abstract_eval(*avals, **params)
        return [varying_like(a, avals) for a in out] if multiple_results else varying_like(out, avals)

    prim.def_abstract_eval(typed_abstract_eval)
    mlir.register_lowering(prim, _lowering(compute, multiple_results))
    for platform in platforms:
        mlir.register_lowering(prim, _platform_lowering(compute, platform, multiple_results), platform=platform)
    return prim


# ----------------------------------------------------------------------------- vmap rules
# Every jaxcnn batching rule folds the mapped axis B into an axis the op already maps over
# (the batch, or the channels as extra groups), calls the primitive once, and unfolds.

def mapped_axis_first(a, bdim, size):
    """``a`` with its mapped axis ``bdim`` in front; an unmapped ``a`` (``bdim`` None) is
    broadcast to ``size`` copies."""
    if bdim is None:
        return jnp.broadcast_to(a, (size,) + a.shape)
    return jnp.moveaxis(a, bdim, 0)


def fold_mapped(a, axis):
    """``a`` with its leading mapped axis folded into ``axis`` (mapped index major)."""
    a = jnp.moveaxis(a, 0, axis)
    return a.reshape(a.shape[:axis] + (a.shape[axis] * a.shape[axis + 1],) + a.shape[axis + 2:])


def unfold_mapped(a, axis, size):
    """Undo ``fold_mapped``: the mapped axis comes back to the front."""
    a = a.reshape(a.shape[:axis] + (size, a.shape[axis] // size) + a.shape[axis + 1:])
    return jnp.moveaxis(a, axis, 0)
