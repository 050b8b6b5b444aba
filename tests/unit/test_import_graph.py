"""The layering of the source tree, read from its imports with ``ast``.

ops (operator tooling) -> services -> training -> contracts (+ relevance.v1): each layer
imports only those to its right. Every import statement counts, at module level or
inside a function (a deferred import is still a dependency; it only moves the failure
to run time). contracts is what both sides share, so it stays torch-free and light.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contracts", "services", "training", "ops")
# Third-party libraries contracts may import: data and message schemas only.
CONTRACTS_THIRD_PARTY = {"google", "pyarrow", "pydantic"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. services.core.bus
    target: str  # imported module (or module.name for `from module import name`)
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports_of(path: Path) -> Iterator[Import]:
    module = _module_name(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(node, module, path.name == "__init__.py")
            for alias in node.names:
                # `from services.core import bus` depends on services.core.bus.
                yield Import(module, f"{target}.{alias.name}", where)


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    found = [
        imported
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for imported in _imports_of(path)
    ]
    assert len({i.source for i in found}) > 50, "the walk found too few modules"
    return found


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _subpackage(module: str) -> str:
    """contracts.x, services.core, training.student, ...: the first two name parts."""
    return ".".join(module.split(".")[:2])


def _layer_violations(imports: list[Import], source: str, forbidden: set[str]) -> list[str]:
    return [str(i) for i in imports if _top(i.source) == source and _top(i.target) in forbidden]


def test_training_imports_neither_services_nor_ops(imports: list[Import]) -> None:
    assert _layer_violations(imports, "training", {"services", "ops"}) == []


def test_services_do_not_import_operator_tooling(imports: list[Import]) -> None:
    assert _layer_violations(imports, "services", {"ops"}) == []


def test_contracts_import_only_themselves_the_protos_and_light_libraries(
    imports: list[Import],
) -> None:
    allowed = {"contracts", "relevance", "__future__", *CONTRACTS_THIRD_PARTY}
    bad = [
        str(i)
        for i in imports
        if _top(i.source) == "contracts"
        and _top(i.target) not in allowed
        and _top(i.target) not in sys.stdlib_module_names
    ]
    assert bad == []
    relevance = [i.target for i in imports if _top(i.source) == "contracts"]
    assert all(t.startswith("relevance.v1") for t in relevance if _top(t) == "relevance")


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _graph(imports: list[Import], group: type[str] | object) -> tuple[dict, dict]:
    edges: dict[str, set[str]] = defaultdict(set)
    evidence: dict[tuple[str, str], str] = {}
    for i in imports:
        if _top(i.target) not in PACKAGES:
            continue
        source, target = group(i.source), group(i.target)  # type: ignore[operator]
        if source != target:
            edges[source].add(target)
            evidence.setdefault((source, target), str(i))
    return edges, evidence


def _explain(cycles: list[list[str]], edges: dict, evidence: dict) -> list[str]:
    return [
        evidence[(a, b)] for cycle in cycles for a in cycle for b in sorted(edges[a]) if b in cycle
    ]


@pytest.mark.parametrize("group", [_top, _subpackage], ids=["packages", "sub-packages"])
def test_no_import_cycles(imports: list[Import], group: object) -> None:
    edges, evidence = _graph(imports, group)
    cycles = _cycles(edges)
    assert cycles == [], "\n".join(_explain(cycles, edges, evidence))


def test_the_checks_see_function_level_and_relative_imports(tmp_path: Path) -> None:
    """The walker itself: a deferred import and a relative import are both found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    module = ROOT / "services" / "student_inference" / "service.py"
    targets = {i.target for i in _imports_of(module)}
    # load_backend imports the backends inside the function.
    assert "services.student_inference.backends.TritonBackend" in targets
    tree = ast.parse("from .core import bus\n")
    node = tree.body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve(node, "services.serve", is_package=False) == "services.core"
