"""The product's modules form no import cycle, and the product never imports the tests.

Every import in the source counts, read with ``ast``: module-level, inside functions (lazy) and under
``if TYPE_CHECKING:`` alike, since each is a dependency a reader has to follow. A package's ``__init__`` is a
module of its own: ``from jobs import store`` depends on ``jobs.store``, ``from detector import Detector``
on ``detector`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

PRODUCT = ("bot", "detector", "jobs", "ops", "web")


def product_modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the product packages."""
    modules = {}
    for package in PRODUCT:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def dependencies(module: str, path: Path, modules: set[str]) -> Iterator[tuple[str, int]]:
    """Every module the file's import statements name, with the line, relative imports resolved: the
    deepest module a dotted name reaches, and for ``from a import b`` the module ``a.b`` if there is one,
    else ``a`` (``b`` is then a name inside ``a``). Names outside ``modules`` are left out."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [deepest(alias.name, modules) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else deepest(base, modules)
                       for a in node.names]
        else:
            continue
        yield from ((target, node.lineno) for target in targets if target)


def deepest(name: str, modules: set[str]) -> str:
    """The longest prefix of a dotted name that is one of ``modules`` ("" when none is)."""
    parts = name.split(".")
    return next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in modules), "")


def import_graph() -> dict[str, dict[str, int]]:
    """Module -> {product module it imports: line of its first import there}."""
    modules = product_modules()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for target, line in dependencies(module, path, set(modules)):
            if target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_product_modules_import_no_cycle() -> None:
    graph = import_graph()
    assert {"bot.main", "detector", "jobs.tasks", "ops.cli"} <= graph.keys()
    assert "jobs.store" in graph["jobs.tasks"]  # `from jobs import store` reaches the module itself
    described = [
        " -> ".join(component) + ": " + ", ".join(
            f"{a} imports {b} (line {graph[a][b]})" for a in component for b in component if b in graph[a]
        )
        for component in cycles(graph)
    ]
    assert described == []


def test_product_code_never_imports_the_tests() -> None:
    """``tests`` is not installed with detbot: a product import of it works only in a checkout."""
    offending = []
    for path in product_modules().values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:  # a relative import stays in its package
                names = [node.module or ""]
            else:
                continue
            offending += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names
                          if n == "tests" or n.startswith("tests.")]
    assert offending == []
