"""Gradient checking: every hand-written VJP against JAX autodiff and finite differences.

- ``checks``: ``check`` (float64, against autodiff of the reference and central differences,
  order 1 or 2) and ``check_dtype`` (a low-precision dtype against the float64 reference);
- ``pytrees``: ``check_modes`` and ``assert_grads``: any function of pytrees, reverse and
  forward mode, batched (``vmap``), order 1 or 2, each leaf named by its path;
- ``twins``: the default oracle, for jaxcnn's own ops only, found by identity (never by name);
- ``report``: the ``Report`` and ``ModeReport`` they return, their rows and ``GradcheckError``;
- ``cases``: one configuration (``Case``) and how an op's variants become configurations;
- ``matrix``: the configurations ``jaxcnn gradcheck`` runs (every op × 1D/2D/3D × options);
- ``command``: ``jaxcnn gradcheck`` itself (``main``): each configuration run, summed up, shown.

The tolerances and their derivations live in ``jaxcnn.tolerances``.
"""
from jaxcnn.gradcheck.checks import (argument_names, check, check_dtype, differentiable_argnums,
                                     float64, resolve_reference)
from jaxcnn.gradcheck.command import main
from jaxcnn.gradcheck.pytrees import assert_grads, check_modes
from jaxcnn.gradcheck.report import (Comparison, GradcheckError, ModeReport, ModeRow, Report,
                                     max_errors)
from jaxcnn.tolerances import finite_difference_rtol

__all__ = ["check", "check_dtype", "check_modes", "assert_grads", "ModeReport", "ModeRow", "Report", "Comparison", "GradcheckError", "main",
           "finite_difference_rtol", "float64", "resolve_reference", "argument_names",
           "differentiable_argnums", "max_errors"]
