"""The import graph of gpuframe, read from the sources: no cycles, and the layers point one way.

Only *module-level* imports count (what runs when a module is imported): imports inside
functions are deferred on purpose (a ``Table`` method that forwards to ``gpuframe.ops``), and
imports under ``if TYPE_CHECKING:`` never run. Importing ``a.b.c`` also runs the ``__init__`` of
``a`` and ``a.b``; those implicit edges are left out, as import-linter and pydeps do, so an edge
is a module that names another.

The folders map to packages as ``[tool.setuptools] package-dir`` in pyproject.toml says
(``cuda_kernels/`` is ``gpuframe.kernels``, ``comm/`` is ``gpuframe.comm``).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gpuframe", "gpuframe.kernels", "gpuframe.comm")


def _package_dirs() -> dict[str, Path]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping = cfg["tool"]["setuptools"]["package-dir"]
    return {pkg: ROOT / mapping.get(pkg, pkg.replace(".", "/")) for pkg in PACKAGES}


def _modules() -> dict[str, Path]:
    """Every module of the three packages and its source file (subpackages included; a folder
    that another entry of ``package-dir`` maps, or that has no ``__init__.py``, is skipped)."""
    dirs = _package_dirs()
    claimed = {d.resolve() for d in dirs.values()}
    mods: dict[str, Path] = {}

    def walk(pkg: str, folder: Path) -> None:
        for path in sorted(folder.iterdir()):
            if path.is_dir():
                if path.resolve() in claimed or not (path / "__init__.py").exists():
                    continue
                walk(f"{pkg}.{path.name}", path)
            elif path.suffix == ".py":
                mods[pkg if path.name == "__init__.py" else f"{pkg}.{path.stem}"] = path

    for pkg, folder in dirs.items():
        walk(pkg, folder)
    return mods


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported: module level, including inside
    ``if``/``try``/``with`` blocks at that level, but not in functions or classes' methods,
    and not under ``if TYPE_CHECKING:``."""
    def visit(stmts):
        for node in stmts:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    yield from visit(node.body)
                yield from visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                    yield from visit(block)
            elif isinstance(node, (ast.With, ast.ClassDef)):
                # a class body runs at import time; its methods do not
                yield from visit(node.body)

    yield from visit(tree.body)


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in _top_level_imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = _resolve(mod, is_pkg, node)
                # `from pkg import name`: the submodule pkg.name when there is one, else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                # `import a.b.c` where a.b.c is not one of ours: its closest module of ours
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != mod:
                    graph[mod].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a cycle
    through them where one exists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10000))
    try:
        for v in sorted(graph):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(old)
    return [_a_cycle(graph, set(c)) for c in comps]


def _a_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """One cycle through the first module of a strongly connected component (BFS back to it)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def _in(mod: str, pkg: str) -> bool:
    return mod == pkg or mod.startswith(pkg + ".")


# --------------------------------------------------------------------------- the checks
def test_the_walk_sees_every_layer():
    graph = import_graph()
    for mod in ("gpuframe.core.table", "gpuframe.ops.join", "gpuframe.backends.registry",
                "gpuframe.kernels.hashing", "gpuframe.comm", "gpuframe.errors"):
        assert mod in graph, f"{mod} was not found by the walk; modules: {sorted(graph)}"
    # an edge the code is known to have (relative import, module level)
    assert "gpuframe.core.column" in graph["gpuframe.core.table"]


def test_find_cycles_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_and_function_imports_do_not_count():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "if TYPE_CHECKING:\n    import typed_only\n"
        "try:\n    import tried\nexcept ImportError:\n    import fallback\n"
        "def f():\n    import deferred\n"
        "class C:\n    import in_class\n    def m(self):\n        import in_method\n")
    names = [a.name for n in _top_level_imports(tree) for a in n.names]
    assert names == ["TYPE_CHECKING", "os", "tried", "fallback", "in_class"]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "module-level import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _violations(rule) -> list[str]:
    return [f"{a} imports {b}" for a, targets in sorted(import_graph().items()) for b in sorted(targets)
            if rule(a, b)]


def test_core_does_not_import_upper_layers():
    upper = ("gpuframe.ops", "gpuframe.backends", "gpuframe.interop", "gpuframe.dask")
    bad = _violations(lambda a, b: _in(a, "gpuframe.core") and any(_in(b, u) for u in upper))
    assert not bad, "core is the data model: it imports no op, backend, interop or dask module " \
                    "at module level (defer the import into the method that forwards):\n" + "\n".join(bad)


# what gpuframe.ops may import from gpuframe.backends: the dispatch, and the contract types
OPS_MAY_IMPORT = {"gpuframe.backends", "gpuframe.backends.registry", "gpuframe.backends.contract"}


def test_ops_reach_backends_only_through_the_registry():
    bad = _violations(lambda a, b: _in(a, "gpuframe.ops") and (
        (_in(b, "gpuframe.backends") and b not in OPS_MAY_IMPORT) or _in(b, "gpuframe.kernels")))
    assert not bad, "ops resolve implementations through gpuframe.backends.registry, never by " \
                    "importing a backend or a kernel module:\n" + "\n".join(bad)


def test_ops_never_import_backends_even_in_functions():
    # deferred imports are fine elsewhere; from ops to a backend implementation they are a
    # way around the registry and its fallback
    for path in sorted((ROOT / "gpuframe" / "ops").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                name = "." * node.level + (node.module or "")
                assert "kernels" not in name and not (
                    "backends" in name and not name.endswith(("backends.registry", "backends.contract"))), \
                    f"{path.name}:{node.lineno} imports {name}"


def test_backends_never_import_ops():
    # a backend is below the ops: it takes the contract's records, never an op's helpers
    for path in sorted((ROOT / "gpuframe" / "backends").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                name = "." * node.level + (node.module or "")
                assert not (name.endswith(".ops") or ".ops." in name or name == "gpuframe.ops"), \
                    f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("gpuframe.ops") for a in node.names), \
                    f"{path.relative_to(ROOT)}:{node.lineno} imports gpuframe.ops"


def test_no_device_branches_in_ops():
    # ops choose a backend through the registry and a capability by asking for it, never by
    # looking at the device
    for path in sorted((ROOT / "gpuframe" / "ops").glob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            assert not any(s in code for s in ("is_cuda", ".kind ==", "device.kind")), \
                f"{path.name}:{lineno}: {line.strip()}"


def test_kernels_import_only_each_other():
    bad = _violations(lambda a, b: _in(a, "gpuframe.kernels") and not _in(b, "gpuframe.kernels"))
    assert not bad, "kernels see arrays only: they import nothing from gpuframe but other kernel " \
                    "modules:\n" + "\n".join(bad)


def test_errors_is_a_leaf():
    assert not import_graph()["gpuframe.errors"], "gpuframe.errors must import nothing from gpuframe"
