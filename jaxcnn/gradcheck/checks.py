r"""Gradient checking: every hand-written VJP against JAX autodiff and finite differences.

``check(f, args)`` compares the VJP of ``f`` at ``args``, in float64, with two oracles that
share no code with it, one differentiable argument at a time:

(a) ``jax.vjp`` of ``reference`` (default, for jaxcnn's own ops only: the op's twin in
    ``jaxcnn.reference``, plain ``lax``/``jnp`` differentiated by JAX autodiff, found by the
    op's identity, never by ``f``'s name; see ``twins``), with the same cotangents;
(b) central finite differences of ``f`` itself, ``(f(x + εu) − f(x − εu)) / 2ε``.

An argument with at most ``full_jacobian_max`` elements, of a function with at most that many
outputs, gets its whole Jacobian ``J`` both ways: row by row from VJPs with the output basis
vectors, column by column from finite differences along the input basis vectors. A larger one
gets ``n_projections`` random projections, PyTorch's fast mode: the VJP rows ``vᵀJ`` for
random ``v`` against autodiff's, and ``⟨vᵀJ, u⟩`` against ``⟨v, (f(x+εu) − f(x−εu)) / 2ε⟩``
for random ``u``. ``order=2`` repeats both on ``(args, v) ↦ vjp(f, args)(v)``, the function
whose derivative grad-of-grad and Hessian-vector products evaluate.

The tolerances and their derivations live in ``jaxcnn.tolerances``; the report in
``jaxcnn.gradcheck.report``.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxcnn._compat import enable_x64
from jaxcnn.gradcheck.report import Comparison, GradcheckError, Report, max_errors
from jaxcnn.gradcheck.twins import twin
from jaxcnn.tolerances import FD_EPS, RTOL, VJP_RTOL, finite_difference_rtol

# The checked programs are tiny and run once, so compiling them is nearly all the cost. On CPU
# these options make XLA compile them ~10x faster: no LLVM optimisation, the plain elemental
# emitters instead of the fusion emitters, one codegen module. They change how the program is
# generated, not what it computes (no fast-math either way); the HLO checked is the same.
_CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False,
                         "xla_cpu_parallel_codegen_split_count": 1}

# ----------------------------------------------------------------------------- arguments


def resolve_reference(f: Callable, reference: Callable | None, *,
                      required: bool = True) -> Callable | None:
    """``reference`` itself, else, if ``f`` is one of jaxcnn's ops (by identity, never by
    name: ``twins.TWINS``), its twin in ``jaxcnn.reference``; else None (or, with
    ``required``, ValueError naming ``reference``)."""
    if reference is not None:
        if not callable(reference):
            raise TypeError(f"reference: expected a callable; got {reference!r}")
        return reference
    found = twin(f)
    if found is None and required:
        raise ValueError(f"reference: f ({getattr(f, '__name__', f)!r}) is not one of jaxcnn's "
                         f"ops with a twin in jaxcnn.reference, so there is no default oracle; "
                         f"expected reference=<the same function built from plain lax/jnp, "
                         f"differentiated by JAX autodiff>; got None")
    return found


def argument_names(f: Callable, count: int) -> list[str]:
    """Names of ``f``'s first ``count`` positional parameters (``arg<i>`` past them)."""
    try:
        params = [p.name for p in inspect.signature(f).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return [params[i] if i < len(params) else f"arg{i}" for i in range(count)]


def _is_float_array(value: Any) -> bool:
    return (isinstance(value, (jax.Array, np.ndarray))
            and jnp.issubdtype(value.dtype, jnp.floating))


def differentiable_argnums(args: Sequence[Any], argnums: Any) -> tuple[int, ...]:
    """``argnums``, checked, or every floating array in ``args`` (None and shapes skipped)."""
    if argnums is None:
        found = tuple(i for i, a in enumerate(args) if _is_float_array(a))
        if not found:
            raise ValueError(f"args: expected at least one floating-point array to differentiate; "
                             f"got types {[type(a).__name__ for a in args]}")
        return found
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for i in nums:
        if not isinstance(i, int) or not -len(args) <= i < len(args) or not _is_float_array(args[i]):
            raise ValueError(f"argnums: expected indices of floating-point arrays among the "
                             f"{len(args)} args; got {argnums!r}")
    return tuple(sorted({i % len(args) for i in nums}))


def check_options(order: Any, eps: Any, n_projections: Any, full_jacobian_max: Any) -> None:
    if order not in (1, 2):
        raise ValueError(f"order: expected 1 or 2; got {order!r}")
    if not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"eps: expected a float step in (0, 1); got {eps!r}")
    if not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections: expected a positive int; got {n_projections!r}")
    if not isinstance(full_jacobian_max, int) or full_jacobian_max < 0:
        raise ValueError(f"full_jacobian_max: expected a non-negative int; got {full_jacobian_max!r}")


@contextlib.contextmanager
def float64() -> Iterator[str]:
    """Run in float64: yields which, ``jax_enable_x64`` on already or turned on here only."""
    if jax.config.read("jax_enable_x64"):
        yield "float64 (jax_enable_x64 already on)"
        return
    with enable_x64(True):
        yield "float64 (jax_enable_x64 turned on for this check only)"


def _flat(f: Callable, args: Sequence[Any], argnums: Sequence[int], kwargs: dict) -> Callable:
    """``f`` as a function of its differentiable arguments, its output raveled to a vector."""
    def flat(*primals):
        full = list(args)
        for i, p in zip(argnums, primals):
            full[i] = p
        return ravel_pytree(f(*full, **kwargs))[0]
    return flat


def _vjp_of(g: Callable) -> Callable:
    """``(primals, v) ↦ vjp(g, primals)(v)``, raveled: the function order 2 differentiates."""
    def pulled(*primals_and_v):
        *primals, v = primals_and_v
        return ravel_pytree(jax.vjp(g, *primals)[1](v))[0]
    return pulled


# ----------------------------------------------------------------------------- check


def check(f: Callable, args: Sequence[Any], *, reference: Callable | None = None,
          argnums: int | Sequence[int] | None = None, order: int = 1, eps: float = FD_EPS,
          n_projections: int = 4, full_jacobian_max: int = 64, rtol: float = VJP_RTOL,
          fd_rtol: float | None = None, raise_on_failure: bool = False, seed: int = 0,
          **kwargs: Any) -> Report:
    r"""Check ``f``'s VJP at ``args`` against autodiff of ``reference`` and finite differences.

    Args:
      f: the function under test, called ``f(*args, **kwargs)``; any output pytree.
      args: its positional arguments. Floating arrays are differentiated (cast to float64);
        None (an absent bias) and non-arrays (shapes) are passed through unchanged.
      reference: the oracle, same signature, no ``custom_vjp``; default: if ``f`` is one of
        jaxcnn's ops (by identity, not name), its twin in ``jaxcnn.reference``. With neither
        (a user's own function, whatever its name), ``f``'s VJP is compared with its own JVP
        (``⟨vᵀJ, u⟩ = ⟨v, Ju⟩``, or ``J`` row by row against column by column) and with
        finite differences, as ``torch.autograd.gradcheck``; the report's precision line
        says so. A function with no forward mode then gets finite differences only (its
        autodiff columns empty).
      argnums: which of ``args`` to differentiate; default every floating array.
      order: 1, or 2 to also check the VJP of ``(args, v) ↦ vjp(f, args)(v)`` (grad-of-grad).
      eps: the finite-difference step ε.
      n_projections: random projections ``vᵀJu`` per argument too large for a full Jacobian.
      full_jacobian_max: full Jacobians when both the argument and the output have at most
        this many elements.
      rtol: tolerance against autodiff, relative to ``max|reference|``; default
        ``tolerances.VJP_RTOL`` = 1e-10 (both sides sum in float64 in different orders).
      fd_rtol: tolerance against finite differences; default
        ``tolerances.finite_difference_rtol(eps)`` = ``1e3·u/ε + ε²`` (1.1e-7 at ε = 1e-6).
      raise_on_failure: raise ``GradcheckError`` (an ``AssertionError``) with the table.
      seed: seeds the random cotangents ``v`` and directions ``u``.

    Returns:
      A ``Report``: rows per argument name and order (``report["x"]``,
      ``report.row("w", order=2)``; ``report["output"]`` compares the forward values),
      ``report.ok``, ``print(report)`` for the table.

    Float64 needs ``jax_enable_x64``; if it is off, ``check`` turns it on inside a
    ``enable_x64`` context for its own computations and says so in ``report.precision``.
    """
    reference = resolve_reference(f, reference, required=False)
    args = tuple(args)
    argnums = differentiable_argnums(args, argnums)
    check_options(order, eps, n_projections, full_jacobian_max)
    fd_rtol = finite_difference_rtol(eps) if fd_rtol is None else float(fd_rtol)
    names = argument_names(f, len(args))
    diff_names = [names[i] for i in argnums]
    rng = np.random.default_rng(seed)
    options = dict(eps=eps, k=n_projections, full_max=full_jacobian_max, rtol=rtol, fd_rtol=fd_rtol)
    with float64() as precision:
        args = tuple(jnp.asarray(a, jnp.float64) if _is_float_array(a) else a for a in args)
        g = _flat(f, args, argnums, kwargs)
        g_ref = None if reference is None else _flat(reference, args, argnums, kwargs)
        primals = tuple(args[i] for i in argnums)
        rows = _compare(g, g_ref, primals, diff_names, 1, rng, **options)
        if order == 2:
            v = jnp.asarray(rng.standard_normal(jax.eval_shape(g, *primals).shape))
            rows += _compare(_vjp_of(g), None if g_ref is None else _vjp_of(g_ref), primals + (v,),
                             diff_names + ["v"], 2, rng, **options)
    if reference is None:
        precision += ("; no reference (f is none of jaxcnn's ops and none was passed): the "
                      "autodiff columns compare f's VJP with f's own JVP (consistency), and "
                      "finite differences")
    report = Report(getattr(f, "__name__", repr(f)), f"{precision}, eps={eps:g}", tuple(rows))
    if raise_on_failure and not report.ok:
        raise GradcheckError("\n" + report.table())
    return report


def _compare(g, g_ref, primals, names, order, rng, *, eps, k, full_max, rtol, fd_rtol):
    """The rows of one order: forward (order 1 only) and one per primal."""
    m = jax.eval_shape(g, *primals).shape[0]
    full = [p.size <= full_max and m <= full_max for p in primals]
    projections = rng.standard_normal((k, m))
    cotangents = np.concatenate([np.eye(m), projections]) if any(full) else projections
    directions = tuple(np.eye(p.size).reshape((p.size,) + p.shape) if is_full
                       else rng.standard_normal((k,) + p.shape) for p, is_full in zip(primals, full))
    y, y_ref, pulls, pulls_ref, diffs = _evaluate(g, g_ref, primals, cotangents, directions, eps)
    rows = []
    if order == 1 and g_ref is not None:
        rows.append(Comparison("output", 0, "forward", *max_errors(y, y_ref), None, None, rtol, None))
    for name, p, is_full, u, pull, pull_ref, diff in zip(names, primals, full, directions, pulls,
                                                          pulls_ref, diffs):
        if is_full:   # J (m × n): rows from VJPs, columns from finite differences
            jac, jac_ref = np.reshape(pull[:m], (m, -1)), _reference_jacobian(pull_ref, m, g_ref is None)
            method, against_fd = f"jacobian {m}×{p.size}", (jac, np.reshape(diff, (p.size, m)).T)
        else:         # vᵀJ rows against autodiff; ⟨vᵀJ, u⟩ against ⟨v, (f(x+εu) − f(x−εu)) / 2ε⟩
            jac = np.reshape(pull[-k:], (k, -1))
            method = f"{k} projections"
            against_fd = (np.sum(jac * np.reshape(u, (k, -1)), axis=1),
                          np.sum(projections * np.asarray(diff), axis=1))
            if g_ref is None and pull_ref is not None:   # ⟨vᵀJ, u⟩ against ⟨v, Ju⟩
                jac, jac_ref = against_fd[0], np.sum(projections * np.asarray(pull_ref), axis=1)
            else:
                jac_ref = None if pull_ref is None else np.reshape(pull_ref[-k:], (k, -1))
        errors = (None, None) if jac_ref is None else max_errors(jac, jac_ref)
        if g_ref is None:
            method += " vs f's JVP" if jac_ref is not None else " (no forward mode: fin. diff. only)"
        rows.append(Comparison(name, order, method, *errors, *max_errors(*against_fd), rtol, fd_rtol))
    return rows


def _reference_jacobian(pull_ref, m, from_jvp):
    """J (m × n) from the reference's VJP rows, or (no reference) from f's JVP columns."""
    if pull_ref is None:
        return None
    return np.asarray(pull_ref).T if from_jvp else np.reshape(pull_ref[:m], (m, -1))


def run_once(fn: Callable, *args: Any) -> Any:
    """``jax.jit(fn)(*args)`` on the host, compiled for speed on CPU (see above)."""
    if jax.default_backend() == "cpu":
        try:
            return jax.device_get(jax.jit(fn).lower(*args).compile(_CPU_COMPILER_OPTIONS)(*args))
        except Exception as err:  # an XLA without these options: compile as usual
            if "compile option" not in str(err):
                raise
    return jax.device_get(jax.jit(fn)(*args))


def _evaluate(g, g_ref, primals, cotangents, directions, eps):
    """One compiled call: the outputs and VJP rows of ``g`` and ``g_ref`` for every cotangent,
    and the central differences of ``g`` along every direction of every primal."""
    # Every shifted evaluation in one batch: x ± εu for each direction u of each primal, the
    # other primals unshifted (a zero step), so that a single vmapped forward serves them all.
    counts = [len(u) for u in directions]
    steps = []
    for i, p in enumerate(primals):
        blocks = [eps * sign * np.asarray(directions[i]) if j == i else np.zeros((n,) + p.shape)
                  for j, n in enumerate(counts) for sign in (1.0, -1.0)]
        steps.append(np.concatenate(blocks))

    def run(primals, cotangents, steps, with_jvp=True):
        y, pull = jax.vjp(g, *primals)
        shifted = jax.vmap(lambda *step: g(*(p + s for p, s in zip(primals, step))))(*steps)
        if g_ref is not None:
            y_ref, pull_ref = jax.vjp(g_ref, *primals)
            return y, y_ref, jax.vmap(pull)(cotangents), jax.vmap(pull_ref)(cotangents), shifted
        # No reference: f's own JVPs along the directions, one primal at a time (consistency).
        jvps = tuple(jax.vmap(lambda u, i=i: jax.jvp(lambda p: g(*primals[:i], p, *primals[i + 1:]),
                                                     (primals[i],), (u,))[1])(jnp.asarray(d))
                     for i, d in enumerate(directions)) if with_jvp else (None,) * len(primals)
        return y, None, jax.vmap(pull)(cotangents), jvps, shifted

    try:
        y, y_ref, pulls, pulls_ref, shifted = run_once(run, primals, cotangents, tuple(steps))
    except TypeError as err:   # no reference and f is a jax.custom_vjp: no forward mode
        if g_ref is not None or "forward-mode" not in str(err):
            raise
        y, y_ref, pulls, pulls_ref, shifted = run_once(
            lambda *a: run(*a, with_jvp=False), primals, cotangents, tuple(steps))
    diffs, start = [], 0
    for n in counts:
        diffs.append((shifted[start:start + n] - shifted[start + n:start + 2 * n]) / (2 * eps))
        start += 2 * n
    return y, y_ref, pulls, pulls_ref, diffs


def check_dtype(f: Callable, args: Sequence[Any], dtype: Any = "float32", *,
                reference: Callable | None = None, argnums: int | Sequence[int] | None = None,
                rtol: float | None = None, n_projections: int = 4, raise_on_failure: bool = False,
                seed: int = 0, **kwargs: Any) -> Report:
    """``f``'s forward and VJP in ``dtype`` against the reference's in float64 at the same
    values (the inputs rounded to ``dtype`` once, then cast up exactly; ``reference`` is
    required unless ``f`` is one of jaxcnn's ops): ``n_projections`` random cotangents,
    compared in full. ``rtol`` defaults to ``tolerances.RTOL[dtype]``
    (float32 1e-5, float16 3e-3, bfloat16 1e-2). No finite differences (they need float64).

    A bias's gradient in bfloat16 is JAX's transpose of a broadcast, summed in bfloat16: it
    errs beyond ``RTOL["bfloat16"]`` (see ``jaxcnn.tolerances``); leave it out with ``argnums``
    or pass a wider ``rtol``."""
    reference = resolve_reference(f, reference)
    args = tuple(args)
    argnums = differentiable_argnums(args, argnums)
    check_options(1, 0.5, n_projections, 0)
    dtype = jnp.dtype(dtype)
    rtol = RTOL.get(dtype.name, RTOL["float32"]) if rtol is None else float(rtol)
    names = argument_names(f, len(args))
    with float64():
        low = tuple(jnp.asarray(a, dtype) if i in argnums else a for i, a in enumerate(args))
        high = tuple(a.astype(jnp.float64) if i in argnums else a for i, a in enumerate(low))
        g, g_ref = _flat(f, low, argnums, kwargs), _flat(reference, high, argnums, kwargs)
        primals, primals_ref = tuple(low[i] for i in argnums), tuple(high[i] for i in argnums)
        m = jax.eval_shape(g, *primals).shape[0]
        v_ref = np.random.default_rng(seed).standard_normal((n_projections, m)).astype(dtype)
        v_ref = jnp.asarray(v_ref).astype(jnp.float64)

        def run(primals, primals_ref):
            y, pull = jax.vjp(g, *primals)
            y_ref, pull_ref = jax.vjp(g_ref, *primals_ref)
            return y, y_ref, jax.vmap(pull)(v_ref.astype(y.dtype)), jax.vmap(pull_ref)(v_ref)
        y, y_ref, pulls, pulls_ref = run_once(run, primals, primals_ref)
    rows = [Comparison("output", 0, "forward", *max_errors(y, y_ref), None, None, rtol, None)]
    rows += [Comparison(names[i], 1, f"{n_projections} cotangents", *max_errors(a, b), None, None,
                        rtol, None) for i, a, b in zip(argnums, pulls, pulls_ref)]
    report = Report(getattr(f, "__name__", repr(f)), f"{dtype.name} vs float64 reference", tuple(rows))
    if raise_on_failure and not report.ok:
        raise GradcheckError("\n" + report.table())
    return report
