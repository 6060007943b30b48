"""``lax.conv_general_dilated`` and ``lax.conv_transpose``: jaxcnn's drop-ins for ``jax.lax``
against ``jax.lax`` itself and its autodiff, in float64: values, VJPs (every operand) and, on
a sample, the second order, all under ``jax.jit``, held to ``tolerances.RTOL["float64"]``.

Draws cover lax's whole argument surface: random ``dimension_numbers`` (three layout strings,
any permutation, or None for lax's default), window strides, lhs and rhs dilation, feature
or batch groups (and, rarely, both: refused by both), padding strings in any case
(``SAME_LOWER`` too; with lhs dilation lax refuses them) and ``(lo, hi)`` pairs down to
negative (a crop), ``precision`` in every spelling, ``preferred_element_type``; 0–3 spatial
axes. ``COMPLEX`` adds complex128 operands (the drop-ins take what lax takes).
"""
from __future__ import annotations

import inspect
import random

import numpy as np

from jaxcnn.fuzz import checks
from jaxcnn.fuzz.configs import FuzzCase
from jaxcnn.tolerances import RTOL

OPS = ("lax.conv_general_dilated", "lax.conv_transpose")
TOLERANCE = RTOL["float64"]
COMPLEX = True      # complex128 draws (the drop-ins take what lax takes)
SPATIAL_LETTERS = "HWD"
PRECISIONS = (None, None, None, "highest", "HIGHEST", "default", "float32", ["highest", "default"])


def _layouts(rng: random.Random, n: int) -> list[str]:
    spatial = SPATIAL_LETTERS[:n]
    return ["".join(rng.sample(first + spatial, n + 2)) for first in ("NC", "OI", "NC")]


def _pairs(rng: random.Random, n: int, low: int) -> list[list[int]]:
    return [[rng.choice([low, 0, 0, 1, 2, 3]), rng.choice([low, 0, 0, 1, 2])] for _ in range(n)]


def draw(op: str, rng: random.Random) -> dict:
    """One configuration in its JSON form (``configs.draw`` makes it a case)."""
    n = rng.choices([0, 1, 2, 3], weights=[5, 35, 40, 20])[0] if op == OPS[0] else rng.choice([1, 2, 2, 3])
    groups = rng.choice([1, 1, 1, 2, 3])
    batch_groups = rng.choice([1, 1, 1, 1, 2]) if groups == 1 or rng.random() < 0.05 else 1
    per_group = rng.choice([1, 2, 3])
    config = dict(op=op, n=n, impl=rng.choice(["lax", "manual"]), seed=rng.randrange(2**31),
                  second_order=rng.random() < 0.15,
                  batch=batch_groups * rng.choice([1, 1, 2]) if rng.random() > 0.05 else rng.choice([0, 3]),
                  channels=groups * per_group, out_channels=groups * batch_groups * rng.choice([1, 2]),
                  kernel=[rng.choice([1, 2, 3] if n < 3 else [1, 2]) for _ in range(n)],
                  sizes=[rng.randint(1, 7 if n < 3 else 4) for _ in range(n)],
                  rhs_dilation=None if rng.random() < 0.4 else [rng.choice([1, 1, 2, 3]) for _ in range(n)],
                  dimension_numbers=None if rng.random() < 0.3 else _layouts(rng, n),
                  precision=rng.choice(PRECISIONS),
                  dtype="complex128" if COMPLEX and rng.random() < 0.2 else "float64")
    if op == OPS[0]:
        config.update(groups=groups, batch_groups=batch_groups,
                      window_strides=[rng.choice([1, 1, 2, 3]) for _ in range(n)],
                      lhs_dilation=None if rng.random() < 0.5 else [rng.choice([1, 1, 2, 3]) for _ in range(n)],
                      preferred_element_type=rng.choice([None, None, None, "float64"]))
        config["padding"] = (rng.choice(["SAME", "VALID", "SAME_LOWER", "same", "valid"])
                             if rng.random() < 0.4 else _pairs(rng, n, -1))
    else:
        if config["dimension_numbers"] is None and n == 0:
            config["dimension_numbers"] = _layouts(rng, n)
        config.update(groups=1, batch_groups=1, out_channels=rng.choice([1, 2, 3]),
                      strides=[rng.choice([1, 1, 2, 3]) for _ in range(n)],
                      transpose_kernel=rng.random() < 0.3,
                      use_consistent_padding=rng.random() < 0.15)
        # lower case: lax takes it at stride 1 and refuses it above (it found a one-sided case)
        config["padding"] = rng.choice(["SAME", "VALID", "same", "valid"]) if rng.random() < 0.5 else _pairs(rng, n, 0)
    return config


def _shapes(c: FuzzCase) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """lhs and rhs in the configuration's layouts (lax's default where it has none)."""
    n, layouts = c.n, c.dimension_numbers
    if layouts is None:
        if c.op == OPS[0]:
            layouts = ["NC" + SPATIAL_LETTERS[:n], "OI" + SPATIAL_LETTERS[:n]]
        else:
            layouts = ["N" + SPATIAL_LETTERS[:n] + "C", SPATIAL_LETTERS[:n] + "IO"]
    in_features, out_features = c.channels // c.groups, c.out_channels
    if c.transpose_kernel:
        in_features, out_features = out_features, c.channels
    sizes = dict(zip(SPATIAL_LETTERS, c.sizes), N=c.batch, C=c.channels)
    kernel = dict(zip(SPATIAL_LETTERS, c.kernel), O=out_features, I=in_features)
    return tuple(sizes[a] for a in layouts[0]), tuple(kernel[a] for a in layouts[1])


def _arguments(c: FuzzCase) -> dict:
    """Keyword arguments shared by jax.lax's function and jaxcnn's."""
    names = (("window_strides", "padding", "lhs_dilation", "rhs_dilation", "dimension_numbers",
              "feature_group_count", "batch_group_count", "precision", "preferred_element_type")
             if c.op == OPS[0] else
             ("strides", "padding", "rhs_dilation", "dimension_numbers", "transpose_kernel",
              "precision", "use_consistent_padding"))
    fields = {"feature_group_count": "groups", "batch_group_count": "batch_groups"}
    values = {k: getattr(c, fields.get(k, k)) for k in names}
    kwargs = {k: v for k, v in values.items() if v is not None}    # None: lax's default
    if not kwargs.get("use_consistent_padding", True):
        del kwargs["use_consistent_padding"]    # not in every jax release's conv_transpose
    return kwargs


def check(c: FuzzCase) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jaxcnn import lax as jlax
    name = c.op.split(".")[1]
    theirs_op, ours_op = getattr(jax.lax, name), getattr(jlax, name)
    kwargs = _arguments(c)
    if set(kwargs) - set(inspect.signature(theirs_op).parameters):
        return {"status": "skipped", "detail": f"this jax.lax.{name} has no {sorted(set(kwargs) - set(inspect.signature(theirs_op).parameters))}"}
    if c.n == 0 and c.groups > 1 and jax.__version__.startswith("0.4."):
        # jax.lax 0.4.x differentiates a grouped conv with no spatial axes wrongly (its input
        # gradient mixes the groups; jaxcnn's and a numpy sum agree, as does jax.lax 0.10.2).
        return {"status": "skipped", "detail": "jax.lax 0.4.x's VJP of a grouped conv with no "
                                                "spatial axes is wrong: no reference"}
    rng = np.random.default_rng(c.seed)
    complex_ = c.dtype == "complex128"

    def draw_array(shape, generator):
        a = generator.standard_normal(shape)
        return a + 1j * generator.standard_normal(shape) if complex_ else a

    args = [jnp.asarray(draw_array(s, rng)) for s in _shapes(c)]
    cotangent = lambda out: jnp.asarray(draw_array(out.shape, np.random.default_rng(c.seed + 1))).astype(out.dtype)
    tangents = ([jnp.asarray(draw_array(a.shape, np.random.default_rng(c.seed + 2 + i))) for i, a in enumerate(args)]
                if c.second_order else None)
    ours_f = lambda lhs, rhs: ours_op(lhs, rhs, **kwargs, impl=c.impl)
    theirs_f = lambda lhs, rhs: theirs_op(lhs, rhs, **kwargs)
    ours = checks.attempt(lambda: checks.run_function(ours_f, args, cotangent, tangents)[0])
    try:
        theirs = checks.attempt(lambda: checks.run_function(theirs_f, args, cotangent, tangents)[0])
    except checks.WouldAbort:   # jax.grad of lax itself would abort inside XLA: nothing to compare
        return {**checks.verdict(ours, {}, TOLERANCE), "reference_skipped": True}
    return checks.verdict(ours, {"jax.lax": theirs}, TOLERANCE)
