"""jaxcnn._conv.native: the kernels' build and entry points (the cases and helpers of
``test_conv_native.py``).

The source compiles with ``-Wall -Wextra -Werror``; the cache (``XDG_CACHE_HOME``, a key with
jaxlib's version) builds once for threads and processes; a bad geometry fed to the registered
custom call, or an allocation that fails, is an error JAX raises. The AVX2 build
(``ISAS["avx2"]``: 8 floats a vector, the build of a CPU without AVX-512) loads beside the native
one in this process, its FFI targets registered with the suffix ``_avx2``, and its forward and
weight gradient are checked against lax's pieces.
"""
from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn._conv import native, rules
from jaxcnn._args import normalize_conv
from jaxcnn._compat import enable_x64
from jaxcnn._shapes import conv_output_shape
from jaxcnn._conv.pieces import IMPLS
from helpers import assert_close, run_piece
from native_helpers import AVAILABLE, needs_kernels
from test_conv_native import CONFIGS, F32, HAS_FFI, WIDTH, _operands

# ----------------------------------------------------------------------------- build, cache, entry


def _compiler():
    """The compiler the loader would use, or a skip."""
    try:
        return native._compiler()
    except OSError as err:
        pytest.skip(str(err))


@pytest.mark.skipif(not HAS_FFI, reason="no jax.ffi (its headers)")
@pytest.mark.parametrize("isa", [pytest.param(isa, marks=[pytest.mark.slow] * (isa != "native"))   # one build
                                 for isa in sorted(native.ISAS)])                           # by default
def test_source_compiles_without_warnings(isa, tmp_path):
    """The loader's command with ``-Werror``: any warning of ours (-Wall -Wextra) fails it;
    JAX's headers are system headers, theirs do not count."""
    flags = (*native.FLAGS, *native.ISAS[isa], "-Werror")
    done = subprocess.run(native._command(_compiler(), flags, jax.ffi.include_dir(), str(tmp_path / "k.so")),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def test_cache_dir_honours_xdg(monkeypatch, tmp_path):
    """``$XDG_CACHE_HOME/jaxcnn/native``; unset, empty or relative (the spec ignores those):
    ``~/.cache/jaxcnn/native``."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native._cache_dir() == tmp_path / "xdg" / "jaxcnn" / "native"
    home_cache = tmp_path / "home" / ".cache" / "jaxcnn" / "native"
    for value in ("", "relative/cache"):
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert native._cache_dir() == home_cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert native._cache_dir() == home_cache


def test_cache_key_covers_jaxlib_jax_and_flags(monkeypatch):
    """A new jaxlib (whose FFI headers the library includes), a new JAX or other flags (the
    ISA) make another key; the same inputs the same key."""
    import jaxlib.version
    key = partial(native._cache_key, "c++ (test) 1.0")
    flags = native.FLAGS
    first = key(flags)
    assert key(flags) == first
    assert key((*flags, *native.ISAS["avx2"])) != first
    monkeypatch.setattr(jaxlib.version, "__version__", "0.0.0+other")
    assert key(flags) != first
    monkeypatch.undo()
    monkeypatch.setattr(jax, "__version__", "0.0.0+other")
    assert key(flags) != first


_BUILD_IN_A_PROCESS = """
import sys
from pathlib import Path
from jaxcnn._conv import native
native.SOURCES, native.HEADERS = (Path(sys.argv[1]),), ()
print(native._build(sys.argv[2]))
"""


def test_one_build_per_key_across_threads_and_processes(monkeypatch, tmp_path):
    """Two processes and four threads meet a cold cache at once: the compiler (a wrapper that
    logs each compile and takes a second over it, so the builders overlap) runs once, all get
    the same library, and no temporary file is left. A small source stands in for the kernels."""
    if native.fcntl is None:
        pytest.skip("no fcntl")
    real, log = _compiler(), tmp_path / "compiles.log"
    wrapper = tmp_path / "cxx"
    wrapper.write_text(f'#!/bin/sh\nif [ "$1" != --version ]; then echo "$$" >> "{log}"; sleep 1; fi\n'
                       f'exec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    source = tmp_path / "probe.cc"
    source.write_text('extern "C" int jaxcnn_probe() { return 1; }\n')
    monkeypatch.setattr(native, "SOURCES", (source,))
    monkeypatch.setattr(native, "HEADERS", ())
    monkeypatch.setenv("CXX", str(wrapper))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    processes = [subprocess.Popen([sys.executable, "-c", _BUILD_IN_A_PROCESS, str(source), str(tmp_path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    with ThreadPoolExecutor(4) as pool:
        built = list(pool.map(lambda _: native._build(str(tmp_path)), range(4)))
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-2000:]
        built.append(Path(out.strip().splitlines()[-1]))
    assert len(log.read_text().split()) == 1
    assert len(set(built)) == 1 and built[0].exists()
    assert sorted(p.name for p in built[0].parent.iterdir()) == ["build.lock", "kernels.so"]


def _bad_geometry_cases():
    """name: (how the geometry or the shapes go wrong, a piece of the error's message). The base
    is a valid 2D layer: x (2, 5, 5, 8), w (3, 3, 8, V), y (2, 5, 5, V), padding 1. (No O = 0: XLA
    does not call a custom call whose result is empty; the kernels refuse it all the same.)"""
    def sizes_with(index, value):
        return lambda sizes, shapes: (np.concatenate([sizes[:index], [value], sizes[index + 1:]]), shapes)

    def shapes_with(which, shape):
        return lambda sizes, shapes: (sizes, {**shapes, which: shape})
    v = WIDTH
    return {
        "stride_0": (sizes_with(11, 0), "each must be >= 1"),
        "dilation_0": (sizes_with(14, 0), "each must be >= 1"),
        "input_dilation_0": (sizes_with(20, 0), "each must be >= 1"),
        "negative_stride": (sizes_with(10, -2), "each must be >= 1"),
        "huge_low_pad": (sizes_with(17, 1 << 40), "beyond 2^31"),
        "out_size_off": (sizes_with(5, 6), "but the buffers' are"),
        "kernel_size_off": (sizes_with(7, 2), "but the buffers' are"),
        "padded_axis_not_1": (sizes_with(0, 2), "but the buffers' are"),
        "twenty_sizes": (lambda sizes, shapes: (sizes[:20], shapes), "expected 21 sizes"),
        "output_channels_off_width": (lambda sizes, shapes: (sizes, {**shapes, "w": (3, 3, 8, v + 1),
                                                                     "y": (2, 5, 5, v + 1)}), "multiple of"),
        "channels_disagree": (shapes_with("w", (3, 3, 16, v)), "input channels"),
        "batch_disagrees": (shapes_with("y", (3, 5, 5, v)), "expected (2"),
        "rank_2": (lambda sizes, shapes: (sizes, {"x": (2, 8), "w": (8, v), "y": (2, v)}), "dimensions"),
    }


BAD_GEOMETRIES = _bad_geometry_cases()


@needs_kernels
@pytest.mark.parametrize("target", ["jaxcnn_conv", "jaxcnn_weight_grad"])
@pytest.mark.parametrize("case", sorted(BAD_GEOMETRIES))
def test_a_bad_geometry_is_an_error(target, case):
    """The registered custom call fed a bad geometry through ``jax.ffi.ffi_call``: an error
    JAX raises, naming what is wrong, never a crash. The base geometry runs."""
    x_shape, w_shape, spec = (2, 5, 5, 8), (3, 3, 8, WIDTH), None
    spec = normalize_conv(jnp.zeros(x_shape, jnp.float32), jnp.zeros(w_shape, jnp.float32), None,
                          padding_mode="zeros", channels_last=True, impl="lax", stride=1, padding=1,
                          dilation=1, groups=1).spec
    base = {"x": x_shape, "w": w_shape, "y": (2, 5, 5, WIDTH)}
    sizes = native._forward_sizes(spec, x_shape, base["y"], w_shape)

    def call(sizes, shapes):
        x, w, y = (jnp.ones(shapes[k], jnp.float32) for k in "xwy")
        if target == "jaxcnn_conv":
            return np.asarray(jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(y.shape, jnp.float32))(x, w, sizes=sizes))
        return np.asarray(jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(w.shape, jnp.float32))(x, y, sizes=sizes))
    with enable_x64(False):
        assert np.all(np.isfinite(call(sizes, base)))
        spoil, message = BAD_GEOMETRIES[case]
        with pytest.raises(Exception, match="jaxcnn native conv: .*" + re.escape(message)):
            call(*spoil(sizes, base))


@pytest.fixture(scope="module")
def avx2_targets():
    """The AVX2 build (AVX-512 off, 8 floats a vector) loaded beside the native one, its FFI
    targets registered with the suffix ``_avx2``."""
    if not AVAILABLE:
        pytest.skip("native kernels unavailable here")
    return native._open("avx2", "_avx2")


def _avx2_conv(x, w, spec):
    y_shape = conv_output_shape(x.shape, w.shape, spec)
    return native._call("jaxcnn_conv_avx2", y_shape, x, w,
                             native._forward_sizes(spec, x.shape, y_shape, w.shape))


def _avx2_weight_grad(x, dy, spec, w_shape):
    return native._call("jaxcnn_weight_grad_avx2", w_shape, x, dy,
                             native._forward_sizes(spec, x.shape, dy.shape, w_shape))


@pytest.mark.slow   # a second build of the kernels: in the full tier (CI), beside the native one
@pytest.mark.parametrize("name", ["long_1d", "wide_out_2d", "big_pad_2d", "strided_dilated_3d", "clips_3d"])
def test_avx2_build_equals_lax(avx2_targets, name, rng):
    """The build a CPU without AVX-512 gets (tested on this one too): 8 floats a vector, and its
    forward and weight gradient equal the one-lax-call pieces (1D, 2D, 3D; strides, dilations,
    cropping pads; O = 8·(odd) exercises the 8-wide tails)."""
    assert avx2_targets.jaxcnn_vector_width() == 8
    with enable_x64(False):
        operands = _operands(CONFIGS[name], rng)
        for piece, form in (("conv", _avx2_conv), ("weight_grad", _avx2_weight_grad)):
            got = run_piece(form, piece, *operands)
            want = run_piece(IMPLS["lax"][rules.PIECES.index(piece)], piece, *operands)
            assert got.shape == want.shape
            assert_close(got, want, F32, f"avx2 {piece} on {name}")


_RUN_OUT_OF_MEMORY = """
import re, resource
import jax, jax.numpy as jnp, numpy as np
from jaxcnn._conv import native
from jaxcnn._args import normalize_conv
jax.config.update("jax_enable_x64", False)
assert native.available()
x_shape, w_shape, y_shape = (1, 2, 2, 2, 512), (3, 3, 3, 512, 1024), (1, 2, 2, 2, 1024)
spec = normalize_conv(jnp.zeros(x_shape, jnp.float32), jnp.zeros(w_shape, jnp.float32), None, padding_mode="zeros",
                      channels_last=True, impl="lax", stride=1, padding=1, dilation=1, groups=1).spec
sizes = native._forward_sizes(spec, x_shape, y_shape, w_shape)
grad = jax.jit(lambda x, dy: jax.ffi.ffi_call("jaxcnn_weight_grad", jax.ShapeDtypeStruct(w_shape, jnp.float32))(
    x, dy, sizes=sizes))
x, dy = jnp.ones(x_shape, jnp.float32), jnp.ones(y_shape, jnp.float32)
want = np.asarray(grad(x, dy))
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
for quarters in range(1, 12):   # room for XLA's dw but not for the kernel's partial sum: find it
    vm = int(re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + want.nbytes * quarters // 4, hard))
    try:
        grad(x, dy).block_until_ready()
        outcome = "no error"
    except Exception as err:
        outcome = f"{type(err).__name__}: {err}"
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    print(quarters, outcome.splitlines()[0])
    if "jaxcnn" in outcome or outcome == "no error":
        break
np.testing.assert_array_equal(np.asarray(grad(x, dy)), want)
"""


@needs_kernels
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_out_of_memory_is_an_error():
    """A weight gradient whose partial sum (56 MB, the size of ``dw``) cannot be allocated, in a
    process of its own: its address space capped at what it holds plus 1/4, 2/4, ... of ``dw``
    until XLA can allocate ``dw`` (before that, XLA's own error) and the kernel's partial fails.
    That is an error JAX raises, not an abort, and the process's next call computes the gradient
    again."""
    done = subprocess.run([sys.executable, "-c", _RUN_OUT_OF_MEMORY], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESOURCE_EXHAUSTED: jaxcnn native conv: out of memory" in done.stdout.splitlines()[-1], done.stdout
