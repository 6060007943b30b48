"""Tests of ``jaxcnn.models``: every named model's declared output shape equals ``apply``'s,
parameter counts worked out by hand, the frame baseline's blindness to frame order, and
``jaxcnn summary``."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import models, nn
from helpers import TOL, assert_close

KEY = jax.random.key(0)


def _conv(o, c, k, bias=True):
    return o * c * k + (o if bias else 0)


def _gn(c):
    return 2 * c


def _basic_block(c_in, c, k, projection):
    """Two bias-free convs and two GroupNorms, plus a 1x1 projection (with bias) if needed."""
    return (_conv(c, c_in, k, bias=False) + _conv(c, c, k, bias=False) + 2 * _gn(c)
            + (_conv(c, c_in, 1) if projection else 0))


# Parameter counts by hand, layer by layer (conv: O·C·ΠK + O; dense: F·O + O; GroupNorm: 2C).
COUNTS = {
    "mnist1d-cnn": _conv(25, 1, 5) + 2 * _conv(25, 25, 3) + (25 * 5 * 10 + 10),
    "mnist1d-resnet": (_conv(64, 1, 5, False) + _gn(64) + _basic_block(64, 64, 3, False)
                       + 2 * _basic_block(64, 64, 3, True) + (64 * 10 * 10 + 10)),
    "fashion-cnn": (_conv(32, 1, 9) + _conv(64, 32, 9) + _gn(64) + _conv(128, 64, 9) + _gn(128)
                    + (128 * 7 * 7 * 10 + 10)),
    "fashion-resnet": (_conv(32, 1, 9, False) + _gn(32) + _basic_block(32, 32, 9, False)
                       + _basic_block(32, 64, 9, True) + _basic_block(64, 128, 9, True) + (128 * 10 + 10)),
    "clips-cnn3d": (_conv(16, 1, 27) + _conv(32, 16, 27) + _gn(32) + _conv(64, 32, 27) + _gn(64)
                    + (64 * 40 + 40)),
    "clips-frame2d": (_conv(16, 1, 9) + _conv(32, 16, 9) + _gn(32) + _conv(64, 32, 9) + _gn(64)
                      + (64 * 40 + 40)),
}


def test_registry_is_complete():
    assert set(models.MODELS) == set(COUNTS) == set(models.INPUT_SHAPES)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_declared_shape_is_apply_shape_and_params_by_hand(name):
    model = models.build(name)
    shape = (2, *models.INPUT_SHAPES[name])
    params, declared = model.init(KEY, shape)
    y = jax.jit(model.apply)(params, jnp.zeros(shape, jnp.float32))
    classes = models.NUM_CLASSES[models.DATASETS[name]]
    assert declared == tuple(y.shape) == (2, classes)
    assert nn.count_params(params) == COUNTS[name]
    assert sum(r.params for r in nn.summary(model, shape) if r.depth == 0) == COUNTS[name]


def test_the_mnist1d_paper_cnn_has_5210_parameters():
    assert COUNTS["mnist1d-cnn"] == 5210


@pytest.mark.x64
@pytest.mark.parametrize("name", [pytest.param("mnist1d-resnet", marks=pytest.mark.slow), "fashion-cnn"])
def test_manual_and_lax_models_agree(name, rng):
    shape = (2, *models.INPUT_SHAPES[name])
    lax_model, manual_model = models.build(name, impl="lax"), models.build(name, impl="manual")
    params, _ = lax_model.init(KEY, shape)
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
    x = jnp.asarray(rng.standard_normal(shape))
    assert_close(jax.jit(manual_model.apply)(params, x), jax.jit(lax_model.apply)(params, x),
                  TOL["float64"], name)


def test_frame_baseline_cannot_see_frame_order(rng):
    """The per-frame model averages over frames: reversing time (a leftward clip from a
    rightward one) cannot change its output; the 3D CNN's does change."""
    shape = (2, *models.INPUT_SHAPES["clips-frame2d"])
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    reverse = x[:, :, ::-1]
    for name, blind in (("clips-frame2d", True), ("clips-cnn3d", False)):
        model = models.build(name)
        params, _ = model.init(KEY, shape)
        apply = jax.jit(model.apply)
        y, y_rev = np.asarray(apply(params, x)), np.asarray(apply(params, reverse))
        if blind:
            assert_close(y_rev, y, TOL["float32"] * 10, name)  # float32 sums in another order
        else:
            assert np.max(np.abs(y_rev - y)) > 1e-3 * np.max(np.abs(y))


def test_build_rejects_unknown_model():
    with pytest.raises(ValueError, match="model"):
        models.build("lenet")


def test_summary_command_prints_the_table(capsys):
    assert models.main(["mnist1d-cnn"]) == 0
    out = capsys.readouterr().out
    assert "Conv1d(25, 5, stride=2, padding=1)" in out and "(1, 25, 19)" in out
    assert out.strip().splitlines()[-1].split()[-1] == "5,210"


def test_summary_seed_example_contrasts_3072_and_75_weights(capsys):
    assert models.main(["seed-example"]) == 0
    out = capsys.readouterr().out
    # A dense unit on 32x32x3: 3072 weights + 1 bias; one 5x5x3 kernel: 75 + 1, output 28x28.
    assert "3,073" in out and "76" in out and "(1, 1, 28, 28)" in out
    assert "3072" in out and "75" in out


def test_summary_command_rejects_unknown_model(capsys):
    with pytest.raises(SystemExit):
        models.main(["lenet"])
    assert "lenet" in capsys.readouterr().err


@pytest.mark.x64
@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] * (name != "fashion-resnet"))
                                  for name in models.LAYOUT_MODELS])   # the quickest in the default tier
def test_channels_last_model_is_the_same_model(name):
    """channels_last=True: the same network with every layer channels last (kernels
    ``(*K, C, O)``). From one key it draws the channels-first parameters with each kernel
    moved by hand (the dense layer after a flatten unchanged: it flattens in the (C, *S)
    order), and gives the same logits from channels-first input, in training too (the same
    dropout mask). ``channels_first_params`` takes them back."""
    first, last = models.build(name, channels_last=False), models.build(name, channels_last=True)
    shape = (2, *models.INPUT_SHAPES[name])
    params, _ = first.init(jax.random.key(0), shape)
    def to_last(a):
        return np.moveaxis(np.asarray(a), (0, 1), (-1, -2)) if a.ndim >= 3 else np.asarray(a)
    params_last = jax.tree_util.tree_map(to_last, params)
    drawn, _ = last.init(jax.random.key(0), shape)
    assert jax.tree_util.tree_structure(drawn) == jax.tree_util.tree_structure(params_last)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(drawn),
                                                    jax.tree_util.tree_leaves(params_last)))
    back = models.channels_first_params(drawn)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)))
    x = np.random.default_rng(0).standard_normal(shape)
    apply_first = jax.jit(first.apply, static_argnames="train")
    apply_last = jax.jit(last.apply, static_argnames="train")
    assert_close(apply_last(params_last, x), apply_first(params, x), TOL["float64"], f"{name} logits")
    key = jax.random.key(1)
    assert_close(apply_last(params_last, x, train=True, key=key), apply_first(params, x, train=True, key=key),
                 TOL["float64"], f"{name} training logits")
    with pytest.raises(ValueError, match="channels_last"):
        models.build("mnist1d-cnn", channels_last=True)


def _kernel_shapes(model: nn.Layer, name: str) -> list[tuple[int, ...]]:
    """The shapes of the kernels (leaves of 3+ axes) ``model.init`` draws, without drawing them."""
    params = jax.eval_shape(lambda: model.init(KEY, (2, *models.INPUT_SHAPES[name]))[0])
    return [leaf.shape for leaf in jax.tree_util.tree_leaves(params) if leaf.ndim >= 3]


@pytest.mark.parametrize("platform, layout_models_last", [("cpu", True), ("gpu", True), ("cuda", True),
                                                          ("rocm", True), ("tpu", False)])
def test_default_layout_per_platform(platform, layout_models_last):
    """Channels last by default for the models that have the layout on CPU and GPU, channels
    first for the others and on platforms not measured."""
    for name in models.MODELS:
        want = layout_models_last and name in models.LAYOUT_MODELS
        assert models.default_channels_last(name, platform) is want, (name, platform)


@pytest.mark.parametrize("backend", ["cpu", "tpu"])
def test_build_takes_the_default_layout_unless_told(backend, monkeypatch):
    """``channels_last=None`` (``build``'s default, and the model functions') builds the
    backend's default layout: the kernels ``(*K, I, O)`` channels last, ``(O, I, *K)``
    channels first; an explicit ``True``/``False`` is built as asked on any backend."""
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert models.default_channels_last("fashion-cnn") is (backend == "cpu")
    first = [(32, 1, 3, 3), (64, 32, 3, 3), (128, 64, 3, 3)]
    last = [(3, 3, 1, 32), (3, 3, 32, 64), (3, 3, 64, 128)]
    default = last if backend == "cpu" else first
    assert _kernel_shapes(models.build("fashion-cnn"), "fashion-cnn") == default
    assert _kernel_shapes(models.fashion_cnn(), "fashion-cnn") == default
    assert _kernel_shapes(models.build("fashion-cnn", channels_last=False), "fashion-cnn") == first
    assert _kernel_shapes(models.build("fashion-cnn", channels_last=True), "fashion-cnn") == last
    # No layout to choose: channels first on every backend.
    assert _kernel_shapes(models.build("mnist1d-cnn"), "mnist1d-cnn") == [(25, 1, 5), (25, 25, 3), (25, 25, 3)]


def test_default_layout_bad_arguments_are_named():
    with pytest.raises(ValueError, match="name: expected one of"):
        models.default_channels_last("lenet")
    with pytest.raises(TypeError, match="platform: expected a platform name"):
        models.default_channels_last("fashion-cnn", 0)
    with pytest.raises(TypeError, match="channels_last: expected a bool; got 1"):
        models.build("fashion-cnn", channels_last=1)
    with pytest.raises(ValueError, match="channels_last: expected False for 'mnist1d-cnn'"):
        models.build("mnist1d-cnn", channels_last=True)
    models.build("mnist1d-cnn", channels_last=False)   # channels first: what it has
