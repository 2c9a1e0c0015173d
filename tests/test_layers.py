"""The layer contract (issue 14): imports point one way and no two modules import each other.

Ranks: datastores < indexers < rag < evaluators < ragcli. A module may import its own package and the
packages below it, never one above (so nothing imports ``ragcli``), and the module import graph has no
cycle. Every import counts: module level, inside functions and classes, under ``if TYPE_CHECKING``, and
``importlib.import_module("literal")``. Relative imports are resolved. ``from pkg import name`` is an
edge to ``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``). There is no exception list.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

RANKS = {"datastores": 0, "indexers": 1, "rag": 2, "evaluators": 3, "ragcli": 4}


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` module imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} imports {self.target}"


def find_modules(root: Path, packages=tuple(RANKS)) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` under ``root``."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level - 1 > len(base) - 1:
        raise ValueError(f"relative import beyond the top-level package in {module} line {node.lineno}")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _deepest(name: str, modules: dict[str, Path]) -> str:
    """``name`` or its longest prefix that is a known module (``import a.b.c`` loads them all)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return name


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The modules one AST node imports (none for other nodes)."""
    if isinstance(node, ast.Import):
        return [_deepest(alias.name, modules) for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _absolute(module, is_package, node)
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else _deepest(base, modules) for a in node.names]
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
            return [_deepest(node.args[0].value, modules)]
    return []


def import_edges(root: Path, modules: dict[str, Path]) -> list[Edge]:
    """Every import of every module into a project package (stdlib and third-party ones are left out)."""
    edges = []
    for module, path in modules.items():
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=rel)):
            for target in _targets(node, module, path.name == "__init__.py", modules):
                if target.split(".")[0] in RANKS:
                    edges.append(Edge(module, target, rel, node.lineno))
    return sorted(set(edges), key=lambda e: (e.path, e.line, e.target))


def upward_imports(edges: list[Edge]) -> list[str]:
    """Imports of a package ranked above the importer's own."""
    return [f"{e} ({e.source.split('.')[0]} may not import {e.target.split('.')[0]})" for e in edges
            if RANKS[e.target.split(".")[0]] > RANKS[e.source.split(".")[0]]]


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module ``start`` reaches through one or more imports."""
    seen: set[str] = set()
    todo = list(graph[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph[node])
    return seen


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (modules that reach each other)."""
    reach = {node: _reachable(graph, node) for node in graph}
    found = {frozenset({node} | {other for other in reach[node] if node in reach[other]}) for node in graph}
    return sorted(sorted(c) for c in found if len(c) > 1)


def import_cycles(edges: list[Edge], modules: dict[str, Path]) -> list[str]:
    """One message per cycle: its modules and the file:line of every import inside it."""
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for e in edges:
        if e.target in modules and e.target != e.source:
            graph[e.source].add(e.target)
    messages = []
    for component in _components(graph):
        inside = [str(e) for e in edges if e.source in component and e.target in component and e.source != e.target]
        messages.append(f"import cycle between {', '.join(component)}:\n    " + "\n    ".join(inside))
    return messages


def check(root: Path) -> tuple[list[str], list[str]]:
    """(upward imports, import cycles) of the packages under ``root``."""
    modules = find_modules(root)
    edges = import_edges(root, modules)
    return upward_imports(edges), import_cycles(edges, modules)


def test_the_checker_reads_every_package_of_the_project():
    modules = find_modules(REPO)
    assert {name.split(".")[0] for name in modules} == set(RANKS)
    assert len(modules) > 100, "the project's modules were not found; the layer checks would pass on nothing"
    edges = import_edges(REPO, modules)
    assert any(e.source == "ragcli.index" and e.target.startswith("indexers") for e in edges)


def test_no_package_imports_one_above_it():
    upward, _ = check(REPO)
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    _, cycles = check(REPO)
    assert not cycles, "\n".join(cycles)


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


def test_the_checker_finds_planted_violations(tmp_path):
    _write(tmp_path, {
        "datastores/__init__.py": "",
        "datastores/store.py": "import json\n\n\ndef tokenizer():\n    from indexers.models import find\n    return find\n",
        "indexers/__init__.py": "",
        "indexers/models.py": "from datastores import store\n\nfind = 1\n",
        "rag/__init__.py": "from rag.c import thing\n",
        "rag/a.py": "from . import b\n",
        "rag/b.py": "class B:\n    def f(self):\n        from .a import x\n",
        "rag/c.py": "from rag import thing\nthing = 1\n",
        "rag/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import evaluators.e\n",
        "evaluators/__init__.py": "",
        "evaluators/e.py": "import importlib\nimportlib.import_module('ragcli')\n",
        "ragcli/__init__.py": "import rag.a\nimport datastores.store\n",
    })
    upward, cycles = check(tmp_path)
    assert upward == [
        "datastores/store.py:5: datastores.store imports indexers.models (datastores may not import indexers)",
        "evaluators/e.py:2: evaluators.e imports ragcli (evaluators may not import ragcli)",
        "rag/d.py:3: rag.d imports evaluators.e (rag may not import evaluators)",
    ]
    assert cycles == [
        "import cycle between datastores.store, indexers.models:\n"
        "    datastores/store.py:5: datastores.store imports indexers.models\n"
        "    indexers/models.py:1: indexers.models imports datastores.store",
        "import cycle between rag, rag.c:\n"
        "    rag/__init__.py:1: rag imports rag.c\n"
        "    rag/c.py:1: rag.c imports rag",
        "import cycle between rag.a, rag.b:\n"
        "    rag/a.py:1: rag.a imports rag.b\n"
        "    rag/b.py:3: rag.b imports rag.a",
    ]


def test_a_relative_import_above_the_top_package_is_refused(tmp_path):
    _write(tmp_path, {"datastores/__init__.py": "", "datastores/x.py": "from ... import y\n"})
    modules = find_modules(tmp_path, ("datastores",))
    with pytest.raises(ValueError, match=r"beyond the top-level package in datastores\.x line 1"):
        import_edges(tmp_path, modules)
