"""One fuzz configuration, run three or four ways and compared in float64.

- **jaxcnn**: the op, its VJP for a random cotangent (every differentiable argument) and, on
  a sample, the second order (the gradient of ``⟨VJP, v⟩``), all under ``jax.jit``.
- **PyTorch** (``torch_side``): the same value and gradients from the documented semantics.
- **jaxcnn.reference** (plain lax, JAX autodiff): the same, second order included, except
  where ``jax.grad`` of lax itself would abort inside XLA: every lowered program is read for
  such convolutions before it is compiled (``_conv.xla_guard.aborting_convolutions``).
- **the lowering forms** (conv and conv_transpose in zeros mode): every form that applies to
  the shapes, and the form ``_conv.rules.choose`` picks, against the one-lax-call piece.

Refusals must agree: what PyTorch refuses jaxcnn refuses with a ``ValueError``/``TypeError``
whose message starts with the argument's name, and the other way round.
"""
from __future__ import annotations

import re
from functools import partial
from typing import Any, Callable

import numpy as np

from jaxcnn.fuzz import torch_side
from jaxcnn.fuzz.arrays import array_shapes, op_options, output_kind, relayout, relayout_shape
from jaxcnn.fuzz.configs import FuzzCase
from jaxcnn.tolerances import VJP_RTOL

TOLERANCE = VJP_RTOL   # float64 across libraries: the same sums in other orders (jaxcnn.tolerances)
ARGUMENT_NAMES = ("x", "w", "b", "dy", "input_shape", "weight_shape", "stride", "padding",
                  "dilation", "groups", "padding_mode", "output_padding", "window", "ceil_mode",
                  "count_include_pad", "channels_last", "impl", "scale", "bias", "eps",
                  # jaxcnn.lax (lax's own argument names) and jaxcnn.sharded
                  "lhs", "rhs", "window_strides", "lhs_dilation", "rhs_dilation",
                  "dimension_numbers", "feature_group_count", "batch_group_count", "precision",
                  "preferred_element_type", "strides", "transpose_kernel",
                  "use_consistent_padding", "axis_name", "spatial_axis", "mesh")


class Refused(Exception):
    """The library refused the configuration (a named error, or PyTorch's)."""


class WouldAbort(Exception):
    """The lowered program holds a convolution XLA's compiler aborts on (``xla_guard``)."""


def _compiled(function: Callable, *args):
    """``jax.jit(function)`` compiled for ``args``, after checking its lowered program for
    convolutions XLA would abort on (compiling one would kill this process)."""
    return _lowered_and_compiled(function, *args)[1]


def _lowered_and_compiled(function: Callable, *args) -> tuple[str, Any]:
    """The text of ``jax.jit(function)`` lowered for ``args`` and its compiled program."""
    import jax
    from jaxcnn._conv.xla_guard import aborting_convolutions
    lowered = jax.jit(function).lower(*args)
    text = lowered.as_text()
    found = aborting_convolutions(text)
    if found:
        raise WouldAbort(found[0][:600])
    return text, lowered.compile()


def _typed_like(ct: Any, y: Any) -> Any:
    """``ct`` sharded as ``y``'s type says, where the release types values by their sharding
    (an Explicit mesh): ``jax.vjp`` takes only a cotangent of the output's own type."""
    import jax
    typeof = getattr(jax, "typeof", None)
    spec = tuple(getattr(typeof(y).sharding, "spec", ())) if typeof is not None else ()
    if all(s is None for s in spec):
        return ct
    return jax.sharding.reshard(ct, jax.sharding.PartitionSpec(*spec))


def run_function(f: Callable, args: list, cotangent: Callable, tangents: list | None = None,
                 compiled_text: bool = False, cotangent_argument: bool = False
                 ) -> tuple[list[np.ndarray], str]:
    """``f``'s value and VJP for ``cotangent(out)`` (``out`` its ShapeDtypeStruct), and with
    ``tangents`` the second order (the gradient of ``⟨VJP, tangents⟩``), under ``jax.jit``, in
    ``f``'s own layout; and the lowered text of the first order, with ``compiled_text`` that of
    its compiled program after it (where the SPMD partitioner writes what a
    ``custom_partitioning`` op runs per shard). The cotangent is a constant of the program, or
    with ``cotangent_argument`` an argument, sharded as ``cotangent`` placed it (a constant is
    whole on every device: the input gradient would read every sample everywhere). A
    ``ValueError`` or ``TypeError`` from ``f`` on abstract values is a refusal."""
    import jax
    import jax.numpy as jnp
    try:
        out = jax.eval_shape(f, *args)
    except (ValueError, TypeError) as error:
        raise Refused(f"{error}") from error
    ct = cotangent(out)

    def vjp(*a):
        y, pull = jax.vjp(f, *a)
        return y, pull(_typed_like(ct, y))

    def vjp_with(*a_and_ct):
        y, pull = jax.vjp(f, *a_and_ct[:-1])
        return y, pull(_typed_like(a_and_ct[-1], y))

    first, inputs = (vjp_with, [*args, ct]) if cotangent_argument else (vjp, args)
    text, compiled = _lowered_and_compiled(first, *inputs)
    if compiled_text:
        text += "\n" + compiled.as_text()
    y, grads = compiled(*inputs)
    results = [np.asarray(y)] + [np.asarray(g) for g in grads]
    if tangents is not None:
        h = lambda *a: jnp.real(sum(jnp.sum(jnp.conj(_typed_like(t, g)) * g)
                                    for g, t in zip(vjp(*a)[1], tangents)))
        second = _compiled(jax.grad(h, argnums=tuple(range(len(args)))), *args)(*args)
        results += [np.asarray(g) for g in second]
    return results, text


# ----------------------------------------------------------------------------- the runs


def bound_op(op: Callable, c: FuzzCase, options: dict) -> Callable:
    """``op`` as a function of its arrays alone: group_norm takes ``groups`` second, between
    ``x`` and its arrays ``scale, bias``."""
    if c.op != "group_norm":
        return lambda *arrays: op(*arrays, **options)
    options = dict(options)
    groups = options.pop("groups")
    return lambda x, *affine: op(x, groups, *affine, **options)


def run_jax(module: Any, c: FuzzCase, arrays: list[np.ndarray], kinds: list[str],
            cotangent: Callable, tangents: Callable) -> list[np.ndarray]:
    """Value, VJP and (on a sample) second order of ``module.<op>``, channels first."""
    import jax
    import jax.numpy as jnp
    op = getattr(module, c.op)
    options = op_options(c)
    args = [jnp.asarray(relayout(c, a, k, True)) for a, k in zip(arrays, kinds)]
    f = bound_op(op, c, options)
    try:
        out = jax.eval_shape(f, *args)
    except (ValueError, TypeError) as error:
        raise Refused(str(error)) from error
    out_kind = output_kind(c)
    ct = jnp.asarray(relayout(c, cotangent(relayout_shape(c, out.shape, out_kind, False)), out_kind, True))

    def vjp(*a):
        y, pull = jax.vjp(f, *a)
        return y, pull(ct)

    y, grads = _compiled(vjp, *args)(*args)
    results = [relayout(c, np.asarray(y), out_kind, False)]
    results += [relayout(c, np.asarray(g), k, False) for g, k in zip(grads, kinds)]
    if c.second_order:
        v = [jnp.asarray(relayout(c, t, k, True)) for t, k in zip(tangents(arrays), kinds)]
        h = lambda *a: sum(jnp.vdot(g, t) for g, t in zip(vjp(*a)[1], v))
        second = _compiled(jax.grad(h, argnums=tuple(range(len(args)))), *args)(*args)
        results += [relayout(c, np.asarray(g), k, False) for g, k in zip(second, kinds)]
    return results


def run_torch(c: FuzzCase, arrays: list[np.ndarray], cotangent: Callable, tangents: Callable) -> list[np.ndarray]:
    import torch
    op = torch_side.OPS[c.op]
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    try:
        y = op(torch, *_torch_arrays(c, tensors), c)
    except (RuntimeError, ValueError, IndexError) as error:
        raise Refused(str(error)) from error
    ct = torch.tensor(cotangent(tuple(y.shape)))
    grads = torch.autograd.grad(y, tensors, ct, create_graph=c.second_order,
                                allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, tensors)]
    results = [y.detach().numpy()] + [g.detach().numpy() for g in grads]
    if c.second_order:
        v = [torch.tensor(t) for t in tangents(arrays)]
        h = sum((g * t).sum() for g, t in zip(grads, v) if g.requires_grad)
        if isinstance(h, int):   # no gradient depends on the inputs: a zero second order
            second = [torch.zeros_like(t) for t in tensors]
        else:
            second = torch.autograd.grad(h, tensors, allow_unused=True)
            second = [torch.zeros_like(t) if s is None else s for s, t in zip(second, tensors)]
        results += [s.detach().numpy() for s in second]
    return results


def _torch_arrays(c: FuzzCase, tensors: list) -> list:
    """``torch_side``'s array arguments: ``None`` for an absent bias, scale or bias."""
    if c.op in ("conv", "convolve", "conv_transpose"):
        return [tensors[0], tensors[1], tensors[2] if c.bias else None]
    if c.op == "group_norm" and not c.affine:
        return [tensors[0], None, None]
    return tensors


def attempt(run: Callable) -> tuple[str, Any]:
    try:
        return "ok", run()
    except Refused as refusal:
        return "refused", str(refusal)[:500]


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    same = (a == b) | (np.isnan(a) & np.isnan(b))     # equal infinities and NaNs agree
    if not np.all(same | (np.isfinite(a) & np.isfinite(b))):
        return float("inf")
    finite = np.where(same, 0.0, np.abs(np.where(same, 0.0, a) - np.where(same, 0.0, b)))
    scale = np.abs(b[np.isfinite(b)])
    return float(np.max(finite)) / max(float(scale.max(initial=0.0)), np.finfo(np.float64).tiny)


def _named(message: str) -> bool:
    """A jaxcnn refusal names its argument first: ``"padding: expected ..."``."""
    match = re.match(r"(\w+):", message)
    return bool(match) and match.group(1) in ARGUMENT_NAMES


# ----------------------------------------------------------------------------- the check


def compare(errors: dict, name: str, ours: list, theirs: list, error=relative_error) -> None:
    labels = ["y"] + [f"d{i}" for i in range(len(ours) - 1)]
    for label, a, b in zip(labels, ours, theirs):
        errors[f"{name}:{label}"] = error(a, b)
    if len(ours) != len(theirs):
        errors[f"{name}:count"] = float("inf")


def verdict(ours: tuple[str, Any], others: dict[str, tuple[str, Any]], tolerance: float,
            compare: Callable = compare, expected_refusal: str | None = None) -> dict:
    """``check``'s classification for the newer ops, where every side is a JAX function:
    ``ours`` and each of ``others`` are ``("ok", arrays)`` or ``("refused", message)``. A
    refusal of ours alone is ``documented`` where ``expected_refusal`` (why) says so."""
    result: dict = {"status": "ok", "errors": {}}
    if ours[0] == "refused":
        result["refusal"] = ours[1]
        if not _named(ours[1]):
            result["status"] = "unnamed"
    if expected_refusal:
        result["differences"] = [expected_refusal]
    for name, (state, value) in others.items():
        if state != ours[0]:
            documented = expected_refusal is not None and ours[0] == "refused"
            result["status"] = "documented" if documented else "one_sided"
            result["detail"] = f"jaxcnn {ours[0]}, {name} {state}: {value if state == 'refused' else ours[1]}"[:800]
        elif state == "ok":
            compare(result["errors"], name, ours[1], value)
    if expected_refusal is not None and ours[0] == "ok" and result["status"] == "ok":
        result["status"] = "one_sided"
        result["detail"] = f"expected a refusal ({expected_refusal}); jaxcnn accepted it"
    return _settle(result, ours[0] == "refused", tolerance)


def _settle(result: dict, refused: bool, tolerance: float) -> dict:
    """Where nothing failed yet: ``refused`` (by every side) or ``mismatch`` past the tolerance."""
    if result["status"] == "ok":
        if refused:
            result["status"] = "refused"
        elif any(not e <= tolerance for e in result["errors"].values()):
            result["status"] = "mismatch"
    result["worst"] = max(result["errors"].values(), default=0.0)
    return result


def check(config: dict | FuzzCase) -> dict:
    """Run one configuration (a case, or its JSON form as a worker reads it) every way;
    ``status`` is ``ok``, ``refused`` (by all, with a named error), ``documented`` (refused by
    one side, as ``torch_side.DIFFERENCES`` says), ``mismatch``, ``one_sided`` or ``unnamed``
    (a refusal that names no argument); the newer families (``configs.FAMILIES``) are checked
    by their own modules, alike."""
    from jaxcnn.fuzz import configs
    c = FuzzCase.of(config)
    if c.op in configs.FAMILIES:
        return configs.family(c.op).check(c)
    import jax
    jax.config.update("jax_enable_x64", True)
    import jaxcnn
    from jaxcnn import reference
    kinds, shapes = zip(*array_shapes(c))
    rng = np.random.default_rng(c.seed)
    arrays = [rng.standard_normal(s) for s in shapes]
    cotangent = lambda shape: np.random.default_rng(c.seed + 1).standard_normal(shape)
    tangents = lambda arrays: [np.random.default_rng(c.seed + 2 + i).standard_normal(a.shape)
                               for i, a in enumerate(arrays)]
    try:
        ours = attempt(lambda: run_jax(jaxcnn, c, arrays, kinds, cotangent, tangents))
    except WouldAbort as abort:
        return {"status": "error", "detail": f"jaxcnn emits a convolution XLA aborts on: {abort}"}
    known = torch_side.differences(c)
    others = {}
    if torch_side.applies(c) and not any(torch_side.DIFFERENCES[k]["skip"] for k in known):
        others["torch"] = attempt(lambda: run_torch(c, arrays, cotangent, tangents))
    skipped = False
    try:
        others["reference"] = attempt(lambda: run_jax(reference, c, arrays, kinds, cotangent, tangents))
    except WouldAbort:
        skipped = True      # jax.grad of plain lax would abort inside XLA: PyTorch alone
    result: dict = {"status": "ok", "errors": {}, "reference_skipped": skipped}
    if ours[0] == "refused":
        result["refusal"] = ours[1]
        if not _named(ours[1]):
            result["status"] = "unnamed"
    if known:
        result["differences"] = known
    for name, (state, value) in others.items():
        if state != ours[0]:
            refuser = "torch" if state == "refused" else "jaxcnn"
            documented = name == "torch" and any(
                torch_side.DIFFERENCES[k]["refused_by"] == refuser for k in known)
            result["status"] = "documented" if documented else "one_sided"
            result["detail"] = f"jaxcnn {ours[0]}, {name} {state}: {value if state == 'refused' else ours[1]}"[:800]
        elif state == "ok":
            compare(result["errors"], name, ours[1], value)
    if ours[0] == "ok" and c.op in ("conv", "conv_transpose") and c.padding_mode == "zeros":
        _compare_forms(result["errors"], c, rng)
    if known and ours[0] == "refused" and "torch" not in others:
        result["status"] = "documented"    # PyTorch not run (memory-unsafe there)
    return _settle(result, ours[0] == "refused", TOLERANCE)


# ----------------------------------------------------------------------------- the forms


def _compare_forms(errors: dict, c: FuzzCase, rng: np.random.Generator) -> None:
    """Every applicable lowering form of the three pieces against the one-lax-call piece."""
    import jax
    import jax.numpy as jnp
    from jaxcnn._conv import pieces as impls
    from jaxcnn._conv import rules as forms
    spec, in_shape, w_shape = _core(c)
    lax_conv, lax_input_grad, lax_weight_grad = impls.IMPLS["lax"]
    c_per_group = in_shape[spec.channel_axis()] // spec.groups
    candidates = {"conv": {"manual": impls.manual_conv, "im2col": forms.im2col_conv},
                  "input_grad": {"manual": impls.manual_input_grad},
                  "weight_grad": {"manual": impls.manual_weight_grad, "im2col": forms.im2col_weight_grad}}
    if spec.n == 3 and spec.groups == 1:
        candidates["conv"]["fold_depth"] = forms.fold_depth_conv
        candidates["input_grad"]["fold_depth"] = forms.fold_depth_input_grad
        candidates["conv"]["depth_tap"] = forms.depth_tap_conv
        candidates["input_grad"]["depth_tap"] = forms.depth_tap_input_grad
    if spec.groups == 1:
        candidates["weight_grad"]["sample_batched"] = forms.sample_batched_weight_grad
    if c_per_group == 1:
        candidates["weight_grad"]["depthwise"] = forms.depthwise_weight_grad
    for piece in forms.PIECES:
        for impl in ("lax", "manual"):
            candidates[piece][f"chosen_{impl}"] = forms.choose(piece, impl, spec, in_shape, w_shape, "cpu")
    x = jnp.asarray(rng.standard_normal(in_shape))
    w = jnp.asarray(rng.standard_normal(w_shape))
    dy = jnp.asarray(rng.standard_normal(jax.eval_shape(partial(lax_conv, spec=spec), x, w).shape))
    calls = {"conv": lambda f: f(x, w, spec), "input_grad": lambda f: f(dy, w, spec, in_shape),
             "weight_grad": lambda f: f(x, dy, spec, w_shape)}
    baseline = {"conv": lax_conv, "input_grad": lax_input_grad, "weight_grad": lax_weight_grad}

    def everything():
        return {piece: (calls[piece](baseline[piece]),
                        {name: calls[piece](f) for name, f in found.items()})
                for piece, found in candidates.items()}

    if 0 in in_shape or 0 in dy.shape:
        return      # the primitives return zeros before any form runs
    for piece, (expected, got) in jax.jit(everything)().items():
        for name, value in got.items():
            errors[f"form:{piece}:{name}"] = relative_error(np.asarray(value), np.asarray(expected))


def _core(c: FuzzCase):
    """The zero-padded core conv of a conv or conv_transpose configuration: its spec, the
    shape of its input and of its kernel (in jaxcnn's layout)."""
    import jax
    from jaxcnn._args import normalize_conv, normalize_conv_transpose
    options = op_options(c)
    options.pop("impl")
    kinds, shapes = zip(*array_shapes(c))
    structs = [jax.ShapeDtypeStruct(relayout_shape(c, s, k), np.float64) for k, s in zip(kinds, shapes)]
    b = structs[2] if c.bias else None
    if c.op == "conv_transpose":
        args = normalize_conv_transpose(structs[0], structs[1], b, impl="lax", **options)
        return args.spec, args.core_shape, structs[1].shape
    args = normalize_conv(structs[0], structs[1], b, impl="lax", **options)
    return args.spec, structs[0].shape, structs[1].shape
