"""Forward mode through every op of the conv family: ``jax.jvp``, ``jax.linearize``,
``jax.jacfwd`` and ``jax.hessian`` of conv, convolve, conv_transpose and the two public
gradients, against the same transformations of ``jaxcnn.reference`` (plain lax, JAX
autodiff), float64, 1D/2D/3D, both impls. (Pooling's forward mode: tests/test_pool_transforms.py.)

Each op is a composition of the conv primitives, the border-padding primitives and the kernel
flip, so these check the primitives' hand-written JVP rules (and, for ``jax.hessian``, JVPs of
their transposes) on every op built from them.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn import reference
from helpers import VJP_TOL, assert_close, random_array, sample, tree_assert_close

pytestmark = pytest.mark.x64

# op: (x-like shape, second operand shape, keyword arguments), channels first, small
SPATIAL = {1: (5,), 2: (4, 3), 3: (3, 3, 2)}


def _case(op: str, n: int):
    sizes, k = SPATIAL[n], (2,) * n
    if op in ("conv", "convolve"):
        return (2, 2, *sizes), (3, 2, *k), dict(stride=2, padding=1, padding_mode="circular")
    if op == "conv_transpose":
        return (2, 2, *sizes), (2, 3, *k), dict(stride=2, padding=1, output_padding=1)
    out = tuple((s + 2 - 2) // 2 + 1 for s in sizes)      # conv's output, stride 2, padding 1
    if op == "conv_input_grad":
        return (2, 3, *out), (3, 2, *k), dict(input_shape=(2, 2, *sizes), stride=2, padding=1)
    return (2, 2, *sizes), (2, 3, *out), dict(weight_shape=(3, 2, *k), stride=2, padding=1)


OPS = ("conv", "convolve", "conv_transpose", "conv_input_grad", "conv_weight_grad")
CASES = [pytest.param(op, n, impl, id=f"{op}-{n}d-{impl}")
         for op in OPS for n in (1, 2, 3) for impl in ("lax", "manual")
         if n == 2 or impl == "lax" or op == "conv"]


def _functions(op, n, impl):
    a_shape, b_shape, kwargs = _case(op, n)
    ours = partial(getattr(jaxcnn, op), impl=impl, **kwargs)
    theirs = partial(getattr(reference, op), **kwargs)
    return a_shape, b_shape, ours, theirs


# The default tier meets each op, rank and impl once in each test below (the Jacobians from the
# other end of the grid, so the two meet other pairs); the full tier every case in both.
@pytest.mark.parametrize("op,n,impl", sample(CASES, strength=1))
def test_jvp_and_linearize(op, n, impl, rng):
    a_shape, b_shape, ours, theirs = _functions(op, n, impl)
    args = (random_array(rng, a_shape), random_array(rng, b_shape))
    tangents = tuple(random_array(rng, a.shape) for a in args)
    y, t = jax.jit(lambda a, t: jax.jvp(ours, a, t))(args, tangents)
    y_ref, t_ref = jax.jit(lambda a, t: jax.jvp(theirs, a, t))(args, tangents)
    assert_close(y, y_ref, VJP_TOL, "primal")
    assert_close(t, t_ref, VJP_TOL, "jvp")
    _, linear = jax.linearize(ours, *args)
    other = tuple(random_array(rng, a.shape) for a in args)   # a linearization is reusable
    for tangent in (tangents, other):
        expected = jax.jvp(theirs, args, tangent)[1]
        assert_close(jax.jit(linear)(*tangent), expected, VJP_TOL, "linearize")


@pytest.mark.parametrize("op,n,impl", sample(CASES[::-1], strength=1, among=lambda case: (   # not the
    case.values[1] < 3 or case.values[0] == "conv")))     # costly 3D Jacobians but conv's by default
def test_jacfwd_and_hessian(op, n, impl, rng):
    a_shape, b_shape, ours, theirs = _functions(op, n, impl)
    args = (random_array(rng, a_shape), random_array(rng, b_shape))
    jac = jax.jit(jax.jacfwd(ours, argnums=(0, 1)))(*args)
    jac_ref = jax.jit(jax.jacfwd(theirs, argnums=(0, 1)))(*args)
    tree_assert_close(jac, jac_ref, VJP_TOL, "jacfwd")
    c = random_array(rng, jax.eval_shape(ours, *args).shape)
    loss = lambda f: (lambda a, b: jnp.sum(c * jnp.sin(f(a, b))))          # noqa: E731
    hessian = jax.jit(jax.hessian(loss(ours), argnums=(0, 1)))(*args)
    hessian_ref = jax.jit(jax.hessian(loss(theirs), argnums=(0, 1)))(*args)
    tree_assert_close(hessian, hessian_ref, VJP_TOL, "hessian")
