"""jaxcnn._conv.native: the C++ kernels equal the one-lax-call pieces, and are used where they apply.

Each native form is called directly (jit-compiled, float32: the only dtype the kernels take)
and compared with the generic ``impl="lax"`` piece of ``jaxcnn._conv.pieces`` (one
``lax.conv_general_dilated`` at ``precision=HIGHEST``), an independent computation of the same
map, at float32's tolerance (``helpers.TOL``: each output sums at most a few hundred products,
``L·u ≈ 3e-5`` at worst, ~1e-6 measured; a wrong tap, border or stride is off by O(1)).
The geometries cover 1D/2D/3D, strides, dilations, uneven and cropping (negative) pads, and
batch and position counts that leave partial register blocks and partial thread chunks.
Skipped where the kernels cannot be built (no compiler, a JAX without ``jax.ffi``).

The build, its cache and entry points, and the AVX2 build: ``test_conv_native_build.py``.
"""
from __future__ import annotations

import os
import random
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import reference
from jaxcnn._conv import native, rules
from jaxcnn._args import normalize_conv
from jaxcnn._compat import enable_x64
from jaxcnn._conv.pieces import IMPLS
from native_helpers import AVAILABLE, needs_kernels
from helpers import TOL, assert_close, full_tier, run_piece

F32 = TOL["float32"]
HAS_FFI = hasattr(getattr(jax, "ffi", None), "ffi_call")
WIDTH = native.vector_width() if AVAILABLE else 16

# name: (batch, x spatial, kernel, C, O, conv kwargs); channels last, one group.
CONFIGS = {
    "clips_3d": (3, (4, 5, 6), (3, 3, 3), 16, 2 * WIDTH, dict(padding=1)),
    "strided_dilated_3d": (2, (7, 6, 9), (2, 3, 3), 8, WIDTH, dict(stride=(2, 1, 2), dilation=(2, 1, 1),
                                                                    padding=((1, 0), (1, 1), (0, 2)))),
    "wide_out_2d": (5, (7, 6), (3, 3), 8, 5 * WIDTH, dict(padding=((2, 1), (0, 1)))),
    "big_pad_2d": (2, (5, 5), (3, 2), 16, WIDTH, dict(padding=((3, 4), (2, 1)), dilation=(1, 2))),
    "long_1d": (3, (37,), (5,), 8, WIDTH, dict(stride=3, padding=2)),
    "many_channels_1d": (1, (10,), (3,), 3 * WIDTH, 3 * WIDTH, dict(padding=1)),
    "no_padding_3d": (2, (5, 5, 5), (3, 3, 3), 24, WIDTH, dict()),
    # strided input gradients, one call per output phase: phases of unequal length, a stride
    # above the kernel (phases with no tap), cropping pads
    "strided_odd_2d": (3, (9, 8), (3, 3), WIDTH, 2 * WIDTH, dict(stride=2, padding=1)),
    "stride3_1d": (2, (11,), (4,), WIDTH, WIDTH, dict(stride=3, padding=((2, 0),))),
    "one_by_one_strided_3d": (2, (5, 6, 4), (1, 1, 1), WIDTH, WIDTH, dict(stride=2)),
    "cropping_strided_2d": (2, (8, 7), (3, 2), WIDTH, WIDTH, dict(stride=(2, 3), padding=((-1, 2), (1, 0)))),
    # fewer than MIN_CHANNELS input channels: the weight gradient's table-free kernel
    "one_channel_3d": (3, (4, 5, 6), (3, 3, 3), 1, WIDTH, dict(padding=1)),
    "thin_strided_dilated_2d": (2, (9, 11), (2, 3), 3, 2 * WIDTH, dict(stride=(1, 2), dilation=(2, 2),
                                                                     padding=((1, 0), (-1, 3)))),
    "thin_1d": (4, (13,), (4,), 5, WIDTH, dict(stride=3, padding=((2, 1),))),
}


def _operands(config, rng):
    """``(x, w, dy, spec)`` of a config ``(batch, spatial, kernel, C, O, conv kwargs)``. Its pads
    may be negative (cropping, as inside the VJPs): the front door refuses those from users, so
    it sees them clipped at 0 and the spec takes them after."""
    n, spatial, kernel, c, o, kwargs = config
    x = jnp.asarray(rng.standard_normal((n, *spatial, c)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((*kernel, c, o)), jnp.float32)
    pads = kwargs.get("padding", 0)
    front = pads if isinstance(pads, int) else tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)
    spec = normalize_conv(x, w, None, padding_mode="zeros", channels_last=True, impl="lax",
                          **{"stride": 1, "dilation": 1, "groups": 1, **kwargs, "padding": front}).spec
    if not isinstance(pads, int):
        spec = spec.replace(padding=tuple(pads))
    spec = spec.replace(precision=jax.lax.Precision.HIGHEST)
    y_shape = jax.eval_shape(partial(IMPLS["lax"][0], spec=spec), x, w).shape
    dy = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)
    return x, w, dy, spec


def _computes(piece, config):
    """The input gradient writes C channels (a multiple of the vector width) at stride 1 or
    dilation 1."""
    _, _, _, c, _, kwargs = config
    unit = [np.all(np.asarray(kwargs.get(name, 1)) == 1) for name in ("stride", "dilation")]
    return piece != "input_grad" or (c % WIDTH == 0 and any(unit))


def _assert_native_equals_lax(piece, operands, what):
    got = run_piece(native.FORMS[piece], piece, *operands)
    want = run_piece(IMPLS["lax"][rules.PIECES.index(piece)], piece, *operands)
    assert got.dtype == want.dtype == jnp.float32 and got.shape == want.shape
    assert_close(got, want, F32, what)


CASES = [(piece, name) for piece in rules.PIECES for name in CONFIGS if _computes(piece, CONFIGS[name])]


@needs_kernels
@pytest.mark.parametrize("piece,name", CASES)
def test_native_form_equals_lax_piece(piece, name, rng):
    with enable_x64(False):
        _assert_native_equals_lax(piece, _operands(CONFIGS[name], rng), f"native {piece} on {name}")


def _clips_layer_spec():
    """The clips model's 16 → 32 layer (64 clips of 8³, channels last): shapes and spec."""
    x, w = (64, 8, 8, 8, 16), (3, 3, 3, 16, 32)
    spec = normalize_conv(jnp.zeros(x, jnp.float32), jnp.zeros(w, jnp.float32), None, padding_mode="zeros",
                          channels_last=True, impl="lax", stride=1, padding=1, dilation=1, groups=1).spec
    return x, w, spec


def test_supports_what_the_kernels_compute(monkeypatch):
    """Each refusal by its own reason: dtype, layout, groups, thin input (but for the weight
    gradient), a strided and dilated
    input gradient, output channels off the vector width; the clips layer is taken."""
    monkeypatch.setattr(native, "available", lambda: True)
    monkeypatch.setattr(native, "vector_width", lambda: 16)
    x, w, spec = _clips_layer_spec()
    for piece in rules.PIECES:
        assert native.supports(piece, spec, x, w, jnp.float32)
        assert not native.supports(piece, spec, x, w, jnp.float64)
        assert not native.supports(piece, spec, x, w, jnp.bfloat16)
        assert not native.supports(piece, spec.replace(channels_last=False), x, w, jnp.float32)
        assert not native.supports(piece, spec.replace(groups=2), x, w, jnp.float32)
        thin = native.supports(piece, spec, (64, 8, 8, 8, 4), (3, 3, 3, 4, 32), jnp.float32)
        assert thin == (piece == "weight_grad")   # the weight gradient's table-free kernel
    strided = spec.replace(stride=(2, 1, 1))
    assert native.supports("input_grad", strided, x, w, jnp.float32)   # one call per phase
    assert not native.supports("input_grad", strided.replace(dilation=(1, 2, 1)), x, w, jnp.float32)
    assert native.supports("conv", strided, x, w, jnp.float32)
    odd = (3, 3, 3, 16, 24)          # 24 output channels: conv and weight_grad refuse, input_grad
    assert not native.supports("conv", spec, x, odd, jnp.float32)   # writes 16: takes it
    assert native.supports("input_grad", spec, x, odd, jnp.float32)


def test_the_rule_puts_the_thin_weight_grad_before_the_depth_fold(monkeypatch):
    """The clips model's one-channel first layer: its weight gradient in the native kernel; 8
    channels (24 folded, within ``_THIN_FOLD``) keep the depth fold first, the kernel next."""
    monkeypatch.setattr(native, "available", lambda: True)
    monkeypatch.setattr(native, "vector_width", lambda: 16)
    _, _, spec = _clips_layer_spec()
    one = rules.candidates("weight_grad", "lax", spec, (64, 8, 16, 16, 1), (3, 3, 3, 1, 16), "cpu", jnp.float32)
    assert one[0] is native.native_weight_grad and one.count(native.native_weight_grad) == 1
    eight = rules.candidates("weight_grad", "lax", spec, (64, 8, 8, 8, 8), (3, 3, 3, 8, 16), "cpu", jnp.float32)
    assert [f.__name__ for f in eight[:2]] == ["fold_depth_weight_grad", "native_weight_grad"]


@needs_kernels
def test_the_rule_runs_3d_float32_through_the_kernels(rng):
    """jaxcnn.conv of the clips model's 16 → 32 layer (channels last, float32): the compiled
    forward and both gradients call the kernels, and agree with JAX's autodiff of plain lax."""
    with enable_x64(False):
        x = jnp.asarray(rng.standard_normal((4, 6, 6, 6, 16)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((3, 3, 3, 16, 32)), jnp.float32)
        kw = dict(padding=1, channels_last=True, precision="highest")

        def loss(fn, x, w):
            return jnp.sum(jnp.sin(fn(x, w, **kw)))
        ours = jax.jit(jax.value_and_grad(partial(loss, jaxcnn.conv), argnums=(0, 1)))
        text = ours.lower(x, w).as_text()
        assert text.count("@jaxcnn_conv") == 2 and text.count("@jaxcnn_weight_grad") == 1
        (value, grads) = ours(x, w)
        (want_value, want_grads) = jax.value_and_grad(partial(loss, reference.conv), argnums=(0, 1))(x, w)
        assert_close(value, want_value, F32, "loss")
        for got, want, what in zip(grads, want_grads, ("dx", "dw")):
            assert_close(got, want, F32, what)


def test_turned_off_by_the_environment(monkeypatch):
    """JAXCNN_NATIVE=0: no kernels, and the rule keeps to the XLA forms."""
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.setenv(native.ENV, "0")
    assert not native.available()
    x, w, spec = _clips_layer_spec()
    forms = rules.candidates("conv", "lax", spec, x, w, "cpu", jnp.float32)
    assert native.native_conv not in forms


def test_a_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    """A compiler that does not exist: one warning naming the reason, then no kernels."""
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.delenv(native.ENV, raising=False)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.warns(UserWarning, match="native CPU conv kernels unavailable"):
        assert native.library() is None
    assert not native.available()



@pytest.mark.skipif(not HAS_FFI, reason="no jax.ffi: the kernels are off before the ISA is read")
def test_an_unknown_isa_warns_and_falls_back(monkeypatch):
    """``JAXCNN_NATIVE_ISA`` names a build ``ISAS`` does not know: one warning naming the value
    and the choices, then no kernels."""
    monkeypatch.setattr(native, "_STATE", {})
    monkeypatch.delenv(native.ENV, raising=False)
    monkeypatch.setenv(native.ISA_ENV, "sse9")
    with pytest.warns(UserWarning, match=r"JAXCNN_NATIVE_ISA='sse9': expected one of \['avx2', 'native'\]"):
        assert native.library() is None

def _layer(rng, batch):
    """A 2D 16 → 32 layer the kernels take (float32: call inside ``enable_x64(False)``)."""
    return (jnp.asarray(rng.standard_normal((batch, 6, 6, 16)), jnp.float32),
            jnp.asarray(rng.standard_normal((3, 3, 16, 32)), jnp.float32))


def _grads(x, w):
    """Both gradients of ``Σ conv(x, w)²`` (padding 1, channels last)."""
    return jax.grad(lambda x, w: jnp.sum(jaxcnn.conv(x, w, padding=1, channels_last=True) ** 2),
                    argnums=(0, 1))(x, w)


@pytest.mark.multidevice
@needs_kernels
def test_per_shard_where_xla_partitions_the_op(rng):
    """A jit over 4 devices with the batch sharded: the kernels run per batch shard (custom
    partitioning, ``native.partition``; ``tests/test_conv_native_sharded.py`` has the rest),
    with nothing gathered; inside ``shard_map`` the op runs per shard and the kernels do. Both
    equal the one-device result."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxcnn._compat import shard_map
    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
    with enable_x64(False):
        x, w = _layer(rng, 8)
        grads = _grads
        want = jax.jit(grads)(x, w)
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        partitioned = jax.jit(grads)
        text = partitioned.lower(xs, w).compile().as_text()
        assert 'custom_call_target="jaxcnn_conv"' in text and "all-gather" not in text
        def shard_grads(x, w):
            dx, dw = grads(x, w)
            return dx, jax.lax.psum(dw, "data")
        per_shard = jax.jit(shard_map(shard_grads, mesh, in_specs=(P("data"), P()),
                                      out_specs=(P("data"), P()), check=False))
        assert "jaxcnn_conv" in per_shard.lower(xs, w).as_text()
        for got in (partitioned(xs, w), per_shard(xs, w)):
            for g, r, what in zip(got, want, ("dx", "dw")):
                assert_close(g, r, F32, what)


# ----------------------------------------------------------------------------- random geometries

FUZZ_N = int(os.environ.get("JAXCNN_NATIVE_FUZZ_N", "24" if full_tier() else "12"))   # seeds: the tier's


def _draw(seed: int):
    """A random geometry the kernels take: 1–3 axes, kernel 1–4 (1–3 in 3D), stride 1–3,
    dilation 1–2, pads from −1 (cropping) to past the kernel, sizes down to the smallest legal
    one, 8–48 input channels, 1–5 vectors of output channels, batch 1–5."""
    r = random.Random(seed)
    n = r.choice([1, 2, 3])
    kernel = [r.randint(1, 4 if n < 3 else 3) for _ in range(n)]
    stride = [r.choice([1, 1, 2, 3]) for _ in range(n)] if r.random() < 0.7 else [1] * n
    dilation = [r.choice([1, 1, 2]) for _ in range(n)]
    padding = [(r.randint(-1, k + 1), r.randint(-1, k + 1)) for k in kernel]
    sizes = []
    for k, d, (lo, hi) in zip(kernel, dilation, padding):
        smallest = max(1, d * (k - 1) + 1 - lo - hi)
        sizes.append(r.randint(smallest, smallest + (9 if n < 3 else 5)))
    c = r.choice([8, 16, 24, 32, 48])
    o = WIDTH * r.randint(1, 5)
    return r.randint(1, 5), tuple(sizes), tuple(kernel), c, o, dict(
        stride=tuple(stride), dilation=tuple(dilation), padding=tuple(padding))


@needs_kernels
@pytest.mark.parametrize("seed", range(FUZZ_N))
def test_random_geometry_equals_lax(seed):
    """Every piece the kernels take, on a random geometry, against the one-lax-call piece."""
    config = _draw(seed)
    with enable_x64(False):
        operands = _operands(config, np.random.default_rng(seed))
        for piece in rules.PIECES:
            if _computes(piece, config):
                _assert_native_equals_lax(piece, operands, f"native {piece}, seed {seed}: {config}")


@needs_kernels
@pytest.mark.parametrize("name", ["clips_3d", "one_channel_3d"])
def test_weight_grad_is_the_same_on_every_call(name, rng):
    """The weight gradient sums its thread partials in a fixed order: repeated calls (and their
    threads' scheduling) give the same bits, so a training run repeats exactly."""
    with enable_x64(False):
        x, w, dy, spec = _operands(CONFIGS[name], rng)
        x, dy = jnp.concatenate([x] * 8), jnp.concatenate([dy] * 8)   # many chunks, both threads
        grad = jax.jit(partial(native.native_weight_grad, spec=spec, w_shape=w.shape))
        first = np.asarray(grad(x, dy))
        for _ in range(5):
            np.testing.assert_array_equal(np.asarray(grad(x, dy)), first)


@needs_kernels
def test_export_takes_the_xla_forms(rng):
    """``jax.export`` takes no custom call to a library of this machine: an exported conv and
    its gradients lower to XLA's forms and compute what the jit-compiled (native) ones do."""
    export = pytest.importorskip("jax.export")
    with enable_x64(False):
        x, w = _layer(rng, 2)
        grads = _grads
        assert "jaxcnn_conv" in jax.jit(grads).lower(x, w).as_text()
        exported = export.export(jax.jit(grads))(x, w)
        assert "jaxcnn_" not in exported.mlir_module()
        for got, want, what in zip(exported.call(x, w), jax.jit(grads)(x, w), ("dx", "dw")):
            assert_close(got, want, F32, what)
