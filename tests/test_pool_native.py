"""jaxcnn._conv.native.pooling: the C++ pooling kernels equal the XLA forms and PyTorch, and are
used where they apply.

References, all float32 (the kernels' dtype):

- the XLA forms of ``jaxcnn._pool`` (the lowering with the kernels off: ``pooling.uses_kernels``
  patched to False, a fresh ``jit``): the max and the argmax equal bit for bit (the same
  scan), the gather too; the adjoints and the average sum at most ``∏K`` terms in a possibly
  other order, so float32's tolerance (``helpers.TOL``: ~1e-7 measured; a wrong tap, border
  or divisor is off by O(1));
- PyTorch's ``max_pool{1,2,3}d`` / ``avg_pool{1,2,3}d`` and their gradients (channels first,
  transposed), for windows with stride, padding, dilation and ceil_mode;
- hand-worked values: a ReLU's zeros send each window's gradient to its first tap only, a NaN
  wins its window and takes its gradient, −∞ windows;
- the compiled program: a channels-last float32 pooling and its gradient hold the custom
  calls; channels first, float64 and a program for ``jax.export`` hold none;
- a bad geometry fed to the registered targets is an FFI error, an argmax naming no tap reads
  zero and adds nothing.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import _pool
from jaxcnn._args import normalize_pool
from jaxcnn._compat import enable_x64
from jaxcnn._conv import native
from jaxcnn._conv.native import pooling
from native_helpers import TARGET, needs_kernels
from helpers import TOL, assert_close

F32 = TOL["float32"]
pytestmark = needs_kernels

# name: (channels-last shape, window, stride, padding, dilation, ceil_mode)
CASES = {
    "1d_tiled": ((3, 12, 8), 2, None, 0, 1, False),
    "1d_pad_stride": ((2, 11, 9), 3, 2, 1, 1, True),
    "2d_tiled": ((4, 8, 6, 16), 2, None, 0, 1, False),
    "2d_overlap_pad": ((3, 9, 7, 12), 3, 2, 1, 1, False),
    "2d_dilation": ((2, 10, 9, 8), (2, 3), (1, 2), (1, 1), (2, 1), False),
    "2d_ceil": ((2, 7, 8, 10), 2, 2, 1, 1, True),
    "3d_clips_first": ((2, 4, 8, 6, 16), (1, 2, 2), None, 0, 1, False),
    "3d_overlap": ((2, 5, 6, 7, 17), (2, 3, 2), (1, 2, 2), (1, 1, 0), 1, False),
}


def _spec(name, op):
    shape, window, stride, padding, dilation, ceil_mode = CASES[name]
    return normalize_pool(jnp.zeros(shape, jnp.float32), window, stride, padding, ceil_mode=ceil_mode,
                          channels_last=True, op=op, **({"dilation": dilation} if op == "max_pool" else {}))[1]


def _kwargs(name, op):
    _, window, stride, padding, dilation, ceil_mode = CASES[name]
    return dict(window=window, stride=stride, padding=padding, ceil_mode=ceil_mode,
                **({"dilation": dilation} if op == "max_pool" else {}))


def _ties(rng, shape):
    """ReLU'd normals rounded to halves: many windows tie (at 0 and elsewhere)."""
    return jnp.asarray(np.maximum(np.round(rng.standard_normal(shape) * 2) / 2, 0), jnp.float32)


def xla_form(fn):
    """``fn`` compiled with the kernels off (the XLA forms): a new function, so that no trace
    or lowering cached for ``fn`` is reused; its program holds no kernel."""
    def compiled(*args):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pooling, "uses_kernels", lambda *a, **k: False)
            program = jax.jit(lambda *a: fn(*a)).lower(*args).compile()
        assert not TARGET.findall(program.as_text())
        return program(*args)
    return compiled


def targets(fn, *args) -> set[str]:
    return set(TARGET.findall(jax.jit(fn).lower(*args).compile().as_text()))


@pytest.mark.parametrize("name", sorted(CASES))
def test_max_pool_pieces_equal_the_xla_forms(rng, name):
    spec = _spec(name, "max_pool")
    x = _ties(rng, CASES[name][0])
    y, argmax = jax.jit(lambda x: (pooling.native_max_pool(x, spec), pooling.native_argmax(x, spec)))(x)
    want_y, want_argmax = jax.jit(lambda x: _pool.max_pool_argmax(x, spec))(x)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    v = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    np.testing.assert_array_equal(jax.jit(lambda v, a: pooling.native_max_pool_gather(v, a, spec))(v, argmax),
                                  jax.jit(lambda v, a: _pool.max_pool_gather(v, a, spec))(v, argmax))
    assert_close(jax.jit(lambda g, a: pooling.native_max_pool_scatter(g, a, spec))(dy, argmax),
                 jax.jit(lambda g, a: _pool.max_pool_scatter(g, a, spec))(dy, argmax), F32, "scatter")


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("name", sorted(n for n in CASES if CASES[n][4] == 1))
def test_avg_pool_and_its_transpose_equal_the_xla_forms(rng, name, count_include_pad):
    spec = _spec(name, "avg_pool")
    x = jnp.asarray(rng.standard_normal(CASES[name][0]), jnp.float32)
    y = jax.jit(lambda x: pooling.native_avg_pool(x, spec, count_include_pad))(x)
    assert_close(y, jax.jit(lambda x: _pool.window_average(x, spec, count_include_pad))(x), F32, "avg_pool")
    dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
    assert_close(jax.jit(lambda g: pooling.native_avg_pool_transpose(g, spec, count_include_pad))(dy),
                 jax.jit(lambda g: _pool.avg_pool_transpose(g, spec, count_include_pad))(dy), F32, "transpose")


def _loss(op, kwargs, probe):
    def loss(x):
        return jnp.sum(jnp.sin(getattr(jaxcnn, op)(x, channels_last=True, **kwargs)) * probe)
    return loss


@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_public_op_and_gradient_equal_the_xla_forms(rng, op, name):
    """Through ``jaxcnn.max_pool`` / ``avg_pool``: value, gradient and a second-order product
    (``jvp`` of the gradient: the gather and the scatter again) with the kernels and without."""
    if op == "avg_pool" and CASES[name][4] != 1:
        pytest.skip("avg_pool has no dilation")
    kwargs = _kwargs(name, op)
    x = _ties(rng, CASES[name][0]) if op == "max_pool" else jnp.asarray(rng.standard_normal(CASES[name][0]),
                                                                         jnp.float32)
    y_shape = jax.eval_shape(lambda x: getattr(jaxcnn, op)(x, channels_last=True, **kwargs), x).shape
    loss = _loss(op, kwargs, jnp.asarray(rng.standard_normal(y_shape), jnp.float32))
    t = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)

    def value_grad_hvp(x, t):
        return loss(x), jax.grad(loss)(x), jax.jvp(jax.grad(loss), (x,), (t,))[1]
    assert targets(value_grad_hvp, x, t) >= {f"jaxcnn_{op}"}
    for got, want, what in zip(jax.jit(value_grad_hvp)(x, t), xla_form(value_grad_hvp)(x, t),
                               ("value", "grad", "hvp")):
        assert_close(got, want, F32, what)


def _torch_pool(op, name, x, dy, count_include_pad=True):
    """PyTorch's pooling of ``x`` (channels last, moved to channels first and back) and its
    gradient for the cotangent ``dy``."""
    torch = pytest.importorskip("torch")
    _, window, stride, padding, dilation, ceil_mode = CASES[name]
    n = x.ndim - 2
    kw = dict(kernel_size=window, stride=stride, padding=padding, ceil_mode=ceil_mode)
    kw.update(dilation=dilation) if op == "max_pool" else kw.update(count_include_pad=count_include_pad)
    first = (0, n + 1, *range(1, n + 1))
    last = (0, *range(2, n + 2), 1)
    xt = torch.tensor(np.asarray(x).transpose(first), requires_grad=True)
    yt = getattr(torch.nn.functional, f"{op}{n}d")(xt, **kw)
    yt.backward(torch.tensor(np.asarray(dy).transpose(first)))
    return yt.detach().numpy().transpose(last), xt.grad.numpy().transpose(last)


@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_gradient_equal_pytorch(rng, op, name):
    if op == "avg_pool" and CASES[name][4] != 1:
        pytest.skip("avg_pool has no dilation")
    kwargs = _kwargs(name, op)
    x = _ties(rng, CASES[name][0]) if op == "max_pool" else jnp.asarray(rng.standard_normal(CASES[name][0]),
                                                                         jnp.float32)
    for count_include_pad in ([True] if op == "max_pool" else [True, False]):
        extra = {} if op == "max_pool" else {"count_include_pad": count_include_pad}
        y, vjp = jax.vjp(jax.jit(lambda x: getattr(jaxcnn, op)(x, channels_last=True, **kwargs, **extra)), x)
        dy = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
        want_y, want_dx = _torch_pool(op, name, x, dy, count_include_pad)
        assert_close(y, want_y, F32, "forward")
        assert_close(vjp(dy)[0], want_dx, F32, "gradient")


C = pooling.MIN_CHANNELS   # the fewest channels that take the kernels


def _max_pool_vjp(x, window):
    """``max_pool`` (channels last) and its VJP, asserting that the kernels computed them."""
    fn = jax.jit(lambda x: jaxcnn.max_pool(x, window, channels_last=True))
    assert "jaxcnn_max_pool_scatter" in targets(lambda x, g: jax.vjp(fn, x)[1](g), x, fn(x))
    return jax.vjp(fn, x)


def test_ties_send_the_gradient_to_the_first_maximum():
    """ReLU zeros: every 2×2 window of zeros sends its gradient to its first tap (row-major)
    only; a window with one positive value sends it there. Worked out by hand."""
    x = jnp.zeros((1, 4, 4, C), jnp.float32).at[0, 3, 2, 1].set(1.0)
    y, vjp = _max_pool_vjp(x, 2)
    dx = vjp(jnp.full(y.shape, 3.0, jnp.float32))[0]
    want = np.zeros((1, 4, 4, C), np.float32)
    want[0, ::2, ::2, :] = 3.0
    want[0, 2, 2, 1], want[0, 3, 2, 1] = 0.0, 3.0
    np.testing.assert_array_equal(dx, want)


def test_nan_wins_and_minus_infinity_windows():
    """A window with NaNs: the max is NaN, the gradient goes to the last NaN (PyTorch's scan);
    a window of −∞ only: −∞, the gradient to its first tap. By hand, and as PyTorch. Every
    channel holds the same pattern."""
    nan, inf = np.nan, np.inf
    pattern = np.array([[1.0, nan, 5.0, nan], [-inf, -inf, 2.0, 3.0]], np.float32)
    x = jnp.asarray(np.repeat(pattern.reshape(1, 2, 4, 1), C, axis=3))
    y, vjp = _max_pool_vjp(x, (2, 2))
    np.testing.assert_array_equal(np.asarray(y)[..., 3].ravel(), [nan, nan])
    dx = np.asarray(vjp(jnp.ones_like(y))[0])
    np.testing.assert_array_equal(dx, np.repeat(np.array([0, 1, 0, 1, 0, 0, 0, 0], np.float32)
                                                .reshape(1, 2, 4, 1), C, axis=3))
    y, vjp = _max_pool_vjp(jnp.full((1, 2, 2, C), -inf, jnp.float32), 2)
    assert np.all(np.asarray(y) == -inf)
    np.testing.assert_array_equal(np.asarray(vjp(jnp.ones_like(y))[0])[..., 0].ravel(), [1, 0, 0, 0])
    torch = pytest.importorskip("torch")
    xt = torch.tensor(np.array([1.0, nan, 5.0, nan], np.float32).reshape(1, 1, 1, 4), requires_grad=True)
    torch.nn.functional.max_pool2d(xt, (1, 4)).sum().backward()
    np.testing.assert_array_equal(xt.grad.numpy().ravel(), [0, 0, 0, 1])


def test_few_channels_keep_the_xla_forms(rng):
    """Below ``MIN_CHANNELS`` (the clips model's one-channel input) the XLA forms run."""
    x = jnp.asarray(rng.standard_normal((2, 4, 8, 8, C - 1)), jnp.float32)
    for op in ("max_pool", "avg_pool"):
        assert targets(jax.grad(lambda x: jnp.sum(getattr(jaxcnn, op)(x, (1, 2, 2), channels_last=True))), x) == set()


@pytest.mark.parametrize("op", ["max_pool", "avg_pool"])
def test_the_compiled_program_holds_the_kernels_where_they_apply(rng, op):
    """Channels last float32: the forward and gradient kernels are custom calls of the
    compiled program; channels first, and a program lowered for ``jax.export``, hold none."""
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 16)), jnp.float32)
    backward = "jaxcnn_max_pool_scatter" if op == "max_pool" else "jaxcnn_avg_pool_transpose"

    def grad(channels_last):
        return jax.grad(lambda x: jnp.sum(jnp.sin(getattr(jaxcnn, op)(x, 2, channels_last=channels_last))))
    assert targets(grad(True), x) == {f"jaxcnn_{op}", backward}
    assert targets(grad(False), x) == set()
    exported = jax.export.export(jax.jit(grad(True)))(x)
    assert not re.findall(r"custom_call @jaxcnn_", exported.mlir_module())
    assert_close(exported.call(x), jax.jit(grad(True))(x), F32, "exported")


@pytest.mark.x64
def test_float64_keeps_the_xla_forms(rng):
    with enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, 8, 8, 16)), jnp.float64)
        assert targets(jax.grad(lambda x: jnp.sum(jaxcnn.max_pool(x, 2, channels_last=True) ** 2)), x) == set()


def _bad(index, value):
    return lambda sizes: np.concatenate([sizes[:index], [value], sizes[index + 1:]])


# name: (how the geometry goes wrong, a piece of the message). Base: x (2, 6, 6, 4), 2×2 windows.
BAD = {
    "out_size_off": (_bad(4, 4), "but the buffers' are"),
    "padded_axis_not_1": (_bad(0, 2), "but the buffers' are"),
    "window_0": (_bad(8, 0), "each must be >= 1"),
    "stride_negative": (_bad(11, -1), "each must be >= 1"),
    "dilation_0": (_bad(14, 0), "each must be >= 1"),
    "huge_low_pad": (_bad(17, 1 << 40), "beyond 2^31"),
    "seventeen_sizes": (lambda sizes: sizes[:17], "expected 18 sizes"),
}


@pytest.mark.parametrize("target", ["jaxcnn_max_pool", "jaxcnn_max_pool_scatter", "jaxcnn_avg_pool"])
@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_geometry_is_an_error(target, case):
    """The registered targets fed a bad geometry through ``jax.ffi.ffi_call``: an error JAX
    raises naming what is wrong, never a crash; the base geometry runs."""
    spec = normalize_pool(jnp.zeros((2, 6, 6, 4), jnp.float32), 2, None, 0, ceil_mode=False,
                          channels_last=True, op="max_pool")[1]
    x, pooled = jnp.ones((2, 6, 6, 4), jnp.float32), jax.ShapeDtypeStruct((2, 3, 3, 4), jnp.float32)

    def call(sizes):
        if target == "jaxcnn_max_pool":
            out = jax.ffi.ffi_call(target, (pooled, jax.ShapeDtypeStruct(pooled.shape, jnp.int32)))(x, sizes=sizes)[0]
        elif target == "jaxcnn_avg_pool":
            out = jax.ffi.ffi_call(target, pooled)(x, sizes=sizes, count_include_pad=np.int64(1))
        else:
            out = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(x.shape, jnp.float32))(
                jnp.ones(pooled.shape, jnp.float32), jnp.zeros(pooled.shape, jnp.int32), sizes=sizes)
        return np.asarray(out)
    sizes = pooling._sizes(spec)
    assert np.all(np.isfinite(call(sizes)))
    spoil, message = BAD[case]
    with pytest.raises(Exception, match="jaxcnn native pool: .*" + re.escape(message)):
        call(spoil(sizes))


def test_a_large_input_splits_over_the_threads(rng):
    """From 2^23 input floats the kernels split their work over XLA's threads (below, one
    thread): overlapping windows, so the scatter's samples must not be split between threads;
    the same values as the XLA forms."""
    spec = normalize_pool(jnp.zeros((64, 128, 128, 8), jnp.float32), 3, 2, 1, ceil_mode=False,
                          channels_last=True, op="max_pool")[1]
    x = _ties(rng, (64, 128, 128, 8))
    y, argmax = jax.jit(lambda x: (pooling.native_max_pool(x, spec), pooling.native_argmax(x, spec)))(x)
    want_y, want_argmax = jax.jit(lambda x: _pool.max_pool_argmax(x, spec))(x)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    assert_close(jax.jit(lambda g, a: pooling.native_max_pool_scatter(g, a, spec))(y, argmax),
                 jax.jit(lambda g, a: _pool.max_pool_scatter(g, a, spec))(y, argmax), F32, "scatter")


def test_an_argmax_naming_no_tap_reads_zero_and_adds_nothing(rng):
    """The argmax is data any caller can pass: out of the window's range (or −1, a window of
    padding) the gather reads 0 and the scatter adds nothing, as the XLA forms; never a read or
    a write outside the buffers."""
    spec = _spec("2d_overlap_pad", "max_pool")
    v = jnp.asarray(rng.standard_normal(CASES["2d_overlap_pad"][0]), jnp.float32)
    shape = (*v.shape[:1], *spec.out_sizes(), v.shape[-1])
    argmax = jnp.asarray(rng.integers(-3, 12, shape), jnp.int32)   # 9 taps: some out of range
    np.testing.assert_array_equal(jax.jit(lambda v, a: pooling.native_max_pool_gather(v, a, spec))(v, argmax),
                                  jax.jit(lambda v, a: _pool.max_pool_gather(v, a, spec))(v, argmax))
    dy = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    assert_close(jax.jit(lambda g, a: pooling.native_max_pool_scatter(g, a, spec))(dy, argmax),
                 jax.jit(lambda g, a: _pool.max_pool_scatter(g, a, spec))(dy, argmax), F32, "scatter")


def test_vmap_folds_into_the_kernels(rng):
    """``vmap`` of a channels-last max pool and its gradient: the kernels, per example as a loop."""
    x = _ties(rng, (3, 2, 6, 4, 8))
    fn = jax.grad(lambda x: jnp.sum(jnp.sin(jaxcnn.max_pool(x, 2, channels_last=True))))
    assert "jaxcnn_max_pool_scatter" in targets(jax.vmap(fn), x)
    got = jax.jit(jax.vmap(fn))(x)
    for i in range(x.shape[0]):
        np.testing.assert_array_equal(got[i], jax.jit(fn)(x[i]))


@pytest.fixture(scope="module")
def avx2_suffix():
    """The AVX2 build (8 floats a vector, a CPU without AVX-512's) loaded beside the native one,
    its targets registered with a suffix of this module's own."""
    native._open("avx2", "_avx2_pool")
    return "_avx2_pool"


@pytest.mark.parametrize("name", ["2d_tiled", "3d_overlap", "1d_pad_stride"])
def test_avx2_build_equals_the_xla_forms(avx2_suffix, rng, name):
    """8-wide vector blocks and their tails (16, 17 and 9 channels): the max, the argmax and the
    scatter of the AVX2 build equal the XLA forms."""
    spec = _spec(name, "max_pool")
    x = _ties(rng, CASES[name][0])
    structs = (pooling._struct(x, spec, True), pooling._struct(x, spec, True, jnp.int32))
    y, argmax = jax.jit(lambda x: jax.ffi.ffi_call("jaxcnn_max_pool" + avx2_suffix, structs)(
        x, sizes=pooling._sizes(spec)))(x)
    want_y, want_argmax = jax.jit(lambda x: _pool.max_pool_argmax(x, spec))(x)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(argmax, want_argmax)
    dx = jax.jit(lambda g, a: jax.ffi.ffi_call("jaxcnn_max_pool_scatter" + avx2_suffix, pooling._struct(g, spec, False))(
        g, a, sizes=pooling._sizes(spec)))(y, argmax)
    assert_close(dx, jax.jit(lambda g, a: _pool.max_pool_scatter(g, a, spec))(y, argmax), F32, "scatter")
