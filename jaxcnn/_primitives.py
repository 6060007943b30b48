"""One way to make a jaxcnn primitive: a name, a computation, its output's shape and dtype.

A primitive is what lets jaxcnn write its own derivative rules (``ad``) and ``vmap`` rules
(``batching``) for an op and still lower it to whatever ``jnp``/``lax`` code computes it. The
factory below does the part every primitive shares:

- eager evaluation (``impl``): compile and run the single primitive through its lowering, as
  JAX does for its own primitives (``jax.interpreters.xla.apply_primitive``);
- abstract evaluation: the output's ``ShapedArray`` from the inputs' and the static params;
- lowering: ``compute`` traced by ``mlir.lower_fun`` for every platform, and once more for each
  platform named in ``platforms`` with ``platform=<name>`` passed, so ``compute`` can choose a
  form that is faster on that backend (conv's per-tap forms on CPU).

Each op module registers its own JVP/transpose and batching rules beside its forward, since
those are the op's mathematics.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import mlir
from jax.interpreters.xla import apply_primitive

__all__ = ["ShapedArray", "make_primitive"]


def make_primitive(name: str, compute: Callable, abstract_eval: Callable[..., ShapedArray], *,
                   platforms: Sequence[str] = ()) -> Primitive:
    """A primitive ``jaxcnn_<name>`` with one array result.

    Args:
      name: the primitive's name, shown in jaxprs as ``jaxcnn_<name>``.
      compute: ``compute(*arrays, **params)`` in ``jnp``/``lax``; with ``platforms``, it also
        takes ``platform=`` (``None`` for the generic lowering).
      abstract_eval: ``abstract_eval(*avals, **params) -> ShapedArray``, the output's shape and
        dtype (the params are the static keyword arguments given to ``bind``).
      platforms: backends (``"cpu"``, ``"cuda"``, ...) with a lowering of their own.

    Returns:
      The primitive, with impl, abstract eval and lowerings registered; derivative and batching
      rules are the caller's.
    """
    prim = Primitive(f"jaxcnn_{name}")
    prim.def_impl(partial(apply_primitive, prim))
    prim.def_abstract_eval(abstract_eval)
    mlir.register_lowering(prim, mlir.lower_fun(compute, multiple_results=False))
    for platform in platforms:
        mlir.register_lowering(prim, mlir.lower_fun(partial(compute, platform=platform),
                                                    multiple_results=False), platform=platform)
    return prim
