"""jaxcnn/norm.py: group normalisation's primitives and their hand-written rules.

References: ``jaxcnn.reference.group_norm`` (PyTorch's formula in plain ``jnp``, differentiated
by JAX autodiff), float64 central differences (``jaxcnn.gradcheck``), PyTorch's
``torch.nn.functional.group_norm``, and a value worked out by hand. Float64 (``VJP_TOL``
against autodiff); other dtypes against float64 math within ``TOL[dtype]``. Every group here
holds at least 3 elements: a 2-element group's gradient is ~eps-sized and cancels, and its
relative error measures the cancellation, not the rule.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import gradcheck, reference
from helpers import (TOL, VJP_TOL, assert_close, primitive_names, random_array, sample,
                     tree_assert_close)

pytestmark = pytest.mark.x64

CASES = {  # name: (channels-first shape, groups)
    "no_spatial": ((3, 6), 2),
    "1d": ((2, 6, 5), 3),
    "2d": ((2, 4, 3, 5), 2),
    "3d": ((2, 6, 2, 3, 2), 3),
    "one_group": ((2, 3, 4), 1),
    "instance": ((2, 3, 4), 3),     # one channel per group: instance normalisation
}
LAYOUTS = {"channels_first": False, "channels_last": True}


def cases():
    """Every case in both layouts (the full tier); each case in one, both layouts met (the default)."""
    return sample([pytest.param(*CASES[name], channels_last, id=f"{name}-{layout}")
                   for name in CASES for layout, channels_last in LAYOUTS.items()],
                  key=lambda p: (p.id.split("-")[0], p.values[2]), strength=1)


def operands(rng, shape, channels_last, dtype=jnp.float64):
    """``x`` (mean 1, spread 2, so centring matters), ``scale``, ``bias`` in the layout."""
    x = random_array(rng, shape, dtype) * 2 + 1
    x = jnp.moveaxis(x, 1, -1) if channels_last else x
    return x, random_array(rng, (shape[1],), dtype), random_array(rng, (shape[1],), dtype)


def test_by_hand():
    # One example, one group, x = 1, 2, 3, 4 over 2 channels × 2 positions: μ = 2.5,
    # σ² = (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25; then channel 1 scaled by 2 and shifted by 1.
    x = jnp.asarray([[[1.0, 2.0], [3.0, 4.0]]], jnp.float64)
    y = jaxcnn.group_norm(x, 1, jnp.asarray([1.0, 2.0], jnp.float64), jnp.asarray([0.0, 1.0], jnp.float64), eps=0.75)
    r = 1 / np.sqrt(1.25 + 0.75)
    assert_close(y, [[[-1.5 * r, -0.5 * r], [0.5 * r * 2 + 1, 1.5 * r * 2 + 1]]], TOL["float64"])


@pytest.mark.parametrize("shape,groups,channels_last", cases())
def test_vjp_against_autodiff_and_finite_differences(shape, groups, channels_last, rng):
    """First and second order (grad-of-grad), every argument, via ``jaxcnn.gradcheck``."""
    f = partial(jaxcnn.group_norm, groups=groups, channels_last=channels_last)
    ref = partial(reference.group_norm, groups=groups, channels_last=channels_last)
    report = gradcheck.check(lambda x, scale, bias: f(x, scale=scale, bias=bias),
                             operands(rng, shape, channels_last),
                             reference=lambda x, scale, bias: ref(x, scale=scale, bias=bias), order=2)
    assert report.ok, report.table()


@partial(jax.jit, static_argnums=0)
def forward_mode(f, primals, tangents, c):
    """``jax.jvp``; ``jax.linearize`` applied to the tangents; ``jax.jacfwd`` in x; the Hessian
    of ``⟨c, f³⟩`` in the scale (forward over forward)."""
    y, y_dot = jax.jvp(f, primals, tangents)
    _, f_lin = jax.linearize(f, *primals)
    jac = jax.jacfwd(f)(*primals)
    hess = jax.jacfwd(jax.jacfwd(lambda s: jnp.sum(c * f(primals[0], s, primals[2]) ** 3)))(primals[1])
    return y, y_dot, f_lin(*tangents), jac, hess


@pytest.mark.parametrize("shape,groups,channels_last", cases())
def test_forward_mode_against_autodiff(shape, groups, channels_last, rng):
    f = lambda x, s, b: jaxcnn.group_norm(x, groups, s, b, channels_last=channels_last)
    ref = lambda x, s, b: reference.group_norm(x, groups, s, b, channels_last=channels_last)
    primals = operands(rng, shape, channels_last)
    tangents = operands(rng, shape, channels_last)
    c = random_array(rng, primals[0].shape)
    tree_assert_close(forward_mode(f, primals, tangents, c), forward_mode(ref, primals, tangents, c),
                      VJP_TOL, "jvp, linearize, jacfwd, forward-over-forward")


def test_rules_are_the_primitives(rng):
    """jvp runs the tangent primitive; grad runs the forward primitive and the tangent's
    transpose (the hand-written VJP), so no tangent primitive is left."""
    x, s, b = operands(rng, (2, 4, 3), False)
    f = lambda x, s, b: jnp.sum(jaxcnn.group_norm(x, 2, s, b) ** 2)
    jvp_names = primitive_names(jax.make_jaxpr(lambda t: jax.jvp(f, (x, s, b), (t, s, b)))(x).jaxpr)
    grad_names = primitive_names(jax.make_jaxpr(jax.grad(f, argnums=(0, 1, 2)))(x, s, b).jaxpr)
    assert {"jaxcnn_group_norm", "jaxcnn_group_norm_tangent"} <= jvp_names
    assert "jaxcnn_group_norm" in grad_names and "jaxcnn_group_norm_tangent" not in grad_names


@pytest.mark.parametrize("channels_last", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_vmap(channels_last, rng):
    """Per-example gradients with x mapped (folded into the batch: one primitive call), and with
    the scale, the bias and their tangents mapped (the affine map applied outside)."""
    x, s, b = operands(rng, (2, 6, 4), channels_last)
    xs = jnp.stack([x, 2 * x - 1, x ** 2])
    ss, bs = jnp.stack([s, -s, s + 1]), jnp.stack([b, b - 1, 2 * b])
    c = random_array(rng, x.shape)
    run = {}
    for name, impl in (("jaxcnn", jaxcnn.group_norm), ("reference", reference.group_norm)):
        loss = lambda x, s, b: jnp.sum(c * impl(x, 3, s, b, channels_last=channels_last) ** 3)
        grads = jax.grad(loss, argnums=(0, 1, 2))
        run[name] = jax.jit(lambda x, s, b, xs, ss, bs: (   # one program: one compile, not one a primitive
            jax.vmap(grads, (0, None, None))(xs, s, b),
            jax.vmap(grads, (None, 0, 0))(x, ss, bs),
            jax.vmap(grads)(xs, ss, bs),
            jax.vmap(lambda s, t: jax.jvp(lambda s: impl(x, 3, s, b, channels_last=channels_last),
                                          (s,), (t,))[1])(ss, bs)))(x, s, b, xs, ss, bs)
    tree_assert_close(run["jaxcnn"], run["reference"], VJP_TOL, "vmap")
    folded = jax.make_jaxpr(jax.vmap(lambda x: jaxcnn.group_norm(x, 3, s, b, channels_last=channels_last)))(xs)
    assert [e.primitive.name for e in folded.jaxpr.eqns if "group_norm" in e.primitive.name] == ["jaxcnn_group_norm"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("channels_last", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_low_precision_against_float64(dtype, channels_last, rng):
    """Values and the VJP in ``dtype`` against the float64 reference on the same (rounded)
    inputs: statistics in float32, one rounding of the result."""
    x, s, b = operands(rng, (2, 6, 5, 3), channels_last)
    ct = random_array(rng, x.shape)
    low = [a.astype(dtype) for a in (x, s, b, ct)]
    exact = [a.astype(jnp.float64) for a in low]
    y, vjp = jax.vjp(lambda x, s, b: jaxcnn.group_norm(x, 3, s, b, channels_last=channels_last), *low[:3])
    y_ref, vjp_ref = jax.vjp(lambda x, s, b: reference.group_norm(x, 3, s, b, channels_last=channels_last), *exact[:3])
    assert y.dtype == jnp.dtype(dtype)
    assert_close(y, y_ref, TOL[dtype], "y")
    for name, got, want in zip(("dx", "dscale", "dbias"), vjp(low[3]), vjp_ref(exact[3])):
        assert got.dtype == jnp.dtype(dtype)
        assert_close(got, want, TOL[dtype], name)


@pytest.mark.parametrize("channels_last", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_matches_pytorch(channels_last, rng):
    torch = pytest.importorskip("torch")
    x, s, b = operands(rng, (2, 6, 3, 4), channels_last)
    ct = random_array(rng, x.shape)
    move = (lambda a: torch.movedim(a, -1, 1)) if channels_last else (lambda a: a)
    xt, st, bt = (torch.from_numpy(np.array(a)).requires_grad_() for a in (x, s, b))
    yt = torch.nn.functional.group_norm(move(xt), 3, st, bt, 1e-5)
    torch.sum(yt * move(torch.from_numpy(np.array(ct)))).backward()
    y, vjp = jax.vjp(lambda x, s, b: jaxcnn.group_norm(x, 3, s, b, channels_last=channels_last), x, s, b)
    assert_close(jnp.moveaxis(y, -1, 1) if channels_last else y, yt.detach().numpy(), TOL["float64"], "y")
    for name, got, want in zip(("dx", "dscale", "dbias"), vjp(ct), (xt, st, bt)):
        assert_close(got, want.grad.numpy(), TOL["float64"], name)


def test_defaults_are_ones_and_zeros(rng):
    x = random_array(rng, (2, 4, 5))
    ones, zeros = jnp.ones(4, jnp.float64), jnp.zeros(4, jnp.float64)
    assert_close(jaxcnn.group_norm(x, 2), jaxcnn.group_norm(x, 2, ones, zeros), 0.0)


@pytest.mark.parametrize("kwargs,name", [
    (dict(x=np.zeros((2, 4, 3), np.int32)), "x"),
    (dict(x=np.zeros(4)), "x"),
    (dict(x=np.zeros((2, 4, 0))), "x"),
    (dict(groups=3), "groups"),
    (dict(groups=0), "groups"),
    (dict(scale=np.ones(3)), "scale"),
    (dict(bias=np.ones((4, 1))), "bias"),
    (dict(eps=0.0), "eps"),
    (dict(channels_last=1), "channels_last"),
])
def test_bad_arguments_name_the_argument(kwargs, name):
    args = dict(x=np.zeros((2, 4, 3)), groups=2, scale=np.ones(4), bias=np.zeros(4), eps=1e-5,
                channels_last=False)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=f"^{name}:"):
        jaxcnn.group_norm(args.pop("x"), args.pop("groups"), **args)


@pytest.mark.parametrize("channels_last", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_empty_batch(channels_last, rng):
    """N = 0: an empty result, an empty dx and zero scale and bias gradients (nothing summed),
    as PyTorch (found by the fuzzer: the channels-first path reshaped with -1 and divided by 0)."""
    _, s, b = operands(rng, (1, 4, 3), channels_last)
    x = jnp.zeros((0, 3, 4) if channels_last else (0, 4, 3), jnp.float64)
    y, vjp = jax.vjp(lambda x, s, b: jaxcnn.group_norm(x, 2, s, b, channels_last=channels_last), x, s, b)
    dx, ds, db = vjp(jnp.zeros_like(y))
    assert y.shape == x.shape and dx.shape == x.shape
    assert_close(ds, np.zeros(4), 0.0)
    assert_close(db, np.zeros(4), 0.0)
    assert reference.group_norm(x, 2, s, b, channels_last=channels_last).shape == x.shape
