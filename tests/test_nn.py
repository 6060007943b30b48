"""Tests of ``jaxcnn.nn``: shapes declared by ``init`` equal ``apply``'s, exact parameter counts
computed by hand, every layer against an independent computation (``jaxcnn.reference``,
numpy, PyTorch), gradients of a whole model against JAX autodiff of the reference ops, and
the bad-input messages."""
from __future__ import annotations

import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import nn, reference
from jaxcnn._compat import enable_x64
from jaxcnn._conv import native
from jaxcnn.nn import layers
from helpers import TOL, VJP_TOL, assert_close, random_array, tree_assert_close

pytestmark = pytest.mark.x64

KEY = jax.random.key(0)


def init_apply(layer, shape, rng, dtype=jnp.float64, **kwargs):
    params, declared = layer.init(KEY, shape)
    params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params)
    x = random_array(rng, shape, dtype)
    return params, declared, x, jax.jit(lambda p, x: layer.apply(p, x, **kwargs))(params, x)


# Each case: a layer, an input shape, and its parameter count worked out by hand.
LAYERS = {
    "conv1d": (nn.Conv1d(6, 3), (2, 4, 11), 6 * 4 * 3 + 6),
    "conv1d-same-stride2": (nn.Conv1d(6, 4, stride=2, padding="SAME"), (2, 4, 11), 6 * 4 * 4 + 6),
    "conv1d-causal-dilated": (nn.Conv1d(3, 3, dilation=2, padding="CAUSAL"), (2, 2, 9), 3 * 2 * 3 + 3),
    "conv2d-groups": (nn.Conv2d(8, (3, 2), groups=2, padding=1), (2, 4, 7, 6), 8 * 2 * 3 * 2 + 8),
    "conv2d-reflect": (nn.Conv2d(5, 3, padding=1, padding_mode="reflect"), (1, 3, 6, 6), 5 * 3 * 9 + 5),
    "conv2d-channels-last": (nn.Conv2d(5, 3, stride=2, channels_last=True), (2, 9, 8, 3), 5 * 3 * 9 + 5),
    "conv2d-manual-nobias": (nn.Conv2d(4, 2, impl="manual", bias=False), (1, 3, 5, 5), 4 * 3 * 4),
    "conv3d": (nn.Conv3d(4, (2, 3, 3), padding=(0, 1, 1), stride=(1, 2, 2)), (1, 2, 4, 7, 7), 4 * 2 * 18 + 4),
    "conv-transpose2d": (nn.ConvTranspose(6, (3, 3), stride=2, padding=1, output_padding=1),
                         (2, 4, 5, 5), 4 * 6 * 9 + 6),
    "conv-transpose1d-groups": (nn.ConvTranspose(4, (3,), groups=2), (1, 6, 7), 6 * 2 * 3 + 4),
    "maxpool2d": (nn.MaxPool(2), (2, 3, 7, 6), 0),
    "maxpool1d-padded": (nn.MaxPool(3, stride=2, padding=1), (2, 3, 10), 0),
    "avgpool3d": (nn.AvgPool((1, 2, 2)), (1, 2, 3, 6, 6), 0),
    "global-avg-pool": (nn.GlobalAvgPool(), (3, 5, 4, 4), 0),
    "dense": (nn.Dense(5), (4, 12), 12 * 5 + 5),
    "dense-nobias": (nn.Dense(5, bias=False), (4, 12), 60),
    "flatten": (nn.Flatten(), (2, 3, 4, 5), 0),
    "relu": (nn.ReLU(), (2, 3, 5), 0),
    "gelu": (nn.GELU(), (2, 3, 5), 0),
    "dropout": (nn.Dropout(0.5), (2, 3, 5), 0),
    "groupnorm": (nn.GroupNorm(2), (2, 6, 5), 2 * 6),
    "mean": (nn.Mean(axis=1), (2, 3, 5), 0),
    "residual-identity": (nn.Residual(nn.serial(nn.Conv1d(4, 3, padding=1), nn.ReLU())), (2, 4, 9), 4 * 4 * 3 + 4),
    "residual-projection": (nn.Residual(nn.Conv2d(6, 3, stride=2, padding=1)), (2, 4, 9, 9),
                            (6 * 4 * 9 + 6) + (6 * 4 + 6)),
    "perframe": (nn.PerFrame(nn.serial(nn.Conv2d(3, 3), nn.GlobalAvgPool())), (2, 1, 4, 6, 6), 3 * 9 + 3),
    "serial": (nn.serial(nn.Conv1d(4, 3), nn.ReLU(), nn.Flatten(), nn.Dense(2)), (3, 2, 8),
               (4 * 2 * 3 + 4) + (4 * 6 * 2 + 2)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_init_shape_is_apply_shape_and_params_counted_by_hand(name, rng):
    layer, shape, count = LAYERS[name]
    params, declared, x, y = init_apply(layer, shape, rng)
    assert tuple(y.shape) == declared, f"{name}: init says {declared}, apply gives {y.shape}"
    assert nn.count_params(params) == count
    top = [row for row in nn.summary(layer, shape) if row.depth == 0]
    assert top[-1].output_shape == declared and sum(row.params for row in top) == count


def test_train_mode_shapes_agree(rng):
    layer = nn.serial(nn.Conv1d(4, 3), nn.Dropout(0.2), nn.Flatten(), nn.Dense(3))
    params, declared, x, y = init_apply(layer, (2, 1, 10), rng, train=True, key=KEY)
    assert tuple(y.shape) == declared


@pytest.mark.parametrize("layer", [nn.Conv1d(32, 5), nn.Conv2d(16, 3, groups=4), nn.Dense(40)],
                         ids=["conv1d", "conv2d-groups", "dense"])
def test_init_is_pytorch_kaiming_uniform(layer):
    """``kaiming_uniform_(a=√5)``: ``U(−b, b)`` with ``b = √(6 / ((1 + a²) fan_in)) = 1/√fan_in``."""
    shape = (1, 3, 10) if layer.name.startswith("Conv1d") else (1, 8, 6, 6) if "Conv2d" in layer.name else (1, 30)
    params, _ = layer.init(KEY, shape)
    w = np.asarray(params["w"])
    fan_in = 30 if w.ndim == 2 else w.shape[1] * math.prod(w.shape[2:])
    bound = math.sqrt(6.0 / ((1 + 5) * fan_in))
    for value in (w, np.asarray(params["b"])):
        assert np.all(np.abs(value) <= bound)
    assert np.max(np.abs(w)) > 0.9 * bound  # uses the whole range
    assert abs(np.std(w) - bound / math.sqrt(3)) < 0.15 * bound / math.sqrt(3)


@pytest.mark.parametrize("make, shape", [
    (lambda cl: nn.Conv2d(6, (3, 2), groups=2, channels_last=cl), (1, 4, 7, 5)),
    (lambda cl: nn.Conv3d(3, 2, bias=False, channels_last=cl), (1, 2, 4, 4, 3)),
    (lambda cl: nn.ConvTranspose(4, (3,), stride=2, channels_last=cl), (1, 5, 6)),
], ids=["conv2d-groups", "conv3d-no-bias", "conv-transpose1d"])
def test_channels_last_init_is_the_channels_first_kernel_transposed(make, shape):
    """One key, one kernel: ``(A, B, *K)`` moved to ``(*K, B, A)`` by hand, bias alike."""
    first, _ = make(False).init(KEY, shape)
    last, _ = make(True).init(KEY, (shape[0], *shape[2:], shape[1]))
    assert np.array_equal(last["w"], np.moveaxis(np.asarray(first["w"]), (0, 1), (-1, -2)))
    assert first.keys() == last.keys() and all(np.array_equal(first[k], last[k]) for k in first if k != "w")


def test_init_is_a_function_of_the_key_eager_or_jitted():
    layer = nn.serial(nn.Conv1d(4, 3), nn.Flatten(), nn.Dense(2))
    eager, shape = layer.init(KEY, (1, 2, 6))
    jitted = jax.jit(lambda key: layer.init(key, (1, 2, 6))[0])(KEY)
    tree_assert_close(jitted, eager, 0.0, "jit vs eager init")
    other, _ = layer.init(jax.random.key(1), (1, 2, 6))
    assert not np.array_equal(other[0]["w"], eager[0]["w"])
    assert not np.array_equal(eager[0]["w"].ravel()[:2], eager[0]["b"][:2])  # w and b drawn apart


@pytest.mark.parametrize("name", ["conv1d-same-stride2", "conv2d-groups", "conv2d-reflect",
                                  "conv2d-channels-last", "conv3d"])
def test_conv_layer_matches_reference_conv(name, rng):
    layer, shape, _ = LAYERS[name]
    params, _, x, y = init_apply(layer, shape, rng)
    options = {"conv1d-same-stride2": dict(stride=2, padding="SAME"),
               "conv2d-groups": dict(groups=2, padding=1),
               "conv2d-reflect": dict(padding=1, padding_mode="reflect"),
               "conv2d-channels-last": dict(stride=2, channels_last=True),
               "conv3d": dict(padding=(0, 1, 1), stride=(1, 2, 2))}[name]
    assert_close(y, reference.conv(x, params["w"], params["b"], **options), TOL["float64"], name)


def test_dense_flatten_matches_numpy(rng):
    layer = nn.serial(nn.Flatten(), nn.Dense(3))
    params, _, x, y = init_apply(layer, (4, 2, 5), rng)
    w, b = np.asarray(params[1]["w"]), np.asarray(params[1]["b"])
    assert_close(y, np.asarray(x).reshape(4, 10) @ w + b[None, :], TOL["float64"])


def test_groupnorm_by_hand_and_channels_last(rng):
    layer = nn.GroupNorm(2)
    params = {"scale": random_array(rng, (4,)), "bias": random_array(rng, (4,))}
    x = random_array(rng, (3, 4, 5))
    xn = np.asarray(x).reshape(3, 2, 10)
    expected = ((xn - xn.mean(2, keepdims=True)) / np.sqrt(xn.var(2, keepdims=True) + 1e-5)).reshape(3, 4, 5)
    expected = expected * np.asarray(params["scale"])[None, :, None] + np.asarray(params["bias"])[None, :, None]
    assert_close(layer.apply(params, x), expected, TOL["float64"])
    last = nn.GroupNorm(2, channels_last=True).apply(params, jnp.moveaxis(x, 1, -1))
    assert_close(jnp.moveaxis(last, -1, 1), expected, TOL["float64"])


@pytest.mark.parametrize("shape", [(2, 6, 4, 3), (2, 6, 3, 2, 4)], ids=["2d", "3d"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["channels_first", "channels_last"])
def test_groupnorm_matches_pytorch(shape, channels_last, rng):
    """Values and the gradients of x, scale and bias, against torch.nn.GroupNorm (channels first
    there; the channels-last layer sums its statistics per channel first, then per group)."""
    torch = pytest.importorskip("torch")
    x, ct = rng.standard_normal(shape), rng.standard_normal(shape)
    module = torch.nn.GroupNorm(3, 6, eps=1e-5).double()
    torch.nn.init.normal_(module.weight)
    torch.nn.init.normal_(module.bias)
    xt = torch.from_numpy(x).requires_grad_()
    expected = module(xt)
    torch.sum(expected * torch.from_numpy(ct)).backward()
    params = {"scale": jnp.asarray(module.weight.detach().numpy()), "bias": jnp.asarray(module.bias.detach().numpy())}
    layer = nn.GroupNorm(3, channels_last=channels_last)
    move = (lambda a: jnp.moveaxis(a, 1, -1)) if channels_last else jnp.asarray
    back = (lambda a: jnp.moveaxis(a, -1, 1)) if channels_last else (lambda a: a)
    y, vjp = jax.vjp(lambda p, z: layer.apply(p, z), params, move(jnp.asarray(x)))
    assert_close(back(y), expected.detach().numpy(), TOL["float64"])
    grads, dx = vjp(move(jnp.asarray(ct)))
    assert_close(back(dx), xt.grad.numpy(), TOL["float64"])
    assert_close(grads["scale"], module.weight.grad.numpy(), TOL["float64"])
    assert_close(grads["bias"], module.bias.grad.numpy(), TOL["float64"])


def test_dropout_rate_is_the_drop_probability(rng):
    x = jnp.ones((100, 1000), jnp.float64)
    layer = nn.Dropout(0.3)
    y = np.asarray(layer.apply({}, x, train=True, key=KEY))
    dropped = np.mean(y == 0)
    # Binomial(1e5, 0.3): standard deviation 0.00145; allow five of them (the drawn drop
    # probability, 19661/2¹⁶, is 3e-6 from 0.3).
    assert abs(dropped - 0.3) < 5 * math.sqrt(0.3 * 0.7 / y.size)
    assert np.all(y[y != 0] == 65536 / (65536 - 19661))   # 1 / the keep probability drawn
    assert np.array_equal(layer.apply({}, x), x)
    with pytest.raises(ValueError, match="key"):
        layer.apply({}, x, train=True)


@pytest.mark.parametrize("rate, threshold", [(0.0, 0), (0.3, 19661), (0.5, 32768), (1e-6, 0),
                                             (2e-5, 1), (0.999999, 65535)])
def test_drop_threshold_rounds_the_rate_to_sixteen_bits(rate, threshold):
    """``t = round(rate·2¹⁶)`` worked out by hand; never 2¹⁶ (something is always kept), and
    within 2⁻¹⁷ of the rate below that."""
    assert layers.drop_threshold(rate) == threshold
    if rate <= 1 - 2 ** -17:
        assert abs(threshold / 2 ** 16 - rate) <= 2 ** -17


def _triple32(h: np.ndarray) -> np.ndarray:
    """Wellons' triple32 in numpy uint32 arithmetic (wrapping multiplication)."""
    for shift, factor in ((17, 0xED5AD4BB), (11, 0xAC4C1B51), (15, 0x31848BAB)):
        h = (h ^ (h >> np.uint32(shift))) * np.uint32(factor)
    return h ^ (h >> np.uint32(14))


@pytest.mark.parametrize("shape", [(4, 7), (3, 5, 1), (1,), (2, 0), (128, 6272)], ids=str)
def test_drop_mask_is_the_keyed_hash_of_the_flat_index(shape):
    """``u = h(h(i + k₀) ⊕ k₁) >> 16`` for the flat index ``i`` below 2³² elements, written
    again in numpy; the mask depends on the flat index alone, not on the shape."""
    rate, size = 0.3, math.prod(shape)
    k0, k1 = np.asarray(jax.random.bits(KEY, (2,), jnp.uint32))
    with np.errstate(over="ignore"):
        u = _triple32(_triple32(np.arange(size, dtype=np.uint32) + k0) ^ k1) >> np.uint32(16)
    mask = layers.drop_mask(KEY, shape, rate)
    assert mask.shape == shape
    assert np.array_equal(mask, (u >= 19661).reshape(shape))
    assert np.array_equal(layers.drop_mask(KEY, (size,), rate).reshape(shape), mask)


@pytest.mark.parametrize("shape, limit", [((5, 3, 4), 16), ((2, 2, 4), 5), ((7,), 8), ((3, 4), 1000)], ids=str)
def test_flat_index_splits_at_the_limit(shape, limit):
    """``high·S + low`` is the flat index, ``S`` the product of the trailing axes below the
    limit (2³² in use; small limits here, the same arithmetic)."""
    high, low = (np.asarray(a) for a in layers._flat_index(shape, limit))
    split = next(s for s in range(len(shape) + 1) if math.prod(shape[s:]) < limit)
    inner = math.prod(shape[split:])
    assert np.array_equal(high.astype(np.int64) * inner + low, np.arange(math.prod(shape)).reshape(shape))
    assert low.max() < limit and high.max() < limit


@pytest.mark.parametrize("shape", [(20, 3), (3, 20)], ids=str)
def test_flat_index_refuses_what_it_cannot_number(shape):
    with pytest.raises(ValueError, match="x: expected fewer than 16"):
        layers._flat_index(shape, 16)


def test_drop_masks_of_neighbours_and_keys_are_independent():
    """Over ``n = 2²⁰`` elements of rate ½: each element against its neighbour, the element
    ``2¹⁶`` further on, and the same element under the next key, agree half the time within
    five standard deviations ``½/√n``; and every one of the 16 bits' positions is fair (the
    threshold 2ᵏ tests bit k's share through the mean of ``u < 2ᵏ``)."""
    n = 2 ** 20
    a = np.asarray(layers.drop_mask(KEY, (n,), 0.5))
    b = np.asarray(layers.drop_mask(jax.random.fold_in(KEY, 1), (n,), 0.5))
    bound = 5 * 0.5 / math.sqrt(n)
    for other in (a[1:], a[2 ** 16:], b):
        assert abs(np.mean(a[:other.size] == other) - 0.5) < bound * math.sqrt(n / other.size)
    for bits in range(1, 16):
        kept = np.asarray(layers.drop_mask(KEY, (n,), 2 ** bits / 2 ** 16))
        p = 1 - 2 ** bits / 2 ** 16
        assert abs(kept.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)


def test_dropout_is_unbiased():
    """``E[y] = x``: kept elements are scaled by exactly the inverse of the keep probability
    drawn, ``p = 1 − t/2¹⁶`` (checked in floating point), and the kept fraction is ``p``:
    over ``n = 2²⁰`` draws the fraction's standard deviation is ``√(p(1−p)/n)``; allow five
    (a one-in-a-million miss). Even and odd elements alike."""
    rate = 0.3
    p = 1 - layers.drop_threshold(rate) / 2 ** 16
    x = jnp.asarray(np.random.default_rng(0).standard_normal((256, 4096)))
    y = np.asarray(nn.Dropout(rate).apply({}, x, train=True, key=jax.random.key(7)))
    kept = y != 0
    assert np.allclose(y[kept] * p, np.asarray(x)[kept], rtol=1e-15, atol=0)
    for part in (kept, kept[:, 0::2], kept[:, 1::2]):
        assert abs(part.mean() - p) < 5 * math.sqrt(p * (1 - p) / part.size)
    assert abs(np.mean(y) - np.mean(x)) < 5 * math.sqrt((1 - p) / p * np.mean(np.square(x)) / y.size)


def test_serial_gives_each_layer_its_own_key():
    model = nn.serial(nn.Dropout(0.5), nn.Dropout(0.5))
    keys = jax.random.split(KEY, 2)
    once = nn.Dropout(0.5).apply({}, jnp.ones((1, 200)), train=True, key=keys[0])
    twice = nn.Dropout(0.5).apply({}, once, train=True, key=keys[1])
    assert np.array_equal(model.apply(({}, {}), jnp.ones((1, 200)), train=True, key=KEY), twice)
    assert not np.array_equal(once, twice)


def test_residual_shortcuts(rng):
    layer, shape, _ = LAYERS["residual-identity"]
    params, _, x, y = init_apply(layer, shape, rng)
    block = params["block"][0]
    expected = jax.nn.relu(reference.conv(x, block["w"], block["b"], padding=1)) + x
    assert_close(y, expected, TOL["float64"], "identity")
    layer, shape, _ = LAYERS["residual-projection"]
    params, _, x, y = init_apply(layer, shape, rng)
    b, s = params["block"], params["shortcut"]
    expected = (reference.conv(x, b["w"], b["b"], stride=2, padding=1)
                + reference.conv(x, s["w"], s["b"], stride=2))
    assert_close(y, expected, TOL["float64"], "projection")


def test_perframe_is_a_loop_over_frames(rng):
    layer, shape, _ = LAYERS["perframe"]
    params, _, x, y = init_apply(layer, shape, rng)
    frame_model = nn.serial(nn.Conv2d(3, 3), nn.GlobalAvgPool())
    expected = jnp.stack([frame_model.apply(params, x[:, :, t]) for t in range(shape[2])], axis=1)
    assert_close(y, expected, TOL["float64"])


@pytest.mark.parametrize("channels_last", [True, False], ids=["kernel", "xla-form"])
def test_serial_fuses_groupnorm_then_relu_and_changes_nothing_else(rng, channels_last):
    """``serial`` runs a ``GroupNorm`` followed by a ``ReLU`` as one op (``Layer.then_relu``):
    against the same layers with the ReLU as a plain elementwise layer (nothing to recognise,
    so nothing fused) the params tree, the summary's rows, the output and the gradients are the
    same, with the pre-activations of one group exactly 0 (its conv channels zeroed: x̂ = 0,
    β = 0), where both pass no gradient; a GroupNorm followed by anything else is not fused.
    Float32; channels last, the compiled program holds the kernel with its ReLU (where the
    kernels are built)."""
    cl, shape = channels_last, ((2, 6, 5, 3) if channels_last else (2, 3, 6, 5))

    def model(relu):
        return nn.serial(nn.Conv2d(8, 3, padding=1, channels_last=cl), nn.GroupNorm(2, channels_last=cl), relu(),
                         nn.GroupNorm(4, channels_last=cl), nn.Flatten(), nn.Dense(3))
    fused, plain = model(nn.ReLU), model(lambda: layers.elementwise(jax.nn.relu, "ReLU"))
    with enable_x64(False):
        params, _ = fused.init(KEY, shape)
        conv = params[0]
        zeroed = (..., slice(0, 4)) if cl else (slice(0, 4),)
        params = (dict(w=conv["w"].at[zeroed].set(0), b=conv["b"].at[:4].set(0)), *params[1:])
        assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(plain.init(KEY, shape)[0])
        assert nn.summary(fused, shape) == nn.summary(plain, shape)
        x = jnp.asarray(rng.standard_normal(shape), jnp.float32)

        def value_and_grad(layer):
            return jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x))), argnums=(0, 1)))
        got, want = value_and_grad(fused)(params, x), value_and_grad(plain)(params, x)
        tree_assert_close(got, want, TOL["float32"], "fused vs plain")
        assert not np.any(np.asarray(got[1][0][1]["bias"][:4]))         # relu'(0) = 0: no dβ there
        norm_calls = re.findall(r'custom_call_target="jaxcnn_group_norm".*relu = (\d)',
                                value_and_grad(fused).lower(params, x).compile().as_text())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kernels = cl and native.available()
        assert sorted(norm_calls) == (["0", "1"] if kernels else []), norm_calls


def test_trace_lists_every_conv_map_and_returns_apply(rng):
    model = nn.serial(nn.Conv1d(3, 3), nn.ReLU(), nn.Residual(nn.serial(nn.Conv1d(5, 3, padding=1))),
                      nn.Flatten())
    params, _, x, y = init_apply(model, (1, 2, 8), rng)
    traced, maps = model.trace(params, x)
    assert np.array_equal(traced, y)
    assert [m.shape for _, m in maps] == [(1, 3, 6), (1, 5, 6)]
    assert "Conv1d(3, 3)" in maps[0][0] and "res" in maps[1][0]


def test_model_gradient_matches_autodiff_of_the_reference_ops(rng, monkeypatch):
    """The hand-written VJPs (conv, pooling) inside a model against ``jax.grad`` of the same
    model on ``jaxcnn.reference``'s plain-lax ops, float64."""
    model = nn.serial(nn.Conv2d(4, 3, padding=1), nn.GroupNorm(2), nn.ReLU(), nn.MaxPool(2),
                      nn.Residual(nn.Conv2d(6, 3, stride=2, padding=1)), nn.AvgPool(2),
                      nn.GlobalAvgPool(), nn.Dense(3))
    params, _ = model.init(KEY, (2, 2, 8, 8))
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
    x = random_array(rng, (2, 2, 8, 8))

    def loss(p):
        return jnp.sum(jnp.sin(model.apply(p, x)))
    grads = jax.jit(jax.grad(loss))(params)
    for op in ("conv", "max_pool", "avg_pool", "global_avg_pool"):
        monkeypatch.setattr(jaxcnn, op, getattr(reference, op))
    tree_assert_close(grads, jax.jit(jax.grad(loss))(params), VJP_TOL, "model gradient")


def test_summary_table_of_the_mnist1d_paper_cnn():
    from jaxcnn.models import mnist1d_cnn
    rows = nn.summary(mnist1d_cnn(), (1, 1, 40))
    assert [r.output_shape for r in rows if r.name.startswith("Conv")] == [(1, 25, 19), (1, 25, 10), (1, 25, 5)]
    total = (25 * 1 * 5 + 25) + 2 * (25 * 25 * 3 + 25) + (125 * 10 + 10)
    assert sum(r.params for r in rows) == total == 5210
    assert "5,210" in nn.format_summary(rows).splitlines()[-1]


BAD = {
    "out_channels": (lambda: nn.Conv1d(0, 3), ValueError),
    "kernel": (lambda: nn.Conv(4, 3), TypeError),
    "padding_mode": (lambda: nn.Conv1d(4, 3, padding_mode="mirror"), ValueError),
    "impl": (lambda: nn.Conv1d(4, 3, impl="fft"), ValueError),
    "stride": (lambda: nn.Conv2d(4, 3, stride=(1, 0)), ValueError),
    "input_shape": (lambda: nn.Conv2d(4, 3).init(KEY, (1, 3, 8)), ValueError),
    "groups": (lambda: nn.Conv1d(4, 3, groups=3).init(KEY, (1, 6, 8)), ValueError),
    "padding": (lambda: nn.Conv1d(4, 3, padding="HALF").init(KEY, (1, 2, 8)), ValueError),
    "rate": (lambda: nn.Dropout(1.0), ValueError),
    "out_features": (lambda: nn.Dense(-1), ValueError),
    "axis": (lambda: nn.Mean(axis=0).init(KEY, (2, 3)), ValueError),
    "layers": (lambda: nn.serial(nn.ReLU(), "relu"), TypeError),
}


@pytest.mark.parametrize("argument", BAD)
def test_bad_arguments_name_the_argument(argument):
    make, error = BAD[argument]
    with pytest.raises(error, match=argument):
        make()


def test_groupnorm_groups_must_divide_channels():
    with pytest.raises(ValueError, match="groups"):
        nn.GroupNorm(3).init(KEY, (1, 4, 5))


def test_conv_layer_too_small_input_names_input_shape():
    with pytest.raises(ValueError, match="input_shape|w"):
        nn.Conv1d(2, 5).init(KEY, (1, 1, 3))
