"""The installed wheel at work, run by ``.ci/wheel-smoke`` with the fresh venv's python.

``python wheel_smoke.py deps``: jaxcnn's core requirements are jax, jaxlib and numpy, and every
distribution installed beside it (but pip's) is one of them or a requirement of theirs, none of
an extra (the wheel was installed alone).

``python wheel_smoke.py run VERSION``, from a directory outside the checkout with a fresh HOME
and XDG_CACHE_HOME: jaxcnn imports from the venv (not a checkout), its version is VERSION; a
float32 channels-last conv lowers to the native FFI kernels, compiled from the installed C++
source into the fresh cache, and its value and gradients agree with JAX autodiff of
``jaxcnn.reference``; so do a float64 conv's, to float64's tolerance. Silent on success.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import sys
import sysconfig
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxcnn
from jaxcnn import reference
from jaxcnn.tolerances import RTOL

CORE = {"jax", "jaxlib", "numpy"}
EXTRAS = {"optax", "rich", "tqdm", "matplotlib", "mnist1d", "flax", "equinox", "torch"}
INSTALLER = {"pip", "setuptools", "wheel"}


def name_of(requirement: str) -> str:
    """The distribution a requirement (or a metadata Name) names, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group(0)).lower()


def requirements(distribution: importlib.metadata.Distribution) -> set[str]:
    """What ``distribution`` needs without extras (a marker naming none: a Python version's
    counts, which only widens what is allowed)."""
    return {name_of(r) for r in distribution.requires or () if not re.search(r"\bextra\s*==", r)}


def check_dependencies() -> None:
    installed = {name_of(d.metadata["Name"]): d for d in importlib.metadata.distributions()}
    core = requirements(installed["jaxcnn"])
    assert core == CORE, f"jaxcnn requires {sorted(core)}, expected {sorted(CORE)}"
    reached, todo = set(), ["jaxcnn"]
    while todo:
        name = todo.pop()
        if name in installed and name not in reached:
            reached.add(name)
            todo += requirements(installed[name])
    unexpected = set(installed) - reached - INSTALLER
    assert not unexpected, f"installed beside jaxcnn, not required by its core: {sorted(unexpected)}"
    assert not EXTRAS & reached, f"an extra's package came with the wheel: {sorted(EXTRAS & reached)}"


def loss(conv, x, w, **kw):
    return jnp.sum(jnp.sin(conv(x, w, **kw)))


def worst_error(fn, x, w, **kw):
    """The largest relative error (max|a − b| / max|b|) of the value and both gradients of
    ``loss`` through ``fn`` against the same through ``reference.conv``."""
    got = fn(jax.value_and_grad(lambda x, w: loss(jaxcnn.conv, x, w, **kw), argnums=(0, 1)))(x, w)
    want = jax.value_and_grad(lambda x, w: loss(reference.conv, x, w, **kw), argnums=(0, 1))(x, w)
    return max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
               for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)))


def check_installed(version: str) -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    package = Path(jaxcnn.__file__).resolve().parent
    assert package.parent == site, f"jaxcnn imported from {package}, not from the venv ({site})"
    assert jaxcnn.__version__ == importlib.metadata.version("jaxcnn") == version, jaxcnn.__version__
    assert (package / "py.typed").is_file(), "py.typed is not installed"
    assert list(package.rglob("*.cc")), f"no C++ source installed under {package}"


def check_native() -> None:
    """float32, channels last, 16 → 32 channels: the kernels take the forward and both gradients."""
    cache = Path(os.environ["XDG_CACHE_HOME"])
    assert not list(cache.rglob("*.so")), f"the cache {cache} is not fresh"
    key_x, key_w = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(key_x, (4, 6, 6, 16), jnp.float32)
    w = jax.random.normal(key_w, (3, 3, 16, 32), jnp.float32)
    options = dict(padding=1, channels_last=True, precision="highest")
    grads = jax.jit(jax.grad(lambda x, w: loss(jaxcnn.conv, x, w, **options), argnums=(0, 1)))
    text = grads.lower(x, w).as_text()
    assert "jaxcnn_conv" in text and "jaxcnn_weight_grad" in text, "the native kernels were not used"
    built = list(cache.rglob("*.so"))
    assert built, f"no kernels compiled into {cache}"
    error = worst_error(jax.jit, x, w, **options)
    assert error < RTOL["float32"], f"native float32 conv: relative error {error:.2e}"


def check_float64() -> None:
    jax.config.update("jax_enable_x64", True)
    key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key_x, (2, 3, 9, 8), jnp.float64)
    w = jax.random.normal(key_w, (4, 3, 3, 2), jnp.float64)
    error = worst_error(lambda f: f, x, w, stride=(2, 1), padding=1, padding_mode="reflect")
    assert error < RTOL["float64"], f"float64 conv: relative error {error:.2e}"


if __name__ == "__main__":
    if sys.argv[1:] == ["deps"]:
        check_dependencies()
    else:
        assert sys.argv[1] == "run" and len(sys.argv) == 3, "usage: wheel_smoke.py deps | run VERSION"
        check_installed(sys.argv[2])
        check_native()
        check_float64()
