"""The package's import graph has no cycle, lazy imports included, and no private name crosses a module boundary."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dspy_registry"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import in the file, at any depth, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [alias.name for alias in node.names]
            # `from . import x` imports the submodule x when there is one
            subs = [f"{target}.{n}" for n in names if _is_module(f"{target}.{n}")]
            found += [(s, []) for s in subs] or [(target, names)]
    return found


def _graph() -> dict[str, dict[str, list[str]]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, dict[str, list[str]]] = {m: {} for m in modules}
    for module, path in modules.items():
        for target, names in _imports(path):
            if target in modules and target != module:
                graph[module].setdefault(target, []).extend(names)
    return graph


def _cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    done: set[str] = set()
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in stack:
            return [*stack[stack.index(node) :], node]
        if node in done:
            return None
        stack.append(node)
        for target in sorted(graph[node]):
            found = visit(target)
            if found:
                return found
        stack.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node)
        if found:
            return found
    return None


def test_no_import_cycles() -> None:
    graph = _graph()
    assert len(graph) > 20  # the package was found
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_private_names_across_modules() -> None:
    crossing = [
        f"{module} imports {name} from {target}"
        for module, targets in _graph().items()
        for target, names in targets.items()
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert crossing == []
