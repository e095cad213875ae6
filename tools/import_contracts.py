"""import-linter contract types this project adds (``[tool.importlinter] contract_types`` in pyproject.toml).

- ``acyclic_modules``: no import cycle among the modules of the root
  packages, counting a package's ``__init__`` as a module and imports made
  inside functions. ``acyclic_siblings`` sees cycles between siblings only;
  a submodule importing its own package while the package imports it
  (``cli`` ⇄ ``cli.bench``) hides from it.
- ``no_private_names``: no module imports a ``_private`` name from another
  module (``from a.b import _helper``); importing a private *module*
  (``from engine import _pure``) is ``private_modules``' business.

Development tooling only: not part of the installed packages.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import grimp
from importlinter.application import output
from importlinter.domain.contract import Contract, ContractCheck

__all__ = ["AcyclicModulesContract", "NoPrivateNamesContract", "cycles", "private_name_imports"]


def cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The graph's import cycles: strongly connected groups of two or more modules, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        # Tarjan's algorithm, iterative: a deep package must not hit the recursion limit.
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    found.append(sorted(group))
    return sorted(found)


def private_name_imports(modules: list[str]) -> list[tuple[str, int, str]]:
    """``(importer, line, "module._name")`` for each private name imported from another module."""
    found = []
    for module in sorted(modules):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        package = module if spec.submodule_search_locations else module.rpartition(".")[0]
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            source = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, source] if source else base)
            for alias in node.names:
                name = alias.name
                if not name.startswith("_") or name.startswith("__"):
                    continue
                if _is_module(f"{source}.{name}"):
                    continue  # a private submodule, imported by name
                found.append((module, node.lineno, f"{source}.{name}"))
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent is a module, not a package
        return False


class AcyclicModulesContract(Contract):
    """No import cycles among modules (``acyclic_modules``)."""

    type_name = "acyclic_modules"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        groups = cycles(graph)
        details = [
            [
                (importer, imported)
                for importer in group
                for imported in sorted(graph.find_modules_directly_imported_by(importer))
                if imported in group
            ]
            for group in groups
        ]
        return ContractCheck(kept=not groups, warnings=[], metadata={"cycles": details})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for edges in check.metadata["cycles"]:
            output.print_error("These modules import each other, through:", bold=False)
            for importer, imported in edges:
                output.print_error(f"- {importer} -> {imported}", bold=False)
            output.new_line()


class NoPrivateNamesContract(Contract):
    """No ``from a.b import _name`` across modules (``no_private_names``)."""

    type_name = "no_private_names"

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        found = private_name_imports(sorted(graph.modules))
        return ContractCheck(kept=not found, warnings=[], metadata={"imports": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error("Private names imported from another module (make them public, or move them):", bold=False)
        for importer, line, name in check.metadata["imports"]:
            output.print_error(f"- {importer} (l.{line}) imports {name}", bold=False)
