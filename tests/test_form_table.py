"""jaxcnn._conv.rules: the rule picks the same form for the same operands as the recorded table.

``form_choices.json`` holds a grid of convolutions (1-3D, strides, dilations, paddings, groups
and depthwise, both layouts, float32 / float64 / bfloat16, from a few elements to sizes where the
memory budget turns forms away) and, for each, the name of the form ``choose`` picked for every
(piece, impl, platform), recorded from the rule before it became a table. Whether the native
kernels compute a piece depends on the machine (a compiler, ``jax.ffi``, the vector width), so
each case is recorded twice: with custom calls off (``chosen``), and with
``native.supports`` answering yes to every piece (``native``: where the native form stands
among the others). On any machine the choice is the second where custom calls are allowed and
``supports`` says yes, else the first. Regenerate (only when a choice is meant to change):
``python tests/test_form_table.py --record``.
"""
from __future__ import annotations

import functools
import itertools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn._args import ConvSpec, normalize_conv
from jaxcnn._conv import native, rules, tuning
from jaxcnn._conv.pieces import manual_conv
from jaxcnn._primitives import _CALL_SITE, _CallSite

FIXTURE = Path(__file__).with_name("form_choices.json")
KEYS = [(piece, impl, platform) for piece in rules.PIECES for impl in ("lax", "manual")
        for platform in (None, "cpu")]
DTYPES = {"float32": jnp.float32, "float64": jnp.float64, "bfloat16": jnp.bfloat16}

# (C, O, groups): one group thin to wide, grouped, depthwise (multiplier 1 and 2)
CHANNELS = [(1, 8, 1), (3, 16, 1), (4, 4, 1), (8, 16, 1), (16, 40, 1), (32, 64, 1), (64, 128, 1),
            (256, 256, 1), (4, 6, 2), (8, 8, 4), (16, 32, 8), (4, 4, 4), (3, 6, 3), (32, 32, 32)]
SIZES = {1: [(5,), (32,), (500,)], 2: [(4, 5), (14, 14), (28, 28), (56, 56)],
         3: [(3, 4, 5), (8, 16, 16), (8, 28, 28)]}
KERNELS = {1: [(1,), (3,), (7,)], 2: [(1, 1), (3, 3), (5, 5), (7, 7), (3, 2)],
           3: [(1, 1, 1), (3, 3, 3), (2, 3, 3)]}
BATCHES = [1, 2, 4, 8, 64, 128]


def _grid(count: int = 600, seed: int = 0):
    """``count`` valid convolutions drawn from the value lists above (a fixed seed), each value of
    every list met at least once; then the bench's rows, whose choices the docs quote."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        n = int(rng.integers(1, 4))
        c, o, g = CHANNELS[rng.integers(len(CHANNELS))]
        spatial = SIZES[n][rng.integers(len(SIZES[n]))]
        kernel = KERNELS[n][rng.integers(len(KERNELS[n]))]
        stride = tuple(int(rng.choice([1, 1, 2])) for _ in range(n))
        dilation = tuple(int(rng.choice([1, 1, 1, 2])) for _ in range(n))
        padding = [0, 1, "SAME", [(1, 0)] * n][rng.integers(4)]
        case = _case(int(rng.choice(BATCHES)), c, o, g, spatial, kernel, stride, dilation, padding,
                     bool(rng.integers(2)), list(DTYPES)[rng.integers(len(DTYPES))])
        if case is not None:
            cases.append(case)
    bench = [  # (N, C, O, groups, spatial, kernel, stride, padding)
        (128, 32, 64, 1, (14, 14), (3, 3), (1, 1), 1), (128, 1, 32, 1, (28, 28), (3, 3), (1, 1), 1),
        (8, 64, 64, 1, (28, 28), (3, 3), (1, 1), 1), (8, 256, 256, 1, (14, 14), (3, 3), (1, 1), 1),
        (8, 3, 64, 1, (56, 56), (7, 7), (2, 2), 3), (64, 1, 6, 1, (28, 28), (5, 5), (1, 1), 0),
        (8, 32, 32, 1, (500,), (7,), (1,), 3), (1, 32, 32, 1, (8, 28, 28), (3, 3, 3), (1, 1, 1), 1),
        (64, 16, 32, 1, (8, 16, 16), (3, 3, 3), (1, 1, 1), 1), (64, 1, 16, 1, (8, 16, 16), (3, 3, 3), (1, 1, 1), 1),
        (8, 32, 32, 32, (28, 28), (3, 3), (1, 1), 1), (0, 8, 8, 1, (6, 6), (3, 3), (1, 1), 1),
    ]
    for (batch, c, o, g, spatial, kernel, stride, padding), cl, dtype in itertools.product(
            bench, (False, True), ("float32", "bfloat16")):
        cases.append(_case(batch, c, o, g, spatial, kernel, stride, (1,) * len(spatial), padding, cl, dtype))
    return [case for case in cases if case is not None]


def _case(batch, c, o, g, spatial, kernel, stride, dilation, padding, channels_last, dtype):
    """A case as stored: shapes in the layout, the padding resolved; None where the kernel does
    not fit the padded input."""
    x = (batch, *spatial, c) if channels_last else (batch, c, *spatial)
    w = (*kernel, c // g, o) if channels_last else (o, c // g, *kernel)
    try:
        args = normalize_conv(jax.ShapeDtypeStruct(x, DTYPES[dtype]), jax.ShapeDtypeStruct(w, DTYPES[dtype]),
                              None, stride=stride, padding=padding, dilation=dilation, groups=g,
                              padding_mode="zeros", channels_last=channels_last, impl="lax")
    except ValueError:
        return None
    return {"x": list(x), "w": list(w), "stride": list(stride), "dilation": list(dilation),
            "padding": [list(p) for p in args.spec.padding], "groups": g,
            "channels_last": channels_last, "dtype": dtype}


def _spec(case) -> ConvSpec:
    return ConvSpec(tuple(case["stride"]), tuple(map(tuple, case["padding"])), tuple(case["dilation"]),
                    case["groups"], case["channels_last"])


def _choices(case) -> list[str]:
    """The chosen form's name for every key, with custom calls as the context leaves them."""
    spec, dtype = _spec(case), DTYPES[case["dtype"]]
    return [rules.choose(piece, impl, spec, tuple(case["x"]), tuple(case["w"]), platform, dtype).__name__
            for piece, impl, platform in KEYS]


def _without_custom_calls(fn, *args):
    token = _CALL_SITE.set(_CallSite(custom_calls=False))
    try:
        return fn(*args)
    finally:
        _CALL_SITE.reset(token)


def _native_everywhere(fn, *args):
    """``fn(*args)`` with custom calls allowed and ``native.supports`` saying yes to all."""
    supports, native.supports = native.supports, lambda *_: True
    token = _CALL_SITE.set(_CallSite(custom_calls=True))
    try:
        return fn(*args)
    finally:
        _CALL_SITE.reset(token)
        native.supports = supports


def record() -> None:
    cases = _grid()
    chosen = [_without_custom_calls(_choices, case) for case in cases]
    everywhere = [_native_everywhere(_choices, case) for case in cases]
    names = sorted({name for rows in (chosen, everywhere) for row in rows for name in row})
    lines = [json.dumps({**case, "chosen": [names.index(name) for name in row],
                         "native": [names.index(name) for name in native_row]})
             for case, row, native_row in zip(cases, chosen, everywhere)]
    FIXTURE.write_text('{"keys": %s,\n "forms": %s,\n "cases": [\n%s\n]}\n' % (
        json.dumps(["/".join(map(str, key)) for key in KEYS]), json.dumps(names), ",\n".join(lines)))


def _recorded():
    table = json.loads(FIXTURE.read_text())
    assert table["keys"] == ["/".join(map(str, key)) for key in KEYS]
    return table


@pytest.fixture
def no_measuring(monkeypatch):
    monkeypatch.setenv(tuning.MEASURE_ENV, "0")


def test_recorded_grid_covers_the_rule():
    """The grid meets every form the rule can pick without custom calls, and both sides of the
    memory budget."""
    table = _recorded()
    used = {table["forms"][i] for case in table["cases"] for i in case["chosen"]}
    assert {"chunked_loop_conv", "loop_weight_grad", "loop_input_grad", "fold_depth_conv",
            "depth_tap_conv", "im2col_conv", "depthwise_weight_grad", "loop_depthwise_weight_grad",
            "sample_batched_weight_grad", "loop_sample_batched_weight_grad", "manual_conv",
            "fold_depth_weight_grad", "lax_weight_grad"} <= used, sorted(used)
    assert len(table["cases"]) >= 600


@pytest.mark.parametrize("column,context", [("chosen", _without_custom_calls), ("native", _native_everywhere)])
def test_choice_matches_the_recorded_table(column, context, no_measuring):
    table = _recorded()
    mismatches = []
    for case in table["cases"]:
        want = [table["forms"][i] for i in case[column]]
        got = context(_choices, case)
        mismatches += [(case, key, w, g) for key, w, g in zip(KEYS, want, got) if w != g]
    assert not mismatches, f"{len(mismatches)} of {len(KEYS) * len(table['cases'])} choices differ, e.g. {mismatches[:3]}"


def test_choice_on_this_machine(no_measuring):
    """As lowered here: the ``native`` column where the kernels compute the piece, else ``chosen``."""
    table = _recorded()
    for case in table["cases"]:
        spec, dtype = _spec(case), DTYPES[case["dtype"]]
        for (piece, impl, platform), chosen, on_native, name in zip(KEYS, case["chosen"], case["native"], _choices(case)):
            computes = native.supports(piece, spec, tuple(case["x"]), tuple(case["w"]), dtype)
            assert name == table["forms"][on_native if computes else chosen], (case, piece, impl, platform)


def test_every_rule_names_a_form_of_the_table():
    functions = [form.function for form in rules.FORMS]
    assert len(set(functions)) == len(functions)
    for piece, piece_rules in rules.RULES.items():
        assert piece in rules.PIECES
        for rule in piece_rules:
            assert rules.form_of(rule.function).function is rule.function


def test_unknown_form_is_an_error_not_free():
    """A form is found by the function itself: a function outside the table, even one that
    carries a form's name, has no memory model and the budget check refuses it by name."""
    spec = ConvSpec((1,), ((0, 0),), (1,), 1, False)

    @functools.wraps(manual_conv)
    def renamed(*args):
        return manual_conv(*args)
    for function in (renamed, lambda x, w, spec: x):
        with pytest.raises(KeyError, match=function.__name__):
            rules.fits(function, spec, (2, 3, 8), (4, 3, 3))
    with pytest.raises(ValueError, match="piece"):
        rules.candidates("bias_grad", "lax", spec, (2, 3, 8), (4, 3, 3), "cpu")


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    jax.config.update("jax_enable_x64", True)
    record()
