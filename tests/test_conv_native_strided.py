"""jaxcnn._conv.native.strided: the phase geometry of a strided input gradient, worked by hand.

The forms themselves are compared with lax's input gradient in ``test_conv_native`` (its
strided configs); here the shape-only helper, against the sum written out for kernel 3,
stride 2, pad 1: ``dx[2q] = dy[q]·w[1]`` and ``dx[2q+1] = dy[q]·w[2] + dy[q+1]·w[0]``.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxcnn._conv.native.strided import phase_geometry


def test_phase_geometry_by_hand():
    # (κ, K_φ, lo_φ, Q_φ): phase 0 reads tap 1 at q; phase 1 taps 0 and 2, flipped: dy[q + m'], m' = 0, 1
    assert phase_geometry(3, 2, 1, 28, 0) == (1, 1, 0, 14)
    assert phase_geometry(3, 2, 1, 28, 1) == (0, 2, 0, 14)
    assert phase_geometry(3, 2, 1, 7, 1) == (0, 2, 0, 3)          # odd length: phases of 4 and 3
    assert phase_geometry(1, 2, 0, 8, 1) == (1, 0, -1, 4)         # 1×1 at stride 2: no tap
    assert phase_geometry(4, 3, 2, 11, 0) == (2, 1, 0, 4)


@pytest.mark.parametrize("k,s,lo,length", [(3, 2, 1, 9), (4, 3, 2, 11), (1, 2, 0, 8), (3, 2, -1, 7),
                                           (2, 3, 1, 10), (5, 2, 0, 9)])
def test_phase_geometry_gives_every_product_once(k, s, lo, length):
    """The phases' correlations, summed out in numpy, equal the strided input gradient's sum
    ``dx[j] = Σ_{i·s + k − lo = j} dy[i]·w[k]`` computed straight from its definition."""
    rng = np.random.default_rng(0)
    out = (length + lo + max(0, lo) - k) // s + 1          # a high pad of max(0, lo)
    dy, w = rng.standard_normal(out), rng.standard_normal(k)
    want = np.zeros(length)
    for i, tap in itertools.product(range(out), range(k)):
        j = i * s + tap - lo
        if 0 <= j < length:
            want[j] += dy[i] * w[tap]
    got = np.zeros(length)
    for phase in range(s):
        kappa, taps, lo_phase, count = phase_geometry(k, s, lo, length, phase)
        sub = w[kappa::s][::-1]
        assert len(sub) == taps
        for q, m in itertools.product(range(count), range(taps)):
            i = q + m - lo_phase
            if 0 <= i < out:
                got[s * q + phase] += dy[i] * sub[m]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
