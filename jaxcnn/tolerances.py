r"""Every tolerance jaxcnn's checkers use, with the arithmetic behind it.

An error is relative to the largest reference value: ``max|a − b| / max|b|``. The unit
roundoff ``u`` of each dtype (half its machine epsilon) sets the scale: float64 2⁻⁵³ ≈ 1.1e-16,
float32 2⁻²⁴ ≈ 6.0e-8, float16 2⁻¹¹ ≈ 4.9e-4, bfloat16 2⁻⁸ ≈ 3.9e-3.

Three comparisons, three purposes:

- ``RTOL[dtype]``: a result computed in ``dtype`` against float64 math on the same inputs
  (rounded to ``dtype`` once, then cast up exactly). Used by ``gradcheck.check_dtype`` and the
  tests. jaxcnn's rules, like ``lax``, sum in float32 or wider and round the result once (a
  product of two bfloat16 or float16 values is exact in float32), so the error is about one
  ``u`` of the dtype plus the float32 error of the sum:

  - float64 1e-12: sums of up to ~10³ terms (channels × taps) in different orders err
    ``≲ L·u ≈ 1e-13``; a few hundred ulps of accumulation.
  - float32 1e-5: ``L·u ≈ 6e-6`` for ``L ≈ 10²`` terms.
  - float16 3e-3: one rounding of the result, ``u = 4.9e-4``, with room ×6 (measured on the
    gradcheck matrix: ≤ 9.3e-4, average pooling's division included).
  - bfloat16 1e-2: one rounding, ``u = 3.9e-3``, with room ×2.5 (measured: ≤ 5.9e-3).

  Not covered: sums that JAX itself runs in bfloat16. The bias gradient is JAX's transpose
  of a broadcast, a sum of ``N·∏S_out`` cotangents accumulated in bfloat16; it errs ~√L·u
  (measured up to 4.9e-2 over a few dozen terms), so the tests hold it to autodiff of the
  reference in bfloat16 instead.
- ``VJP_RTOL``: a float64 hand-written VJP against JAX autodiff of the reference. Both sides
  compute the same sums in float64 in different orders, ``≲ L·u ≈ 1e-13`` for ``L ≲ 10³``;
  1e-10 sits 10³ above that and far below a wrong rule's error (O(1)).
- ``finite_difference_rtol(eps)``: a VJP against float64 central differences with step
  ``eps`` (default ``FD_EPS``), derived in its docstring.
- ``BENCH_AGREEMENT[dtype]``: two implementations against *each other* at benchmark sizes, in
  ``jaxcnn bench`` (the dtype names are the bench's; ``bfloat16-f32acc``: bfloat16 operands
  with ``preferred_element_type=float32``). Both run at the device's default precision (a GPU
  may use TF32 or bfloat16 passes for float32) and sum 10³–10⁵ terms (``dw`` sums over
  ``N·∏S_out``), each side erring on its own: float32 1e-4, bfloat16 5e-2. A sanity bound that a
  wrong answer (a dropped tap: O(1)) cannot pass, not a precision claim; ``RTOL`` makes those.
"""
from __future__ import annotations

import numpy as np

__all__ = ["UNIT_ROUNDOFF", "RTOL", "VJP_RTOL", "FD_EPS", "BENCH_AGREEMENT",
           "finite_difference_rtol"]

UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2   # float64: u = 2⁻⁵³ ≈ 1.1e-16

RTOL = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 1e-2, "float16": 3e-3}
VJP_RTOL = 1e-10
FD_EPS = 1e-6
BENCH_AGREEMENT = {"float32": 1e-4, "bfloat16": 5e-2, "bfloat16-f32acc": 5e-2}


def finite_difference_rtol(eps: float = FD_EPS) -> float:
    r"""Tolerance of a float64 central difference with step ``eps``, relative to ``max|J|``.

    ``(f(x + εu) − f(x − εu)) / 2ε = Ju + (ε²/6)·f'''[u, u, u] + R``. The truncation term is 0
    for the ops here (linear in each argument: conv and its gradients, padding, average
    pooling; piecewise linear: max pooling away from ties) and ``≲ ε²`` for smooth ``f`` with
    O(1) third derivatives. The rounding term: each evaluation of ``f`` errs by up to
    ``γ·|f|`` with ``γ ≈ L·u`` for the ``L``-term sums inside (``L ≤ 10³`` here: channels ×
    taps), and dividing the difference by ``2ε`` gives ``R ≲ γ·|f| / ε``; with unit-scale
    inputs ``|f| / |J| = O(1)``. Hence ``1e3·u/ε + ε²`` = 1.1e-7 at ε = 1e-6: a bound, about
    10³ above the errors measured on conv (~1e-10), and far below a wrong rule's error
    (a dropped tap, a factor 2, an off-by-one stride: O(1)).
    """
    return 1e3 * UNIT_ROUNDOFF / eps + eps ** 2
