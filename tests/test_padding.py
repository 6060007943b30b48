"""Tests of jaxcnn/padding.py: border padding against jnp.pad and torch's F.pad, and its
adjoint, the fold: ⟨pad(x), g⟩ = ⟨x, fold(g)⟩, each the other's VJP, to second order."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxcnn import padding
from helpers import TOL, VJP_TOL, assert_close, random_array, tree_assert_close, vdot

pytestmark = pytest.mark.x64

MODES = ("reflect", "replicate", "circular")
NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
# PyTorch's limits: reflect pads < L, circular pads <= L, replicate any width.
WIDEST = {"reflect": lambda length: length - 1, "circular": lambda length: length,
          "replicate": lambda length: 4}


def jnp_pad(x, pads, mode, axes):
    """The reference: one jnp.pad call, differentiated by JAX autodiff."""
    widths = [(0, 0)] * x.ndim
    for pair, axis in zip(pads, axes):
        widths[axis] = pair
    return jnp.pad(x, widths, mode=NUMPY_MODE[mode])


def jnp_fold(g, x_shape, pads, mode, axes):
    """The reference adjoint: the VJP of jnp.pad at ``g`` (jnp.pad is linear)."""
    return jax.vjp(lambda x: jnp_pad(x, pads, mode, axes), jnp.zeros(x_shape, g.dtype))[1](g)[0]


@st.composite
def pad_cases(draw):
    """A shape of 1..4 axes, a mode, distinct axes in any order (some negative), and
    ``(lo, hi)`` pads within the mode's limits."""
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=4)))
    mode = draw(st.sampled_from(MODES))
    order = draw(st.permutations(range(len(shape))))
    axes = tuple(order[:draw(st.integers(1, len(shape)))])
    widest = [min(WIDEST[mode](shape[a]), 4) for a in axes]
    pads = tuple((draw(st.integers(0, w)), draw(st.integers(0, w))) for w in widest)
    signed = tuple(a - len(shape) if draw(st.booleans()) else a for a in axes)
    return shape, mode, pads, axes, signed


@given(case=pad_cases(), seed=st.integers(0, 2**32 - 1))
def test_pad_matches_jnp_pad_and_is_adjoint_to_fold(case, seed):
    shape, mode, pads, axes, signed = case
    rng = np.random.default_rng(seed)
    x = random_array(rng, shape)
    y = padding.pad(x, pads, mode, signed)
    np.testing.assert_array_equal(y, jnp_pad(x, pads, mode, axes))  # a gather: exact
    g = random_array(rng, y.shape)
    folded = padding.fold(g, pads, mode, signed)
    assert folded.shape == x.shape
    assert_close(folded, jnp_fold(g, shape, pads, mode, axes), TOL["float64"],
                 "fold vs VJP of jnp.pad")
    lhs, rhs = vdot(y, g), vdot(x, folded)   # ⟨pad(x), g⟩ = ⟨x, fold(g)⟩
    assert abs(lhs - rhs) <= TOL["float64"] * max(abs(lhs), 1.0)


@pytest.mark.parametrize("length,lo,hi,mode,expected_lo,expected_hi", [
    (5, 2, 3, "reflect", [2, 1], [3, 2, 1]),       # edge not repeated
    (5, 4, 4, "reflect", [4, 3, 2, 1], [3, 2, 1, 0]),
    (5, 2, 3, "replicate", [0, 0], [4, 4, 4]),
    (3, 5, 1, "replicate", [0] * 5, [2]),
    (5, 2, 3, "circular", [3, 4], [0, 1, 2]),
    (3, 3, 3, "circular", [0, 1, 2], [0, 1, 2]),    # a whole period on each side
])
def test_border_indices(length, lo, hi, mode, expected_lo, expected_hi):
    lo_idx, hi_idx = padding.border_indices(length, lo, hi, mode)
    assert list(lo_idx) == expected_lo and list(hi_idx) == expected_hi


def test_pad_by_hand():
    x = jnp.array([1.0, 2.0, 3.0, 4.0])
    expected = {"reflect": [3, 2, 1, 2, 3, 4, 3], "replicate": [1, 1, 1, 2, 3, 4, 4],
                "circular": [3, 4, 1, 2, 3, 4, 1]}
    for mode, values in expected.items():
        np.testing.assert_array_equal(padding.pad(x, ((2, 1),), mode, (0,)), values)
        # fold of all ones counts how often each sample was copied
        counts = padding.fold(jnp.ones(7), ((2, 1),), mode, (0,))
        np.testing.assert_array_equal(counts, np.bincount(np.array(values) - 1, minlength=4))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_pad_matches_torch(n, mode, rng):
    torch = pytest.importorskip("torch")
    shape = (2, 3, 5, 4, 3)[:n + 2]
    pads = ((2, 1), (0, 3), (1, 2))[:n]
    x = random_array(rng, shape)
    axes = tuple(range(2, n + 2))
    flat = [p for pair in reversed(pads) for p in pair]  # torch: last axis first
    expected = torch.nn.functional.pad(torch.tensor(np.asarray(x)), flat, mode=mode)
    np.testing.assert_array_equal(padding.pad(x, pads, mode, axes), expected.numpy())


CASES = [pytest.param(mode, (3, 4, 5), ((2, 1), (0, 2)), (2, 0), id=mode) for mode in MODES]


@pytest.mark.parametrize("mode,shape,pads,axes", CASES)
def test_vjps_and_second_order(mode, shape, pads, axes, rng):
    """VJPs of pad and fold vs autodiff of jnp.pad, and H·v of a nonlinear loss through pad
    (reverse over reverse, and forward over reverse) vs the same loss through jnp.pad."""
    x = random_array(rng, shape)
    y = padding.pad(x, pads, mode, axes)
    g = random_array(rng, y.shape)
    pull_pad = jax.vjp(lambda x: padding.pad(x, pads, mode, axes), x)[1]
    assert_close(pull_pad(g)[0], jnp_fold(g, shape, pads, mode, axes), VJP_TOL, "VJP of pad")
    pull_fold = jax.vjp(lambda g: padding.fold(g, pads, mode, axes), g)[1]
    ct = random_array(rng, shape)
    expected = jax.vjp(lambda g: jnp_fold(g, shape, pads, mode, axes), g)[1](ct)[0]
    assert_close(pull_fold(ct)[0], expected, VJP_TOL, "VJP of fold")

    def loss(pad_fn, x):
        return vdot(g, jnp.sin(pad_fn(x, pads, mode, axes)))
    v = random_array(rng, shape)
    grad_mine = jax.grad(partial(loss, padding.pad))
    grad_ref = jax.grad(partial(loss, jnp_pad))
    hvp_ref = jax.grad(lambda x: vdot(grad_ref(x), v))(x)
    assert_close(jax.grad(lambda x: vdot(grad_mine(x), v))(x), hvp_ref, VJP_TOL, "H·v rev-rev")
    assert_close(jax.jvp(grad_mine, (x,), (v,))[1], hvp_ref, VJP_TOL, "H·v fwd-rev")


@pytest.mark.parametrize("mode", MODES)
def test_vmap_and_jit(mode, rng):
    """vmap over a leading or inner axis equals the loop; jit equals eager."""
    pads, axes = ((1, 2), (2, 0)), (1, 2)
    xs = random_array(rng, (3, 4, 3, 5))                 # mapped axis 1 (size 3)
    pad = partial(padding.pad, pads=pads, mode=mode, axes=axes)
    fold = partial(padding.fold, pads=pads, mode=mode, axes=axes)
    batched = jax.vmap(pad, in_axes=1)(xs)
    loop = jnp.stack([pad(xs[:, i]) for i in range(xs.shape[1])])
    np.testing.assert_array_equal(batched, loop)
    np.testing.assert_array_equal(jax.jit(jax.vmap(fold))(batched),
                                  jnp.stack([fold(p) for p in loop]))
    np.testing.assert_array_equal(jax.jit(pad)(xs[:, 0]), loop[0])


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_dtypes_are_kept(dtype, rng):
    x = random_array(rng, (2, 5), dtype)
    y = padding.pad(x, ((2, 3),), "reflect", (1,))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, jnp_pad(x, ((2, 3),), "reflect", (1,)))
    folded = padding.fold(y, ((2, 3),), "reflect", (1,))
    assert folded.dtype == dtype
    tree_assert_close(folded, jnp_fold(y, x.shape, ((2, 3),), "reflect", (1,)), TOL[dtype])
