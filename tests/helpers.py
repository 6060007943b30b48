"""Small shared test helpers (no test dependency beyond numpy and jax)."""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Tolerances by dtype for a relative error (max abs error / max abs reference):
# float64 ~ 1e-12 (a few hundred ulps of accumulation), float32 ~ 1e-5, bfloat16 ~ 1e-2.
TOL = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 1e-2, "float16": 3e-3}
VJP_TOL = 1e-10  # float64 hand VJP vs JAX autodiff of the reference


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any = jnp.float64) -> jax.Array:
    """Standard normal samples of ``shape``, cast to ``dtype``."""
    return jnp.asarray(rng.standard_normal(shape), dtype=dtype)


def relative_error(a: Any, b: Any) -> float:
    """``max|a − b| / max(max|b|, tiny)``, in float64 numpy; shapes must match exactly."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape mismatch: {a.shape} vs {b.shape}"
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(b))), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(a - b))) / scale


def assert_close(a: Any, b: Any, tol: float, what: str = "") -> None:
    """Relative error of ``a`` against the reference ``b`` at most ``tol``."""
    err = relative_error(a, b)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def tree_assert_close(a: Any, b: Any, tol: float, what: str = "") -> None:
    """``assert_close`` leaf by leaf over two pytrees of the same structure."""
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    assert tree_a == tree_b, f"{what}: tree structure {tree_a} vs {tree_b}"
    for i, (la, lb) in enumerate(zip(leaves_a, leaves_b)):
        assert_close(la, lb, tol, f"{what}[{i}]")


def vdot(a: Any, b: Any) -> jax.Array:
    """``⟨a, b⟩`` in float64 over all elements."""
    return jnp.vdot(jnp.asarray(a, jnp.float64).ravel(), jnp.asarray(b, jnp.float64).ravel())
