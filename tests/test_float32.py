"""Tests of the library's default mode, float32 with ``jax_enable_x64`` off, against PyTorch
float32 (``torch.nn.functional`` and ``torch.nn.grad``): every op, 1D/2D/3D, both impls, both
layouts; values and gradients (``jax.grad`` against torch autograd).

The rest of the suite runs with float64 on (tests/conftest.py) for exactness; this module
turns it off around each test with ``jaxcnn._compat.enable_x64(False)`` (JAX's public context
manager for the flag, ``jax.enable_x64``, where the release has it): the setting is
thread-local and part of every jit cache key, so nothing traced here leaks into the float64
tests (or back) even when pytest-xdist runs both in one worker.
Inputs are made as a user would make them in this mode: ``jnp.asarray`` of numpy samples, no
dtype argument (float32 because x64 is off); the tests check that every output and gradient
stays float32.

Tolerance: 1e-5 relative (max abs error / max abs reference, ``helpers.TOL["float32"]``).
float32's unit roundoff is u = 2⁻²⁴ ≈ 6e-8; each output here sums at most a few dozen
products, so each library's rounding error is at most ~K·u·Σ|terms| and in practice
~√K·u·Σ|terms|, a few 1e-7 of the largest output for these shapes. The two libraries sum in
different orders, so the differences are of that size (measured: at most 5e-7, median 7e-8):
1e-5 leaves a margin of 20×, and a wrong tap, a missing flip or a bad border is off by O(1).
Off CPU, XLA's default precision for float32 convolutions may be TensorFloat-32 (~1e-3): there
the tests ask for full float32 with ``jax.default_matmul_precision("float32")``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn._compat import enable_x64
from helpers import TOL, assert_close, kernel_to_layout, to_layout

torch = pytest.importorskip("torch")
F = torch.nn.functional

F32 = TOL["float32"]
pytestmark = pytest.mark.usefixtures("fast_compile")  # many small shapes: compiling dominates
# Latin pairing instead of the full product (2 CPU cores): every n meets both impls and both
# layouts, and every (impl, layout) pair occurs.
N_IMPL_LAYOUT = [(1, "lax", False), (1, "manual", True), (2, "lax", True), (2, "manual", False),
                 (3, "lax", False), (3, "manual", True)]
IDS = [f"{n}d-{impl}-{'last' if last else 'first'}" for n, impl, last in N_IMPL_LAYOUT]
N_LAYOUT = [(n, last) for n in (1, 2, 3) for last in (False, True)]
N_LAYOUT_IDS = [f"{n}d-{'last' if last else 'first'}" for n, last in N_LAYOUT]


@pytest.fixture(autouse=True)
def float32_default():
    """x64 off for the test (and its jit traces); full float32 precision off CPU (see above)."""
    with enable_x64(False):
        assert jnp.zeros(()).dtype == jnp.float32, "x64 still on"
        if jax.default_backend() == "cpu":
            yield
        else:
            with jax.default_matmul_precision("float32"):
                yield


@pytest.fixture
def normal(rng):
    """``normal(*shape)``: what a user writes, ``jnp.asarray`` of numpy samples with no dtype
    argument: float32, as x64 is off. (Not ``jax.random.normal``: it compiles once per shape,
    most of this module's time.)"""
    def sample(*shape: int) -> jax.Array:
        a = jnp.asarray(rng.standard_normal(shape))
        assert a.dtype == jnp.float32
        return a
    return sample


def from_layout(a: jax.Array, channels_last: bool) -> jax.Array:
    """An activation back to ``(N, C, *S)`` (the inverse of ``helpers.to_layout``)."""
    return jnp.moveaxis(a, -1, 1) if channels_last else a


def kernel_from_layout(w: jax.Array, channels_last: bool) -> jax.Array:
    """A kernel back to ``(A, B, *K)`` (the inverse of ``helpers.kernel_to_layout``)."""
    n = w.ndim - 2
    return jnp.transpose(w, (n + 1, n, *range(n))) if channels_last else w


def check(what: str, jax_op, torch_op, args: tuple, normal) -> None:
    """``jax_op`` and ``torch_op`` (both channels first) at ``args``: values, and the gradients
    of ``⟨op(*args), c⟩`` for a random ``c`` with respect to every argument, by ``jax.grad``
    and by torch autograd."""
    out_shape = jax.eval_shape(jax_op, *args).shape
    cotangent = normal(*out_shape)

    def loss(*a):
        y = jax_op(*a)
        return jnp.sum(y * cotangent), y

    grads, y = jax.jit(jax.grad(loss, argnums=tuple(range(len(args))), has_aux=True))(*args)
    assert y.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in grads), what
    tensors = [torch.tensor(np.asarray(a), requires_grad=True) for a in args]
    y_torch = torch_op(*tensors)
    assert y_torch.dtype == torch.float32
    (y_torch * torch.tensor(np.asarray(cotangent))).sum().backward()
    assert_close(y, y_torch.detach().numpy(), F32, f"{what}: value")
    for i, (g, t) in enumerate(zip(grads, tensors)):
        assert_close(g, t.grad.numpy(), F32, f"{what}: gradient of argument {i}")


# ----------------------------------------------------------------------------- the conv family
# Channels-first shapes and every knob off its default; torch takes symmetric int padding.

CONV = {  # n: (x shape, w shape, kwargs)
    1: ((2, 4, 9), (6, 2, 3), dict(stride=(2,), padding=(1,), dilation=(2,), groups=2)),
    2: ((2, 4, 6, 5), (4, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                                         groups=2)),
    3: ((1, 2, 4, 5, 3), (2, 2, 2, 3, 2), dict(stride=(1, 2, 1), padding=(1, 1, 0),
                                               dilation=(2, 1, 1), groups=1)),
}
TRANSPOSE = {  # n: (x shape, w shape (C_in, C_out / g, *K), kwargs)
    1: ((2, 4, 5), (4, 3, 3), dict(stride=(2,), padding=(1,), output_padding=(1,),
                                   dilation=(1,), groups=2)),
    2: ((2, 2, 3, 4), (2, 3, 2, 3), dict(stride=(2, 1), padding=(0, 1), output_padding=(1, 0),
                                         dilation=(1, 2), groups=1)),
    3: ((1, 2, 2, 3, 2), (2, 2, 2, 2, 3), dict(stride=(1, 2, 2), padding=(1, 0, 1),
                                               output_padding=(0, 1, 1), dilation=(2, 1, 1),
                                               groups=2)),
}


def conv_family(kind: str, n: int, impl: str, channels_last: bool, normal) -> None:
    """``kind`` ("conv" or "convolve") of x, w, b against torch's ``conv{n}d``."""
    x_shape, w_shape, kw = CONV[n]
    op = getattr(jaxcnn, kind)
    torch_conv = getattr(F, f"conv{n}d")
    flip = kind == "convolve"

    def jax_op(x, w, b):
        return from_layout(op(to_layout(x, channels_last), kernel_to_layout(w, channels_last), b,
                              impl=impl, channels_last=channels_last, **kw), channels_last)

    def torch_op(x, w, b):
        w = torch.flip(w, dims=tuple(range(2, n + 2))) if flip else w
        return torch_conv(x, w, b, **kw)

    check(f"{kind} {n}d", jax_op, torch_op,
          (normal(*x_shape), normal(*w_shape), normal(w_shape[0])), normal)


@pytest.mark.parametrize("n, impl, channels_last", N_IMPL_LAYOUT, ids=IDS)
def test_conv(n, impl, channels_last, normal):
    conv_family("conv", n, impl, channels_last, normal)


@pytest.mark.parametrize("n, impl, channels_last", N_IMPL_LAYOUT, ids=IDS)
def test_convolve(n, impl, channels_last, normal):
    """True convolution: torch's cross-correlation with the kernel flipped (``torch.flip``)."""
    conv_family("convolve", n, impl, channels_last, normal)


@pytest.mark.parametrize("n, impl, channels_last", N_IMPL_LAYOUT, ids=IDS)
def test_conv_transpose(n, impl, channels_last, normal):
    x_shape, w_shape, kw = TRANSPOSE[n]

    def jax_op(x, w, b):
        return from_layout(jaxcnn.conv_transpose(
            to_layout(x, channels_last), kernel_to_layout(w, channels_last), b, impl=impl,
            channels_last=channels_last, **kw), channels_last)

    torch_op = lambda x, w, b: getattr(F, f"conv_transpose{n}d")(x, w, b, **kw)  # noqa: E731
    check(f"conv_transpose {n}d", jax_op, torch_op,
          (normal(*x_shape), normal(*w_shape), normal(kw["groups"] * w_shape[1])), normal)


def _conv_out_shape(n: int) -> tuple[int, ...]:
    x_shape, w_shape, kw = CONV[n]
    return tuple(getattr(F, f"conv{n}d")(torch.zeros(x_shape), torch.zeros(w_shape), **kw).shape)


@pytest.mark.parametrize("n, impl, channels_last", N_IMPL_LAYOUT, ids=IDS)
def test_conv_input_grad(n, impl, channels_last, normal):
    """Against ``torch.nn.grad.conv{n}d_input``; its gradients (with respect to dy and w)
    against torch autograd through it."""
    x_shape, w_shape, kw = CONV[n]
    x_layout = tuple(to_layout(jnp.zeros(x_shape), channels_last).shape)

    def jax_op(dy, w):
        return from_layout(jaxcnn.conv_input_grad(
            to_layout(dy, channels_last), kernel_to_layout(w, channels_last), x_layout,
            impl=impl, channels_last=channels_last, **kw), channels_last)

    torch_op = lambda dy, w: getattr(torch.nn.grad, f"conv{n}d_input")(  # noqa: E731
        x_shape, w, dy, **kw)
    check(f"conv_input_grad {n}d", jax_op, torch_op,
          (normal(*_conv_out_shape(n)), normal(*w_shape)), normal)


@pytest.mark.parametrize("n, impl, channels_last", N_IMPL_LAYOUT, ids=IDS)
def test_conv_weight_grad(n, impl, channels_last, normal):
    """Against ``torch.nn.grad.conv{n}d_weight``; its gradients (with respect to x and dy)
    against torch autograd through it."""
    x_shape, w_shape, kw = CONV[n]
    w_layout = tuple(kernel_to_layout(jnp.zeros(w_shape), channels_last).shape)

    def jax_op(x, dy):
        return kernel_from_layout(jaxcnn.conv_weight_grad(
            to_layout(x, channels_last), to_layout(dy, channels_last), w_layout, impl=impl,
            channels_last=channels_last, **kw), channels_last)

    torch_op = lambda x, dy: getattr(torch.nn.grad, f"conv{n}d_weight")(  # noqa: E731
        x, w_shape, dy, **kw)
    check(f"conv_weight_grad {n}d", jax_op, torch_op,
          (normal(*x_shape), normal(*_conv_out_shape(n))), normal)


# ----------------------------------------------------------------------------- pooling

MAX_POOL = {  # n: (x shape, kwargs); stride given explicitly where torch needs it
    1: ((2, 3, 11), dict(window=(3,), stride=(2,), padding=(1,), dilation=(2,))),
    2: ((2, 3, 7, 6), dict(window=(3, 2), stride=(2, 1), padding=(1, 1), ceil_mode=True)),
    3: ((1, 2, 5, 6, 4), dict(window=(2, 2, 2), stride=(2, 2, 2), padding=(1, 0, 1),
                              dilation=(1, 2, 1))),
}
AVG_POOL = {
    1: ((2, 3, 11), dict(window=(3,), stride=(2,), padding=(1,), count_include_pad=False)),
    2: ((2, 3, 7, 6), dict(window=(2, 3), stride=(2, 2), padding=(1, 1), ceil_mode=True)),
    3: ((1, 2, 5, 6, 4), dict(window=(2, 2, 2), stride=(2, 2, 2), padding=(0, 1, 0))),
}


def pool(kind: str, n: int, channels_last: bool, x_shape: tuple, kw: dict, torch_op,
         normal) -> None:
    op = getattr(jaxcnn, kind)

    def jax_op(x):
        y = op(to_layout(x, channels_last), channels_last=channels_last, **kw)
        return y if y.ndim == 2 else from_layout(y, channels_last)

    check(f"{kind} {n}d", jax_op, torch_op, (normal(*x_shape),), normal)


@pytest.mark.parametrize("n, channels_last", N_LAYOUT, ids=N_LAYOUT_IDS)
def test_max_pool(n, channels_last, normal):
    """Random normal data has no ties, so the first-maximum rule is not exercised here."""
    x_shape, kw = MAX_POOL[n]
    t = dict(kernel_size=kw["window"], stride=kw["stride"], padding=kw["padding"],
             dilation=kw.get("dilation", 1), ceil_mode=kw.get("ceil_mode", False))
    pool("max_pool", n, channels_last, x_shape, kw,
         lambda x: getattr(F, f"max_pool{n}d")(x, **t), normal)


@pytest.mark.parametrize("n, channels_last", N_LAYOUT, ids=N_LAYOUT_IDS)
def test_avg_pool(n, channels_last, normal):
    x_shape, kw = AVG_POOL[n]
    t = dict(kernel_size=kw["window"], stride=kw["stride"], padding=kw["padding"],
             ceil_mode=kw.get("ceil_mode", False),
             count_include_pad=kw.get("count_include_pad", True))
    pool("avg_pool", n, channels_last, x_shape, kw,
         lambda x: getattr(F, f"avg_pool{n}d")(x, **t), normal)


@pytest.mark.parametrize("n, channels_last", N_LAYOUT, ids=N_LAYOUT_IDS)
def test_global_avg_pool(n, channels_last, normal):
    x_shape = MAX_POOL[n][0]
    pool("global_avg_pool", n, channels_last, x_shape, {},
         lambda x: torch.mean(x, dim=tuple(range(2, n + 2))), normal)
