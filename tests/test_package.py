"""Tests for the package as users install it: ``jaxcnn/__init__.py``'s ``__version__``, the
``__all__`` of every public module, ``pyproject.toml``'s dependencies and extras, and the CLI's
``--version`` and missing-extra message (``jaxcnn/cli.py``).

References: ``pyproject.toml`` read with ``tomllib`` (the one version source, the declared
dependencies), the installed distribution's metadata, and fresh interpreters in which the
``train`` extra's packages cannot be imported (a ``sys.meta_path`` finder refuses them), for
what only a fresh interpreter can show. The built wheel, installed alone in a fresh venv and
run outside the checkout, is ``.ci/wheel-smoke``'s (``make wheel-check``).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from types import GenericAlias, ModuleType

import pytest

import jaxcnn
from jaxcnn import cli

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
TRAIN_EXTRA = ("optax", "rich", "tqdm", "matplotlib", "mnist1d")

# The library: every public module but the training command (jaxcnn.train, the train extra's).
LIBRARY = ["jaxcnn", "jaxcnn.conv", "jaxcnn.transpose", "jaxcnn.pool", "jaxcnn.norm", "jaxcnn.lax",
           "jaxcnn.sharded", "jaxcnn.padding", "jaxcnn.reference", "jaxcnn.nn", "jaxcnn.data",
           "jaxcnn.gradcheck", "jaxcnn.models", "jaxcnn.distributed", "jaxcnn.tolerances",
           "jaxcnn.bench", "jaxcnn.fuzz"]
# The interop modules and the package each needs (the interop extra).
INTEROP = {"jaxcnn.flax": "flax", "jaxcnn.equinox": "equinox"}

# Run first in a fresh interpreter: the train extra's packages cannot be imported, as where
# they are not installed (a finder ahead of every other refuses them and their submodules).
BLOCK = f"""
import sys
BLOCKED = {TRAIN_EXTRA!r}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None

sys.meta_path.insert(0, Refuse())
"""


def run_blocked(script: str, *args: str) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter with the train extra blocked (``BLOCK`` first)."""
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(script), *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)


def requirement_name(requirement: str) -> str:
    """The distribution name a PEP 508 requirement names, normalised (PEP 503)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
    return re.sub(r"[-_.]+", "-", name).lower()


# ----------------------------------------------------------------------------- without the extra

def test_library_imports_and_differentiates_without_the_train_extra():
    """Every library module imports with optax, rich, tqdm, matplotlib and mnist1d blocked, none
    of them gets loaded, and a float64 conv's value and gradients equal JAX autodiff of
    ``jaxcnn.reference.conv``. The interop modules too, where their own package imports then."""
    script = f"""
    import importlib, json
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    imported, skipped = [], []
    for name in {LIBRARY!r}:
        importlib.import_module(name)
        imported.append(name)
    for name, needs in {INTEROP!r}.items():
        try:
            importlib.import_module(needs)
        except ImportError:      # not installed, or it needs a blocked one itself (flax: optax, rich)
            skipped.append(name)
            continue
        importlib.import_module(name)
        imported.append(name)
    import jaxcnn
    key_x, key_w = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(key_x, (2, 3, 9, 8), jnp.float64)
    w = jax.random.normal(key_w, (4, 3, 3, 2), jnp.float64)
    def loss(conv, x, w):
        return jnp.sum(jnp.sin(conv(x, w, stride=(2, 1), padding=1, padding_mode="reflect")))
    got = jax.value_and_grad(lambda x, w: loss(jaxcnn.conv, x, w), argnums=(0, 1))(x, w)
    want = jax.value_and_grad(lambda x, w: loss(jaxcnn.reference.conv, x, w), argnums=(0, 1))(x, w)
    errors = [float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
              for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want))]
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print(json.dumps({{"imported": imported, "skipped": skipped, "errors": errors, "loaded": loaded}}))
    """
    result = run_blocked(script)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["imported"][:len(LIBRARY)] == LIBRARY
    assert sorted(report["imported"][len(LIBRARY):] + report["skipped"]) == sorted(INTEROP)
    assert report["loaded"] == []
    assert len(report["errors"]) == 3 and max(report["errors"]) < 1e-12, report["errors"]


def test_the_blocker_blocks():
    """The control: the finder makes ``import optax`` fail as a missing package does."""
    result = run_blocked("import optax")
    assert result.returncode == 1
    assert "ModuleNotFoundError: No module named 'optax' (blocked)" in result.stderr


@pytest.mark.parametrize("command", [["train", "--steps", "1"], pytest.param(["bench", "--quick"], marks=pytest.mark.slow)],
                         ids=["train", "bench"])   # one command by default: both go through cli's one check
def test_cli_names_the_train_extra_when_it_is_missing(command):
    """``jaxcnn train`` / ``bench`` with optax (and the rest) blocked: exit status 1, one line on
    stderr naming the extra, what is missing and the install command; no traceback, and the
    command's module never imported."""
    script = """
    from jaxcnn import cli
    status = cli.main(sys.argv[1:])
    print("status", status, "imported", sorted(m for m in ("jaxcnn.train", "jaxcnn.bench.command")
                                              if m in sys.modules))
    """
    result = run_blocked(script, *command)
    assert result.stdout.splitlines() == ["status 1 imported []"], result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"jaxcnn {command[0]}: needs the 'train' extra, missing optax, rich, tqdm, matplotlib, "
        "mnist1d: pip install 'jaxcnn[train]'"]


def test_missing_modules_finds_what_cannot_be_imported(monkeypatch):
    """A module set to ``None`` in ``sys.modules`` is missing, as is one that does not exist;
    installed ones are not (the test environments install the train extra)."""
    assert cli.missing_modules(TRAIN_EXTRA) == []
    monkeypatch.setitem(sys.modules, "tqdm", None)
    assert cli.missing_modules((*TRAIN_EXTRA, "no_such_module_jaxcnn")) == ["tqdm", "no_such_module_jaxcnn"]


# ----------------------------------------------------------------------------- version

def test_version_is_the_installed_metadata_and_pyproject_version():
    assert jaxcnn.__version__ == importlib.metadata.version("jaxcnn") == PYPROJECT["project"]["version"]


def test_version_of_a_source_tree_not_installed_is_pyproject_version(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert jaxcnn._version() == PYPROJECT["project"]["version"]


@pytest.mark.parametrize("command", [[str(Path(sys.executable).parent / "jaxcnn"), "--version"],
                                     pytest.param([sys.executable, "-m", "jaxcnn", "--version"], marks=pytest.mark.slow)],
                         ids=["console-script", "python-m"])   # python -m in the full tier
def test_version_command(command):
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"jaxcnn {PYPROJECT['project']['version']}\n"


# ----------------------------------------------------------------------------- __all__

def public_module(name: str):
    if name in INTEROP:
        pytest.importorskip(INTEROP[name], reason=f"{INTEROP[name]} is not installed (the interop extra)")
    return importlib.import_module(name)


@pytest.mark.parametrize("name", [*LIBRARY, *INTEROP])
def test_all_names_the_public_api_and_star_import_gives_exactly_it(name):
    """Every name in ``__all__`` exists and is jaxcnn's own (no ``Any``, ``Callable`` or
    ``shard_map`` re-exported by accident), none twice; ``from m import *`` binds exactly them."""
    module = public_module(name)
    names = module.__all__
    assert len(set(names)) == len(names)
    namespace: dict = {}
    exec(f"from {name} import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(names)
    for attr in names:
        value = getattr(module, attr)
        if isinstance(value, ModuleType):
            owner = value.__name__
        elif callable(value) and not isinstance(value, GenericAlias):
            owner = value.__module__
        else:
            continue    # a constant, or a type alias such as ``Shape = tuple[int, ...]``
        assert owner.startswith("jaxcnn"), f"{name}.{attr} comes from {owner}"


def test_top_level_all_matches_the_api_contract():
    """``jaxcnn``'s own names (shared/API.md's "Package", "Convolution", "Pooling" sections and
    the modules it names), each the very object its module defines."""
    assert set(jaxcnn.__all__) == {
        "conv", "conv1d", "conv2d", "conv3d", "conv_input_grad", "conv_weight_grad", "convolve",
        "conv_transpose", "max_pool", "avg_pool", "global_avg_pool", "group_norm", "reference",
        "lax", "gradcheck", "sharded"}
    for name in ("conv", "max_pool", "conv_transpose"):
        module = next(m for m in ("jaxcnn.conv", "jaxcnn.pool", "jaxcnn.transpose")
                      if name in importlib.import_module(m).__all__)
        assert getattr(jaxcnn, name) is getattr(importlib.import_module(module), name)


def test_package_data_ships_every_file_the_kernels_are_built_from():
    """The native loader compiles its sources and headers from the installed package on first
    use: pyproject's package data must match each (a header left out, the installed kernels
    failed to build and every conv fell back to XLA's forms)."""
    from fnmatch import fnmatch
    from jaxcnn._conv import native
    package = Path(jaxcnn.__file__).parent
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["jaxcnn"]
    for path in (*native.SOURCES, *native.HEADERS):
        relative = path.relative_to(package).as_posix()
        assert path.is_file() and any(fnmatch(relative, p) or fnmatch(path.name, p.removeprefix("**/"))
                                      for p in patterns), (relative, patterns)


def test_py_typed_marks_the_package_typed():
    """PEP 561: the marker ships in the package (pyproject's package data names it)."""
    assert (Path(jaxcnn.__file__).parent / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["jaxcnn"]


# ----------------------------------------------------------------------------- dependencies

def test_core_dependencies_are_jax_jaxlib_numpy():
    """Declared in pyproject.toml and in the installed metadata (requirements without an
    ``extra ==`` marker): exactly jax, jaxlib and numpy."""
    declared = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    installed = {requirement_name(r) for r in importlib.metadata.requires("jaxcnn")
                 if "extra ==" not in r}
    assert declared == installed == {"jax", "jaxlib", "numpy"}


def test_extras():
    """The train extra is what the CLI checks for; torch is a lower bound, not a pin."""
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {requirement_name(r) for r in extras["train"]} == set(cli.TRAIN_EXTRA) == set(TRAIN_EXTRA)
    assert {requirement_name(r) for r in extras["interop"]} == {"flax", "equinox"}
    assert [r.replace(" ", "") for r in extras["torch"]] == ["torch>=2.13"]
    assert {requirement_name(r) for r in extras["dev"]} >= {"pytest", "build", "twine"}
    assert {requirement_name(r) for r in extras["docs"]} == {"mkdocs-material", "mkdocstrings-python"}
