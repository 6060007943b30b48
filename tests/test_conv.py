"""Tests of jaxcnn/conv.py (and reference.conv), float64 unless a dtype is named.

Independent references: the seed formula in numpy loops (helpers.numpy_conv), JAX autodiff of
reference.conv, central finite differences, the other impl, and PyTorch where installed.
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxcnn
from jaxcnn import reference
from helpers import (TOL, VJP_TOL, Config, as_tuple, assert_close, configs, fixed_config,
                     forward_and_vjp, operands, product, random_array, sample, tree_assert_close,
                     vdot)

pytestmark = pytest.mark.x64

IMPLS = ("lax", "manual")
MODES = ("zeros", "reflect", "replicate", "circular")
CASES = [pytest.param(n, cl, impl, id=f"{n}d-{'last' if cl else 'first'}-{impl}")
         for n in (1, 2, 3) for cl in (False, True) for impl in IMPLS]
# The same twelve cases, each with its own padding mode (every mode meets every n).
MODE_CASES = [pytest.param(*case.values, MODES[i % 4], id=f"{case.id}-{MODES[i % 4]}")
              for i, case in enumerate(CASES)]


# ----------------------------------------------------------------------------- random configs

@settings(max_examples=10)
@given(cfg=configs(), seed=st.integers(0, 2**32 - 1))
def test_random_configuration(cfg, seed):
    rng = np.random.default_rng(seed)
    x, w, b = cfg.arrays(rng)
    ct = random_array(rng, cfg.out_shape())
    y_ref, g_ref = forward_and_vjp("reference", cfg, operands(x, w, b), ct)
    assert_close(y_ref, cfg.oracle(x, w, b), TOL["float64"], "reference.conv vs seed formula")
    y_lax, g_lax = forward_and_vjp("lax", cfg, operands(x, w, b), ct)
    y_manual, g_manual = forward_and_vjp("manual", cfg, operands(x, w, b), ct)
    assert_close(y_manual, y_lax, TOL["float64"], "manual vs lax forward")
    assert_close(y_lax, y_ref, TOL["float64"], "lax vs reference forward")
    tree_assert_close(g_lax, g_ref, VJP_TOL, "lax VJP vs autodiff of reference")
    tree_assert_close(g_manual, g_ref, VJP_TOL, "manual VJP vs autodiff of reference")


# ----------------------------------------------------------------------------- named cases

FD_EPS = 1e-3


@pytest.mark.parametrize("n,channels_last,impl,mode", MODE_CASES)
def test_named_case(n, channels_last, impl, mode, rng):
    """Forward vs the seed formula; VJP vs autodiff of the reference; the VJP vs central
    finite differences of ⟨c, conv⟩ along a random direction, one argument at a time.

    conv is bilinear, so ⟨c, conv⟩ is quadratic along any line and its central difference is
    exact up to rounding (~1e-16·|f|/eps): 1e-8 relative sits far above that and far below
    any real error.
    """
    cfg = fixed_config(n, channels_last, padding_mode=mode)
    args = cfg.arrays(rng)
    ct = random_array(rng, cfg.out_shape())
    y, grads = forward_and_vjp(impl, cfg, args, ct)
    assert_close(y, cfg.oracle(*args), TOL["float64"], "forward vs seed formula")
    tree_assert_close(grads, forward_and_vjp("reference", cfg, args, ct)[1], VJP_TOL, "VJP")
    for i, (arg, grad) in enumerate(zip(args, grads)):
        u = random_array(rng, arg.shape)
        plus, minus = list(args), list(args)
        plus[i], minus[i] = arg + FD_EPS * u, arg - FD_EPS * u
        fd = (vdot(ct, forward_and_vjp(impl, cfg, tuple(plus), ct)[0])
              - vdot(ct, forward_and_vjp(impl, cfg, tuple(minus), ct)[0])) / (2 * FD_EPS)
        assert abs(fd - vdot(grad, u)) <= 1e-8 * max(abs(fd), 1.0), f"finite differences, arg {i}"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_nd_is_conv(n, rng):
    cfg = fixed_config(n, False)
    args = cfg.arrays(rng)
    y = getattr(jaxcnn, f"conv{n}d")(*args, **cfg.kwargs())
    np.testing.assert_array_equal(y, jaxcnn.conv(*args, **cfg.kwargs()))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_conv_nd_signature_is_convs(n):
    """``conv1d/2d/3d`` take exactly ``conv``'s arguments, named and defaulted alike."""
    import inspect
    conv_nd = getattr(jaxcnn, f"conv{n}d")
    assert inspect.signature(conv_nd) == inspect.signature(jaxcnn.conv)
    assert conv_nd.__name__ == f"conv{n}d" and f"{n} spatial axes" in conv_nd.__doc__
    with pytest.raises(ValueError, match=f"w: conv{n}d expects {n} spatial axes"):
        conv_nd(jnp.ones((1, 1) + (4,) * (n % 3 + 1)), jnp.ones((1, 1) + (2,) * (n % 3 + 1)))


# ----------------------------------------------------------------------------- second order


def _tree_vdot(a, b):
    return sum(vdot(p, q) for p, q in zip(a, b))


@partial(jax.jit, static_argnums=(0, 1))
def hessian_vector_products(fn_name, cfg, args, c, v):
    """H·v of ``⟨c, tanh(conv)⟩`` two ways: reverse over reverse, forward over reverse."""
    fn = reference.conv if fn_name == "reference" else partial(jaxcnn.conv, impl=fn_name)
    grad = jax.grad(lambda *a: vdot(c, jnp.tanh(fn(*a, **cfg.kwargs()))), argnums=(0, 1, 2))
    reverse = jax.grad(lambda *a: _tree_vdot(grad(*a), v), argnums=(0, 1, 2))(*args)
    forward = jax.jvp(grad, args, v)[1]
    return reverse, forward


@pytest.mark.parametrize("n,channels_last,impl", sample(   # each rank, layout and impl once by default
    [case for case in CASES if case.values[1] == (case.values[0] == 2)], strength=1))
def test_hessian_vector_product(n, channels_last, impl, rng):
    cfg = fixed_config(n, channels_last, padding_mode="reflect",
                       **(dict(kernel=(2, 1, 2)) if n == 3 else {}))
    args = cfg.arrays(rng)
    c = random_array(rng, cfg.out_shape())
    v = tuple(random_array(rng, a.shape) for a in args)
    reverse, forward = hessian_vector_products(impl, cfg, args, c, v)
    expected, _ = hessian_vector_products("reference", cfg, args, c, v)
    tree_assert_close(reverse, expected, VJP_TOL, "reverse-over-reverse H·v")
    tree_assert_close(forward, expected, VJP_TOL, "forward-over-reverse H·v")


@pytest.mark.parametrize("impl", IMPLS)
def test_hessian_tiny(impl, rng):
    x, w, b = random_array(rng, (1, 2, 4)), random_array(rng, (2, 2, 2)), random_array(rng, (2,))
    kwargs = dict(padding=1, stride=2, padding_mode="circular")
    loss = lambda fn, *a: jnp.sum(jnp.sin(fn(*a, **kwargs)))  # noqa: E731
    hessian = jax.jit(jax.hessian(partial(loss, partial(jaxcnn.conv, impl=impl)),
                                  argnums=(0, 1, 2)))(x, w, b)
    expected = jax.jit(jax.hessian(partial(loss, reference.conv), argnums=(0, 1, 2)))(x, w, b)
    tree_assert_close(hessian, expected, VJP_TOL, "jax.hessian")
    # a Hessian is symmetric: the (x, w) block is the transpose of the (w, x) block
    np.testing.assert_allclose(hessian[0][1], np.transpose(hessian[1][0], (3, 4, 5, 0, 1, 2)),
                               rtol=0, atol=1e-13)


@pytest.mark.parametrize("impl", IMPLS)
def test_jvp_matches_reference(impl, rng):
    """conv's primitives carry JVP rules, so forward mode works and agrees with autodiff."""
    cfg = fixed_config(2, True, padding_mode="replicate")
    args = cfg.arrays(rng)
    tangents = tuple(random_array(rng, a.shape) for a in args)
    y, t = jax.jvp(lambda *a: jaxcnn.conv(*a, **cfg.kwargs(), impl=impl), args, tangents)
    y_ref, t_ref = jax.jvp(lambda *a: reference.conv(*a, **cfg.kwargs()), args, tangents)
    assert_close(y, y_ref, TOL["float64"], "primal")
    assert_close(t, t_ref, TOL["float64"], "tangent")


# ----------------------------------------------------------------------------- transformations

VMAP_CASES = [pytest.param(1, False, "lax", id="1d-first-lax"),
              pytest.param(2, True, "manual", id="2d-last-manual"),
              pytest.param(3, False, "lax", id="3d-first-lax"),
              pytest.param(1, True, "manual", id="1d-last-manual")]


@pytest.mark.parametrize("n,channels_last,impl", sample(VMAP_CASES, strength=1))
def test_vmap_per_example_gradients(n, channels_last, impl, rng):
    """Per-example gradients (vmap over the batch) and an ensemble (vmap over kernels)
    equal the loop, whose every element runs the unbatched rules."""
    cfg = fixed_config(n, channels_last, batch=3, padding_mode="circular")
    x, w, b = cfg.arrays(rng)
    conv = partial(jaxcnn.conv, impl=impl, **cfg.kwargs())
    loss = lambda x1, w, b: jnp.sum(jnp.tanh(conv(x1[None], w, b)))  # noqa: E731
    grad = jax.grad(loss, argnums=(0, 1, 2))
    per_example = jax.jit(jax.vmap(grad, in_axes=(0, None, None)))(x, w, b)
    loop = [jax.jit(grad)(x[i], w, b) for i in range(3)]
    tree_assert_close(per_example, jax.tree.map(lambda *g: jnp.stack(g), *loop),
                      TOL["float64"], "per-example gradients")
    kernels = jnp.stack([w, 2 * w, -w])
    ensemble = jax.jit(jax.vmap(grad, in_axes=(None, 0, None)))(x[0], kernels, b)
    loop = [jax.jit(grad)(x[0], k, b) for k in kernels]
    tree_assert_close(ensemble, jax.tree.map(lambda *g: jnp.stack(g), *loop), TOL["float64"],
                      "vmap over kernels")


@pytest.mark.parametrize("impl", IMPLS)
def test_jit_equals_eager(impl, rng):
    cfg = fixed_config(1, False, padding_mode="reflect")
    args = cfg.arrays(rng)
    loss = lambda *a: jnp.sum(jnp.tanh(jaxcnn.conv(*a, impl=impl, **cfg.kwargs())))  # noqa: E731
    eager = jax.value_and_grad(loss, argnums=(0, 1, 2))(*args)
    tree_assert_close(jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))(*args), eager,
                      TOL["float64"], "jit vs eager")


@pytest.mark.parametrize("n,channels_last,impl", sample(CASES[::2] + CASES[3::4], strength=1))
def test_empty_batch(n, channels_last, impl, rng):
    cfg = fixed_config(n, channels_last, batch=0, padding_mode="replicate")
    x, w, b = cfg.arrays(rng)
    conv = partial(jaxcnn.conv, impl=impl, **cfg.kwargs())
    y = conv(x, w, b)
    assert y.shape == cfg.out_shape() and y.shape[0] == 0
    dx, dw, db = jax.grad(lambda *a: jnp.sum(conv(*a) ** 2), argnums=(0, 1, 2))(x, w, b)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dw, np.zeros(w.shape))
    np.testing.assert_array_equal(db, np.zeros(b.shape))


# ----------------------------------------------------------------------------- dtypes


def _float64(tree):
    return jax.tree.map(lambda a: a.astype(jnp.float64), tree)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("impl", IMPLS)
def test_low_precision(dtype, impl, rng):
    """Forward and VJP in float32 / bfloat16 against float64 math on the same (rounded) values.

    ``db`` is a sum over N·S_out cotangent entries, which JAX's transpose of the bias broadcast
    accumulates in the operand dtype (bfloat16: ~1e-2 after a few dozen terms, whatever the
    conv); it is held to autodiff of the reference in the same dtype, x̄ and w̄ to float64 math.
    """
    cfg = fixed_config(2, False, padding_mode="reflect")
    args = cfg.arrays(rng, dtype)
    ct = random_array(rng, cfg.out_shape(), dtype)
    y, grads = forward_and_vjp(impl, cfg, args, ct)
    assert y.dtype == dtype and all(g.dtype == dtype for g in grads)
    y64, grads64 = forward_and_vjp("reference", cfg, _float64(args), _float64(ct))
    assert_close(y, y64, TOL[dtype], f"{dtype} forward")
    tree_assert_close(grads[:2], grads64[:2], TOL[dtype], f"{dtype} VJP of x, w")
    assert_close(grads[2], forward_and_vjp("reference", cfg, args, ct)[1][2], TOL[dtype], "db")


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_many_taps(impl, rng):
    """25 taps: the manual impl must sum them in float32, as lax does (regression: summed in
    bfloat16 its forward and input gradient were ~1.3e-2 off)."""
    cfg = Config(sizes=(8, 8), kernel=(5, 5), groups=1, padding=2, bias=False)
    args = cfg.arrays(rng, jnp.bfloat16)
    ct = random_array(rng, cfg.out_shape(), jnp.bfloat16)
    y, grads = forward_and_vjp(impl, cfg, args, ct)
    y64, grads64 = forward_and_vjp("reference", cfg, _float64(args), _float64(ct))
    assert_close(y, y64, TOL["bfloat16"], "forward")
    tree_assert_close(grads, grads64, TOL["bfloat16"], "VJP")


@pytest.mark.parametrize("impl", IMPLS)
def test_bfloat16_with_float32_accumulation(impl, rng):
    """bfloat16 products are exact in float32, so float32 accumulation is float32-close to
    float64 math; the cotangents keep their operands' dtypes."""
    cfg = fixed_config(2, True, padding_mode="circular")
    x, w, _ = cfg.arrays(rng, jnp.bfloat16)
    b = random_array(rng, (cfg.out_channels,), jnp.float32)
    ct = random_array(rng, cfg.out_shape(), jnp.float32)
    conv = partial(jaxcnn.conv, impl=impl, preferred_element_type=jnp.float32, **cfg.kwargs())
    y, pull = jax.vjp(conv, x, w, b)
    assert y.dtype == jnp.float32
    assert_close(y, cfg.oracle(*_float64((x, w, b))), TOL["float32"], "float32 accumulation")
    grads = pull(ct)
    assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16, jnp.float32]
    expected = forward_and_vjp("reference", cfg, _float64((x, w, b)), _float64(ct))[1]
    tree_assert_close(grads, expected, TOL["bfloat16"], "VJP")


@pytest.mark.parametrize("impl", IMPLS)
def test_precision_reaches_every_contraction(impl):
    """``precision`` is passed to the forward and to both VJP pieces (seen in the lowering)."""
    x, w = jnp.ones((1, 2, 5), jnp.float32), jnp.ones((2, 2, 3), jnp.float32)
    for precision, count in [(jax.lax.Precision.HIGHEST, "all"), (None, "none")]:
        def loss(x, w, precision=precision):
            return jnp.sum(jaxcnn.conv(x, w, impl=impl, precision=precision) ** 2)
        text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).as_text()
        ops = [line for line in text.splitlines() if "convolution" in line or "dot_general" in line]
        marked = sum("HIGHEST" in line for line in ops)
        assert len(ops) >= 3 and marked == (len(ops) if count == "all" else 0), ops


# ----------------------------------------------------------------------------- padding semantics


@settings(max_examples=25)
@given(sizes=st.tuples(st.integers(1, 12), st.integers(1, 12)),
       kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       dilation=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       mode=st.sampled_from(["zeros", "replicate"]), channels_last=st.booleans())
def test_same_gives_ceil_of_size_over_stride(sizes, kernel, stride, dilation, mode, channels_last):
    cfg = Config(channels_last=channels_last, sizes=sizes, kernel=kernel, stride=stride,
                 padding="same", dilation=dilation, padding_mode=mode)
    shape = jax.eval_shape(partial(jaxcnn.conv, **cfg.kwargs()), *cfg.shapes_struct()).shape
    spatial = shape[1:3] if channels_last else shape[2:]
    assert spatial == tuple(math.ceil(length / s) for length, s in zip(sizes, stride))


@pytest.mark.parametrize("stride,dilation,impl", sample(   # each value once by default
    [(s, d, impl) for s, d in [(1, 1), (2, 2), (3, 1)] for impl in IMPLS], strength=1))
def test_causal_output_sees_only_the_past(stride, dilation, impl, rng):
    """Output i depends on inputs ≤ i·stride only; x[i·stride] reaches it through the last tap."""
    length, kernel = 10, 3
    x, w = random_array(rng, (1, 2, length)), random_array(rng, (3, 2, kernel))
    conv = jax.jit(partial(jaxcnn.conv, padding="Causal", stride=stride, dilation=dilation,
                           impl=impl))
    y = conv(x, w)
    assert y.shape == (1, 3, math.ceil(length / stride))
    positions = np.arange(y.shape[-1]) * stride
    for j in range(length):
        change = conv(x.at[0, 0, j].add(1.0), w) - y
        np.testing.assert_array_equal(change[..., positions < j], 0.0)
        if j % stride == 0:  # y[i] gains w[:, 0, K − 1] · 1 from x[i·stride]
            assert_close(change[0, :, j // stride], w[:, 0, -1], TOL["float64"], f"tap at {j}")


@pytest.mark.parametrize("n,channels_last,impl", CASES[::3])
def test_circular_commutes_with_roll(n, channels_last, impl, rng):
    cfg = fixed_config(n, channels_last, stride=1, padding="SAME", padding_mode="circular")
    x, w, b = cfg.arrays(rng)
    conv = jax.jit(partial(jaxcnn.conv, impl=impl, **cfg.kwargs()))
    axes = tuple(range(1, n + 1)) if channels_last else tuple(range(2, n + 2))
    shifts = (2, -1, 1)[:n]
    y = conv(x, w, b)
    assert y.shape[:-1] == x.shape[:-1] if channels_last else y.shape[2:] == x.shape[2:]
    assert_close(conv(jnp.roll(x, shifts, axes), w, b), jnp.roll(y, shifts, axes),
                 TOL["float64"], "conv(roll(x)) vs roll(conv(x))")


# ----------------------------------------------------------------------------- VJP pieces


def _grad_config(n, channels_last, depthwise):
    cfg = fixed_config(n, channels_last, bias=False)
    if depthwise:
        cfg = dataclasses.replace(cfg, groups=cfg.channels, out_channels=2 * cfg.channels)
    kwargs = cfg.kwargs()
    del kwargs["padding_mode"]
    return cfg, kwargs


@pytest.mark.parametrize("n,channels_last,impl", sample(CASES))
def test_input_and_weight_grad(n, channels_last, impl, rng):
    """conv_input_grad / conv_weight_grad vs jax.vjp of the reference, groups > 1 (grouped or
    depthwise), and the adjoint identities with the seed formula."""
    cfg, kwargs = _grad_config(n, channels_last, depthwise=channels_last != (n == 2))
    x, w, _ = cfg.arrays(rng)
    dy = random_array(rng, cfg.out_shape())
    dx = jaxcnn.conv_input_grad(dy, w, x.shape, impl=impl, **kwargs)
    dw = jaxcnn.conv_weight_grad(x, dy, w.shape, impl=impl, **kwargs)
    expected_dx, expected_dw = jax.vjp(partial(reference.conv, **kwargs), x, w)[1](dy)
    assert_close(dx, expected_dx, VJP_TOL, "conv_input_grad")
    assert_close(dw, expected_dw, VJP_TOL, "conv_weight_grad")
    assert_close(reference.conv_input_grad(dy, w, x.shape, **kwargs), expected_dx, TOL["float64"])
    assert_close(reference.conv_weight_grad(x, dy, w.shape, **kwargs), expected_dw, TOL["float64"])
    y_dy = vdot(cfg.oracle(x, w, None), dy)  # ⟨conv(x, w), dy⟩ = ⟨x, dx⟩ = ⟨w, dw⟩
    assert abs(vdot(x, dx) - y_dy) <= TOL["float64"] * max(abs(y_dy), 1.0)
    assert abs(vdot(w, dw) - y_dy) <= TOL["float64"] * max(abs(y_dy), 1.0)


@pytest.mark.parametrize("impl", IMPLS)
def test_grad_pieces_are_differentiable(impl, rng):
    """The VJPs of conv_input_grad (in dy, w) and conv_weight_grad (in x, dy) vs autodiff."""
    cfg, kwargs = _grad_config(1, False, depthwise=False)
    x, w, _ = cfg.arrays(rng)
    dy = random_array(rng, cfg.out_shape())
    for name, args, shape in [("conv_input_grad", (dy, w), x.shape),
                              ("conv_weight_grad", (x, dy), w.shape)]:
        ct = random_array(rng, shape)
        mine = jax.vjp(lambda a, b: getattr(jaxcnn, name)(a, b, shape, impl=impl, **kwargs), *args)
        theirs = jax.vjp(lambda a, b: getattr(reference, name)(a, b, shape, **kwargs), *args)
        tree_assert_close(mine[1](ct), theirs[1](ct), VJP_TOL, f"VJP of {name}")


# ----------------------------------------------------------------------------- PyTorch

TORCH_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
             "circular": "circular"}


def _torch_leaves(torch, arrays):
    return [torch.tensor(np.asarray(a), requires_grad=True) for a in arrays]


def _jax_forward_and_vjp(cfg, impl, args, ct):
    y, pull = jax.vjp(lambda *a: jaxcnn.conv(*a, impl=impl, **cfg.kwargs()), *args)
    return y, pull(ct)


def _assert_matches_torch(y, grads, ty, leaves):
    assert_close(y, ty.detach().numpy(), TOL["float64"], "forward vs torch")
    for i, (g, leaf) in enumerate(zip(grads, leaves)):
        assert_close(g, leaf.grad.numpy(), TOL["float64"], f"gradient {i} vs torch autograd")


@pytest.mark.parametrize("n,mode", sample(product([1, 2, 3], MODES), strength=1))   # every pair: full tier
def test_against_torch(n, mode, rng):
    """Forward and autograd of F.pad(mode) + F.conv{n}d, float64."""
    torch = pytest.importorskip("torch")
    impl = IMPLS[(n + MODES.index(mode)) % 2]
    cfg = fixed_config(n, False, padding_mode=mode)
    args = cfg.arrays(rng)
    ct = random_array(rng, cfg.out_shape())
    y, grads = _jax_forward_and_vjp(cfg, impl, args, ct)
    leaves = _torch_leaves(torch, args)
    flat = [p for pair in reversed(cfg.pads()) for p in pair]  # torch: last axis first
    padded = torch.nn.functional.pad(leaves[0], flat, mode=TORCH_PAD[mode])
    ty = getattr(torch.nn.functional, f"conv{n}d")(
        padded, leaves[1], leaves[2], stride=as_tuple(cfg.stride, n),
        dilation=as_tuple(cfg.dilation, n), groups=cfg.groups)
    (ty * torch.tensor(np.asarray(ct))).sum().backward()
    _assert_matches_torch(y, grads, ty, leaves)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("n,kernel", [(1, (4,)), (2, (4, 2)), (3, (2, 3, 2))])
def test_same_against_torch(n, kernel, rng):
    """padding="same" (stride 1, even kernels, dilation) vs torch's own padding="same"."""
    torch = pytest.importorskip("torch")
    cfg = fixed_config(n, False, stride=1, padding="same", kernel=kernel)
    args = cfg.arrays(rng)
    ct = random_array(rng, cfg.out_shape())
    y, grads = _jax_forward_and_vjp(cfg, IMPLS[n % 2], args, ct)
    leaves = _torch_leaves(torch, args)
    ty = getattr(torch.nn.functional, f"conv{n}d")(
        *leaves, padding="same", dilation=as_tuple(cfg.dilation, n), groups=cfg.groups)
    (ty * torch.tensor(np.asarray(ct))).sum().backward()
    _assert_matches_torch(y, grads, ty, leaves)


@pytest.mark.parametrize("n,impl", sample(product([1, 2, 3], IMPLS), strength=1))
def test_input_and_weight_grad_against_torch(n, impl, rng):
    """vs torch.nn.grad.conv{n}d_input / _weight (symmetric padding, groups > 1)."""
    torch = pytest.importorskip("torch")
    cfg, kwargs = _grad_config(n, False, depthwise=False)
    cfg = dataclasses.replace(cfg, padding=(1, 2, 1)[:n])
    kwargs["padding"] = cfg.padding
    x, w, _ = cfg.arrays(rng)
    dy = random_array(rng, cfg.out_shape())
    tx, tw, tdy = (torch.tensor(np.asarray(a)) for a in (x, w, dy))
    torch_kwargs = dict(stride=as_tuple(cfg.stride, n), padding=cfg.padding,
                        dilation=as_tuple(cfg.dilation, n), groups=cfg.groups)
    grad = torch.nn.grad
    expected_dx = getattr(grad, f"conv{n}d_input")(tx.shape, tw, tdy, **torch_kwargs)
    expected_dw = getattr(grad, f"conv{n}d_weight")(tx, tw.shape, tdy, **torch_kwargs)
    assert_close(jaxcnn.conv_input_grad(dy, w, x.shape, impl=impl, **kwargs),
                 expected_dx.numpy(), TOL["float64"], "conv_input_grad vs torch")
    assert_close(jaxcnn.conv_weight_grad(x, dy, w.shape, impl=impl, **kwargs),
                 expected_dw.numpy(), TOL["float64"], "conv_weight_grad vs torch")
