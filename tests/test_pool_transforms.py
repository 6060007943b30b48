"""Forward mode, higher orders and vmap of jaxcnn/pool.py's primitives.

References: JAX autodiff (forward and reverse) of ``jaxcnn.reference``'s plain ``lax`` pooling on
continuous random data (no ties), and, for max pooling on data with ties and NaNs, values worked
out in the test from a numpy transcription of PyTorch's scan: JAX's own derivative of
``reduce_window(max)`` does not pick the first maximum (nor the NaN) of a window, so the
reference's autodiff cannot be the oracle there. Float64, ≤ 1e-10 relative (``VJP_TOL``).
"""
from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import reference
from helpers import VJP_TOL, assert_close, primitive_names, product, random_array, sample, vdot
from test_pool import Case, from_layout, pool_pair, to_layout

pytestmark = pytest.mark.x64

# Small shapes: jax.hessian builds an |x| × |x| matrix.
CASES = {  # name: (kind, case, count_include_pad)
    "max_1d_pad": ("max", Case((2, 2, 7), (3,), (2,), 1), True),
    "max_2d_dilation_ceil": ("max", Case((1, 2, 6, 5), (2, 2), (2, 1), 1, (2, 1), True), True),
    "max_3d": ("max", Case((1, 2, 4, 3, 4), (2, 2, 2), (2, 1, 2), (1, 0, 1)), True),
    "avg_1d_exclude_pad": ("avg", Case((2, 2, 7), (3,), (2,), 1), False),
    "avg_2d_ceil_overhang": ("avg", Case((1, 2, 6, 5), (2, 3), (2, 2), 1, ceil_mode=True), True),
    "avg_2d_tiled": ("avg", Case((1, 2, 4, 6), (2, 3)), True),
    "avg_3d": ("avg", Case((1, 2, 4, 3, 4), (2, 2, 3), (2, 1, 2), (1, 0, 1)), False),
    "global_1d": ("global", Case((2, 3, 5), (1,)), True),
    "global_2d": ("global", Case((2, 2, 3, 4), (1, 1)), True),
    "global_3d": ("global", Case((1, 2, 3, 2, 3), (1, 1, 1)), True),
}
LAYOUTS = {"channels_first": False, "channels_last": True}


def pair(kind, case, channels_last, count_include_pad=True):
    """``(jaxcnn op, reference op)`` as functions of x."""
    if kind == "global":
        return (partial(jaxcnn.global_avg_pool, channels_last=channels_last),
                partial(reference.global_avg_pool, channels_last=channels_last))
    return pool_pair(kind, case, channels_last, count_include_pad)


def cases():
    return [pytest.param(*CASES[name], channels_last, id=f"{name}-{layout}")
            for name, (layout, channels_last) in itertools.product(CASES, LAYOUTS.items())]


@partial(jax.jit, static_argnums=0)
def forward_mode(f, x, t, u, c):
    """``jax.jvp`` along ``t``; ``jax.linearize`` applied to ``t`` and ``u``; ``jax.jacfwd``;
    ``jax.hessian`` of ``⟨c, f(x)³⟩`` (forward over reverse); one compiled call."""
    y, y_dot = jax.jvp(f, (x,), (t,))
    y_lin, f_lin = jax.linearize(f, x)
    hessian = jax.hessian(lambda z: jnp.sum(c * f(z) ** 3))(x)
    return y, y_dot, y_lin, f_lin(t), f_lin(u), jax.jacfwd(f)(x), hessian


NAMES = ("jvp primal", "jvp tangent", "linearize primal", "linearize(t)", "linearize(u)",
         "jacfwd", "hessian")


# The default tier: each kind, rank and layout once; the full tier every case in both layouts.
@pytest.mark.parametrize("kind, case, count_include_pad, channels_last", sample(
    cases(), key=lambda p: (p.values[0], p.values[1].n, p.values[3]), strength=1))
def test_forward_mode_matches_reference(kind, case, count_include_pad, channels_last, rng):
    op, ref = pair(kind, case, channels_last, count_include_pad)
    x, t, u = (to_layout(random_array(rng, case.shape), channels_last) for _ in range(3))
    c = random_array(rng, jax.eval_shape(op, x).shape)
    ours, theirs = forward_mode(op, x, t, u, c), forward_mode(ref, x, t, u, c)
    for name, a, b in zip(NAMES, ours, theirs):
        assert_close(a, b, VJP_TOL, name)


@pytest.mark.parametrize("kind, case, count_include_pad, channels_last",
                         [p for p in cases() if p.id.endswith("channels_first")])
def test_jvp_and_vjp_are_adjoint(kind, case, count_include_pad, channels_last, rng):
    # ⟨c, J t⟩ = ⟨Jᵀ c, t⟩: the tangent map and the transpose JAX runs for jax.grad agree.
    op, _ = pair(kind, case, channels_last, count_include_pad)
    x, t = random_array(rng, case.shape), random_array(rng, case.shape)
    y, y_dot = jax.jvp(op, (x,), (t,))
    c = random_array(rng, y.shape)
    assert_close(vdot(c, y_dot), vdot(jax.vjp(op, x)[1](c)[0], t), VJP_TOL, "<c, Jt> vs <J'c, t>")


# ----------------------------------------------------------------------------- ties and NaNs


def torch_argmax(x, case):
    """For channels-first ``x``, the flat index into ``x`` of each window's argmax by
    PyTorch's scan (real taps in row-major order; replace when ``value > max or isnan``),
    written out in numpy loops, independently of jaxcnn."""
    x = np.asarray(x)
    n = case.n
    stride = case.stride or case.window
    pads, dils = np.broadcast_to(case.padding, (n,)), np.broadcast_to(case.dilation, (n,))
    y_shape = jax.eval_shape(lambda z: jaxcnn.max_pool(z, **case.max_kwargs()),
                             jax.ShapeDtypeStruct(x.shape, x.dtype)).shape
    argmax = np.zeros(y_shape, dtype=np.int64)
    for index in np.ndindex(*y_shape):
        best, best_at = None, None
        for tap in np.ndindex(*case.window):
            at = [i * s + k * d - p for i, s, k, d, p in zip(index[2:], stride, tap, dils, pads)]
            if not all(0 <= a < size for a, size in zip(at, x.shape[2:])):
                continue
            value = x[index[:2] + tuple(at)]
            if best is None or value > best or np.isnan(value):
                best, best_at = value, index[:2] + tuple(at)
        argmax[index] = np.ravel_multi_index(best_at, x.shape)
    return argmax


NAN = float("nan")


def with_ties_and_nans(rng, shape, nans):
    """Small integers (many ties in every window) and ``nans`` NaNs at random places."""
    x = rng.integers(0, 3, shape).astype(np.float64)
    x.ravel()[rng.choice(x.size, nans, replace=False)] = np.nan
    return x


TIE_CASES = {
    "1d": Case((2, 2, 9), (3,), (1,), 1),
    "2d_dilation": Case((1, 2, 6, 5), (3, 2), (1, 2), 1, (2, 1), True),
    "3d": Case((1, 2, 4, 3, 4), (2, 2, 2), (1, 1, 2), (1, 0, 1)),
}


@pytest.mark.parametrize("name, nans, channels_last", sample(   # pairwise in the default tier
    product(list(TIE_CASES), {"ties": 0, "ties_and_nans": 3}, LAYOUTS)))
def test_max_pool_forward_mode_at_ties_and_nans(name, nans, channels_last, rng):
    # The tangent map is the one-hot matrix J[i, a[i]] = 1 at PyTorch's argmax a; the Hessian
    # of Σ f(x)² is Σ_i 2 e_a[i] e_a[i]ᵀ = 2 JᵀJ (no NaN: the NaN values never multiply the
    # tangents), forward over reverse (jax.hessian) and reverse over reverse alike.
    case = TIE_CASES[name]
    x = with_ties_and_nans(rng, case.shape, nans)
    argmax = torch_argmax(x, case).ravel()
    jac = np.zeros((argmax.size, x.size))
    jac[np.arange(argmax.size), argmax] = 1.0
    hessian = 2.0 * jac.T @ jac

    op = pool_pair("max", case, channels_last)[0]
    t = random_array(rng, case.shape)
    ops = dict(jvp=lambda z, v: jax.jvp(op, (z,), (v,))[1],
               linearize=lambda z, v: jax.linearize(op, z)[1](v),
               jacfwd=lambda z, v: jax.jacfwd(op)(z),
               jacrev=lambda z, v: jax.jacrev(op)(z),
               hessian=lambda z, v: jax.hessian(lambda w: jnp.sum(op(w) ** 2))(z),
               hessian_rev=lambda z, v: jax.jacrev(jax.grad(lambda w: jnp.sum(op(w) ** 2)))(z))
    got = jax.jit(lambda z, v: {k: f(z, v) for k, f in ops.items()})(
        to_layout(jnp.asarray(x), channels_last), to_layout(t, channels_last))

    for key in ("jvp", "linearize"):
        tangent = np.asarray(from_layout(got[key], channels_last)).ravel()
        np.testing.assert_array_equal(tangent, np.asarray(t).ravel()[argmax], err_msg=key)
    for key in ("jacfwd", "jacrev"):
        np.testing.assert_array_equal(as_matrix(got[key], x.ndim, channels_last), jac, err_msg=key)
    for key in ("hessian", "hessian_rev"):
        np.testing.assert_array_equal(as_matrix(got[key], x.ndim, channels_last), hessian,
                                      err_msg=key)


def as_matrix(m, ndim, channels_last):
    """A Jacobian (output axes, then input axes; each ``ndim`` long, in the layout) as a matrix
    whose rows and columns are flattened in channels-first order."""
    def channels_first(offset):
        return [offset, offset + ndim - 1] + [offset + i for i in range(1, ndim - 1)]
    m = np.asarray(m)
    if channels_last:
        m = m.transpose(channels_first(0) + channels_first(ndim))
    return m.reshape(int(np.prod(m.shape[:ndim])), -1)


@pytest.mark.parametrize("values, kwargs, ours, theirs", [
    # dilation 2 reads x[0], x[2], x[4] = 2, 2, 1: the reference's jnp.max averages
    # the tied samples' tangents (1 + 3) / 2
    ([2.0, 0.0, 2.0, 0.0, 1.0], dict(window=3, stride=1, dilation=2), 1.0, 2.0),
    # a NaN first, then 5, 2, 7: the reference's reduce_window sends the tangent to the 7
    ([NAN, 5.0, 2.0, 7.0], dict(window=4), 1.0, 4.0),
], ids=["dilated_tie", "nan_then_larger"])
def test_reference_autodiff_breaks_ties_otherwise(values, kwargs, ours, theirs):
    # Why the tie tests above work their values out by hand: JAX's derivative of the reference
    # does not follow PyTorch's scan. Tangent 1, 2, 3, ...: the value says which sample it read.
    x = jnp.array([[values]])
    t = jnp.arange(1.0, x.size + 1).reshape(x.shape)
    np.testing.assert_array_equal(jax.jvp(lambda z: jaxcnn.max_pool(z, **kwargs), (x,), (t,))[1],
                                  [[[ours]]])
    np.testing.assert_array_equal(jax.jvp(lambda z: reference.max_pool(z, **kwargs), (x,), (t,))[1],
                                  [[[theirs]]])


# ----------------------------------------------------------------------------- vmap

VMAP_CASES = {  # kind: (case, channels_last); examples are batches of 2
    "max": (Case((2, 2, 5, 4), (2, 2), (1, 2), 1, (2, 1)), True),
    "avg": (Case((2, 2, 5, 4), (2, 3), (2, 1), 1, ceil_mode=True), False),
    "global": (Case((2, 2, 5, 4), (1, 1)), True),
}


def per_example(op):
    """Derivatives of ``loss(x) = Σ sin(op(x))`` at one example ``x`` (tangent ``v``): the
    gradient, the JVP, forward-over-reverse and reverse-over-reverse Hessian-vector products."""
    def loss(x):
        return jnp.sum(jnp.sin(op(x)))

    def derivatives(x, v):
        grad = jax.grad(loss)
        return dict(grad=grad(x), jvp=jax.jvp(op, (x,), (v,))[1],
                    hvp_fwd=jax.jvp(grad, (x,), (v,))[1],
                    hvp_rev=jax.grad(lambda z: vdot(v, grad(z)))(x))
    return derivatives


@pytest.mark.parametrize("in_axis", [0, 2], ids=["mapped_first", "mapped_inside"])
@pytest.mark.parametrize("kind", VMAP_CASES)
def test_vmap_of_derivatives_equals_stacked(kind, in_axis, rng):
    case, channels_last = VMAP_CASES[kind]
    op = pair(kind, case, channels_last)[0]
    shape = to_layout(jnp.zeros(case.shape), channels_last).shape
    mapped = shape[:in_axis] + (3,) + shape[in_axis:]
    xs, vs = random_array(rng, mapped), random_array(rng, mapped)
    derivatives = per_example(op)
    batched = jax.jit(jax.vmap(derivatives, in_axes=in_axis))(xs, vs)
    one = jax.jit(derivatives)
    stacked = [one(jnp.take(xs, i, in_axis), jnp.take(vs, i, in_axis)) for i in range(3)]
    for name in batched:
        assert_close(batched[name], jnp.stack([s[name] for s in stacked]), VJP_TOL, name)


@pytest.mark.parametrize("kind", VMAP_CASES)
def test_vmap_of_a_linearized_map_over_tangents(kind, rng):
    # The linearized map holds the primal's argmax as a constant: vmap over the tangents alone
    # maps the gather's first operand and broadcasts the argmax.
    case, channels_last = VMAP_CASES[kind]
    op = pair(kind, case, channels_last)[0]
    x = to_layout(random_array(rng, case.shape), channels_last)
    ts = random_array(rng, (4, *x.shape))
    _, f_lin = jax.linearize(op, x)
    _, f_vjp = jax.vjp(op, x)
    ys = jax.vmap(f_lin)(ts)
    for i in range(4):
        assert_close(ys[i], f_lin(ts[i]), VJP_TOL, "vmap of linearize")
    cs = random_array(rng, ys.shape)
    grads = jax.vmap(lambda c: f_vjp(c)[0])(cs)
    for i in range(4):
        assert_close(grads[i], f_vjp(cs[i])[0], VJP_TOL, "vmap of vjp")


# ----------------------------------------------------------------------------- jaxprs

def _names(*suffixes):
    return {f"jaxcnn_{suffix}" for suffix in suffixes}


PRIMITIVES = {  # kind: primitives in the jaxprs of the forward, of jvp, of grad, of second orders
    "max": (_names("max_pool"), _names("max_pool_argmax", "max_pool_gather"),
            _names("max_pool_argmax", "max_pool_scatter"),
            _names("max_pool_argmax", "max_pool_scatter", "max_pool_gather")),
    "avg": (_names("avg_pool"), _names("avg_pool"), _names("avg_pool_transpose"),
            _names("avg_pool", "avg_pool_transpose")),
    "global": (_names("global_avg_pool"), _names("global_avg_pool"),
               _names("global_avg_pool_transpose"),
               _names("global_avg_pool", "global_avg_pool_transpose")),
}


@pytest.mark.parametrize("kind", PRIMITIVES)
def test_derivatives_run_through_the_pooling_primitives(kind, rng):
    case, channels_last = VMAP_CASES[kind]
    op = pair(kind, case, channels_last)[0]
    x = to_layout(random_array(rng, case.shape), channels_last)

    def loss(z):
        return jnp.sum(op(z) ** 2)
    in_forward, in_jvp, in_grad, in_second = PRIMITIVES[kind]
    assert primitive_names(jax.make_jaxpr(op)(x)) == in_forward
    for what, f, expected in (
            ("jvp", lambda z: jax.jvp(op, (z,), (z,)), in_jvp),
            ("linearize", lambda z: jax.linearize(op, z)[1](z), in_jvp),
            ("grad", jax.grad(loss), in_grad),
            ("grad of grad", jax.grad(lambda z: jnp.sum(jax.grad(loss)(z) ** 2)), in_second),
            ("hessian", jax.hessian(loss), in_second)):
        names = primitive_names(jax.make_jaxpr(f)(x))
        assert expected <= names, f"{what}: {sorted(expected - names)} missing from {sorted(names)}"
        assert not any("custom" in name for name in names), f"{what}: {sorted(names)}"
        assert not any("reduce_window" in name or "select_and" in name for name in names), what
