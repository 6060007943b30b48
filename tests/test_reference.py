"""Tests for jaxcnn/reference.py, the oracle the hand-written VJPs are compared with: each of
its functions against a computation that shares nothing with it.

References: the numpy loops of ``helpers.numpy_conv`` (every padding form and mode, groups,
both layouts), ``numpy.convolve``, the adjoint identities with ``numpy_conv`` (for the public
gradients and ``conv_transpose`` in every padding mode), and PyTorch (``torch.nn.functional``
and ``torch.nn.grad``; values, and ``jax.grad`` of the reference against torch autograd).
Everything in float64: the comparisons hold to ~1e-12.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import reference
from helpers import (TOL, assert_close, fixed_config, kernel_to_layout, numpy_conv, random_array,
                     product, sample, to_layout, vdot)

F64 = TOL["float64"]
LAYOUTS = {"channels_first": False, "channels_last": True}
MODES = ("zeros", "reflect", "replicate", "circular")
pytestmark = pytest.mark.x64


def torch_or_skip():
    return pytest.importorskip("torch")


def tensor(torch, a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


# ----------------------------------------------------------------------------- conv


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_matches_numpy_loops(n, layout, rng):
    """The seed formula by loops: uneven stride, (lo, hi) pads, dilation, two groups, bias."""
    cfg = fixed_config(n, LAYOUTS[layout])
    x, w, b = cfg.arrays(rng)
    assert_close(reference.conv(x, w, b, **cfg.kwargs()), cfg.oracle(x, w, b), F64, cfg)


@pytest.mark.parametrize("padding", ["VALID", "same", "Full", "causal"])
@pytest.mark.parametrize("mode", MODES)
def test_conv_padding_forms_and_modes(padding, mode, rng):
    """Every padding string (API.md's definitions, resolved by the fuzzer's PyTorch side) with
    every border mode, against ``numpy.pad`` + loops."""
    cfg = fixed_config(2, False, padding=padding, padding_mode=mode, sizes=(7, 6), stride=(2, 1))
    x, w, b = cfg.arrays(rng)
    assert_close(reference.conv(x, w, b, **cfg.kwargs()), cfg.oracle(x, w, b), F64,
                 f"{padding} {mode}")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_and_its_autodiff_match_torch(n, rng):
    """Values and ``jax.grad`` of the reference against torch's ``conv{n}d`` and autograd."""
    torch = torch_or_skip()
    cfg = fixed_config(n, False, padding=1)
    x, w, b = cfg.arrays(rng)
    kw = dict(stride=cfg.stride, dilation=cfg.dilation, groups=cfg.groups)
    c = random_array(rng, cfg.out_shape())
    y, pull = jax.vjp(lambda *a: reference.conv(*a, padding=1, **kw), x, w, b)
    tensors = [tensor(torch, a) for a in (x, w, b)]
    y_torch = getattr(torch.nn.functional, f"conv{n}d")(*tensors, padding=1, **kw)
    (y_torch * torch.tensor(np.asarray(c))).sum().backward()
    assert_close(y, y_torch.detach().numpy(), F64, "value")
    for i, (g, t) in enumerate(zip(pull(c), tensors)):
        assert_close(g, t.grad.numpy(), F64, f"gradient {i}")


# ----------------------------------------------------------------------------- the public gradients


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_grads_adjoint_to_numpy_loops(n, layout, rng):
    """⟨conv(x, w), dy⟩ = ⟨x, conv_input_grad(dy, w)⟩ = ⟨w, conv_weight_grad(x, dy)⟩, the left
    side by numpy loops."""
    cfg = dataclasses.replace(fixed_config(n, LAYOUTS[layout]), bias=False)
    x, w, _ = cfg.arrays(rng)
    dy = random_array(rng, cfg.out_shape())
    kw = {k: v for k, v in cfg.kwargs().items() if k != "padding_mode"}
    dx = reference.conv_input_grad(dy, w, x.shape, **kw)
    dw = reference.conv_weight_grad(x, dy, w.shape, **kw)
    assert dx.shape == x.shape and dw.shape == w.shape
    lhs = float(np.vdot(cfg.oracle(x, w, None), np.asarray(dy)))
    assert_close(vdot(x, dx), lhs, F64, "input grad")
    assert_close(vdot(w, dw), lhs, F64, "weight grad")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_grads_match_torch_nn_grad(n, rng):
    """Against ``torch.nn.grad.conv{n}d_input`` and ``conv{n}d_weight``."""
    torch = torch_or_skip()
    cfg = dataclasses.replace(fixed_config(n, False), padding=1, bias=False)
    x, w, _ = cfg.arrays(rng)
    dy = random_array(rng, cfg.out_shape())
    kw = dict(stride=cfg.stride, padding=1, dilation=cfg.dilation, groups=cfg.groups)
    t = lambda a: torch.tensor(np.asarray(a))  # noqa: E731
    grad = torch.nn.grad
    assert_close(reference.conv_input_grad(dy, w, x.shape, **kw),
                 getattr(grad, f"conv{n}d_input")(x.shape, t(w), t(dy), **kw).numpy(), F64, "dx")
    assert_close(reference.conv_weight_grad(x, dy, w.shape, **kw),
                 getattr(grad, f"conv{n}d_weight")(t(x), w.shape, t(dy), **kw).numpy(), F64, "dw")


# ----------------------------------------------------------------------------- convolve


@pytest.mark.parametrize("mode", ["valid", "full", "same"])
def test_convolve_matches_numpy_convolve(mode, rng):
    """One channel, odd kernel (numpy's "same" centres it as API.md's "SAME" does)."""
    x, w = random_array(rng, (1, 1, 9)), random_array(rng, (1, 1, 3))
    expected = np.convolve(np.asarray(x[0, 0]), np.asarray(w[0, 0]), mode)
    assert_close(reference.convolve(x, w, padding=mode)[0, 0], expected, F64, mode)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [2, 3])
def test_convolve_is_conv_of_the_flipped_kernel_by_loops(n, layout, rng):
    cfg = fixed_config(n, LAYOUTS[layout], padding_mode="reflect")
    x, w, b = cfg.arrays(rng)
    flipped = np.flip(np.asarray(w), axis=tuple(range(n)) if cfg.channels_last
                      else tuple(range(2, n + 2)))
    assert_close(reference.convolve(x, w, b, **cfg.kwargs()), cfg.oracle(x, flipped, b), F64, n)


# ----------------------------------------------------------------------------- conv_transpose

TRANSPOSE = {  # n: (x sizes, kernel, stride, dilation, (lo, hi) per axis, groups)
    1: ((7,), (3,), (2,), (1,), ((2, 1),), 1),
    2: ((5, 6), (2, 3), (2, 3), (2, 1), ((1, 0), (2, 2)), 2),
    3: ((4, 3, 5), (2, 1, 2), (1, 2, 2), (1, 1, 2), ((1, 1), (0, 2), (1, 0)), 1),
}


@pytest.mark.parametrize("n,mode", sample(product([1, 2, 3], MODES), strength=1))   # every pair: full tier
def test_conv_transpose_adjoint_to_numpy_loops(n, mode, rng):
    """⟨conv(x, w), u⟩ = ⟨x, conv_transpose(u, w)⟩ in every padding mode, the conv by loops
    (channels last for n = 2)."""
    sizes, kernel, stride, dilation, pads, groups = TRANSPOSE[n]
    channels_last = n == 2
    x = random_array(rng, (2, 2 * groups, *sizes))
    w = random_array(rng, (3 * groups, 2, *kernel))
    y = numpy_conv(x, w, stride=stride, pads=list(pads), dilation=dilation, groups=groups,
                   padding_mode=mode)
    remainder = tuple((m + lo + hi - d * (k - 1) - 1) % s
                      for m, (lo, hi), d, k, s in zip(sizes, pads, dilation, kernel, stride))
    u = random_array(rng, y.shape)
    z = reference.conv_transpose(to_layout(u, channels_last), kernel_to_layout(w, channels_last),
                                 stride=stride, padding=pads, dilation=dilation, groups=groups,
                                 padding_mode=mode, output_padding=remainder,
                                 channels_last=channels_last)
    z = jnp.moveaxis(z, -1, 1) if channels_last else z
    assert z.shape == x.shape
    assert_close(vdot(x, z), float(np.vdot(y, np.asarray(u))), F64, mode)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_transpose_and_its_autodiff_match_torch(n, rng):
    torch = torch_or_skip()
    sizes, kernel, stride, dilation, pads, groups = TRANSPOSE[n]
    padding = tuple(lo for lo, _ in pads)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              output_padding=tuple(s - 1 for s in stride))
    x = random_array(rng, (2, 2 * groups, *sizes))
    w, b = random_array(rng, (2 * groups, 3, *kernel)), random_array(rng, (3 * groups,))
    y, pull = jax.vjp(lambda *a: reference.conv_transpose(*a, **kw), x, w, b)
    c = random_array(rng, y.shape)
    tensors = [tensor(torch, a) for a in (x, w, b)]
    y_torch = getattr(torch.nn.functional, f"conv_transpose{n}d")(*tensors, **kw)
    (y_torch * torch.tensor(np.asarray(c))).sum().backward()
    assert_close(y, y_torch.detach().numpy(), F64, "value")
    for i, (g, t) in enumerate(zip(pull(c), tensors)):
        assert_close(g, t.grad.numpy(), F64, f"gradient {i}")


# ----------------------------------------------------------------------------- pooling

POOL = {  # n: (x shape, max_pool kwargs, avg_pool kwargs); stride explicit for torch
    1: ((2, 3, 11), dict(window=(3,), stride=(2,), padding=(1,), dilation=(2,)),
        dict(window=(3,), stride=(2,), padding=(1,), count_include_pad=False)),
    2: ((2, 3, 7, 6), dict(window=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True),
        dict(window=(2, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True)),
    3: ((1, 2, 5, 6, 4), dict(window=(2, 2, 2), stride=(2, 2, 2), padding=(1, 0, 1),
                              dilation=(1, 2, 1)),
        dict(window=(2, 3, 2), stride=(1, 2, 2), padding=(0, 1, 1), ceil_mode=True)),
}


def torch_pool_kwargs(kw: dict) -> dict:
    return {("kernel_size" if k == "window" else k): v for k, v in kw.items()}


@pytest.mark.parametrize("n,kind", sample(product([1, 2, 3], ["max_pool", "avg_pool"]), strength=1))
def test_pool_and_its_autodiff_match_torch(n, kind, rng):
    """Values and ``jax.grad`` of the reference against torch's pooling and autograd (random
    normal data: no ties, so max pooling's tie rule does not enter)."""
    torch = torch_or_skip()
    x_shape, max_kw, avg_kw = POOL[n]
    kw = max_kw if kind == "max_pool" else avg_kw
    x = random_array(rng, x_shape)
    y, pull = jax.vjp(lambda x: getattr(reference, kind)(x, **kw), x)
    c = random_array(rng, y.shape)
    t = tensor(torch, x)
    y_torch = getattr(torch.nn.functional, f"{kind}{n}d")(t, **torch_pool_kwargs(kw))
    (y_torch * torch.tensor(np.asarray(c))).sum().backward()
    assert_close(y, y_torch.detach().numpy(), F64, "value")
    assert_close(pull(c)[0], t.grad.numpy(), F64, "gradient")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["max_pool", "avg_pool"])
def test_pool_channels_last_is_a_transpose(kind, layout, rng):
    """The layout is a transpose: the same numbers as channels first, moved."""
    x_shape, max_kw, avg_kw = POOL[2]
    kw = max_kw if kind == "max_pool" else avg_kw
    x = random_array(rng, x_shape)
    op = getattr(reference, kind)
    channels_last = LAYOUTS[layout]
    assert_close(op(to_layout(x, channels_last), channels_last=channels_last, **kw),
                 to_layout(op(x, **kw), channels_last), F64, layout)


def test_max_pool_by_hand():
    # window 2, stride 1, padding 1 (−∞ borders): max of each adjacent pair, ends kept.
    x = jnp.array([[[3.0, -1.0, 4.0, 1.0, -5.0]]])
    expected = [3.0, 3.0, 4.0, 4.0, 1.0, -5.0]
    assert_close(reference.max_pool(x, 2, 1, 1)[0, 0], jnp.array(expected), F64, "max")


def test_avg_pool_count_include_pad_by_hand():
    # window 3, stride 2, padding 1: [0, 1, 2], [2, 3, 4], [4, 5, 0] (zeros padded).
    x = jnp.arange(1.0, 6.0)[None, None]
    with_pad = reference.avg_pool(x, 3, 2, 1)[0, 0]
    without_pad = reference.avg_pool(x, 3, 2, 1, count_include_pad=False)[0, 0]
    assert_close(with_pad, jnp.array([3 / 3, 9 / 3, 9 / 3]), F64, "count_include_pad=True")
    assert_close(without_pad, jnp.array([3 / 2, 9 / 3, 9 / 2]), F64, "count_include_pad=False")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_global_avg_pool_is_the_spatial_mean(n, layout, rng):
    channels_last = LAYOUTS[layout]
    x = random_array(rng, POOL[n][0])
    expected = np.asarray(x).mean(axis=tuple(range(2, n + 2)))
    assert_close(reference.global_avg_pool(to_layout(x, channels_last),
                                           channels_last=channels_last), expected, F64, layout)


# ----------------------------------------------------------------------------- the front door


BAD = {  # name: (function, args, kwargs, error, argument)
    "conv-channels": ("conv", ((1, 4, 5), (2, 3, 3)), {}, ValueError, "w"),
    "conv-padding": ("conv", ((1, 4, 5), (2, 4, 3)), dict(padding="BIG"), ValueError, "padding"),
    "transpose-output-padding": ("conv_transpose", ((1, 4, 5), (4, 3, 3)),
                                 dict(stride=2, output_padding=2), ValueError, "output_padding"),
    "max-pool-window": ("max_pool", ((1, 2, 5),), dict(window=0), ValueError, "window"),
    "avg-pool-flag": ("avg_pool", ((1, 2, 5),), dict(window=2, count_include_pad="yes"),
                      TypeError, "count_include_pad"),
}


@pytest.mark.parametrize("name", BAD)
def test_rejects_what_the_real_op_rejects(name):
    """The reference goes through the same front door: the same error for the same input."""
    fn, shapes, kw, error, argument = BAD[name]
    args = [jnp.zeros(s) for s in shapes]
    for module in (reference, jaxcnn):
        with pytest.raises(error, match=argument):
            getattr(module, fn)(*args, **kw)
