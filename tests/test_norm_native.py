"""jaxcnn._conv.native.normalising: the C++ GroupNorm kernels equal the XLA forms and PyTorch,
and are used where they apply.

References, all float32 (the kernels' dtype):

- float64 math (``reference.group_norm``, JAX autodiff): the value and the three gradients of
  the kernels and of the XLA forms of ``jaxcnn.norm`` (the lowering with the kernels off:
  ``normalising.uses_kernels`` patched to False, a fresh ``jit``) each within float32's
  tolerance; and a large mean offset (x = 1000 + noise at 1e-2), whose statistics a one-pass
  E[x²] − μ², a float32 sum of the offset or a centring by a float32 μ gets wrong;
- PyTorch's ``group_norm`` and its gradients (channels first, transposed), with its ReLU;
- the fused ReLU against ``jax.nn.relu(group_norm)``, with pre-activations exactly 0 (a bias that
  cancels a constant group's mean), where the gradient is 0 as ``jax.nn.relu``'s;
- the compiled program holds the custom calls (float32, channels last), none for channels
  first, float64, too few channels, or a program for ``jax.export``;
- second derivatives (through the XLA formulas) and vmap equal the kernels-off program's.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import reference
from jaxcnn._compat import enable_x64
from jaxcnn._conv import native
from jaxcnn._conv.native import normalising
from jaxcnn.norm import group_norm_relu
from native_helpers import TARGET, needs_kernels
from helpers import TOL, assert_close, tree_assert_close

F32 = TOL["float32"]
pytestmark = needs_kernels

CASES = {  # name: (channels-last shape, groups)
    "1d": ((3, 11, 8), 4),
    "2d": ((2, 7, 9, 16), 4),
    "2d-one-group": ((2, 5, 6, 12), 1),
    "2d-instance": ((2, 5, 6, 8), 8),
    "3d-odd": ((2, 3, 5, 7, 6), 3),
    "n1": ((1, 28, 28, 32), 8),
}
OPS = {"group_norm": jaxcnn.group_norm, "group_norm_relu": group_norm_relu}


@contextlib.contextmanager
def kernels_off():
    """The XLA forms: the lowering's test for the kernels answers no (a fresh ``jit`` sees it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(normalising, "uses_kernels", lambda *a, **k: False)
        yield


def _operands(rng, shape, offset=0.0, spread=2.0):
    x = jnp.asarray(offset + spread * rng.standard_normal(shape), jnp.float32)
    c = shape[-1]
    return (x, jnp.asarray(1 + 0.5 * rng.standard_normal(c), jnp.float32),
            jnp.asarray(0.5 * rng.standard_normal(c), jnp.float32))


def _step(op, groups):
    """``y = op(x)`` and the three gradients of ``Σ tanh(y) · probe`` (``dy`` depends on y). Not
    the loss itself: a sum of terms of both signs, whose relative error float32 cannot bound."""
    def loss(x, scale, bias, probe):
        y = op(x, groups, scale, bias, channels_last=True)
        return jnp.sum(jnp.tanh(y) * probe), y
    grad = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    return jax.jit(lambda *args: (lambda out: (out[0][1], out[1]))(grad(*args)))


def _targets(fn, *args) -> set[str]:
    return set(TARGET.findall(jax.jit(fn).lower(*args).compile().as_text()))


def _exact(op: str, groups: int):
    """``_step``'s ``y`` and gradients in float64 math (``reference.group_norm``, JAX autodiff),
    on float64 copies of the float32 operands."""
    def loss(x, scale, bias, probe):
        y = reference.group_norm(jnp.moveaxis(x, -1, 1), groups, scale, bias, eps=1e-5)
        y = jnp.moveaxis(jax.nn.relu(y) if op == "group_norm_relu" else y, 1, -1)
        return jnp.sum(jnp.tanh(y) * probe), y
    grad = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)
    return lambda *args: (lambda out: (out[0][1], out[1]))(grad(*(a.astype(jnp.float64) for a in args)))


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("name", list(CASES))
def test_kernels_and_xla_forms_equal_float64_math(rng, name, op):
    """The kernels' value and gradients, and the XLA forms', each within float32's tolerance of
    float64 math (against each other they may differ by both errors)."""
    shape, groups = CASES[name]
    with enable_x64(False):
        x, scale, bias = _operands(rng, shape)
        probe = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        step = _step(OPS[op], groups)
        text = step.lower(x, scale, bias, probe).compile().as_text()
        assert {"jaxcnn_group_norm", "jaxcnn_group_norm_vjp"} <= set(TARGET.findall(text))
        got = step(x, scale, bias, probe)
        with kernels_off():
            step = _step(OPS[op], groups)
            assert not set(TARGET.findall(step.lower(x, scale, bias, probe).compile().as_text()))
            xla = step(x, scale, bias, probe)
    with enable_x64(True):
        want = _exact(op, groups)(x, scale, bias, probe)
    tree_assert_close(got, want, F32, f"{name} {op} kernels")
    tree_assert_close(xla, want, F32, f"{name} {op} XLA forms")


@pytest.mark.parametrize("op", list(OPS))
def test_large_mean_offset_against_float64(rng, op):
    """x = 1000 + noise·1e-2 (σ² ~ 1e-4): E[x²] − μ² in float32, or a float32 sum of the offset,
    is far off; the kernel's two passes in double and its x − μ with μ as two floats give
    float64's values to float32's rounding (the XLA forms, which centre with μ rounded to
    float32, are off by 0.3% in y and up to 27% in a gradient here)."""
    shape, groups = (2, 9, 7, 16), 4
    with enable_x64(True):
        x, scale, bias = _operands(rng, shape, offset=1000.0, spread=1e-2)
        probe = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        got = _step(OPS[op], groups)(x, scale, bias, probe)
        want = _exact(op, groups)(x, scale, bias, probe)
    tree_assert_close(got, want, F32, op)


@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
def test_equals_pytorch(rng, relu):
    torch = pytest.importorskip("torch")
    shape, groups = (3, 6, 5, 12), 3
    with enable_x64(False):
        x, scale, bias = _operands(rng, shape)
        dy = jnp.asarray(rng.standard_normal(shape), jnp.float32)
        op = group_norm_relu if relu else jaxcnn.group_norm
        y, vjp = jax.vjp(lambda x, s, b: op(x, groups, s, b, channels_last=True), x, scale, bias)
        grads = vjp(dy)
    tx, ts, tb = (torch.tensor(np.asarray(a), requires_grad=True) for a in (np.moveaxis(x, -1, 1), scale, bias))
    ty = torch.nn.functional.group_norm(tx, groups, ts, tb, eps=1e-5)
    ty = torch.relu(ty) if relu else ty
    ty.backward(torch.tensor(np.moveaxis(np.asarray(dy), -1, 1)))
    assert_close(y, np.moveaxis(ty.detach().numpy(), 1, -1), F32, "y")
    assert_close(grads[0], np.moveaxis(tx.grad.numpy(), 1, -1), F32, "dx")
    assert_close(grads[1], ts.grad.numpy(), F32, "dscale")
    assert_close(grads[2], tb.grad.numpy(), F32, "dbias")


def test_relu_at_exactly_zero_passes_no_gradient(rng):
    """A constant group has x̂ = 0, so z = β: with a zero bias there its pre-activations are
    exactly 0, where ``jax.nn.relu``'s derivative (and the fused op's) is 0: its outputs and its
    bias gradient are 0, and every value and gradient equals relu(group_norm)'s."""
    shape, groups = (2, 4, 5, 8), 2
    with enable_x64(False):
        x, scale, bias = _operands(rng, shape)
        x = x.at[:, :, :, :4].set(3.0)            # group 0 constant: x̂ = 0 there
        bias = bias.at[:4].set(0.0)               # z = γ·0 + 0 = 0 exactly
        dy = jnp.asarray(rng.standard_normal(shape), jnp.float32)

        def fused(x, s, b):
            return group_norm_relu(x, groups, s, b, channels_last=True)

        def separate(x, s, b):
            return jax.nn.relu(jaxcnn.group_norm(x, groups, s, b, channels_last=True))
        assert "jaxcnn_group_norm_vjp" in _targets(lambda *a: jax.vjp(fused, *a[:3])[1](a[3]), x, scale, bias, dy)
        got = jax.jit(lambda *a: jax.vjp(fused, *a[:3])[1](a[3]))(x, scale, bias, dy)
        want = jax.jit(lambda *a: jax.vjp(separate, *a[:3])[1](a[3]))(x, scale, bias, dy)
        assert np.all(np.asarray(jax.jit(fused)(x, scale, bias))[..., :4] == 0)
        assert np.all(np.asarray(got[2])[:4] == 0)       # dβ of the zero pre-activations
        tree_assert_close(got, want, F32, "relu at 0")


@pytest.mark.parametrize("what", ["channels_first", "float64", "few_channels", "export"])
def test_no_kernel_where_it_does_not_apply(rng, what):
    shape, groups, channels_last, dtype = (2, 5, 6, 8), 2, True, jnp.float32
    if what == "channels_first":
        shape, channels_last = (2, 8, 5, 6), False
    elif what == "float64":
        dtype = jnp.float64
    elif what == "few_channels":
        shape = (2, 5, 6, normalising.MIN_CHANNELS - 1)
        groups = 1
    with enable_x64(dtype == jnp.float64):
        x = jnp.asarray(rng.standard_normal(shape), dtype)

        def loss(x):
            return jnp.sum(jnp.tanh(jaxcnn.group_norm(x, groups, channels_last=channels_last)))
        step = jax.jit(jax.grad(loss))
        if what == "export":
            text = jax.export.export(step)(x).mlir_module()
            assert "jaxcnn_group_norm" not in text
        else:
            assert not _targets(step, x)


def test_second_derivatives_and_vmap_equal_the_xla_forms(rng):
    """grad of grad differentiates the VJP's formula (the kernel has no derivative of its own);
    vmap folds into the batch (the kernels run) or, with a scale per vmapped row, vmaps the
    formula: both equal the kernels-off program."""
    shape, groups = (2, 5, 4, 8), 2
    with enable_x64(False):
        x, scale, bias = _operands(rng, shape)
        xs = jnp.stack([x, 2 * x + 1])
        scales = jnp.stack([scale, -scale])

        def loss(x, s):
            return jnp.sum(jnp.sin(group_norm_relu(x, groups, s, bias, channels_last=True)))

        def outer(x, s):
            g = jax.grad(loss, argnums=(0, 1))(x, s)
            return jnp.sum(g[0] ** 2) + jnp.sum(g[1] ** 2)

        def programs():
            return (jax.jit(jax.grad(outer, argnums=(0, 1))),
                    jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None))),
                    jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)))))
        second, folded, per_row = programs()
        assert "jaxcnn_group_norm_vjp" in _targets(folded, xs, scale)
        got = (second(x, scale), folded(xs, scale), per_row(xs, scales))
        with kernels_off():
            second, folded, per_row = programs()
            want = (second(x, scale), folded(xs, scale), per_row(xs, scales))
        tree_assert_close(got, want, 1e-4, "second order, vmap")


def test_bad_geometry_is_an_ffi_error(rng):
    """A caller of the registered target with a scale of the wrong size, or groups that do not
    divide the channels, gets an error naming it, not a read out of bounds."""
    native.library()
    x = jnp.zeros((2, 3, 8), jnp.float32)
    call = jax.ffi.ffi_call("jaxcnn_group_norm", jax.ShapeDtypeStruct(x.shape, jnp.float32))
    attrs = dict(eps=np.float64(1e-5), relu=np.int64(0))
    with pytest.raises(Exception, match="scale is"):
        jax.jit(lambda x: call(x, jnp.ones(7), jnp.zeros(8), groups=np.int64(2), **attrs))(x).block_until_ready()
    with pytest.raises(Exception, match="does not divide"):
        jax.jit(lambda x: call(x, jnp.ones(8), jnp.zeros(8), groups=np.int64(3), **attrs))(x).block_until_ready()
