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
  machine: not where XLA's SPMD partitioner will split the op over devices (it cannot split a
  custom call and would gather its operands onto every device), nor in a program lowered for
  ``jax.export``.

Each op module registers its own JVP/transpose and batching rules beside its forward, since
those are the op's mathematics.
"""
from __future__ import annotations

import contextvars
from functools import partial
from typing import Callable, Sequence

import jax.numpy as jnp
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import mlir
from jax.interpreters.xla import apply_primitive

from jaxcnn._compat import (exclude_from_tracebacks, invariant, lowering_for_export,
                            lowering_is_partitioned, to_varying, varying_like)

__all__ = ["ShapedArray", "custom_calls_allowed", "fold_mapped", "make_primitive", "mapped_axis_first",
           "unfold_mapped"]

_CUSTOM_CALLS = contextvars.ContextVar("jaxcnn_custom_calls_allowed", default=True)


def custom_calls_allowed() -> bool:
    """While a platform lowering traces ``compute``: whether a form may be a custom call."""
    return _CUSTOM_CALLS.get()


def _lowering(compute: Callable) -> Callable:
    """``compute`` as a lowering rule, traced on invariant operands (one shard's values)."""
    lowered = mlir.lower_fun(compute, multiple_results=False)

    def rule(ctx, *args, **params):
        return lowered(ctx.replace(avals_in=[invariant(a) for a in ctx.avals_in]), *args, **params)
    return rule


def _platform_lowering(compute: Callable, platform: str) -> Callable:
    lowered = _lowering(partial(compute, platform=platform))

    def rule(ctx, *args, **params):
        token = _CUSTOM_CALLS.set(not (lowering_is_partitioned(ctx) or lowering_for_export(ctx)))
        try:
            return lowered(ctx, *args, **params)
        finally:
            _CUSTOM_CALLS.reset(token)
    return rule


# Its bind below is a shim every op passes through: the op's source location is its caller's.
exclude_from_tracebacks(__file__)


class _Primitive(Primitive):
    """A primitive whose operands are cast alike to varying types before each bind (the module
    docstring): every bind, the op's own and its rules', goes through here."""

    def bind(self, *args, **params):
        return super().bind(*to_varying(args), **params)


def make_primitive(name: str, compute: Callable, abstract_eval: Callable[..., ShapedArray], *,
                   platforms: Sequence[str] = ()) -> Primitive:
    """A primitive ``jaxcnn_<name>`` with one array result.

    Args:
      name: the primitive's name, shown in jaxprs as ``jaxcnn_<name>``.
      compute: ``compute(*arrays, **params)`` in ``jnp``/``lax``; with ``platforms``, it also
        takes ``platform=`` (``None`` for the generic lowering).
      abstract_eval: ``abstract_eval(*avals, **params) -> ShapedArray``, the output's shape and
        dtype (the params are the static keyword arguments given to ``bind``); its varying
        axes are added here.
      platforms: backends (``"cpu"``, ``"cuda"``, ...) with a lowering of their own.

    Returns:
      The primitive, with impl, abstract eval and lowerings registered; derivative and batching
      rules are the caller's.
    """
    prim = _Primitive(f"jaxcnn_{name}")
    prim.def_impl(partial(apply_primitive, prim))
    def typed_abstract_eval(*avals, **params):
        """The op's result shape and dtype, varying along its operands' mesh axes."""
        return varying_like(abstract_eval(*avals, **params), avals)

    prim.def_abstract_eval(typed_abstract_eval)
    mlir.register_lowering(prim, _lowering(compute))
    for platform in platforms:
        mlir.register_lowering(prim, _platform_lowering(compute, platform), platform=platform)
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
