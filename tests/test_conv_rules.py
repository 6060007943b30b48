"""jaxcnn._conv: every faster form equals the piece it replaces, and the rule picks it.

Each form is called directly (jit-compiled, float64) and compared with the generic
``impl="lax"`` piece of ``jaxcnn._conv.pieces`` (one ``lax.conv_general_dilated``) — an
independent computation of the same map. The wiring test reads the compiled HLO: on CPU the
3D conv must run as 2D convolutions and the depthwise conv without any convolution op.
"""
from __future__ import annotations

import json
import re
from functools import partial

import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn._args import normalize_conv
from jaxcnn._conv import budget, depth, loops, rules
from jaxcnn._conv.pieces import IMPLS
from helpers import TOL, assert_close, run_piece, random_array, sample

pytestmark = pytest.mark.x64

# name: (x spatial, kernel, C, O, conv kwargs)
CONFIGS = {
    "depthwise_2d": ((7, 8), (3, 3), 4, 4, dict(padding=1, groups=4)),
    "depthwise_multiplier_strided": ((9, 8), (3, 2), 3, 6, dict(stride=(2, 1), padding=((1, 0), (0, 1)), groups=3)),
    "depthwise_1d_dilated": ((11,), (3,), 5, 5, dict(dilation=2, padding=2, groups=5)),
    "depthwise_3d": ((4, 5, 6), (3, 3, 3), 2, 4, dict(padding=1, groups=2)),
    "fold_3d": ((5, 6, 6), (3, 3, 3), 3, 4, dict(padding=1)),
    "fold_3d_strided_dilated": ((7, 6, 7), (2, 3, 3), 2, 3, dict(stride=(2, 1, 2), dilation=(2, 1, 1),
                                                                   padding=((1, 0), (1, 1), (0, 2)))),
    "im2col_thin": ((11, 10), (7, 5), 3, 4, dict(stride=2, padding=3)),
    "im2col_groups": ((8, 9), (3, 2), 4, 6, dict(stride=(2, 3), padding=((1, 2), (0, 1)), groups=2)),
    "im2col_1d": ((12,), (4,), 2, 3, dict(stride=2, padding=1)),
    "im2col_3d": ((4, 5, 5), (2, 3, 3), 3, 2, dict(padding=1)),
    "wide_2d": ((6, 7), (3, 3), 16, 5, dict(padding=1)),
    "many_samples_2d": ((6, 5), (3, 2), 3, 4, dict(stride=(1, 2), padding=1)),
    "many_samples_3d": ((3, 4, 5), (2, 3, 3), 2, 3, dict(dilation=(1, 2, 1), padding=((0, 1), (2, 2), (1, 1)))),
    "single_channel_1d": ((12,), (5,), 1, 3, dict(stride=2, padding=2)),
    "single_channel_2d": ((9, 8), (3, 2), 1, 5, dict(stride=(2, 1), dilation=(1, 2), padding=((1, 0), (0, 1)))),
    "single_channel_3d": ((4, 5, 6), (3, 3, 3), 1, 4, dict(padding=1)),
}
BATCH = {"many_samples_2d": 5, "many_samples_3d": 4}  # others: 2
FORMS = {  # form: (piece, configs it applies to)
    "depthwise_weight_grad": ("weight_grad", ["depthwise_2d", "depthwise_multiplier_strided",
                                              "depthwise_1d_dilated", "depthwise_3d"]),
    "im2col_conv": ("conv", ["im2col_thin", "im2col_groups", "im2col_1d", "im2col_3d", "wide_2d"]),
    "im2col_weight_grad": ("weight_grad", ["im2col_thin", "im2col_groups", "im2col_1d", "im2col_3d"]),
    "sample_batched_weight_grad": ("weight_grad", ["fold_3d_strided_dilated", "im2col_thin", "wide_2d",
                                                   "many_samples_2d", "many_samples_3d"]),
    "single_channel_conv": ("conv", ["single_channel_1d", "single_channel_2d", "single_channel_3d"]),
    "fold_depth_conv": ("conv", ["fold_3d", "fold_3d_strided_dilated"]),
    "fold_depth_input_grad": ("input_grad", ["fold_3d", "fold_3d_strided_dilated"]),
    "fold_depth_weight_grad": ("weight_grad", ["fold_3d", "fold_3d_strided_dilated", "many_samples_3d"]),
    "depth_tap_conv": ("conv", ["fold_3d", "fold_3d_strided_dilated"]),
    "depth_tap_input_grad": ("input_grad", ["fold_3d", "fold_3d_strided_dilated"]),
    # The tap loops (_conv.loops): every kind of config, groups, strides and dilations included.
    **{f"loop_{piece}": (piece, ["depthwise_multiplier_strided", "depthwise_3d", "fold_3d_strided_dilated",
                                 "im2col_groups", "im2col_1d", "many_samples_3d"])
       for piece in ("conv", "input_grad", "weight_grad")},
    "loop_sample_batched_weight_grad": ("weight_grad", ["fold_3d_strided_dilated", "wide_2d",
                                                        "many_samples_2d", "many_samples_3d"]),
    "loop_depthwise_weight_grad": ("weight_grad", ["depthwise_2d", "depthwise_multiplier_strided",
                                                   "depthwise_1d_dilated", "depthwise_3d"]),
}
FORM_FUNCTIONS = {form.name: form.function for form in rules.FORMS}   # the table's, by name
FORM_CASES = [(form, name, cl) for form, (_, names) in FORMS.items() for name in names
              for cl in (False, True)]


def _operands(name, channels_last, rng, dtype=jnp.float64):
    spatial, kernel, c, o, kwargs = CONFIGS[name]
    groups = kwargs.get("groups", 1)
    n = BATCH.get(name, 2)
    x_shape = (n, *spatial, c) if channels_last else (n, c, *spatial)
    w_shape = (*kernel, c // groups, o) if channels_last else (o, c // groups, *kernel)
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    args = normalize_conv(x, w, None, padding_mode="zeros", channels_last=channels_last,
                          impl="lax", **{"stride": 1, "padding": 0, "dilation": 1, "groups": 1, **kwargs})
    dy = random_array(rng, jaxcnn.conv(x, w, channels_last=channels_last, **kwargs).shape, dtype)
    return x, w, dy, args.spec



# The default tier: each form, each config and both layouts at least once; the full tier: each
# form on each config it applies to, in both layouts.
@pytest.mark.parametrize("form,name,channels_last", sample(FORM_CASES, strength=1))
def test_form_equals_lax_piece(form, name, channels_last, rng):
    piece, _ = FORMS[form]
    x, w, dy, spec = _operands(name, channels_last, rng)
    got = run_piece(FORM_FUNCTIONS[form], piece, x, w, dy, spec)
    want = run_piece(IMPLS["lax"][rules.PIECES.index(piece)], piece, x, w, dy, spec)
    assert got.shape == want.shape
    assert_close(got, want, TOL["float64"], f"{form} on {name}")


@pytest.mark.parametrize("name,channels_last", [("many_samples_2d", False), ("many_samples_3d", True),
                                                 ("depthwise_multiplier_strided", True)])
def test_batch_chunked_loop_equals_lax_piece(name, channels_last, rng):
    """The tap loop over slices of the batch (each padded, summed and written back alone)."""
    x, w, dy, spec = _operands(name, channels_last, rng)
    x = jnp.concatenate([x, 2 * x])                     # 2N samples: slices of N / 2 ... 2N
    want = run_piece(IMPLS["lax"][0], "conv", x, w, dy, spec)
    for chunks in {2, x.shape[0]}:
        got = run_piece(partial(loops.loop_conv, batch_chunks=chunks), "conv", x, w, dy, spec)
        assert_close(got, want, TOL["float64"], f"{chunks} slices on {name}")


@pytest.mark.parametrize("name,channels_last", [("many_samples_2d", False), ("many_samples_3d", True),
                                                 ("depthwise_multiplier_strided", True),
                                                 ("fold_3d_strided_dilated", False)])
def test_row_chunked_loop_equals_lax_piece(name, channels_last, rng):
    """The tap loop over slices of the output's first spatial axis, every tap read from the one
    ``x_pad`` at its slice's rows (strided: from the phases, shifted by whole rows)."""
    x, w, dy, spec = _operands(name, channels_last, rng)
    want = run_piece(IMPLS["lax"][0], "conv", x, w, dy, spec)
    rows = want.shape[spec.spatial_axes()[0]]
    for chunks in sorted({c for c in (2, 3, rows) if rows % c == 0}):
        got = run_piece(partial(loops.loop_conv, row_chunks=chunks), "conv", x, w, dy, spec)
        assert_close(got, want, TOL["float64"], f"{chunks} row slices on {name}")


def test_batch_chunks_fit_the_budget():
    """fashion_conv2 channels last (128 × 14² × 32 → 64): the plain loop's x_pad, accumulator and
    product exceed 1.5 × (input + output); 16 slices of 8 samples fit. Two samples: never sliced."""
    shapes = ((128, 14, 14, 32), (3, 3, 32, 64))
    spec = _spec(x=(128, 32, 14, 14), w=(64, 32, 3, 3), padding=1).replace(channels_last=True)
    a = budget.activation_sizes(spec, *shapes)
    room = budget.MEMORY_BUDGET * (a["input"] + a["output"])
    assert rules.form_memory(loops.loop_conv, spec, *shapes) > room
    assert budget.chunks(a) == (16, 1) and budget.chunked_memory(a, 16, 1) <= room
    assert rules.choose("conv", "manual", spec, *shapes, "cpu") is loops.chunked_loop_conv
    small = budget.activation_sizes(spec, (2, 14, 14, 32), shapes[1])
    assert budget.chunks(small)[0] == 1


def test_row_chunks_fit_the_budget():
    """conv3d_3x3x3 channels last (one 8 × 28² sample, 32 → 32): the batch cannot be sliced and
    the plain loop's x_pad (10 × 30², 1.43× the input), accumulator and product exceed
    1.5 × (input + output); two slices of 4 output rows do not fit either (x_pad + output + 2 ×
    half the output = 3.43 outputs), four slices of 2 rows do (2.93 ≤ 3)."""
    shapes = ((1, 8, 28, 28, 32), (3, 3, 3, 32, 32))
    spec = _spec(x=(1, 32, 8, 28, 28), w=(32, 32, 3, 3, 3), padding=1).replace(channels_last=True)
    a = budget.activation_sizes(spec, *shapes)
    assert a["rows"] == 8 and budget.chunks(a) == (1, 4)
    assert budget.chunked_memory(a, 1, 2) > budget.room(a) >= budget.chunked_memory(a, 1, 4)
    assert rules.choose("conv", "manual", spec, *shapes, "cpu") is loops.chunked_loop_conv


@pytest.mark.parametrize("form", ["depthwise_weight_grad", "im2col_weight_grad", "loop_weight_grad",
                                  "loop_depthwise_weight_grad"])
def test_half_precision_forms_sum_in_float32(form, rng):
    """bfloat16 operands, a float64 reference on the same (rounded) values: the sum over
    N·∏S_out = 2·63 terms in bfloat16 would be off by ~1e-2; summed in float32 and rounded
    once it stays within bfloat16's own rounding."""
    name = "depthwise_2d" if "depthwise" in form else "im2col_thin"
    x, w, dy, spec = _operands(name, False, rng, jnp.bfloat16)
    got = run_piece(FORM_FUNCTIONS[form], "weight_grad", x, w, dy, spec)
    want = run_piece(IMPLS["lax"][2], "weight_grad", x.astype(jnp.float64), w.astype(jnp.float64),
                dy.astype(jnp.float64), spec)
    assert_close(got.astype(jnp.float64), want, TOL["bfloat16"], form)


RULES = [  # (config, channels_last, impl, platform, piece, fastest candidate's name)
    ("depthwise_2d", False, "lax", "cpu", "conv", "manual_conv"),
    ("depthwise_2d", True, "lax", "cpu", "input_grad", "manual_input_grad"),
    ("depthwise_2d", False, "lax", "cpu", "weight_grad", "depthwise_weight_grad"),
    ("depthwise_2d", False, "lax", None, "weight_grad", "lax_weight_grad"),
    ("depthwise_2d", True, "manual", None, "weight_grad", "depthwise_weight_grad"),
    ("fold_3d", False, "lax", "cpu", "conv", "fold_depth_conv"),
    ("fold_3d", True, "lax", "cpu", "input_grad", "fold_depth_input_grad"),
    ("fold_3d", False, "lax", "cpu", "weight_grad", "fold_depth_weight_grad"),   # K_d·C = 9
    ("fold_3d", False, "lax", None, "conv", "lax_conv"),
    ("im2col_thin", False, "manual", None, "conv", "im2col_conv"),
    ("im2col_thin", True, "manual", None, "weight_grad", "im2col_weight_grad"),
    ("im2col_thin", True, "manual", "cpu", "weight_grad", "im2col_weight_grad"),
    ("fold_3d", True, "manual", "cpu", "weight_grad", "manual_weight_grad"),
    ("wide_2d", True, "manual", "cpu", "weight_grad", "manual_weight_grad"),
    ("im2col_1d", False, "lax", "cpu", "weight_grad", "lax_weight_grad"),
    ("many_samples_2d", False, "lax", "cpu", "weight_grad", "sample_batched_weight_grad"),
    ("im2col_thin", False, "lax", "cpu", "weight_grad", "lax_weight_grad"),   # 2D, 3 channels, 35 taps
    ("many_samples_3d", False, "lax", "cpu", "weight_grad", "fold_depth_weight_grad"),
    ("many_samples_3d", True, "manual", "cpu", "weight_grad", "sample_batched_weight_grad"),
    ("many_samples_2d", True, "lax", None, "weight_grad", "lax_weight_grad"),
    ("many_samples_2d", False, "manual", None, "weight_grad", "im2col_weight_grad"),
    ("im2col_thin", False, "manual", "cpu", "input_grad", "manual_input_grad"),
    ("im2col_thin", False, "lax", "cpu", "conv", "lax_conv"),
    ("wide_2d", True, "lax", "cpu", "weight_grad", "manual_weight_grad"),
    ("wide_2d", False, "lax", "cpu", "weight_grad", "manual_weight_grad"),
    ("wide_2d", True, "manual", "cpu", "conv", "manual_conv"),
    ("single_channel_3d", True, "lax", "cpu", "conv", "single_channel_conv"),   # before the depth fold
    ("single_channel_2d", False, "lax", "cpu", "conv", "single_channel_conv"),
    ("single_channel_2d", True, "lax", None, "conv", "lax_conv"),
    ("single_channel_1d", True, "manual", "cpu", "conv", "manual_conv"),
]


@pytest.mark.parametrize("name,channels_last,impl,platform,piece,expected", RULES)
def test_candidates_follow_the_rules(name, channels_last, impl, platform, piece, expected, rng):
    x, w, _, spec = _operands(name, channels_last, rng)
    forms = rules.candidates(piece, impl, spec, x.shape, w.shape, platform)
    assert forms[0].__name__ == expected
    # the last resort: the one-lax-call piece (lax) or the lean tap loop (manual)
    last = (IMPLS["lax"] if impl == "lax" else rules.LOOPS)[rules.PIECES.index(piece)]
    assert forms[-1] is last


def _spec(**kwargs):
    x, w = jnp.zeros(kwargs.pop("x")), jnp.zeros(kwargs.pop("w"))
    return normalize_conv(x, w, None, padding_mode="zeros", channels_last=False, impl="lax",
                          **{"stride": 1, "padding": 0, "dilation": 1, "groups": 1, **kwargs}).spec


def test_activation_sizes_hand_worked():
    # x (2, 3, 10, 8), w (5, 3, 3, 3), stride 2, padding 1: out (5, 4); x_pad (12, 10)
    spec = _spec(x=(2, 3, 10, 8), w=(5, 3, 3, 3), stride=2, padding=1)
    a = budget.activation_sizes(spec, (2, 3, 10, 8), (5, 3, 3, 3))
    assert a == {"input": 480, "output": 200, "padded": 720, "slice": 120,
                 "dilated": 2 * 3 * 9 * 7, "taps": 9, "depth_taps": 3, "depth_slice": 2 * 3 * 5 * 8,
                 "depth_padded": 2 * 3 * 12 * 8, "dy_copy": 200, "batch": 2, "rows": 5}
    # channels last: dy is contracted as it lies, no transposed copy
    spec_last = spec.replace(channels_last=True)
    assert budget.activation_sizes(spec_last, (2, 10, 8, 3), (3, 3, 3, 5))["dy_copy"] == 0


def test_choice_weighs_memory():
    """A 3×3 conv of 64 → 128 channels: nine unrolled taps (9 slices, each the size of the
    input) exceed 1.5 × (input + output); the weight gradient's tap loop (one slice, x_pad and
    a copy of dy) fits; impl="manual" falls back to its loop whatever the estimate; a 3-D conv of 3 → 16 channels has room for its folded depth taps."""
    shapes = ((2, 64, 16, 16), (128, 64, 3, 3))
    spec = _spec(x=shapes[0], w=shapes[1], padding=1)
    assert not rules.fits(IMPLS["manual"][0], spec, *shapes)
    assert rules.fits(loops.loop_weight_grad, spec, *shapes)
    # the last resort, the tap loop (two samples: not sliced)
    assert rules.choose("conv", "manual", spec, *shapes, "cpu") is loops.chunked_loop_conv
    assert budget.chunks(budget.activation_sizes(spec, *shapes))[0] == 1
    assert rules.choose("weight_grad", "manual", spec, *shapes, "cpu") is loops.loop_weight_grad
    # impl="lax" in 2D: XLA's weight gradient rather than the plain tap loop
    assert rules.choose("weight_grad", "lax", spec, *shapes, "cpu") is IMPLS["lax"][2]
    # a depth fold stacks K_0 = 3 copies of the input (and their folded copy), the depth-tap
    # loop holds x_pad, one depth slice and the output beside the accumulator: lax's piece
    spec3 = _spec(x=(1, 8, 4, 6, 6), w=(8, 8, 3, 3, 3), padding=1)
    assert rules.choose("conv", "lax", spec3, (1, 8, 4, 6, 6), (8, 8, 3, 3, 3), "cpu") is IMPLS["lax"][0]
    # 16 → 40 channels, 4 samples: input 4096, output 10240 (budget 21504); the fold's 24576
    # does not fit, the loop's 6144 + 4096 + 10240 does
    taps = ((4, 16, 4, 4, 4), (40, 16, 3, 3, 3))
    spec_taps = _spec(x=taps[0], w=taps[1], padding=1)
    assert rules.choose("conv", "lax", spec_taps, *taps, "cpu") is depth.depth_tap_conv
    assert rules.choose("input_grad", "lax", spec_taps, *taps, "cpu") is depth.depth_tap_input_grad
    wide = ((2, 3, 4, 5, 6), (16, 3, 3, 3, 3))
    spec_wide = _spec(x=wide[0], w=wide[1], padding=1)
    assert rules.choose("conv", "lax", spec_wide, *wide, "cpu") is depth.fold_depth_conv


def _convolutions(fn, *args) -> list[str]:
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    return [line for line in hlo.splitlines() if " convolution(" in line]


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU lowerings")
def test_cpu_lowering_is_used(rng):
    """fwd+bwd of a 3D conv compiles to 2D convolutions only; a depthwise one's weight gradient
    is no convolution (lax's would be one with batch_group_count)."""
    def loss(x, w, **kwargs):
        return jnp.sum(jnp.sin(jaxcnn.conv(x, w, padding=1, **kwargs)))
    # 3 → 16 channels: the folded depth taps fit the memory budget (rules.fits)
    x, w = random_array(rng, (2, 3, 4, 5, 6)), random_array(rng, (16, 3, 3, 3, 3))
    convs = _convolutions(jax.grad(loss, (0, 1)), x, w)
    assert convs and all(line.split("size=")[1].split()[0].count("x") == 1 for line in convs), convs
    x, w = random_array(rng, (2, 4, 16, 16)), random_array(rng, (8, 1, 3, 3))
    convs = _convolutions(jax.grad(partial(loss, groups=4), (0, 1)), x, w)
    assert not any(re.search(r"batch_group_count=(?!1\b)\d+", line) for line in convs), convs


@pytest.mark.parametrize("platform", [None, "cpu"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_manual_never_uses_a_convolution_primitive(name, platform, rng):
    """Whatever the shapes, impl="manual" picks only forms without conv_general_dilated."""
    uses_lax = {*IMPLS["lax"], depth.fold_depth_conv, depth.fold_depth_input_grad,
                depth.depth_tap_conv, depth.depth_tap_input_grad}
    for channels_last in (False, True):
        x, w, _, spec = _operands(name, channels_last, rng)
        for piece in rules.PIECES:
            assert rules.choose(piece, "manual", spec, x.shape, w.shape, platform) not in uses_lax


def test_measured_choice_is_cached_and_exact(monkeypatch, tmp_path, rng):
    """JAXCNN_MEASURE_FORMS=1: the candidates are timed once per shape, the winner cached on
    disk; the values stay those of the one-lax-call pieces; a second process (an empty
    in-memory cache) reads the file instead of timing again."""
    from jaxcnn._conv import tuning
    cache = tmp_path / "forms.json"
    monkeypatch.setenv(tuning.MEASURE_ENV, "1")
    monkeypatch.setenv(tuning.CACHE_ENV, str(cache))
    monkeypatch.setattr(tuning, "_MEMORY", {})
    x, w = random_array(rng, (2, 4, 16, 16)), random_array(rng, (8, 1, 3, 3))   # depthwise: loops fit
    def loss(x, w, **kwargs):
        return jnp.sum(jnp.sin(jaxcnn.conv(x, w, padding=1, groups=4, **kwargs)))
    got = jax.grad(loss, (0, 1))(x, w)
    with tuning_off(monkeypatch):
        want = jax.grad(partial(loss, impl="lax"), (0, 1))(x, w)
    assert_close(got[0], want[0], TOL["float64"], "dx")
    assert_close(got[1], want[1], TOL["float64"], "dw")
    entries = json.loads(cache.read_text())
    assert entries and all(json.loads(k)[3] in rules.PIECES for k in entries)
    monkeypatch.setattr(tuning, "_MEMORY", {})
    monkeypatch.setattr(tuning, "time_form", lambda *a, **k: pytest.fail("timed again"))
    jax.clear_caches()
    jax.grad(loss, (0, 1))(x, w)


class tuning_off:
    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch

    def __enter__(self):
        from jaxcnn._conv import tuning
        self.monkeypatch.setenv(tuning.MEASURE_ENV, "0")
        jax.clear_caches()

    def __exit__(self, *exc):
        from jaxcnn._conv import tuning
        self.monkeypatch.setenv(tuning.MEASURE_ENV, "1")
        return False
