"""``jaxcnn.tolerances``: the table's numbers follow from each dtype's unit roundoff as its
docstring derives, and every checker takes its numbers from it."""
from __future__ import annotations

import numpy as np
import pytest

from jaxcnn import tolerances


@pytest.mark.parametrize("dtype,room", [("float32", 200), ("float16", 7), ("bfloat16", 3)])
def test_dtype_tolerance_is_a_few_roundoffs(dtype, room):
    """float32 allows a sum of ~10² terms (L·u); the half dtypes one rounding with some room."""
    import ml_dtypes
    u = float(np.finfo(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype).eps) / 2
    assert u < tolerances.RTOL[dtype] <= room * u


def test_float64_and_vjp_tolerances_sit_far_above_roundoff_and_far_below_a_wrong_rule():
    u = tolerances.UNIT_ROUNDOFF
    assert u == 2.0 ** -53
    assert 1e3 * u < tolerances.RTOL["float64"] < tolerances.VJP_RTOL < 1e-6


def test_finite_difference_tolerance_as_derived():
    assert tolerances.finite_difference_rtol(1e-6) == pytest.approx(1e3 * tolerances.UNIT_ROUNDOFF / 1e-6 + 1e-12)
    # a smaller step drowns in rounding, a larger one in truncation
    assert tolerances.finite_difference_rtol(1e-8) > tolerances.finite_difference_rtol(1e-6)
    assert tolerances.finite_difference_rtol(1e-2) > tolerances.finite_difference_rtol(1e-6)


def test_checkers_use_the_table():
    import helpers
    from jaxcnn.fuzz import checks
    assert helpers.TOL == tolerances.RTOL and helpers.VJP_TOL == tolerances.VJP_RTOL
    assert checks.TOLERANCE == tolerances.VJP_RTOL
