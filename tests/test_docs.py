"""Every code example in the documentation runs, so none can rot.

- Each ```` ```python ```` block of ``README.md`` and ``docs/**/*.md`` is executed, the blocks
  of a page in order and in one namespace (a later block uses what an earlier one defined), as a
  reader would paste them. A block that must not run is fenced ```` ```bash ```` (a shell
  command) or ```` ```text ```` (output), never ```` ```python ````.
- Each module of the package whose source holds a ``>>>`` example runs as a doctest.

Both run in JAX's defaults, as a user's first session does (the suite's float64 and strict
promotion, tests/conftest.py, are turned off around each page and restored after): float32
unless a block turns ``jax_enable_x64`` on itself, standard dtype and rank promotion; a block
that makes JAX warn that float64 was truncated to float32 fails. A block or module that needs
an extra that is not installed (Flax and Equinox are not, in the lowest-jax venv) is skipped,
naming the extra, and the page's other blocks still run; a page whose examples need an API
older JAX lacks says so (``REQUIRES``) and is skipped there. A failure names the page (the
test's id), the block's number and its first line in the file, and shows the block.
"""
from __future__ import annotations

import doctest
import importlib
import importlib.util
import re
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import jax
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jaxcnn"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# Modules an example may import that come with an extra, not with jaxcnn itself.
OPTIONAL = {"flax": "interop", "equinox": "interop", "optax": "train", "rich": "train",
            "tqdm": "train", "matplotlib": "train", "mnist1d": "train", "torch": "torch"}
# JAX's warning that a float64 array was asked for with x64 off (and silently made float32):
# an example that prints it teaches the wrong thing.
TRUNCATION = "Explicitly requested dtype"

# A page whose examples need an API that older JAX lacks says so on a line of its own, e.g.
# <!-- test_docs: requires jax.shard_map jax.set_mesh -->; it is skipped where one is missing.
REQUIRES = re.compile(r"^<!-- test_docs: requires ([\w. ]+) -->$", re.MULTILINE)
# An opening fence (any indentation, as inside a list item), its language, then the body up to
# a closing fence of the same indentation.
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```",
                   re.MULTILINE | re.DOTALL)


def code_blocks(text: str, lang: str = "python") -> list[tuple[int, str]]:
    """``(first line of the code, 1-based; the code)`` for each fenced block in ``lang``."""
    blocks = []
    for match in FENCE.finditer(text):
        if match.group("lang") == lang:
            line = text.count("\n", 0, match.start("body")) + 1
            blocks.append((line, textwrap.dedent(match.group("body"))))
    return blocks


def test_code_blocks_parser() -> None:
    """The parser finds indented blocks, skips other languages and numbers lines from 1."""
    text = "# t\n```python\na = 1\n```\n```bash\nls\n```\n- item\n\n    ```python\n    b = a\n    ```\n"
    assert code_blocks(text) == [(3, "a = 1\n"), (11, "b = a\n")]
    assert code_blocks(text, "bash") == [(6, "ls\n")]


@contextmanager
def jax_defaults() -> Iterator[None]:
    """JAX's default settings for the duration (x64 off, standard promotion), then the suite's.

    The global flag, not ``jax.enable_x64``'s thread-local context, which would override a
    block's own ``jax.config.update("jax_enable_x64", True)``."""
    names = ("jax_enable_x64", "jax_numpy_dtype_promotion", "jax_numpy_rank_promotion")
    saved = {name: getattr(jax.config, name) for name in names}
    jax.config.update("jax_enable_x64", False)
    jax.config.update("jax_numpy_dtype_promotion", "standard")
    jax.config.update("jax_numpy_rank_promotion", "allow")
    try:
        yield
    finally:
        for name, value in saved.items():
            jax.config.update(name, value)


def missing_names(text: str) -> list[str]:
    """The dotted names a page's ``requires`` line asks for that this environment lacks."""
    missing = []
    for name in " ".join(REQUIRES.findall(text)).split():
        top, *attributes = name.split(".")
        try:
            value = importlib.import_module(top)
            for attribute in attributes:
                value = getattr(value, attribute)
        except (ImportError, AttributeError):
            missing.append(name)
    return missing


def test_missing_names() -> None:
    text = "<!-- test_docs: requires jax.jit jax.no_such_name -->\n# Page\n"
    assert missing_names(text) == ["jax.no_such_name"]


def missing_extra(error: ImportError, where: str) -> str:
    """Why ``where`` cannot run, when ``error`` (or the error it was raised from: jaxcnn.flax
    names the extra in an ImportError of its own) is a module of an extra that is not
    installed; else re-raises ``error``."""
    cause: BaseException | None = error
    while cause is not None:
        top = (getattr(cause, "name", None) or "").split(".")[0]
        if isinstance(cause, ModuleNotFoundError) and top in OPTIONAL:
            return f"{where} needs {top!r}, from the {OPTIONAL[top]!r} extra: not installed"
        cause = cause.__cause__ or cause.__context__
    raise error


def run_page(path: Path, root: Path = ROOT) -> None:
    """Executes ``path``'s python blocks in order in one namespace; fails naming the block."""
    blocks = code_blocks(path.read_text())
    name = path.relative_to(root).as_posix()
    namespace: dict = {"__name__": f"docs:{name}"}
    skipped = []
    for number, (line, source) in enumerate(blocks, 1):
        where = f"{name}, python block {number} of {len(blocks)} (line {line})"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                # padded so that a traceback's line numbers are the page's own
                exec(compile("\n" * (line - 1) + source, name, "exec"), namespace)
            except ImportError as error:
                skipped.append(missing_extra(error, where))   # the blocks after it still run
            except Exception as error:
                raise AssertionError(f"{where} raised {type(error).__name__}: {error}\n"
                                     f"{textwrap.indent(source, '    ')}") from error
        truncated = [str(w.message) for w in caught if TRUNCATION in str(w.message)]
        assert not truncated, f"{where} warns that float64 is truncated: {truncated[0]}"
    if skipped:
        pytest.skip(f"the other blocks passed; {'; '.join(skipped)}")


PAGES_WITH_CODE = [page for page in PAGES if code_blocks(page.read_text())]
FIRST_PAGES = (ROOT / "README.md", ROOT / "docs" / "quickstart.md")
"""The pages the default tier runs (a newcomer's first session); the others run in the full tier."""


def _page(page: Path):
    """``page`` as a case of the test below: ``slow`` unless it is one of ``FIRST_PAGES``."""
    marks = () if page in FIRST_PAGES else pytest.mark.slow
    return pytest.param(page, marks=marks, id=page.relative_to(ROOT).as_posix())


@pytest.mark.parametrize("page", [_page(page) for page in PAGES_WITH_CODE])
def test_page_code_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = missing_names(page.read_text())
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: not in jax {jax.__version__}")
    monkeypatch.chdir(tmp_path)  # a block that writes a file writes it here
    with jax_defaults():
        run_page(page)


# What a fenced block may be: an example (run), a shell command or output (shown), a data file.
FENCE_LANGUAGES = ("python", "bash", "text", "yaml", "toml", "json")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_block_says_what_it_is(page: Path) -> None:
    """No example can dodge this test: an unlabelled block, or one labelled ``py``, ``pycon``
    or ``python3``, would be shown and never run."""
    text = page.read_text()
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        assert match.group("lang") in FENCE_LANGUAGES, (
            f"{page.name}, line {line}: a block fenced ```{match.group('lang')}; "
            f"label it one of {FENCE_LANGUAGES} (python blocks run)")


def test_readme_and_quickstart_have_code() -> None:
    """The pages a reader starts from carry executed examples (so this test has work to do)."""
    names = {page.relative_to(ROOT).as_posix() for page in PAGES_WITH_CODE}
    assert {"README.md", "docs/quickstart.md"} <= names


def test_run_page_names_the_broken_block(tmp_path: Path) -> None:
    """A failing block fails the page with its number and line; blocks share one namespace."""
    page = tmp_path / "page.md"
    page.write_text("# p\n\n```python\nx = 2\n```\n\ntext\n\n```python\nassert x == 3\n```\n")
    with pytest.raises(AssertionError, match=r"python block 2 of 2 \(line 10\) raised AssertionError"):
        run_page(page, root=tmp_path)
    page.write_text("```python\nx = 2\n```\n```python\nassert x == 2\n```\n")
    run_page(page, root=tmp_path)


def test_citation_version_is_the_package_version() -> None:
    """CITATION.cff cites the version pyproject.toml declares (read as text: no TOML or YAML
    parser needed on Python 3.10)."""
    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    cited = re.search(r"^version: (\S+)$", (ROOT / "CITATION.cff").read_text(), re.MULTILINE)
    assert declared and cited and cited.group(1) == declared.group(1)


def test_run_page_fails_on_float64_truncation(tmp_path: Path) -> None:
    """An example that asks for float64 with x64 off (JAX warns and gives float32) fails."""
    page = tmp_path / "page.md"
    page.write_text("```python\nimport jax.numpy as jnp\nx = jnp.zeros(3, jnp.float64)\n```\n")
    with jax_defaults(), pytest.raises(AssertionError, match="float64 is truncated"):
        run_page(page, root=tmp_path)


def test_reference_pages_read_docstrings_as_markdown() -> None:
    """The site's griffe extension (docs/_ext/docstrings.py): doctests fenced, reST's '::'
    dropped, an argument list split over two lines joined, an Examples section left to griffe."""
    pytest.importorskip("griffe")   # the docs extra
    spec = importlib.util.spec_from_file_location("docstrings", ROOT / "docs/_ext/docstrings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = ("The formula::\n\n    y = x\n\nArgs:\n  w, b,\n    stride: as conv.\n\n>>> 1 + 1\n2\n\n"
            "Examples:\n    >>> 2 + 2\n    4")
    assert module.markdown_docstring(text) == (
        "The formula:\n\n    y = x\n\nArgs:\n  w, b, stride: as conv.\n\n```pycon\n>>> 1 + 1\n2\n```\n\n"
        "Examples:\n    >>> 2 + 2\n    4")


def doctest_modules() -> list[str]:
    """The package's modules whose source holds a ``>>>`` example (read, not imported)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>>" in path.read_text():
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.parametrize("module_name", doctest_modules())
def test_doctests(module_name: str) -> None:
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        pytest.skip(missing_extra(error, module_name))
    tests = [t for t in doctest.DocTestFinder().find(module, module_name) if t.examples]
    assert tests, f"{module_name} has '>>>' in its source but no doctest was found"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    output: list[str] = []
    with jax_defaults():
        for test in tests:
            runner.run(test, out=output.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(output)
