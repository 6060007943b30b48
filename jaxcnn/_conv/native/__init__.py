r"""Native CPU forms of the conv family's pieces: C++ kernels that XLA calls as FFI custom calls.

XLA's CPU backend runs 3D convolutions as a generic loop and 2D ones through a library that
reaches 150–250 GFLOP/s on small images, where PyTorch's oneDNN reaches ~380 on the same
machine; the clips model's training step lost 1.6× to PyTorch's almost all in its
convolutions (with these kernels 0.91×, ``docs/performance.md``). ``conv_cpu.cc`` (beside this file)
computes two maps directly (channels last, one group, float32, 1 to 3 spatial axes; the seed
formula with ``at(i, k) = (i·s + k·d − lo) / ld``):

- ``conv``:         ``y[n, i, o]  = Σ_{k, c} x[n, at(i, k), c] · w[k, c, o]``
- ``weight_grad``:  ``dw[k, c, o] = Σ_{n, i} x[n, at(i, k), c] · dy[n, i, o]``

and the input gradient is ``conv`` of ``dy`` with the kernel flipped and its channel roles
swapped, padded by ``d·(K−1) − lo`` (``jaxcnn.conv``'s derivation), as ``lax_input_grad`` does.
Each kernel turns a block of output positions into a table of input rows (a row of zeros where
a tap reads the padding) and sums products of register blocks over it, split over XLA's
intra-op threads. Scratch: the row table of a block and, for the weight gradient, one
``(∏K, C, O)`` partial sum per range of positions (at most two per thread and 16 MiB in all, or
one); nothing the size of an activation.

``rules`` uses them first wherever they apply, except where the lowering takes no custom
call (``jaxcnn._primitives.custom_calls_allowed``): a program lowered for ``jax.export``. In an
op XLA's SPMD partitioner splits over devices (a ``jax.jit`` over a batch-sharded mesh) the
partitioner cannot split a custom call by itself (it would gather the operands onto every
device), so there each call is wrapped in ``jax.experimental.custom_partitioning``
(``partition``): one call per batch shard on its local samples, the weight gradient's partials
summed over the batch's devices (``psum``), and anything split along another axis gathered
first. Where the lowering cannot know the mesh (a partially manual ``shard_map``) or the release
has no Shardy sharding rules (0.4.30, which has no ``jax.ffi`` either) the XLA forms run there,
as before. Inside ``shard_map`` they run per shard.

The sources (``SOURCES``: these kernels and the pooling kernels of ``pool_cpu.cc``, called by
``pooling``; the header they share) are compiled on first use into one library (``c++ -O3
-march=native -Wall -Wextra``, JAX's FFI headers as system headers) in
``$XDG_CACHE_HOME/jaxcnn/native/<hash>/`` (``~/.cache/jaxcnn/native``
without it; the hash covers every source and header, the flags, the compiler, the versions of JAX and jaxlib
and the CPU's features) and loaded with ``ctypes``. One build per hash: threads and processes
that meet a cold cache wait on a file lock in its folder while one compiles into a temporary
file and renames it into place. ``JAXCNN_NATIVE_ISA=avx2`` builds without AVX-512 (8 floats a
vector, as on a CPU without it; its own hash) where the CPU has it. Where the kernels cannot be
built (no compiler, a JAX without ``jax.ffi`` or its thread pool, ``JAXCNN_NATIVE=0``)
``available()`` is False, with one warning saying why, and ``rules`` (and the pooling
primitives) keep to the XLA forms.
The kernels check the geometry they are given against the buffers: a bad one, or an allocation
that fails, is an FFI error that JAX raises.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

try:
    import fcntl
except ImportError:   # not POSIX: no lock for the build, and no kernels
    fcntl = None

from jaxcnn._shapes import ConvSpec, conv_output_shape, kernel_sizes, spatial_sizes
from jaxcnn._conv.native.partition import split_by_batch
from jaxcnn._conv.native.strided import native_strided_input_grad
from jaxcnn._conv.pieces import flip_swap_io
from jaxcnn._primitives import partitioning_mesh

SOURCES = tuple(Path(__file__).parent / name for name in ("conv_cpu.cc", "pool_cpu.cc", "norm_cpu.cc"))
HEADERS = (Path(__file__).parent / "parallel.h",)
"""The library's translation units (the conv kernels, the pooling kernels: ``pooling``, the
GroupNorm kernels: ``normalising``) and the
header they share; the cache key covers every one."""
ENV = "JAXCNN_NATIVE"
ISA_ENV = "JAXCNN_NATIVE_ISA"
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-Wall", "-Wextra")
ISAS = {"native": (), "avx2": ("-mno-avx512f",)}
"""The instruction sets a build can take (``JAXCNN_NATIVE_ISA``): all of this CPU's, AVX-512 where
it has it (16 floats a vector), or ``avx2``, AVX-512 off (8 floats, the build of a CPU without it:
tested beside the native one where this CPU has AVX-512)."""
TARGETS = {"jaxcnn_conv": "JaxcnnConv", "jaxcnn_weight_grad": "JaxcnnWeightGrad",
           "jaxcnn_max_pool": "JaxcnnMaxPool", "jaxcnn_max_pool_gather": "JaxcnnMaxPoolGather",
           "jaxcnn_max_pool_scatter": "JaxcnnMaxPoolScatter", "jaxcnn_avg_pool": "JaxcnnAvgPool",
           "jaxcnn_avg_pool_transpose": "JaxcnnAvgPoolTranspose",
           "jaxcnn_group_norm": "JaxcnnGroupNorm", "jaxcnn_group_norm_vjp": "JaxcnnGroupNormVjp"}
MIN_CHANNELS = 8
"""Input channels below this run the XLA forms for ``conv`` and ``input_grad``: the row table
costs as much as the products (the clips model's 1 → 16 layer, 7 ms vs 3 for the depth fold).
The weight gradient takes them in a kernel of its own without the table (``kThin``)."""


def _cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def _compiler() -> str:
    found = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not found:
        raise OSError("no C++ compiler (set CXX or install g++)")
    return found


def _cache_dir() -> Path:
    """Where the compiled kernels are kept: ``$XDG_CACHE_HOME/jaxcnn/native``, or
    ``~/.cache/jaxcnn/native`` where that is unset or not absolute (the XDG base directory spec)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "jaxcnn" / "native"


def _jaxlib_version() -> str:
    from jaxlib import version
    return version.__version__


def _cache_key(compiler_version: str, flags: tuple[str, ...]) -> str:
    """Everything the library depends on: every source and header, the flags, the compiler, the versions of
    JAX and of jaxlib (whose FFI headers it includes) and the CPU's features."""
    parts = [*(path.read_text() for path in (*SOURCES, *HEADERS)), " ".join(flags), compiler_version, jax.__version__, _jaxlib_version(),
             _cpu_features()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _command(compiler: str, flags: tuple[str, ...], include_dir: str, output: str) -> list[str]:
    """The compile command; JAX's headers are system headers (``-isystem``), so only warnings of
    ours are shown."""
    return [compiler, *flags, "-isystem", include_dir, *map(str, SOURCES), "-o", output]


def _build(include_dir: str, isa: str = "native") -> Path:
    """The shared library for this machine and ``isa``, compiled once into the cache: a file lock
    in its folder lets one thread or process compile while the others wait, and the library is
    compiled into a temporary file and renamed, so a reader sees no file or the whole one."""
    if isa not in ISAS:
        raise OSError(f"{ISA_ENV}={isa!r}: expected one of {sorted(ISAS)}")
    compiler, flags = _compiler(), (*FLAGS, *ISAS[isa])
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True).stdout
    folder = _cache_dir() / _cache_key(version, flags)
    target = folder / "kernels.so"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # released when the file closes
        if target.exists():                # built while this one waited
            return target
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
        os.close(fd)
        try:
            done = subprocess.run(_command(compiler, flags, include_dir, tmp), capture_output=True, text=True)
            if done.returncode:
                raise OSError(f"{compiler} failed: {done.stderr.strip()[-500:]}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return target


def _open(isa: str, suffix: str = "") -> Any:
    """Build and load the kernels for ``isa`` and register their FFI targets as ``TARGETS``'
    names followed by ``suffix`` (a second build loads beside the first under its own names)."""
    ffi = jax.ffi
    lib = ctypes.cdll.LoadLibrary(str(_build(ffi.include_dir(), isa)))
    for name, symbol in TARGETS.items():
        ffi.register_ffi_target(name + suffix, ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    return lib


_STATE: dict[str, Any] = {}   # "library": the loaded kernels or None, once per process
_STATE_LOCK = threading.Lock()


def library() -> Any:
    """The loaded kernels with their FFI targets registered, or None (see the module docstring)."""
    with _STATE_LOCK:
        if "library" not in _STATE:
            _STATE["library"] = _load()
    return _STATE["library"]


def _load() -> Any:
    if os.environ.get(ENV, "1") == "0":
        return None
    ffi = getattr(jax, "ffi", None)
    try:
        if ffi is None or not hasattr(ffi, "ffi_call"):
            raise OSError(f"jax {jax.__version__} has no jax.ffi")
        if fcntl is None:
            raise OSError("no fcntl (the build's lock) on this platform")
        lib = _open(os.environ.get(ISA_ENV, "native"))
    except (OSError, subprocess.SubprocessError, AttributeError) as err:
        warnings.warn(f"jaxcnn: native CPU conv kernels unavailable, using XLA's: {err}", stacklevel=3)
        return None
    return lib


def available() -> bool:
    return library() is not None


def vector_width() -> int:
    """Floats per vector register of the compiled kernels (16 with AVX-512, else 8)."""
    return int(library().jaxcnn_vector_width())


def may_support(spec: ConvSpec, dtype: Any) -> bool:
    """The conditions of ``supports`` that the spec and the dtype decide (channels last, one
    group, float32 in and out, 1 to 3 spatial axes), read without building the kernels."""
    return (dtype is not None and jnp.dtype(dtype) == jnp.float32 and spec.channels_last
            and spec.groups == 1 and spec.preferred_element_type in (None, jnp.float32)
            and 1 <= spec.n <= 3)


def supports(piece: str, spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...],
             dtype: Any) -> bool:
    """Whether the native form computes ``piece`` for these operands (``x: (N, *S, C)``,
    ``w: (*K, C, O)``, 1 to 3 spatial axes): the kernels are built and loaded, channels last, one
    group, float32 in and out (``preferred_element_type`` None or float32), ``C ≥ MIN_CHANNELS``
    (but for ``weight_grad``),
    and the channels the piece writes a multiple of the vector width ``V`` (``vector_width()``:
    16 with AVX-512, else 8): ``O`` for ``conv`` and ``weight_grad``, ``C`` for ``input_grad``,
    which also needs stride 1 or dilation 1 (a strided one runs one stride-1 correlation per
    output phase, ``strided``; strided and dilated, it is left to XLA)."""
    if not may_support(spec, dtype):
        return False
    o_ax, i_ax = spec.kernel_io_axes()
    c, o = w_shape[i_ax], w_shape[o_ax]
    strided_dilated = any(s != 1 for s in spec.stride) and any(d != 1 for d in spec.dilation)
    if (c < MIN_CHANNELS and piece != "weight_grad") or (piece == "input_grad" and strided_dilated):
        return False
    if not available():
        return False
    return (c if piece == "input_grad" else o) % vector_width() == 0


def geometry(*triples: tuple[Sequence[int], int]) -> np.ndarray:
    """A kernel's ``sizes`` attribute: each ``(values, fill)`` as a triple, the values of 1-D and
    2-D ops after leading ``fill``s (an axis of size 1, or a pad of 0), so every kernel loops
    over three axes."""
    return np.array([v for values, fill in triples
                     for v in ((fill,) * (3 - len(values)) + tuple(int(x) for x in values))], np.int64)


def _sizes(in_sizes, out_sizes, k_sizes, stride, dilation, lo) -> np.ndarray:
    """The conv kernels' geometry: seven triples (in, out, k, s, d, lo, ld) (ld, the input
    dilation, is always 1 here)."""
    return geometry((in_sizes, 1), (out_sizes, 1), (k_sizes, 1), (stride, 1), (dilation, 1), (lo, 0),
                    ((1,) * len(in_sizes), 1))


def _forward_sizes(spec: ConvSpec, x_shape, y_shape, w_shape) -> np.ndarray:
    """The geometry of the forward correlation (and of its weight gradient, which reads ``x``
    at the same positions): the spec's stride, dilation and low pads."""
    return _sizes(spatial_sizes(x_shape, spec), spatial_sizes(y_shape, spec), kernel_sizes(w_shape, spec),
                  spec.stride, spec.dilation, [lo for lo, _ in spec.padding])


def _call(target: str, shape: tuple[int, ...], a: jax.Array, b: jax.Array, sizes: np.ndarray, *,
          summed: bool = False) -> jax.Array:
    """The kernel ``target`` on ``(a, b)``; in an op the partitioner splits (``partitioning_mesh``),
    one call per batch shard (``partition``; ``summed``: the result sums over the batch)."""
    library()

    def kernel(a, b, out_shape):
        return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(tuple(out_shape), jnp.float32))(a, b, sizes=sizes)
    if partitioning_mesh() is None:
        return kernel(a, b, shape)
    return split_by_batch(kernel, a, b, tuple(shape), summed=summed)


def native_conv(x: jax.Array, w: jax.Array, spec: ConvSpec) -> jax.Array:
    """``y[n, i, o] = Σ_{k, c} x_pad[n, i·s + k·d, c] · w[k, c, o]`` in the native kernel."""
    y_shape = conv_output_shape(x.shape, w.shape, spec)
    return _call("jaxcnn_conv", y_shape, x, w, _forward_sizes(spec, x.shape, y_shape, w.shape))


def native_input_grad(dy: jax.Array, w: jax.Array, spec: ConvSpec, in_shape: tuple[int, ...]) -> jax.Array:
    """``dx = conv(dy, flip_swap_io(w))`` at stride 1, ``dy`` padded by ``d·(K−1) − lo`` (a
    negative pad crops): the input gradient's correlation form; strided, one per output phase
    (``strided``)."""
    if any(s != 1 for s in spec.stride):
        def correlate(dy, kernel, out_shape, k_sizes, lo):
            sizes = _sizes(spatial_sizes(dy.shape, spec), spatial_sizes(out_shape, spec), k_sizes,
                           (1,) * spec.n, (1,) * spec.n, lo)
            return _call("jaxcnn_conv", out_shape, dy, kernel, sizes)
        return native_strided_input_grad(dy.astype(jnp.float32), w, spec, in_shape, correlate)
    k_sizes = kernel_sizes(w.shape, spec)
    lo = [d * (k - 1) - p for k, d, (p, _) in zip(k_sizes, spec.dilation, spec.padding)]
    sizes = _sizes(spatial_sizes(dy.shape, spec), spatial_sizes(in_shape, spec), k_sizes,
                   (1,) * spec.n, spec.dilation, lo)
    return _call("jaxcnn_conv", in_shape, dy.astype(jnp.float32), flip_swap_io(w, spec), sizes)


def native_weight_grad(x: jax.Array, dy: jax.Array, spec: ConvSpec, w_shape: tuple[int, ...]) -> jax.Array:
    """``dw[k, c, o] = Σ_{n, i} x_pad[n, i·s + k·d, c] · dy[n, i, o]`` in the native kernel."""
    return _call("jaxcnn_weight_grad", w_shape, x, dy.astype(jnp.float32),
                 _forward_sizes(spec, x.shape, dy.shape, w_shape), summed=True)


FORMS = {"conv": native_conv, "input_grad": native_input_grad, "weight_grad": native_weight_grad}

__all__ = ["available", "may_support", "supports", "vector_width", "geometry", "native_conv",
           "native_input_grad", "native_weight_grad", "FORMS"]
