"""A program class defined in `__main__` (a notebook cell, or the script being run) captured as one module for code/.

A class from a notebook has no file to copy, and copying the running script would make every `load` run it again
(and publish again). So the class's source and every name it needs from the notebook's namespace are written into one
module, in dependency order: imports rebuilt from the objects they bound, simple literals by value, and the source
of the classes and functions defined in the notebook (found through the cells IPython registered in linecache, or
the script's file). A name bound to something made at run time (an LM client, a lambda, an open file...) cannot be
captured: it is refused, naming it. Pure apart from reading the cells; the caller imports the result to check it.
"""

from __future__ import annotations
import __future__

import ast
import importlib
import linecache
import symtable
import sys
import textwrap
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import RegistryError

NOTEBOOK_MODULE = "notebook_program"
SCRIPT_MODULE = "script_program"


class CaptureError(RegistryError):
    """A class from a notebook or the running script that cannot be captured as code."""


@dataclass(frozen=True)
class CapturedModule:
    """One module that rebuilds a `__main__` class: its file name under code/, its text and the entrypoint."""

    filename: str
    text: str
    entrypoint: str


def capture_main_class(cls: type) -> CapturedModule:
    """`cls` (its `__module__` is `__main__`) and what it needs from the namespace it was defined in, as one module."""
    if "." in cls.__qualname__:
        raise CaptureError(
            f"{cls.__qualname__} is defined inside a function or class: define it at the top level of a cell"
        )
    namespace = _namespace(cls)
    sources = _SourceFinder(namespace)
    module_name = NOTEBOOK_MODULE if sources.in_ipython else SCRIPT_MODULE
    capture = _Capture(cls.__qualname__, namespace, sources)
    capture.visit(cls.__qualname__, cls)
    header = f'"""{cls.__qualname__}, captured by dspyreg from the {sources.where} with what it uses there."""'
    # Annotations the cells left unevaluated (a type imported only for checkers) must stay unevaluated.
    future = "from __future__ import annotations" if namespace.get("annotations") is __future__.annotations else ""
    blocks = [header, future, "\n".join(capture.imports), "\n".join(capture.literals)]
    text = "\n\n".join(b for b in blocks if b) + "\n\n\n" + "\n\n".join(capture.definitions)
    return CapturedModule(f"{module_name}.py", text, f"{module_name}:{cls.__qualname__}")


def _namespace(cls: type) -> Mapping[str, Any]:
    """The globals the class's methods see (a kernel's user namespace), else `__main__`'s."""
    for function in _functions(cls):
        return function.__globals__
    return vars(sys.modules["__main__"])


def _functions(cls: type) -> Iterator[types.FunctionType]:
    """The plain functions defined in a class body (methods, static and class methods, property accessors)."""
    for value in vars(cls).values():
        inner = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        accessors = (inner.fget, inner.fset, inner.fdel) if isinstance(inner, property) else (inner,)
        yield from (f for f in accessors if isinstance(f, types.FunctionType))


class _SourceFinder:
    """The text of the cells run so far (oldest first), or of the running script."""

    def __init__(self, namespace: Mapping[str, Any]) -> None:
        shell = _ipython_shell()
        self.in_ipython = shell is not None
        self.where = "notebook" if shell is not None else "script"
        if shell is not None:
            numbered = getattr(shell.compile, "_filename_map", {})
            self.files = sorted(numbered, key=lambda name: numbered[name])
        else:
            script = namespace.get("__file__")
            self.files = [script] if isinstance(script, str) else []

    def trees(self, filename: str) -> tuple[list[str], ast.Module] | None:
        lines = linecache.getlines(filename)
        try:
            return lines, ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            return None

    def definition(self, name: str, code: types.CodeType | None) -> str | None:
        """The source of the top-level `def`/`class` `name`: the one holding `code` when given, else the last one in
        the cells (a class with no methods, e.g. a dspy.Signature, has no code object to point at its cell)."""
        files = [code.co_filename] if code is not None else list(reversed(self.files))
        for filename in files:
            parsed = self.trees(filename)
            if parsed is None:
                continue
            lines, tree = parsed
            for node in reversed(tree.body):
                if not isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) or node.name != name:
                    continue
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                assert node.end_lineno is not None  # ast.parse sets it
                if code is not None and not first <= code.co_firstlineno <= node.end_lineno:
                    continue
                return textwrap.dedent("".join(lines[first - 1 : node.end_lineno]))
        return None


def _ipython_shell() -> Any:
    """The running IPython shell, without importing IPython when it is not running."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return None
    get_ipython: Callable[[], Any] | None = getattr(ipython, "get_ipython", None)
    return get_ipython() if get_ipython is not None else None


class _Capture:
    """Walks the names a definition uses, depth first, so what a definition needs is written before it."""

    def __init__(self, target: str, namespace: Mapping[str, Any], sources: _SourceFinder) -> None:
        self.target = target
        self.namespace = namespace
        self.sources = sources
        self.seen: set[str] = set()
        self.imports: list[str] = []
        self.literals: list[str] = []
        self.definitions: list[str] = []

    def refuse(self, name: str, why: str, what: str) -> CaptureError:
        return CaptureError(
            f"cannot capture {self.target} from the {self.sources.where}: it uses {name!r}, {why}; {what}, or "
            "define it in a .py module and import it"
        )

    def visit(self, name: str, value: Any) -> None:
        if name in self.seen:
            return
        self.seen.add(name)
        if isinstance(value, types.ModuleType):
            self.imports.append(_import_module_line(name, value))
        elif getattr(value, "__module__", None) == "__main__" and isinstance(value, (type, types.FunctionType)):
            self._definition(name, value)
        elif (line := _import_object_line(name, value)) is not None:
            self.imports.append(line)
        elif _is_literal(value):
            self.literals.append(f"{name} = {value!r}")
        elif isinstance(value, type):  # e.g. dspy.Signature("question -> answer"): no class statement to copy
            raise self.refuse(name, "a class made at run time, not by a class statement", "make it inside the class")
        else:
            raise self.refuse(
                name,
                f"a {type(value).__module__}.{type(value).__qualname__} object made at run time",
                "create it inside the class (e.g. in __init__)",
            )

    def _definition(self, name: str, value: type | types.FunctionType) -> None:
        if value.__name__ == "<lambda>":
            raise self.refuse(name, f"a lambda defined in the {self.sources.where}", "write it as a def")
        if value.__qualname__ != name:
            raise self.refuse(
                name, f"another name for {value.__qualname__}", f"use {value.__qualname__} by its own name"
            )
        # A class's source is found through one of its methods' code; a class without one (a Signature) by name.
        code = next((f.__code__ for f in _functions(value)), None) if isinstance(value, type) else value.__code__
        source = self.sources.definition(name, code)
        if source is None:
            raise self.refuse(name, "whose source is in no cell run in this session", "re-run the cell defining it")
        for used in _global_names(source):
            if used in self.namespace and used != name:
                self.visit(used, self.namespace[used])
        self.definitions.append(source.strip("\n") + "\n")


def _global_names(source: str) -> list[str]:
    """The names a definition's source reads from its module's globals, in order of first use (symtable knows which
    names are local, so a method's local `lm` is not mistaken for a notebook's `lm`)."""
    found: dict[str, None] = {}

    def walk(table: symtable.SymbolTable) -> None:
        for symbol in table.get_symbols():
            module_level = table.get_type() == "module"
            if (symbol.is_referenced() and module_level) or (not module_level and symbol.is_global()):
                found.setdefault(symbol.get_name())
        for child in table.get_children():
            walk(child)

    walk(symtable.symtable(source, "<captured>", "exec"))
    return list(found)


def _import_module_line(name: str, module: types.ModuleType) -> str:
    if module.__name__ == "__main__":
        raise CaptureError(f"{name!r} is the notebook itself: it cannot be captured")
    if module.__name__ == name:
        return f"import {name}"
    return f"import {module.__name__} as {name}"


def _import_object_line(name: str, value: Any) -> str | None:
    """`from module import name` when `value` is what that import gives (a class or function from a module)."""
    module_name, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    if (
        not isinstance(module_name, str)
        or not isinstance(qualname, str)
        or "." in qualname
        or module_name == "__main__"
    ):
        return None
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except Exception:  # a module that does not import again is no place to import from
            return None
    if getattr(module, qualname, None) is not value:
        return None
    return f"from {module_name} import {qualname}" + ("" if qualname == name else f" as {name}")


def _is_literal(value: Any) -> bool:
    """A value its repr writes back exactly: numbers, strings, bytes, None and containers of them."""
    if not _literal_types(value):
        return False
    try:
        return bool(ast.literal_eval(repr(value)) == value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):  # nan, inf, an empty set(), too deep
        return False


def _literal_types(value: Any) -> bool:
    if type(value) in (bool, int, float, complex, str, bytes, type(None)):
        return True
    if type(value) in (list, tuple, set):
        return all(_literal_types(v) for v in value)
    if type(value) is dict:
        return all(_literal_types(k) and _literal_types(v) for k, v in value.items())
    return False


def check_captured(captured: CapturedModule, program: Any, where: str) -> None:
    """Import the captured module from `where` (an empty folder) as `load` would, give the program it makes the live
    program's state, and refuse the capture unless every predictor then shows the same prompts: a class that does not
    rebuild (a cell edited and not re-run, a name the capture missed) is caught here, not at the first `load`."""
    from pathlib import Path

    from .prompts import program_prompts
    from .runtime.inference import import_file, instantiate

    folder = Path(where)
    file = folder / captured.filename
    file.write_text(captured.text, encoding="utf-8")
    where_from = "notebook" if captured.filename == f"{NOTEBOOK_MODULE}.py" else "script"
    module_name, _, attr = captured.entrypoint.partition(":")
    unique = f"dspyreg_captured_{module_name}_{id(file):x}"
    try:
        module = import_file(file, unique)
        try:
            rebuilt = instantiate(module, attr, f"the captured {attr}")
        except TypeError as err:
            cause = err.__cause__ or err
            raise CaptureError(
                f"load makes {attr} with no arguments, and {attr}() fails: {type(cause).__name__}: "
                f"{(str(cause).splitlines() or [''])[0]}; "
                "give the arguments of its __init__ defaults"
            ) from None
        rebuilt.load_state({k: v for k, v in program.dump_state().items() if k != "metadata"})
        same = _without_lm(program_prompts(rebuilt)) == _without_lm(program_prompts(program))
    except CaptureError:
        raise
    except Exception as err:  # the user's code may raise anything while it rebuilds
        raise CaptureError(
            f"{attr} captured from the {where_from} does not rebuild: {type(err).__name__}: {err}".splitlines()[0]
            + "; define it in a .py module and import it"
        ) from None
    finally:
        sys.modules.pop(unique, None)
    if not same:
        raise CaptureError(
            f"{attr} captured from the {where_from} renders other prompts than the live program (a cell was edited "
            "after it ran?): re-run the cells that define it and its signatures, then publish again"
        )


def _without_lm(prompts: Mapping[str, Any]) -> dict[str, Any]:
    """prompts.json without each predictor's lm: an LM set on the live program is not code."""
    return {name: {k: v for k, v in view.items() if k != "lm"} for name, view in prompts.items()}
