"""The import graph of a package, read from its modules' own ``import`` statements (ast).

Every edge has a kind:

``runtime``  a module-level import: it runs when the module is imported (a class body too);
``typing``   inside ``if TYPE_CHECKING:``: for the type checker only, never run;
``lazy``     inside a function: runs when the function is called, not at import.

Only imports of the package's own modules are kept. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. Importing ``pkg.a`` also runs
``pkg/__init__.py``; that implicit edge to a parent package is not counted (as grimp and
import-linter do), so ``__init__`` may re-export its children without making every child
part of a circle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: str  # runtime | typing | lazy
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}, line {self.line})"


def modules(root: Path, package: str, skip: Iterable[str] = ()) -> dict[str, Path]:
    """Every module of ``package`` (whose directory is ``root``): dotted name -> file."""
    found: dict[str, Path] = {}
    skipped = tuple(skip)
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if any(part in skipped for part in parts):
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(body: list[ast.stmt], kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, kind
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(node.body, "lazy")
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, "typing" if kind == "runtime" else kind)
            yield from _walk(node.orelse, kind)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, field, None)
                if isinstance(children, list):
                    yield from _walk([c for c in children if isinstance(c, ast.stmt)], kind)
                    for child in children:  # except handlers and match cases hold statements
                        if isinstance(child, ast.excepthandler | ast.match_case):
                            yield from _walk(child.body, kind)


def edges(known: dict[str, Path]) -> list[Edge]:
    """Every import of one known module by another."""
    out: list[Edge] = []
    for source, path in known.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, kind in _walk(tree.body, "runtime"):
            for target in _targets(node, source, is_package, known):
                if target != source:
                    out.append(Edge(source, target, kind, node.lineno))
    return out


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [t for t in (_known_prefix(alias.name, known) for alias in node.names) if t]
    base = node.module or ""
    if node.level:
        parts = source.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join([*parts[:keep], *([base] if base else [])])
    found = []
    for alias in node.names:
        child = f"{base}.{alias.name}"
        target = child if child in known else _known_prefix(base, known)
        if target:
            found.append(target)
    return found


def _known_prefix(name: str, known: dict[str, Path]) -> str | None:
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def cycles(graph_edges: Iterable[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for edge in graph_edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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
