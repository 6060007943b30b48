"""Every op inside ``jax.shard_map``, with its default ``check_vma=True`` (values typed by the
mesh axes they vary along) and with ``check_vma=False``.

A data-parallel step on four devices: the batch split over mesh axis ``"data"``, the weights
replicated; each device differentiates the loss ``⟨op(block), c⟩`` of its block in reverse mode
(its own copy of the weights, whose gradients ``psum`` adds up; with ``check_vma=True`` also the
replicated weights themselves, whose gradient JAX sums itself, the transpose of the implicit
``pvary`` being a ``psum``) and in forward mode (``jax.jvp``). Reference: the unsharded op on
the global arrays; float64 to 1e-12, float32 (the native kernels) to 1e-5
(``jaxcnn.tolerances``). The lowering forms of ``jaxcnn._conv`` are each forced in turn
inside a checked ``shard_map``; ``jaxcnn.sharded``'s halo exchange runs in a checked one too.
The multi-device run has eight CPU devices (``multidevice``: conftest). ``check_vma`` exists
from JAX 0.6 on (0.4.30 has ``check_rep``): the checked cases skip there.
"""
from __future__ import annotations

import dataclasses
import importlib
from functools import cache, partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import jaxcnn
import jaxcnn.lax
from jaxcnn import sharded
from jaxcnn._conv import loops, native, rules
from jaxcnn._args import normalize_conv
from jaxcnn._compat import make_mesh, shard_map
from jaxcnn._conv.pieces import IMPLS
from helpers import TOL, assert_close, random_array, run_piece, sample

pytestmark = [pytest.mark.x64, pytest.mark.multidevice]
DATA = P("data")
VMA = hasattr(jax, "shard_map")
CHECKED = pytest.param(True, id="check_vma", marks=pytest.mark.skipif(
    not VMA, reason="jax.shard_map's check_vma (value types by mesh axis) is newer than this JAX"))
UNCHECKED = pytest.param(False, id="unchecked")


@cache
def _mesh() -> jax.sharding.Mesh:
    """Four devices along ``"data"`` (built at the first test: collecting this module on one
    device builds nothing)."""
    return make_mesh((4,), ("data",))


def _per_device(a: jax.Array) -> jax.Array:
    """Each device's own copy of a replicated array (typed as varying over ``"data"`` where the
    release has such types): its gradient is that device's part, for ``psum`` to add up."""
    pcast = getattr(jax.lax, "pcast", None)
    if pcast is not None:
        return pcast(a, ("data",), to="varying")
    pvary = getattr(jax.lax, "pvary", None)
    return a if pvary is None else pvary(a, ("data",))


# ----------------------------------------------------------------------------- the cases


@dataclasses.dataclass(frozen=True)
class Case:
    """``op(*split, *replicated)``: ``split`` operands' global shapes (the batch split over the
    devices), ``replicated`` operands' shapes; ``batch_out``: the result is split along the batch
    too (else it sums over the batch, a weight gradient: each device's part is ``psum``-ed)."""
    op: Callable[..., jax.Array]
    split: tuple[tuple[int, ...], ...]
    replicated: tuple[tuple[int, ...], ...]
    batch_out: bool = True
    dtype: Any = jnp.float64


X, W, B = (8, 3, 6, 6), (4, 3, 3, 3), (4,)       # global batch 8: 2 samples per device
Y = (8, 4, 3, 3)                                  # conv(x, w, stride=2, padding=1)
CONV = dict(stride=2, padding=1)


def _conv_cases(impl: str) -> dict[str, Case]:
    return {
        "conv": Case(lambda x, w, b: jaxcnn.conv(x, w, b, **CONV, impl=impl), (X,), (W, B)),
        "convolve": Case(lambda x, w: jaxcnn.convolve(x, w, padding=1, dilation=2, impl=impl),
                         (X,), (W,)),
        "conv_transpose": Case(lambda x, w, b: jaxcnn.conv_transpose(
            x, w, b, stride=2, padding=1, output_padding=1, impl=impl), ((8, 4, 3, 3),),
            ((4, 3, 3, 3), (3,))),
        "conv_input_grad": Case(lambda dy, w: jaxcnn.conv_input_grad(
            dy, w, (dy.shape[0],) + X[1:], **CONV, impl=impl), (Y,), (W,)),
        "conv_weight_grad": Case(lambda x, dy: jaxcnn.conv_weight_grad(x, dy, W, **CONV, impl=impl),
                                 (X, Y), (), batch_out=False),
    }


POOL_CASES = {
    "max_pool": Case(lambda x: jaxcnn.max_pool(x, 3, 2, 1), (X,), ()),
    "avg_pool": Case(lambda x: jaxcnn.avg_pool(x, 3, 2, 1, count_include_pad=False), (X,), ()),
    "global_avg_pool": Case(lambda x: jaxcnn.global_avg_pool(x, channels_last=True), (X,), ()),
    "group_norm": Case(lambda x, s, b: jaxcnn.group_norm(x, 3, s, b), ((8, 6, 5, 4),), ((6,), (6,))),
}
LAX_DN = ("NHWC", "HWIO", "NHWC")


def _lax_cases(impl: str) -> dict[str, Case]:
    return {
        "lax.conv_general_dilated": Case(lambda x, w: jaxcnn.lax.conv_general_dilated(
            x, w, (1, 2), ((1, 0), (2, 1)), lhs_dilation=(2, 1), rhs_dilation=(1, 2),
            dimension_numbers=LAX_DN, impl=impl), ((8, 5, 6, 3),), ((3, 2, 3, 4),)),
        "lax.conv_transpose": Case(lambda x, w: jaxcnn.lax.conv_transpose(
            x, w, (2, 2), "SAME", dimension_numbers=LAX_DN, impl=impl), ((8, 3, 4, 3),),
            ((3, 3, 3, 4),)),
    }


# Pairwise: every op meets both impls and both checks, every impl both checks.
CASES = [pytest.param(name, impl, check, id=f"{name}-{impl}-{'checked' if check else 'unchecked'}",
                      marks=CHECKED.marks if check else ())
         for i, impl in enumerate(("lax", "manual"))
         for j, name in enumerate([*_conv_cases(impl), *_lax_cases(impl)])
         for check in [(i + j) % 2 == 0]]
CASES += [pytest.param(name, None, *check.values, id=f"{name}-{check.id}", marks=check.marks)
          for name in POOL_CASES for check in (CHECKED, UNCHECKED)]


def _case(name: str, impl: str | None) -> Case:
    return POOL_CASES[name] if impl is None else {**_conv_cases(impl), **_lax_cases(impl)}[name]


# ----------------------------------------------------------------------------- the step


def _step(case: Case, check: bool) -> Callable:
    """Inside ``shard_map``: the value, the JVP's tangent, the gradients of the split operands
    (each device's block) and of the replicated ones (``psum`` of each device's copy; with
    ``check_vma`` also of the replicated operands as they are, summed by JAX)."""
    out_spec = DATA if case.batch_out else P()
    whole = (lambda a: a) if case.batch_out else partial(jax.lax.psum, axis_name="data")

    def body(split, replicated, c, tangents):
        def loss(split, replicated):
            return jnp.vdot(case.op(*split, *replicated), c)
        g_split, g_copies = jax.grad(loss, (0, 1))(split, [_per_device(r) for r in replicated])
        y, y_dot = jax.jvp(lambda s, r: case.op(*s, *r), (split, replicated), tangents)
        out = (whole(y), whole(y_dot), g_split, [jax.lax.psum(g, "data") for g in g_copies])
        return out + ((jax.grad(loss, 1)(split, replicated),) if check else ())

    n_split, n_rep = len(case.split), len(case.replicated)
    in_specs = ([DATA] * n_split, [P()] * n_rep, out_spec, ([DATA] * n_split, [P()] * n_rep))
    out_specs = (out_spec, out_spec, [DATA] * n_split, [P()] * n_rep) + (([P()] * n_rep,) * check)
    return jax.jit(shard_map(body, _mesh(), in_specs, out_specs, check=check))


def _unsharded(case: Case) -> Callable:
    @jax.jit
    def run(split, replicated, c, tangents):
        def loss(split, replicated):
            return jnp.vdot(case.op(*split, *replicated), c)
        g_split, g_rep = jax.grad(loss, (0, 1))(split, replicated)
        y, y_dot = jax.jvp(lambda s, r: case.op(*s, *r), (split, replicated), tangents)
        return y, y_dot, g_split, g_rep
    return run


def _operands(case: Case, rng: np.random.Generator):
    split = [random_array(rng, s, case.dtype) for s in case.split]
    replicated = [random_array(rng, s, case.dtype) for s in case.replicated]
    out = jax.eval_shape(case.op, *split, *replicated)
    c = random_array(rng, out.shape, case.dtype)
    tangents = ([random_array(rng, a.shape, case.dtype) for a in split],
                [random_array(rng, a.shape, case.dtype) for a in replicated])
    return split, replicated, c, tangents


def _assert_data_parallel(case: Case, check: bool, rng: np.random.Generator, what: str) -> None:
    operands = _operands(case, rng)
    got = _step(case, check)(*operands)
    y, y_dot, g_split, g_rep = _unsharded(case)(*operands)
    tol = TOL[jnp.dtype(case.dtype).name]
    assert_close(got[0], y, tol, f"{what}: value")
    assert_close(got[1], y_dot, tol, f"{what}: jvp")
    for i, (g, want) in enumerate(zip(got[2], g_split)):
        assert_close(g, want, tol, f"{what}: gradient of split operand {i}")
    for i, (g, want) in enumerate(zip(got[3], g_rep)):
        assert_close(g, want, tol, f"{what}: psum of the gradients of replicated operand {i}")
    for i, (g, want) in enumerate(zip(got[4] if check else (), g_rep)):
        assert_close(g, want, tol, f"{what}: gradient of replicated operand {i} (summed by JAX)")


@pytest.mark.parametrize("name,impl,check", sample(CASES, strength=1))   # each op, impl, check once
def test_data_parallel_step_matches_unsharded(name, impl, check, rng):
    _assert_data_parallel(_case(name, impl), check, rng, name)


@pytest.mark.skipif(not native.available(), reason="native kernels unavailable here")
@pytest.mark.parametrize("check", [CHECKED, UNCHECKED])
def test_native_kernels_data_parallel_step_matches_unsharded(check, rng):
    """float32, channels last, 16 channels: the native kernels compute every piece (custom calls
    run per shard inside ``shard_map``, its axes manual)."""
    v = native.vector_width()
    case = Case(lambda x, w, b: jaxcnn.conv(x, w, b, padding=1, channels_last=True),
                ((8, 5, 6, v),), ((3, 3, v, v), (v,)), dtype=jnp.float32)
    _assert_data_parallel(case, check, rng, "native conv")


@CHECKED.marks[0]
def test_hessian_vector_and_per_example_gradients_inside_checked_shard_map(rng):
    """Second order (``jax.jvp`` of ``jax.grad``: the rules' rules) and ``jax.vmap`` (the batching
    rules) inside a checked ``shard_map``, through conv, group norm and max pooling, against
    the unsharded program. Each device's copy of ``w`` (``_per_device``) keeps per-example
    gradients per device; the HVP of the replicated ``w`` is summed by JAX."""
    x, w, v = (random_array(rng, s) for s in ((8, 3, 6, 6), (4, 3, 3, 3), (4, 3, 3, 3)))

    def loss(w, x):
        y = jaxcnn.conv(x, w, padding=1, impl="manual")
        return jnp.sum(jnp.sin(jaxcnn.max_pool(jaxcnn.group_norm(y, 2), 2)))

    def hvp(w, x):
        return jax.jvp(lambda w: jax.grad(loss)(w, x), (w,), (v,))[1]

    def per_example(w, x, copy=lambda w: w):
        return jax.vmap(lambda xi: jax.grad(loss)(copy(w), xi[None]))(x)

    h, g = jax.jit(shard_map(lambda w, x: (hvp(w, x), per_example(w, x, _per_device)), _mesh(),
                             (P(), DATA), (P(), DATA), check=True))(w, x)
    h_ref, g_ref = jax.jit(lambda w, x: (hvp(w, x), per_example(w, x)))(w, x)
    assert_close(h, h_ref, TOL["float64"], "Hessian-vector product")
    assert_close(g, g_ref, TOL["float64"], "per-example gradients")


# ----------------------------------------------------------------------------- every form


def _form_cases() -> list:
    """One config of ``test_conv_rules``' table per form (each form computes one piece), the
    manual pieces, the two chunked tap loops and, where they run, the native kernels."""
    from test_conv_rules import CONFIGS, FORMS
    cases = [(form, piece, names[0], i % 2 == 1)
             for i, (form, (piece, names)) in enumerate(FORMS.items())]
    cases += [(f"manual_{piece}", piece, "im2col_groups", True)
              for piece in ("conv", "input_grad", "weight_grad")]
    cases += [("batch_chunked_loop_conv", "conv", "many_samples_2d", False),
              ("row_chunked_loop_conv", "conv", "fold_3d_strided_dilated", True)]
    cases += [(f"native_{piece}", piece, "wide_2d", True)
              for piece in ("conv", "input_grad", "weight_grad")]
    return [pytest.param(form, piece, CONFIGS[name], cl, id=f"{form}-{name}") for form, piece, name, cl in cases]


def _form(form: str) -> Callable:
    if form == "batch_chunked_loop_conv":
        return partial(loops.loop_conv, batch_chunks=2)
    if form == "row_chunked_loop_conv":
        return partial(loops.loop_conv, row_chunks=3)      # the 3 output rows of its config
    if form.startswith("native_"):
        return native.FORMS[form[len("native_"):]]
    return {entry.name: entry.function for entry in rules.FORMS}[form]


@CHECKED.marks[0]
@pytest.mark.parametrize("form,piece,config,channels_last", sample(   # each family of forms once by default
    _form_cases(), key=lambda p: p.values[0].split("_")[0], strength=1))
def test_every_form_lowers_inside_checked_shard_map(form, piece, config, channels_last,
                                                    monkeypatch, rng):
    """Each form forced as the rule's choice for its piece, run by the public op inside a
    checked ``shard_map`` (batch split, kernel replicated), against the unsharded lax piece: the
    tap loops' carries and the custom calls see per-shard values typed as varying."""
    spatial, kernel, c, o, kwargs = config
    dtype = jnp.float64
    if form.startswith("native_"):
        if not native.available():
            pytest.skip("native kernels unavailable here")
        c = o = native.vector_width()
        dtype = jnp.float32
    groups = kwargs.get("groups", 1)
    x_shape = (8, *spatial, c) if channels_last else (8, c, *spatial)
    w_shape = (*kernel, c // groups, o) if channels_last else (o, c // groups, *kernel)
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    kwargs = dict(kwargs, channels_last=channels_last)
    dy = random_array(rng, jaxcnn.conv(x, w, **kwargs).shape, dtype)
    spec = normalize_conv(x, w, None, padding_mode="zeros", impl="lax", **{
        "stride": 1, "padding": 0, "dilation": 1, "groups": 1, **kwargs}).spec

    chosen = _form(form)
    conv_module = importlib.import_module("jaxcnn.conv")     # the module, not jaxcnn.conv the op
    original = conv_module.choose
    monkeypatch.setattr(conv_module, "choose", lambda p, *args: chosen if p == piece else original(p, *args))
    ops = {"conv": (lambda x, w, dy: jaxcnn.conv(x, w, **kwargs), DATA),
           "input_grad": (lambda x, w, dy: jaxcnn.conv_input_grad(dy, w, x.shape, **kwargs), DATA),
           "weight_grad": (lambda x, w, dy: jax.lax.psum(
               jaxcnn.conv_weight_grad(x, dy, w.shape, **kwargs), "data"), P())}
    op, out_spec = ops[piece]
    got = jax.jit(shard_map(op, _mesh(), (DATA, P(), DATA), out_spec, check=True))(x, w, dy)
    want = run_piece(IMPLS["lax"][rules.PIECES.index(piece)], piece, x, w, dy, spec)
    assert_close(got, want, TOL[jnp.dtype(dtype).name], f"{form} in shard_map")


# ----------------------------------------------------------------------------- jaxcnn.sharded

SPATIAL = P(None, None, "data")


@CHECKED.marks[0]
@pytest.mark.parametrize("name,block_op,op,operands", [
    ("conv-circular-manual", partial(sharded.conv, padding=1, padding_mode="circular", impl="manual"),
     partial(jaxcnn.conv, padding=1, padding_mode="circular", impl="manual"), ((4, 3, 3), (4,))),
    ("conv-reflect-strided", partial(sharded.conv, stride=2, padding=1, padding_mode="reflect"),
     partial(jaxcnn.conv, stride=2, padding=1, padding_mode="reflect"), ((4, 3, 3),)),
    ("max_pool", partial(sharded.max_pool, window=3, stride=2, padding=1),
     partial(jaxcnn.max_pool, window=3, stride=2, padding=1), ()),
    ("avg_pool", partial(sharded.avg_pool, window=3, stride=2, padding=1, count_include_pad=False),
     partial(jaxcnn.avg_pool, window=3, stride=2, padding=1, count_include_pad=False), ()),
])
def test_sharded_ops_inside_checked_shard_map(name, block_op, op, operands, rng):
    """``jaxcnn.sharded``'s halo exchange in a user's checked ``shard_map``, the length split
    over the devices: value and VJP (the replicated weights' gradients summed by JAX) against
    the unsharded op."""
    x = random_array(rng, (2, 3, 16))
    weights = [random_array(rng, s) for s in operands]
    f = shard_map(lambda x, *ws: block_op(x, *ws, axis_name="data"), _mesh(),
                  (SPATIAL, *[P()] * len(weights)), SPATIAL, check=True)
    c = random_array(rng, jax.eval_shape(op, x, *weights).shape)

    def value_and_vjp(f, x, weights, c):
        y, vjp = jax.vjp(f, x, *weights)
        return y, vjp(c)
    y, grads = jax.jit(partial(value_and_vjp, f))(x, weights, c)
    y_ref, grads_ref = jax.jit(partial(value_and_vjp, op))(x, weights, c)
    assert_close(y, y_ref, TOL["float64"], f"{name}: value")
    for i, (g, g_ref) in enumerate(zip(grads, grads_ref)):
        assert_close(g, g_ref, TOL["float64"], f"{name}: gradient of argument {i}")
