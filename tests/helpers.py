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


# ----------------------------------------------------------------------------- an independent conv
# The seed formula in plain numpy loops, sharing nothing with jaxcnn or lax: the oracle that
# reference.conv itself is checked against (small shapes only).

NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def expected_pads(padding: Any, sizes, kernel, stride, dilation) -> list[tuple[int, int]]:
    """``(lo, hi)`` per axis, from API.md's definitions of every padding form."""
    n = len(sizes)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if isinstance(padding, str):
        form = padding.upper()
        if form == "VALID":
            return [(0, 0)] * n
        if form == "FULL":
            return [(e - 1, e - 1) for e in extent]
        if form == "CAUSAL":
            return [(e - 1, 0) for e in extent]
        assert form == "SAME", padding
        pads = []
        for length, e, s in zip(sizes, extent, stride):   # least padding giving ceil(L / s)
            total = max((-(-length // s) - 1) * s + e - length, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else (p[0], p[1]) for p in padding]


def numpy_conv(x: Any, w: Any, b: Any = None, *, stride, pads, dilation, groups: int = 1,
               padding_mode: str = "zeros", channels_last: bool = False) -> np.ndarray:
    """``y[n, o, i] = b[o] + Σ_c Σ_k w[o, c, k] · x_pad[n, g(o)·C/g + c, i·s + k·d]``, a loop
    over output positions and kernel offsets; ``stride``, ``dilation``: n-tuples."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    n = w.ndim - 2
    if channels_last:
        x, w = np.moveaxis(x, -1, 1), np.transpose(w, (n + 1, n, *range(n)))
    x = np.pad(x, [(0, 0), (0, 0), *pads], mode=NUMPY_PAD_MODE[padding_mode.lower()])
    batch, out_channels, in_per_group, kernel = x.shape[0], w.shape[0], w.shape[1], w.shape[2:]
    out = [(length - d * (k - 1) - 1) // s + 1
           for length, k, s, d in zip(x.shape[2:], kernel, stride, dilation)]
    xg = x.reshape(batch, groups, in_per_group, *x.shape[2:])
    wg = w.reshape(groups, out_channels // groups, in_per_group, *kernel)
    y = np.zeros((batch, out_channels, *out))
    lead = (slice(None),) * 3
    for i in np.ndindex(*out):
        for k in np.ndindex(*kernel):
            pos = tuple(ii * s + kk * d for ii, kk, s, d in zip(i, k, stride, dilation))
            y[(slice(None), slice(None)) + i] += np.einsum(
                "ngc,goc->ngo", xg[lead + pos], wg[lead + k]).reshape(batch, out_channels)
    if b is not None:
        y += np.asarray(b, np.float64).reshape(1, out_channels, *([1] * n))
    return np.moveaxis(y, 1, -1) if channels_last else y
