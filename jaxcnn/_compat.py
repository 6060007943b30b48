"""What jaxcnn needs from JAX that JAX does not promise: every use in one place.

jaxcnn declares ``jax>=0.4.30`` and CI tests that lowest release beside the newest. Anything
here is either private to JAX or differs between the releases in that range; each entry says
which, and why no public name serves. No other jaxcnn module imports ``jax._src``.
"""
from __future__ import annotations

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
