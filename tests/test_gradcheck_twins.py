"""Tests of jaxcnn/gradcheck/twins.py: the default oracle is found by the op's identity, never
by a function's name.

A user's correct function named like one of jaxcnn.reference's (``def conv(x, w)`` in NHWC,
``def group_norm(x, scale)``) must pass ``check`` and ``assert_grads``: compared with a namesake
of another signature it would fail. jaxcnn's own ops still get their twin.
"""
from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn import reference
from jaxcnn.gradcheck import assert_grads, check, check_dtype, check_modes, resolve_reference
from jaxcnn.gradcheck.twins import TWINS, twin

from helpers import random_array

pytestmark = pytest.mark.x64

PUBLIC_NAMES = sorted(name for name in dir(reference) if not name.startswith("_"))


def _named(name: str, fn):
    """``fn`` as a user's ``def <name>(...)``."""
    fn.__name__ = fn.__qualname__ = name
    return fn


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_a_user_function_named_after_a_reference_gets_no_oracle_by_name(rng, name):
    """(x, scale) ↦ tanh(x)·scale + x²: a signature none of the references has."""
    f = _named(name, lambda x, scale: {"y": jnp.tanh(x) * scale[None] + x ** 2})
    args = (random_array(rng, (2, 3)), random_array(rng, (3,)))
    assert resolve_reference(f, None, required=False) is None
    report = check(f, args)
    assert report.ok, report.table()
    assert "no reference" in report.precision and "output" not in [r.name for r in report.rows]
    modes = assert_grads(f, args, batched=True)
    assert "no reference" in modes.oracle and not any("reference" in r.check for r in modes.rows)
    with pytest.raises(ValueError, match=rf"^reference: f \('{name}'\) is not one of jaxcnn's ops"):
        check_dtype(f, args)


def _user_conv_nhwc(x, w):
    """A user's correct NHWC conv: x (N, H, W, C), w (kH, kW, C, O), SAME padding."""
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _user_group_norm(x, scale):
    """A user's correct layer norm over (C, H) per example, scaled per channel: x (N, C, H)."""
    mean = jnp.mean(x, axis=(1, 2), keepdims=True)
    var = jnp.mean((x - mean) ** 2, axis=(1, 2), keepdims=True)
    return (x - mean) / jnp.sqrt(var + 1e-5) * scale[None, :, None]


@pytest.mark.parametrize("name, fn, shapes", [
    ("conv", _user_conv_nhwc, [(2, 4, 4, 5), (3, 3, 5, 2)]),       # the issue: "expected 5 input channels per group"
    ("group_norm", _user_group_norm, [(2, 3, 4), (3,)]),            # the issue: "groups: expected a positive int"
    ("max_pool", lambda x: jnp.max(x.reshape(2, 3, 2), axis=-1), [(2, 6)]),
    ("conv_transpose", lambda w, x: x @ w.T, [(4, 3), (2, 3)]),
], ids=["conv NHWC", "group_norm(x, scale)", "max_pool by reshape", "conv_transpose as matmul"])
def test_a_users_correct_namesake_passes(rng, name, fn, shapes):
    f = _named(name, fn)
    args = tuple(random_array(rng, s) for s in shapes)
    assert check(f, args).ok
    report = assert_grads(f, args, batched=True, order=2)
    assert "no reference" in report.oracle
    # Against its namesake it would have failed: the reference rejects these arguments.
    with pytest.raises((ValueError, TypeError)):
        getattr(reference, name)(*args)


def _exported_ops():
    """Every function ``jaxcnn`` (and ``jaxcnn.lax``) exports whose name has a twin."""
    ops = {name: getattr(jaxcnn, name) for name in jaxcnn.__all__
           if inspect.isfunction(getattr(reference, name, None))}
    ops.update({f"lax.{name}": getattr(jaxcnn.lax, name) for name in jaxcnn.lax.__all__})
    return ops


def test_every_exported_op_with_a_twin_is_in_the_identity_map():
    ops = _exported_ops()
    assert {"conv", "max_pool", "group_norm", "lax.conv_general_dilated"} <= set(ops)
    for name, op in ops.items():
        assert twin(op) is getattr(reference, name.replace(".", "_")), name
    for n in (1, 2, 3):
        assert twin(getattr(jaxcnn, f"conv{n}d")) is reference.conv
    # ... and every reference function is some op's twin; a reference has none itself.
    defined = {f for _, f in inspect.getmembers(reference, inspect.isfunction)
               if f.__module__ == reference.__name__ and not f.__name__.startswith("_")}
    assert set(TWINS.values()) == defined
    assert all(twin(f) is None for f in defined)


def test_jaxcnn_ops_still_get_their_twin(rng):
    x = random_array(rng, (2, 4, 5))
    scale = random_array(rng, (4,))
    report = check(jaxcnn.group_norm, (x, 2, scale))
    assert report.ok and "no reference" not in report.precision
    assert report["output"].rel_autodiff <= 1e-10        # compared with reference.group_norm
    modes = check_modes(jaxcnn.group_norm, (x, 2, scale))
    assert modes.oracle == "reference jaxcnn.reference.group_norm" and modes.ok
    assert modes.row("x", "rev vs reference").ok
    # A partial of an op: the same partial of its twin.
    w = random_array(rng, (3, 4, 2))
    padded = functools.partial(jaxcnn.conv1d, padding=1)
    found = twin(padded)
    assert found.func is reference.conv and found.keywords == {"padding": 1}
    assert check_dtype(padded, (x, w)).ok


def test_a_wrapped_op_is_not_an_op(rng):
    """Identity, not equality of behaviour: a lambda around jaxcnn.conv gets no twin, so
    check_dtype asks for the reference by name."""
    wrapped = _named("conv", lambda x, w: jaxcnn.conv(x, w))
    assert twin(wrapped) is None and twin([1]) is None and twin(functools.partial(print)) is None
    x, w = random_array(rng, (2, 3, 5)), random_array(rng, (2, 3, 2))
    with pytest.raises(ValueError, match="reference="):
        check_dtype(wrapped, (x, w))
    assert check_dtype(wrapped, (x, w), reference=reference.conv).ok
