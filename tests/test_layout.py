"""The package's layout (issue 25): no import cycle among jaxcnn's modules, no module reaching
into another's private (underscore) names, no file over 450 lines.

Read from the source with ``ast``, nothing imported, so a cycle that only bites on some import
order is caught too. Every import counts, wherever it stands: at the top, inside a function
(a lazy import still closes a cycle when it runs) or under ``if TYPE_CHECKING``. Importing
``a.b.c`` runs the packages ``a.b`` and ``a`` first, so an import is an edge to its module and
to each package around it, except the packages around the importer itself (already running)
and ``jaxcnn/__init__.py`` (the public façade every submodule import runs first: its imports
are the public API, and nothing inside the package goes through it).

Private names: ``from jaxcnn.x import _name`` in another module, and ``x._name`` on a jaxcnn
module bound by an import, are both refused; a private *module* (``jaxcnn._args``,
``jaxcnn._conv.rules``) is fine to import, and dunders (``__version__``) are not private.
Shared helpers inside a private package take plain names.

The checks are plain functions of a package folder; the last test plants each kind of
violation in a package of its own and sees each one caught.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import NamedTuple

PACKAGE = Path(__file__).resolve().parent.parent / "jaxcnn"
MAX_LINES = 450


def modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Every module of ``package``, by dotted name: ``(path, is a package)``."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


class Import(NamedTuple):
    importer: str     # the module that imports
    module: str       # the module it runs: the one imported, or the one a name is taken from
    name: str | None  # the name taken from ``module``, where that name is not itself a module
    line: int


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _trees(package: Path):
    for importer, (path, is_package) in modules(package).items():
        yield importer, is_package, ast.parse(path.read_text(), str(path))


def imports(package: Path) -> list[Import]:
    """Every import of a module of ``package`` made by a module of ``package``."""
    known, root = modules(package), package.name
    found = []
    for importer, is_package, tree in _trees(package):
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [Import(importer, alias.name, None, node.lineno) for alias in node.names
                          if alias.name.split(".")[0] == root]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(node, importer, is_package)
                if source.split(".")[0] == root:
                    for alias in node.names:
                        full = f"{source}.{alias.name}"
                        found.append(Import(importer, full, None, node.lineno) if full in known
                                     else Import(importer, source, alias.name, node.lineno))
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    """``importer → the modules its imports run``: each imported module, and the packages
    around it except the top one and those around the importer (already running)."""
    known = modules(package)
    graph: dict[str, set[str]] = {name: set() for name in known}
    for imp in imports(package):
        parts, outer = imp.module.split("."), imp.importer.split(".")
        running = {".".join(outer[:i]) for i in range(1, len(outer) + 1)}
        around = {".".join(parts[:i]) for i in range(2, len(parts))}
        graph[imp.importer] |= {m for m in ({imp.module} - {imp.importer}) | (around - running) if m in known}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}   # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, path)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [])
            if cycle:
                return cycle
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _bindings(package: Path, tree: ast.Module, importer: str, is_package: bool) -> dict[str, str]:
    """The local names ``tree`` binds to modules of ``package`` by importing them."""
    known, root, bound = modules(package), package.name, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == root:
                    bound[alias.asname or root] = alias.name if alias.asname else root
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, importer, is_package)
            for alias in node.names:
                if f"{source}.{alias.name}" in known:
                    bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    return bound


def private_imports(package: Path) -> list[str]:
    """Each place a module takes another module's private name: ``from m import _x``, and
    ``m._x`` where ``m`` is a module of ``package`` bound by an import."""
    known = modules(package)
    found = [f"{imp.importer}:{imp.line} imports {imp.module}.{imp.name}"
             for imp in imports(package) if imp.name and _private(imp.name)]
    for importer, is_package, tree in _trees(package):
        bound = _bindings(package, tree, importer, is_package)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and _private(node.attr)):
                module = bound[node.value.id]
                if f"{module}.{node.attr}" not in known and module != importer:
                    found.append(f"{importer}:{node.lineno} reads {module}.{node.attr}")
    return sorted(found)


def long_files(package: Path, limit: int = MAX_LINES) -> list[str]:
    """Each file of ``package`` (any kind) over ``limit`` lines."""
    found = []
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".so"):
            lines = path.read_bytes().count(b"\n")
            if lines > limit:
                found.append(f"{path.relative_to(package.parent)}: {lines} lines")
    return found


# ----------------------------------------------------------------------------- the package


def test_no_import_cycle():
    cycle = find_cycle(import_graph(PACKAGE))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_takes_another_modules_private_name():
    assert private_imports(PACKAGE) == []


def test_no_file_over_450_lines():
    assert long_files(PACKAGE) == []


def test_the_lowering_never_imports_the_argument_checks():
    """The lowering (``_conv``, ``_pool``, ``_taps``, ``_shapes``) works on canonical specs from
    ``_shapes``; only the public front doors validate (``_args``)."""
    lowering = ("jaxcnn._conv", "jaxcnn._pool", "jaxcnn._taps", "jaxcnn._shapes")
    found = [f"{imp.importer}:{imp.line}" for imp in imports(PACKAGE)
             if imp.importer.startswith(lowering) and imp.module.startswith("jaxcnn._args")]
    assert found == []


# ----------------------------------------------------------------------------- the checks fail


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "jaxcnn" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "jaxcnn"


def test_the_checks_catch_planted_violations(tmp_path):
    package = _plant(tmp_path, {
        "__init__.py": "from jaxcnn import a\n",
        "a.py": "from jaxcnn.b import f\n",
        "b.py": "def f():\n    import jaxcnn.a\n",                        # a lazy import: still a cycle
        "c.py": "from jaxcnn.a import _hidden\n",
        "d.py": "from jaxcnn import a\na._hidden()\na.__name__\n",
        "e.py": "x = 1\n" * (MAX_LINES + 1),
        "_private.py": "from jaxcnn import _private_too\n",                 # a private module: fine
        "_private_too.py": "",
    })
    assert find_cycle(import_graph(package)) in (["jaxcnn.a", "jaxcnn.b", "jaxcnn.a"],
                                                 ["jaxcnn.b", "jaxcnn.a", "jaxcnn.b"])
    assert private_imports(package) == ["jaxcnn.c:1 imports jaxcnn.a._hidden", "jaxcnn.d:2 reads jaxcnn.a._hidden"]
    assert long_files(package) == [f"jaxcnn/e.py: {MAX_LINES + 1} lines"]


def test_a_cycle_through_a_package_is_caught(tmp_path):
    """``jaxcnn.sub.x`` runs ``jaxcnn/sub/__init__.py`` first: a module that imports one of its
    submodules is in a cycle with every module that package's ``__init__`` imports. A
    submodule importing its sibling is not (the package is already running)."""
    package = _plant(tmp_path, {
        "__init__.py": "",
        "sub/__init__.py": "from jaxcnn.sub.y import g\n",
        "sub/x.py": "X = 1\n",
        "sub/y.py": "from jaxcnn.sub.x import X\nfrom jaxcnn import data\n",
        "data.py": "from jaxcnn.sub.x import X\n",
    })
    cycle = find_cycle(import_graph(package))
    assert cycle is not None and {"jaxcnn.data", "jaxcnn.sub", "jaxcnn.sub.y"} <= set(cycle)
    (package / "data.py").write_text("X = 2\n")
    assert find_cycle(import_graph(package)) is None


def _architecture_tree() -> str:
    """The package tree of docs/architecture.md: its first fenced block that starts at jaxcnn/."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text("utf-8")
    blocks = text.split("```")[1::2]
    return next(block for block in blocks if block.lstrip("text\n").startswith("jaxcnn/"))


def _tree_names(tree: str) -> set[str]:
    """Every file or folder name the tree draws (the word after its branch)."""
    return {line.split("── ", 1)[1].split()[0].rstrip("/") for line in tree.splitlines() if "── " in line}


def test_the_architecture_page_draws_every_module_and_source():
    """docs/architecture.md's package tree names every module, kernel source and header of the
    package (``__init__.py`` aside): a file added without its line there fails here."""
    names = _tree_names(_architecture_tree())
    files = [p for pattern in ("*.py", "*.cc", "*.h") for p in PACKAGE.rglob(pattern)
             if p.name != "__init__.py" and "__pycache__" not in p.parts]
    missing = sorted(p.relative_to(PACKAGE).as_posix() for p in files if p.name not in names)
    assert not missing, f"docs/architecture.md's tree lacks {missing}"
    assert "strided.py" in names and "pool_cpu.cc" not in _tree_names("├── conv.py  x")   # the parse
