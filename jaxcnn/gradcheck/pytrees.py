r"""Gradient checks for any function of pytrees, in reverse and forward mode, batched, order 1 or 2.

``check_modes(f, args)`` differentiates ``f(*args)`` (an output pytree) with respect to every
floating-point leaf of ``args`` (a model's params dict, an input array), one leaf at a time,
the others held fixed, and names each leaf by its path (``params[0]['w']``:
``jax.tree_util.keystr`` after the argument's name). For a leaf ``x``, ``k`` random
directions ``uᵢ`` (x's shape) and ``k`` random cotangents ``vᵢ`` (the output's size, shared by
the leaves), PyTorch's fast mode, in float64:

- ``rev vs reference``: the VJP rows ``vᵢᵀJ`` against those of JAX autodiff of ``reference``;
- ``rev vs finite differences``: ``⟨vᵢᵀJ, uᵢ⟩`` against ``⟨vᵢ, (f(x+εuᵢ) − f(x−εuᵢ)) / 2ε⟩``;
- ``fwd vs reference``: the JVPs ``Juᵢ`` against autodiff of ``reference``;
- ``fwd vs finite differences``: ``Juᵢ`` against ``(f(x+εuᵢ) − f(x−εuᵢ)) / 2ε``, whole;
- ``jvp/vjp consistency``: ``⟨uᵢ, Jᵀvᵢ⟩`` against ``⟨Juᵢ, vᵢ⟩`` (both modes asked);
- ``batched vjp`` / ``batched jvp``: ``vmap`` of the VJP over the ``vᵢ`` (of the JVP over the
  ``uᵢ``) against the per-example results stacked (PyTorch's ``check_batched_grad`` and
  ``check_batched_forward_grad``).

With ``full_jacobian=True`` the ``uᵢ`` and ``vᵢ`` are the basis vectors, and the two reverse-mode
rows compare the whole Jacobian ``J``, row by row, with ``J`` column by column.

Every leaf and direction is checked in one compiled program per order (compiling is nearly
all the cost). The per-example results loop over the directions and cotangents with
``lax.map`` (not ``vmap``), so that a wrong batching rule shows in the batched rows only.
A mode ``f`` cannot run (forward mode of a ``jax.custom_vjp``) is not applicable, not a
failure, unless ``modes`` names it. ``order=2`` repeats every check on
``(leaves, v) ↦ vjp(f, leaves)(v)``, the function whose derivative grad-of-grad and
Hessian-vector products evaluate (its extra argument ``v`` is reported as ``v``, by the
output's paths). With no ``reference`` the checks against it are left out, as
``torch.autograd.gradcheck`` does: finite differences and the consistency alone.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxcnn.gradcheck.checks import (argument_names, check_options, float64, resolve_reference,
                                     run_once)
from jaxcnn.gradcheck.report import GradcheckError, ModeReport, ModeRow, compare
from jaxcnn.tolerances import FD_EPS, VJP_RTOL, finite_difference_rtol

MODES = ("rev", "fwd")
NO_FORWARD_MODE = "n/a (no forward mode)"


def _is_float_leaf(leaf: Any) -> bool:
    return hasattr(leaf, "dtype") and hasattr(leaf, "shape") and jnp.issubdtype(leaf.dtype, jnp.floating)


def leaves_with_paths(args: Sequence[Any], names: Sequence[str]) -> tuple[list, list[str], Callable]:
    """The floating leaves of ``args`` (cast to float64), their paths (``name`` + keystr),
    and ``rebuild(float_leaves) -> args`` with every other leaf (ints, shapes) unchanged."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tuple(args), is_leaf=lambda a: a is None)
    where = [i for i, (_, leaf) in enumerate(flat) if _is_float_leaf(leaf)]
    paths = [names[path[0].idx] + jax.tree_util.keystr(tuple(path[1:])) for path, _ in
             (flat[i] for i in where)]
    # Cast on the host: an eager jnp cast compiles a program per leaf shape.
    leaves = [jnp.asarray(np.asarray(flat[i][1], np.float64)) for i in where]
    others = [leaf for _, leaf in flat]

    def rebuild(float_leaves):
        full = list(others)
        for i, leaf in zip(where, float_leaves):
            full[i] = leaf
        return jax.tree_util.tree_unflatten(treedef, full)
    return leaves, paths, rebuild


def output_paths(tree: Any) -> list[tuple[str, int]]:
    """``(keystr path, size)`` of each leaf of an output pytree, in ``ravel_pytree`` order."""
    return [(jax.tree_util.keystr(path), int(np.size(leaf)))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def _tolerances(eps: float, rtol: float, fd_rtol: float) -> dict[str, tuple[float, str]]:
    exact = (rtol, "tolerances.VJP_RTOL: both sides are float64 sums of the same terms in "
                   "different orders, error ≲ L·u ≈ 1e-13 for L ≲ 10³ terms, u = 2⁻⁵³")
    if rtol != VJP_RTOL:
        exact = (rtol, "rtol given by the caller")
    fd = (fd_rtol, f"tolerances.finite_difference_rtol(eps={eps:g}) = 1e3·u/ε + ε²: f's rounding "
                   f"error over 2ε plus the O(ε²) truncation of central differences")
    if fd_rtol != finite_difference_rtol(eps):
        fd = (fd_rtol, "fd_rtol given by the caller")
    return {"reference": exact, "fd": fd, "consistency": exact, "batched": exact}


def _check_modes_options(modes: Any, order: Any, eps: Any, n_projections: Any,
                         full_jacobian: Any) -> tuple[str, ...] | None:
    """``modes`` as a tuple (None stays None: every mode ``f`` can run), the rest checked."""
    if modes is not None:
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
        if not modes or any(m not in MODES for m in modes):
            raise ValueError(f"modes: expected None (every mode f can run) or a non-empty subset "
                             f"of {MODES}; got {modes!r}")
    if not isinstance(full_jacobian, bool):
        raise TypeError(f"full_jacobian: expected a bool; got {full_jacobian!r}")
    check_options(order, eps, n_projections, 0)
    return modes


def check_modes(f: Callable, args: Sequence[Any], *, reference: Callable | None = None,
                modes: Sequence[str] | None = None, order: int = 1, batched: bool = False,
                eps: float = FD_EPS, n_projections: int = 4, full_jacobian: bool = False,
                rtol: float = VJP_RTOL, fd_rtol: float | None = None, seed: int = 0,
                **kwargs: Any) -> ModeReport:
    """Check ``f``'s derivatives at ``args`` in ``modes``, leaf by leaf (see the module doc).

    Args:
      f: called ``f(*args, **kwargs)``; args and output any pytrees.
      args: every floating-point array leaf is differentiated (in float64); other leaves (ints,
        shapes, None, Python floats) pass through unchanged.
      reference: the same function without custom rules (autodiff is the oracle); default: if
        ``f`` is one of jaxcnn's ops (by identity, not name), its twin in ``jaxcnn.reference``;
        else none: finite differences and the jvp/vjp consistency alone (the report says so).
      modes: ``"rev"`` (VJP), ``"fwd"`` (JVP), or both (adds the consistency check). Default
        None: every mode ``f`` can run; one it cannot (forward mode of a ``jax.custom_vjp``)
        is reported as not applicable, not as a failure. A mode named here that ``f`` cannot
        run is a failure.
      order: 1, or 2 to check the derivative of ``(leaves, v) ↦ vjp(f, leaves)(v)`` too.
      batched: also ``vmap`` of the VJP / JVP against the stacked per-example ones.
      n_projections: random directions per leaf and random cotangents (PyTorch's fast mode).
      full_jacobian: instead, every leaf's whole Jacobian: the basis vectors as directions and
        cotangents (PyTorch's ``fast_mode=False``); one evaluation per element, small ``f`` only.
      eps, rtol, fd_rtol, seed: as in ``check``.

    Returns:
      A ``ModeReport``: a row per (order, leaf path, check), ``ok``, ``print`` for the table;
      a mode ``f`` cannot run is listed in ``report.unavailable`` (not applicable) or, if
      ``modes`` asked for it, in ``report.refused`` (a failure).
    """
    asked = _check_modes_options(modes, order, eps, n_projections, full_jacobian)
    reference = resolve_reference(f, reference, required=False)
    fd_rtol = finite_difference_rtol(eps) if fd_rtol is None else float(fd_rtol)
    tolerances = _tolerances(eps, rtol, fd_rtol)
    names = argument_names(f, len(args))
    rng = np.random.default_rng(seed)
    rows: list[ModeRow] = []
    not_run: dict[str, str] = {}
    with float64() as precision:
        leaves, paths, rebuild = leaves_with_paths(args, names)
        if not leaves:
            raise ValueError(f"args: expected at least one floating-point leaf to differentiate; "
                             f"got {jax.tree_util.tree_structure(tuple(args))}")
        call = lambda fn: (lambda *ls: fn(*rebuild(ls), **kwargs))
        F, F_ref = call(f), None if reference is None else call(reference)
        out_tree = jax.eval_shape(F, *leaves)
        check_order = lambda order, F, F_ref, leaves, paths, out_paths: _check_order(
            F, F_ref, leaves, paths, out_paths, order, asked or MODES, batched, eps,
            None if full_jacobian else n_projections, tolerances, rng, not_run)
        rows += check_order(1, F, F_ref, leaves, paths, output_paths(out_tree))
        if order == 2:
            v = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.standard_normal(s.shape)), out_tree)
            v_leaves, v_paths = jax.tree_util.tree_leaves(v), [f"v{p}" for p, _ in output_paths(out_tree)]
            H, H_ref = _second_order(F, len(leaves), v), None
            if F_ref is not None:
                H_ref = _second_order(F_ref, len(leaves), v)
            out2 = output_paths(jax.eval_shape(H, *leaves, *v_leaves))
            rows += check_order(2, H, H_ref, leaves + v_leaves, paths + v_paths, out2)
    oracle = (f"reference {getattr(reference, '__module__', '')}.{getattr(reference, '__name__', reference)!s}"
              if reference is not None else
              "no reference (f is none of jaxcnn's ops and none was passed): finite differences "
              "and jvp/vjp consistency only")
    sampling = ("full Jacobians (every basis direction and cotangent)" if full_jacobian else
                f"{n_projections} random directions per leaf, {n_projections} random cotangents")
    not_run = tuple(sorted(not_run.items()))
    return ModeReport(getattr(f, "__name__", repr(f)), f"{precision}, eps={eps:g}, {sampling}",
                      oracle, tuple(rows), () if asked else not_run,
                      tuple(sorted({t for t in tolerances.values()})),
                      refused=not_run if asked else ())


def _second_order(F: Callable, count: int, v_template: Any) -> Callable:
    """``(leaves, v_leaves) ↦ vjp(F, leaves)(v)``: what grad-of-grad differentiates."""
    treedef = jax.tree_util.tree_structure(v_template)

    def pulled(*leaves_and_v):
        leaves, v_leaves = leaves_and_v[:count], leaves_and_v[count:]
        return jax.vjp(F, *leaves)[1](jax.tree_util.tree_unflatten(treedef, v_leaves))
    return pulled


def _check_order(F, F_ref, leaves, paths, out_paths, order, modes, batched, eps, k,
                 tolerances, rng, not_run) -> list[ModeRow]:
    """The rows of one order, every leaf in one compiled program. ``k`` random directions per
    leaf and ``k`` random cotangents (shared by the leaves), or with ``k`` None the basis
    vectors: every leaf's whole Jacobian."""
    m = sum(size for _, size in out_paths)
    if k is None:
        directions = tuple(np.eye(x.size).reshape((x.size,) + x.shape) for x in leaves)
        cotangents = np.eye(m)
    else:
        directions = tuple(rng.standard_normal((k,) + x.shape) for x in leaves)
        cotangents = rng.standard_normal((k, m))
    program = lambda modes: _evaluate(F, F_ref, modes, batched, eps, [len(u) for u in directions])
    try:
        results = run_once(program(modes), tuple(leaves), directions, cotangents)
    except TypeError as err:   # jax.custom_vjp: "can't apply forward-mode autodiff (jvp)"
        if "fwd" not in modes or "forward-mode" not in str(err):
            raise
        not_run[f"order {order}"] = f"fwd: {NO_FORWARD_MODE}: {err}"
        if modes == ("fwd",):
            return []
        results = run_once(program(("rev",)), tuple(leaves), directions, cotangents)
    rows = []
    if "y_ref" in results and order == 1:
        rows.append(compare("output", 0, "output vs reference", results["y"], results["y_ref"],
                            lambda flat: _output_element(flat, 1, out_paths, None),
                            *tolerances["reference"]))
    start = 0
    for i, (path, u) in enumerate(zip(paths, directions)):
        stop = start + len(u)
        leaf = {key: value[i] if key.startswith("vjp") else value[start:stop]
                for key, value in results.items() if not key.startswith("y")}
        rows += _rows(path, order, leaf, leaves[i].shape, out_paths, u, cotangents, tolerances,
                      full=k is None)
        start = stop
    return rows


def _evaluate(F, F_ref, modes, batched, eps, counts):
    """One program for every leaf: each quantity the rows compare (see the module doc).

    Direction ``j`` (of ``sum(counts)``) moves one leaf, ``owner[j]``, along its direction
    ``row[j]``; the other leaves' tangents are zero. The per-example results loop over the
    directions (finite differences and JVP in one loop body) and the cotangents with
    ``lax.map``: compiled once, and no batching rule of ``f`` involved, so that a wrong one
    shows in the batched rows only; ``vmap`` batches them."""
    def run(leaves, directions, cotangents):
        owner = jnp.repeat(jnp.arange(len(counts)), np.asarray(counts), total_repeat_length=sum(counts))
        row = jnp.concatenate([jnp.arange(n) for n in counts])
        g = lambda fn: (lambda *ls: ravel_pytree(fn(*ls))[0])

        def tangent(j):
            return tuple(jnp.where(owner[j] == i, u[jnp.minimum(row[j], len(u) - 1)], 0.0)
                         for i, u in enumerate(directions))

        def central(j):
            t = tangent(j)
            shifted = lambda sign: g(F)(*(x + sign * eps * d for x, d in zip(leaves, t)))
            return (shifted(1.0) - shifted(-1.0)) / (2 * eps)

        jvp = lambda fn: (lambda j: jax.jvp(g(fn), leaves, tangent(j))[1])
        every = jnp.arange(len(owner))
        y, pull = jax.vjp(g(F), *leaves)
        out = {}
        if "fwd" in modes:
            out["fd"], out["jvp"] = jax.lax.map(lambda j: (central(j), jvp(F)(j)), every)
            if F_ref is not None:
                out["jvp_ref"] = jax.vmap(jvp(F_ref))(every)
            if batched:
                out["jvp_batched"] = jax.vmap(jvp(F))(every)
        else:
            out["fd"] = jax.lax.map(central, every)
        if "rev" in modes:
            out["vjp"] = jax.lax.map(pull, cotangents)
            if batched:
                out["vjp_batched"] = jax.vmap(pull)(cotangents)
        if F_ref is not None:
            y_ref, pull_ref = jax.vjp(g(F_ref), *leaves)
            out.update(y=y, y_ref=y_ref)
            if "rev" in modes:
                out["vjp_ref"] = jax.vmap(pull_ref)(cotangents)
        return out
    return run


def _rows(path, order, r, shape, out_paths, directions, cotangents, tolerances, full) -> list[ModeRow]:
    """One leaf's rows. The reverse-mode rows ``R = VJ`` (``V`` the cotangents) meet the
    columns ``C = JU`` (``U`` the directions: finite differences, JVPs) as ``⟨Vᵢ J, Uᵢ⟩``
    against ``⟨Vᵢ, (JU)ᵢ⟩`` for each random pair ``i``, or, with the basis vectors (``full``),
    as the whole Jacobian ``R`` against ``Cᵀ``."""
    n, size = len(directions), int(np.prod(shape, dtype=int))
    u, v = np.reshape(directions, (n, -1)), np.asarray(cotangents)
    leaf_index = lambda flat: _element(flat, (len(v), *shape), "cotangent", path)
    out_index = lambda flat: _output_element(flat, n, out_paths, "direction")
    if full:
        jacobian_index = lambda flat: (f"{_output_element(flat // size, 1, out_paths, None)}, "
                                       f"{_leaf_element(flat % size, shape, path)}")
        pair = lambda rows, columns: (np.reshape(rows, (len(v), -1)), np.asarray(columns).T,
                                      jacobian_index)
    else:
        pair = lambda rows, columns: (np.sum(np.reshape(rows, (n, -1)) * u, axis=1),
                                      np.sum(v * np.asarray(columns), axis=1),
                                      lambda flat: f"direction and cotangent {flat}")
    rows = []
    if "vjp" in r:
        if "vjp_ref" in r:
            rows.append(compare(path, order, "rev vs reference", r["vjp"], r["vjp_ref"], leaf_index,
                                *tolerances["reference"]))
        rows.append(compare(path, order, "rev vs finite differences", *pair(r["vjp"], r["fd"]),
                            *tolerances["fd"]))
        if "vjp_batched" in r:
            rows.append(compare(path, order, "batched vjp (vmap vs loop)", r["vjp_batched"], r["vjp"],
                                leaf_index, *tolerances["batched"]))
    if "jvp" in r:
        if "jvp_ref" in r:
            rows.append(compare(path, order, "fwd vs reference", r["jvp"], r["jvp_ref"], out_index,
                                *tolerances["reference"]))
        rows.append(compare(path, order, "fwd vs finite differences", r["jvp"], r["fd"], out_index,
                            *tolerances["fd"]))
        if "vjp" in r:
            rows.append(compare(path, order, "jvp/vjp consistency", *pair(r["vjp"], r["jvp"]),
                                *tolerances["consistency"]))
        if "jvp_batched" in r:
            rows.append(compare(path, order, "batched jvp (vmap vs loop)", r["jvp_batched"], r["jvp"],
                                out_index, *tolerances["batched"]))
    return rows


def _leaf_element(flat: int, shape: tuple, path: str) -> str:
    return f"{path}[{', '.join(map(str, np.unravel_index(flat, shape)))}]"


def _element(flat: int, shape: tuple, batch_name: str, path: str) -> str:
    """``flat`` in a ``(batch, *leaf shape)`` array, as '<batch> j, <path>[i, ...]'."""
    j, rest = divmod(flat, int(np.prod(shape[1:], dtype=int)))
    return f"{batch_name} {j}, {_leaf_element(rest, shape[1:], path)}"


def _output_element(flat: int, k: int, out_paths: list[tuple[str, int]], batch_name: str | None) -> str:
    """``flat`` in a ``(k, output size)`` array, as '<batch> j, output<path>[i]'."""
    m = sum(size for _, size in out_paths)
    j, rest = divmod(flat, max(m, 1))
    for name, size in out_paths:
        if rest < size:
            break
        rest -= size
    where = f"output{name}" + (f"[flat {rest}]" if size > 1 else "")
    return where if batch_name is None else f"{batch_name} {j}, {where}"


def assert_grads(f: Callable, args: Sequence[Any], *, reference: Callable | None = None,
                 modes: Sequence[str] | None = None, order: int = 1, batched: bool = False,
                 **options: Any) -> ModeReport:
    """``check_modes``, raising ``GradcheckError`` (an ``AssertionError``) when its report is
    not ok: a failed check, or a mode named in ``modes`` that ``f`` cannot run (left to the
    default, such a mode is reported as not applicable); for users' own pytest suites.

    The message names, per failed check, the leaf's pytree path, the check, the worst
    element's index with the expected (reference / finite differences) and got (``f``'s
    derivative) values, the error relative to the largest expected value, and the tolerance
    with where it came from; the report's table follows. Returns the report when all pass.

    Example::

        params = model.init(key, (2, 1, 8))[0]
        loss = lambda params, x, labels: cross_entropy(model.apply(params, x), labels).mean()
        assert_grads(loss, (params, x, labels), batched=True)
    """
    report = check_modes(f, args, reference=reference, modes=modes, order=order, batched=batched,
                         **options)
    if not report.ok:
        raise GradcheckError("\n" + report.failure_message())
    return report
