"""Tests for jaxcnn/transpose.py's convolve (true convolution, the kernel flipped): values and
VJP, bad input.

References: numpy/scipy convolution and a hand-worked 1D case; ``jaxcnn.reference`` and JAX
autodiff of it. Everything in float64: forwards agree to ~1e-12, VJPs to ``VJP_TOL`` (1e-10).
"""
from __future__ import annotations

from functools import partial

import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import reference
from helpers import (IMPLS, TOL, VJP_TOL, assert_close, kernel_to_layout, random_array, to_layout,
                     tree_assert_close, value_and_vjp)

pytestmark = pytest.mark.x64

F64 = TOL["float64"]


# ----------------------------------------------------------------------------- values and VJP


@pytest.mark.parametrize("impl", IMPLS)
def test_convolve_by_hand(impl):
    # [1, 2, 3, 4] * [0, 1, 0.5]: full[i] = Σ_a f(a) g(i − a), worked by hand:
    #   i=0: 1·0 = 0          i=1: 1·1 + 2·0 = 1          i=2: 1·.5 + 2·1 + 3·0 = 2.5
    #   i=3: 2·.5 + 3·1 + 4·0 = 4    i=4: 3·.5 + 4·1 = 5.5    i=5: 4·.5 = 2
    f = jnp.array([[[1.0, 2.0, 3.0, 4.0]]])
    g = jnp.array([[[0.0, 1.0, 0.5]]])
    full = jnp.array([0.0, 1.0, 2.5, 4.0, 5.5, 2.0])
    assert_close(jaxcnn.convolve(f, g, padding="FULL", impl=impl)[0, 0], full, F64, "full")
    assert_close(jaxcnn.convolve(f, g, impl=impl)[0, 0], full[2:4], F64, "valid")
    # cross-correlation would have read the kernel the other way round: [1·0 + 2·1 + 3·.5, ...]
    assert_close(jaxcnn.conv(f, g, impl=impl)[0, 0], jnp.array([3.5, 5.0]), F64, "conv, unflipped")


@pytest.mark.parametrize("mode, impl", [("valid", "lax"), ("full", "manual")])
def test_convolve_matches_numpy(mode, impl, rng):
    x = random_array(rng, (2, 3, 7))
    w = random_array(rng, (2, 3, 4))
    expected = np.array([[sum(np.convolve(x[n, c], w[o, c], mode) for c in range(3))
                          for o in range(2)] for n in range(2)])
    assert_close(jaxcnn.convolve(x, w, padding=mode.upper(), impl=impl), expected, F64, mode)


@pytest.mark.parametrize("n, impl", [(2, "manual"), (3, "lax")])
def test_convolve_matches_scipy(n, impl, rng):
    signal = pytest.importorskip("scipy.signal")
    x = random_array(rng, (1, 2) + (5, 4, 3)[:n])
    w = random_array(rng, (3, 2) + (2, 3, 2)[:n])
    for mode in ("valid", "full"):
        expected = np.array([[sum(signal.convolve(np.asarray(x[0, c]), np.asarray(w[o, c]), mode)
                                  for c in range(2)) for o in range(3)]])
        assert_close(jaxcnn.convolve(x, w, padding=mode, impl=impl), expected, F64, mode)


@pytest.mark.parametrize("impl", IMPLS)
def test_convolve_commutes_in_full_mode(impl, rng):
    """f * g = g * f (one channel): substitute a → i − a in Σ_a f(a) g(i − a)."""
    f = random_array(rng, (1, 1, 6))
    g = random_array(rng, (1, 1, 3))
    assert_close(jaxcnn.convolve(f, g, padding="FULL", impl=impl),
                 jaxcnn.convolve(g, f, padding="FULL", impl=impl), F64, "commutativity")


CONVOLVE_CASES = {  # (x shape, w shape, kwargs)
    "1d_lax": ((2, 2, 7), (3, 2, 3), dict(stride=2, padding=1, impl="lax")),
    "2d_manual_groups_reflect_last": (
        (1, 6, 5, 4), (4, 3, 3, 2), dict(stride=(1, 2), dilation=(2, 1), padding="SAME",
                                         groups=2, padding_mode="reflect", channels_last=True,
                                         impl="manual")),
    "3d_lax_circular_last": (
        (1, 2, 3, 4, 3), (2, 2, 2, 3, 2), dict(padding=1, padding_mode="circular",
                                               channels_last=True, impl="lax")),
}


@pytest.mark.parametrize("name", CONVOLVE_CASES)
def test_convolve_matches_reference(name, rng):
    x_shape, w_shape, kw = CONVOLVE_CASES[name]
    channels_last = kw.get("channels_last", False)
    x = to_layout(random_array(rng, x_shape), channels_last)
    w = kernel_to_layout(random_array(rng, w_shape), channels_last)
    b = random_array(rng, (w_shape[0],))
    cotangent = random_array(rng, reference.convolve(x, w, b, **kw).shape)
    ref_out, ref_grads = value_and_vjp(partial(reference.convolve, **kw), (x, w, b), cotangent)
    out, grads = value_and_vjp(partial(jaxcnn.convolve, **kw), (x, w, b), cotangent)
    assert_close(out, ref_out, F64, name)
    tree_assert_close(grads, ref_grads, VJP_TOL, f"{name} vjp")


# ----------------------------------------------------------------------------- bad input

def test_convolve_bad_input():
    with pytest.raises(ValueError, match="w"):
        jaxcnn.convolve(jnp.zeros((1, 4, 5)), jnp.zeros((3, 3, 3)))
    with pytest.raises(ValueError, match="padding_mode"):
        jaxcnn.convolve(jnp.zeros((1, 3, 5)), jnp.zeros((2, 3, 3)), padding_mode="mirror")
