"""The import tree of the project's modules, read from the source with `ast` (nothing is
imported): which first-party modules a set of modules reaches and which third-party
top-level modules they import on the way.

Imports inside functions count (they run when the function does); imports under
``if TYPE_CHECKING:`` do not (they never run). ``import a.b.c`` and ``from a.b import c``
also run the packages ``a`` and ``a.b``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("contracts", "ops", "services", "training", "relevance")


@dataclass(frozen=True)
class SourceTree:
    root: Path = REPO_ROOT
    first_party: tuple[str, ...] = FIRST_PARTY

    def file(self, module: str) -> Path | None:
        parts = module.split(".")
        # The generated protobuf code is a package root of its own (pyproject.toml).
        base = self.root / "proto" if parts[0] == "relevance" else self.root
        path = base.joinpath(*parts)
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        return None

    def modules_under(self, package: str) -> list[str]:
        """``package`` and every module below it (a plain module: just itself)."""
        path = self.file(package)
        if path is None:
            raise ValueError(f"{package}: no such module under {self.root}")
        if path.name != "__init__.py":
            return [package]
        base = path.parent
        return sorted(
            ".".join((package, *file.relative_to(base).with_suffix("").parts)).removesuffix(
                ".__init__"
            )
            for file in base.rglob("*.py")
        )

    def is_first_party(self, module: str) -> bool:
        return module.split(".")[0] in self.first_party


@cache
def _imports(tree: SourceTree, module: str) -> tuple[frozenset[str], frozenset[str]]:
    """(imported at module level, imported anywhere) by ``module``, with parent packages."""
    path = tree.file(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    module_level: set[str] = set()
    anywhere: set[str] = set()

    def add(name: str, in_function: bool) -> None:
        parts = name.split(".")
        names = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        anywhere.update(names)
        if not in_function:
            module_level.update(names)

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for statement in child.orelse:
                    visit(ast.Module(body=[statement], type_ignores=[]), in_function)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, in_function)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    source = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    source = child.module or ""
                add(source, in_function)
                for alias in child.names:
                    # `from package import submodule` runs the submodule.
                    if tree.is_first_party(source) and tree.file(f"{source}.{alias.name}"):
                        add(f"{source}.{alias.name}", in_function)
            is_function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, in_function or is_function)

    visit(ast.parse(path.read_text(), str(path)), in_function=False)
    return frozenset(module_level), frozenset(anywhere)


@dataclass
class Reach:
    """What a walk reached: first-party modules and third-party top-level modules, each
    with the module that imported it (to show the chain that led there)."""

    modules: dict[str, str | None] = field(default_factory=dict)
    third_party: dict[str, str] = field(default_factory=dict)

    def chain(self, name: str) -> list[str]:
        """The import chain from a start module to ``name`` (first-party or third-party)."""
        chain = [name]
        importer = self.third_party.get(name) or self.modules.get(name)
        while importer is not None:
            chain.append(importer)
            importer = self.modules.get(importer)
        return chain[::-1]


def reach(
    tree: SourceTree,
    full: Iterable[str],
    module_level: Iterable[str] = (),
    skip: Iterable[str] = (),
) -> Reach:
    """Walks from the modules in ``full`` through all their imports, and from those in
    ``module_level`` through their module-level imports only (what importing them runs).
    Modules under a prefix in ``skip`` are neither walked nor reported."""
    skip = tuple(skip)
    found = Reach()
    walked: set[tuple[str, bool]] = set()
    stack: list[tuple[str, bool, str | None]] = [(m, True, None) for m in full]
    stack += [(m, False, None) for m in module_level]
    while stack:
        module, all_imports, importer = stack.pop()
        if any(module == s or module.startswith(f"{s}.") for s in skip):
            continue
        if not tree.is_first_party(module):
            top = module.split(".")[0]
            if top not in sys.stdlib_module_names and top != "__future__":
                found.third_party.setdefault(top, importer or module)
            continue
        if tree.file(module) is None:
            # A name imported from a module (a class, a function), not a module.
            continue
        # A module walked in full needs no module-level-only walk.
        if (module, all_imports) in walked or (module, True) in walked:
            continue
        walked.add((module, all_imports))
        found.modules.setdefault(module, importer)
        at_module_level, anywhere = _imports(tree, module)
        for name in anywhere if all_imports else at_module_level:
            stack.append((name, all_imports, module))
    return found
