"""``jaxcnn._taps``: the tap machinery against index sets worked out by hand and by brute force.

``window`` must read exactly ``x_pad[k·d + i·s]`` for ``i < out``; ``place`` is its adjoint
(``⟨window(a), b⟩ = ⟨a, place(b)⟩``); ``crop`` is the adjoint of zero padding; ``interleave_phases`` undoes the split into phases.
"""
from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn._taps import crop, interleave_phases, offsets, pad_axes, place, window


def test_offsets_are_row_major_as_pytorch_scans():
    assert list(offsets((2, 3))) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert list(offsets(())) == [()]


@pytest.mark.parametrize("offset,out,stride,dilation", [
    ((0, 0), (3, 2), (1, 1), (1, 1)), ((1, 2), (2, 3), (2, 1), (3, 2)), ((2, 0), (1, 1), (4, 5), (2, 1)),
])
def test_window_reads_exactly_the_taps(offset, out, stride, dilation):
    """Brute force: the positions a slice reads, against ``k·d + i·s`` for every ``i < out``."""
    sizes = tuple(k * d + (o - 1) * s + 1 + 2 for k, o, s, d in zip(offset, out, stride, dilation))
    positions = np.arange(np.prod(sizes)).reshape(1, *sizes)
    got = positions[window(offset, out, stride, dilation, (1, 2), 3)]
    expected = [[positions[0, offset[0] * dilation[0] + i * stride[0], offset[1] * dilation[1] + j * stride[1]]
                 for j in range(out[1])] for i in range(out[0])]
    np.testing.assert_array_equal(got[0], expected)


def test_a_one_sample_tap_slices_without_a_step():
    """One output along an axis: the slice reads one sample with step 1, not ``s``. XLA's SPMD
    partitioner fails its own verifier on a one-sample strided slice of an axis split over
    devices (max_pool's input gradient, fuzz_regressions.json); the positions read are the same."""
    index = window((1, 0), (1, 2), (3, 3), (1, 1), (2, 3), 4)
    assert (index[2].step, index[3].step) == (1, 3)
    assert (index[2].start, index[2].stop) == (1, 2)


@pytest.mark.x64   # adjoint to float64 rounding
@pytest.mark.parametrize("offset,out,stride,dilation", [
    ((1,), (3,), (2,), (2,)), ((0, 1), (2, 2), (3, 1), (1, 2)), ((2, 1, 0), (1, 2, 2), (1, 2, 3), (2, 1, 1)),
])
def test_place_is_the_adjoint_of_window(offset, out, stride, dilation, rng):
    n = len(offset)
    padded = tuple(k * d + (o - 1) * s + 1 + 1 for k, o, s, d in zip(offset, out, stride, dilation))
    axes = tuple(range(2, 2 + n))
    a = rng.standard_normal((2, 3, *padded))
    b = rng.standard_normal((2, 3, *out))
    forward = np.asarray(a)[window(offset, out, stride, dilation, axes, a.ndim)]
    back = np.asarray(place(jnp.asarray(b), offset, out, stride, dilation, axes, padded))
    assert back.shape == a.shape
    assert np.vdot(forward, b) == pytest.approx(np.vdot(a, back), rel=1e-12)


@pytest.mark.x64
def test_crop_is_the_adjoint_of_zero_padding(rng):
    pads = ((2, 1), (0, -1))      # a negative side: samples the padded op never read
    a = rng.standard_normal((1, 2, 4, 5))
    padded = np.asarray(pad_axes(jnp.asarray(a), (2, 3), pads))
    assert padded.shape == (1, 2, 7, 4)
    c = rng.standard_normal(padded.shape)
    cropped = np.asarray(crop(jnp.asarray(c), (2, 3), pads))
    assert cropped.shape == a.shape
    assert np.vdot(padded, c) == pytest.approx(np.vdot(a, cropped), rel=1e-12)
    np.testing.assert_array_equal(cropped[..., -1], 0.0)     # the cut sample gets nothing back


def test_pad_axes_fills_interior_and_value():
    a = jnp.asarray(np.arange(3.0).reshape(1, 3))
    got = np.asarray(pad_axes(a, (1,), ((1, 2),), value=-1.0, interior=(1,)))
    np.testing.assert_array_equal(got, [[-1, 0, -1, 1, -1, 2, -1, -1]])


@pytest.mark.parametrize("shape, stride, axes", [
    ((2, 6, 3), (3,), (1,)),                 # channels last, 1D
    ((2, 3, 4, 6), (2, 3), (2, 3)),          # channels first, 2D
    ((1, 4, 2, 6, 5), (2, 1, 3), (1, 2, 3)),  # channels last, 3D, a stride of 1 between
])
def test_interleave_phases_puts_each_phase_back_at_its_rows(shape, stride, axes):
    """Phase ``r`` of ``a`` is ``a[…, r::s, …]`` on each axis (numpy slicing, by hand);
    interleaving the phases in ``offsets(stride)`` order gives ``a`` back exactly."""
    a = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    phases = []
    for r in offsets(stride):
        index = [slice(None)] * a.ndim
        for axis, ri, s in zip(axes, r, stride):
            index[axis] = slice(ri, None, s)
        phases.append(jnp.asarray(a[tuple(index)]))
    np.testing.assert_array_equal(np.asarray(interleave_phases(phases, stride, axes)), a)
