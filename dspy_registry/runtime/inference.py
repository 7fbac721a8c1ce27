"""Run a dspyreg deployment bundle with DSPy alone: JSON state loaded into the bundled code, never pickle.

This file is copied verbatim into every exported bundle as `inference.py` and imports nothing of dspyreg, so a
bundle runs anywhere `pip install -r requirements.txt` works. `dspyreg serve` and `dspy_registry.load` use it too,
so what is served is what is exported.

    from inference import PipelineServer
    server = PipelineServer(".")                 # the bundle folder
    print(server.predict(question="What is DSPy?"))

The LM comes from config.json's "lm", overridden by DSPYREG_LM_MODEL, DSPYREG_LM_API_BASE and DSPYREG_LM_API_KEY
(the provider's usual key variables work too); DSPy's response cache is off, so every call reaches the LM.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import keyword
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    from . import drift
except ImportError:  # an exported bundle: drift.py sits beside this file
    import drift  # type: ignore[no-redef]

# Model prices come from the snapshot DSPy ships: a server never reaches out to the internet for them.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "true")

ENV_MODEL = "DSPYREG_LM_MODEL"
ENV_API_BASE = "DSPYREG_LM_API_BASE"
ENV_API_KEY = "DSPYREG_LM_API_KEY"
ENV_NUM_RETRIES = "DSPYREG_LM_NUM_RETRIES"
_import_lock = threading.Lock()
_drift_log = logging.getLogger("dspyreg.drift")


class InputError(ValueError):
    """The inputs do not fit the program's interface (HTTP 422)."""


class ConfigError(ValueError):
    """A DSPYREG_* variable or config.json setting that cannot be used; the message names it and the value."""


class LMFailure(RuntimeError):
    """The LM failed or answered something the adapter could not parse (HTTP 502)."""


class ProgramFailure(RuntimeError):
    """The program itself raised (HTTP 500, without a traceback)."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float | None = None  # USD, when DSPy knows the model's price
    lm_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost": self.cost,
            "lm_calls": self.lm_calls,
        }


@dataclass(frozen=True)
class Result:
    outputs: dict[str, Any]
    usage: Usage = field(default_factory=Usage)


def import_file(path: Path, name: str) -> Any:
    """Import the module at `path` as `name`; its folder is on sys.path meanwhile, so it may import neighbours."""
    with _import_lock:
        if name in sys.modules:
            return sys.modules[name]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # pydantic models and dataclasses look their module up while the body runs
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        finally:
            sys.path.remove(str(path.parent))
        return module


def instantiate(module: Any, attr: str, what: str) -> Any:
    """`module.attr` as a program: a dspy.Module instance, or what its class or zero-argument factory makes."""
    import dspy

    target = getattr(module, attr, None)
    if target is None:
        raise TypeError(f"{what}: {attr!r} is not defined in {module.__name__}")
    if isinstance(target, dspy.Module):
        return target
    if not callable(target):
        raise TypeError(f"{what}: {attr} is not a dspy.Module subclass or factory")
    try:
        program = target()
    except Exception as err:
        raise TypeError(f"{what}: calling {attr}() failed: {type(err).__name__}: {err}") from err
    if not isinstance(program, dspy.Module):
        raise TypeError(f"{what}: {attr}() gave {type(program).__name__}, not a dspy.Module")
    return program


class EntrypointError(ImportError):
    """An entrypoint that is not `module:Attr` naming a module inside the bundle's code/: it is never imported."""


def entrypoint_module(entrypoint: str) -> tuple[str, str, tuple[str, str]]:
    """`module:Attr` or `pkg.module:Attr` -> (module name, attribute, the two files under code/ that may hold the
    module: `pkg/module.py` or `pkg/module/__init__.py`). Pure: `dspyreg verify` checks manifests with it."""
    module_name, sep, attr = entrypoint.partition(":")
    parts = module_name.split(".")
    if not sep or not all(p.isascii() and p.isidentifier() and not keyword.iskeyword(p) for p in (*parts, attr)):
        raise EntrypointError(
            f"entrypoint {entrypoint!r} is not `module:Attr` or `package.module:Attr` (each part an identifier)"
        )
    base = "/".join(parts)
    return module_name, attr, (f"{base}.py", f"{base}/__init__.py")


def import_entrypoint(code_dir: Path, entrypoint: str, tag: str) -> Any:
    """Instantiate `module:Attr` from a bundle's `code_dir`; only a module whose file is inside `code_dir` is imported
    (a registry is input written by others: `http.server:test` must not start a file server).

    The module (or, for `pkg.mod:Attr`, its top package) is imported under a name unique to `tag` (a commit), so two
    versions of one program can live in one process and no module already imported under the same name is used.
    """
    module_name, attr, candidates = entrypoint_module(entrypoint)
    root = code_dir.resolve()
    found = [root / c for c in candidates if _inside(root, code_dir / c)]
    if not found:
        raise EntrypointError(
            f"entrypoint {entrypoint!r} does not name a module inside the bundle's code/ "
            f"(no code/{candidates[0]} or code/{candidates[1]}): refusing to import it from anywhere else"
        )
    file = found[0]
    if "." not in module_name and file.name != "__init__.py":
        unique = f"dspyreg_code_{tag[:12]}_{module_name}".replace("-", "_")
        module = import_file(file, unique)
    else:
        module = _import_packaged(root, module_name, file, entrypoint, tag)
    return instantiate(module, attr, entrypoint)


def _inside(root: Path, path: Path) -> bool:
    """`path` is a file and, symlinks followed, inside `root`."""
    return path.is_file() and path.resolve().is_relative_to(root)


def _import_packaged(root: Path, module_name: str, file: Path, entrypoint: str, tag: str) -> Any:
    """Import `pkg.mod` from `root` with its top package under a name unique to `tag`: a module of that name already
    imported (the user's own copy, the standard library's `http`, another version) is never used instead."""
    top, *rest = module_name.split(".")
    alias = f"dspyreg_code_{tag[:12]}_{top}"
    with _import_lock:
        if alias not in sys.modules:
            init = root / top / "__init__.py"
            if init.is_file():
                spec = importlib.util.spec_from_file_location(alias, init, submodule_search_locations=[str(root / top)])
            else:  # a namespace package: a folder without __init__.py
                spec = importlib.machinery.ModuleSpec(alias, None, is_package=True)
                spec.submodule_search_locations = [str(root / top)]
            if spec is None:
                raise EntrypointError(f"entrypoint {entrypoint!r}: cannot import code/{top}")
            package = importlib.util.module_from_spec(spec)
            sys.modules[alias] = package
            sys.path.insert(0, str(root))  # the package's absolute imports of its neighbours, as before publishing
            try:
                if spec.loader is not None:
                    spec.loader.exec_module(package)
            except BaseException:
                del sys.modules[alias]
                raise
            finally:
                sys.path.remove(str(root))
        sys.path.insert(0, str(root))
        try:
            module = importlib.import_module(".".join([alias, *rest]))
        finally:
            sys.path.remove(str(root))
    found: str | None = getattr(module, "__file__", None)
    if found is None or Path(found).resolve() != file:
        raise EntrypointError(
            f"entrypoint {entrypoint!r}: {module_name} was found outside the bundle's code/ "
            f"({found or 'built in'}): refusing to use it"
        )
    return module


def load_state_file(path: Path) -> dict[str, Any]:
    """The saved DSPy state: JSON only (a pickle's first byte is refused before anything is parsed)."""
    data = path.read_bytes()
    if data[:1] == b"\x80":
        raise ValueError(f"{path} holds pickle bytes: refusing to load it")
    state = json.loads(data)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a DSPy state")
    return state


def load_program(bundle_dir: Path, entrypoint: str, tag: str) -> Any:
    """The bundle's program with its published state loaded (instructions, demos, per-predictor settings)."""
    program = import_entrypoint(bundle_dir / "code", entrypoint, tag)
    state = load_state_file(bundle_dir / "program.json")
    state.pop("metadata", None)
    names = {name for name, _ in program.named_parameters()}
    bare = names == {"self"} and "self" not in state  # a dspy.Predict on its own saves its entry unnamed
    keys = {"self"} if bare else state.keys()
    missing, extra = sorted(names - keys), sorted(keys - names)
    if missing or extra:
        raise ValueError(
            f"program.json does not match the code: it lacks {missing or 'nothing'}, has extra {extra or 'nothing'}"
        )
    program.load_state(state)
    return program


def make_lm(config: dict[str, Any]) -> Any:
    """The LM from config.json's "lm" and the DSPYREG_LM_* variables, with DSPy's cache off; None if no model."""
    import dspy

    model = os.environ.get(ENV_MODEL) or config.get("model")
    if not model:
        return None
    kwargs: dict[str, Any] = {k: config[k] for k in ("temperature", "max_tokens") if config.get(k) is not None}
    if config.get("timeout"):
        kwargs["timeout"] = config["timeout"]
    if os.environ.get(ENV_API_BASE):
        kwargs["api_base"] = os.environ[ENV_API_BASE]
    if os.environ.get(ENV_API_KEY):
        kwargs["api_key"] = os.environ[ENV_API_KEY]
    retries = _count(ENV_NUM_RETRIES, os.environ.get(ENV_NUM_RETRIES) or config.get("num_retries", 3))
    return dspy.LM(model, cache=False, num_retries=retries, **kwargs)


def check_lm_environment() -> None:
    """Refuse DSPYREG_LM_* values that make_lm could not use, before a server starts (make_lm checks them too)."""
    if os.environ.get(ENV_NUM_RETRIES):
        _count(ENV_NUM_RETRIES, os.environ[ENV_NUM_RETRIES])


def _count(name: str, value: Any) -> int:
    """A whole number >= 0 from a variable or setting, or ConfigError naming it (never a bare int() traceback)."""
    try:
        number = int(str(value).strip())
    except ValueError:
        number = -1
    if number < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {str(value)[:40]!r}")
    return number


def jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    return str(value)


def _is_lm_failure(err: BaseException) -> bool:
    """DSPy's LM and adapter errors, and whatever a provider SDK raises on the way (by module, not by import)."""
    for cls in type(err).__mro__:
        module = cls.__module__ or ""
        if cls.__name__ in ("LMError", "AdapterParseError", "DSPyError") or module.startswith(
            ("litellm", "openai", "httpx", "httpcore", "dspy.clients", "dspy._vendor")
        ):
            return True
    return isinstance(err, (ConnectionError, TimeoutError))


class PipelineServer:
    """A loaded bundle: `predict(**inputs)` runs the program and returns its outputs as plain JSON values."""

    def __init__(
        self, bundle_dir: str | Path = ".", *, lm: Any = None, runtime_policy: dict[str, str] | None = None
    ) -> None:
        self.bundle_dir = Path(bundle_dir).resolve()
        self.config = json.loads((self.bundle_dir / "config.json").read_text())
        self.interface = json.loads((self.bundle_dir / "interface.json").read_text())
        pipeline = self.config["pipeline"]
        self.name: str = pipeline["name"]
        self.version: str = pipeline["version"]
        self.commit: str = pipeline.get("commit", "")
        # The installed DSPy against the one the bundle records: a log line, or (policy) DriftRefused before loading.
        drift.check(
            f"{self.name} {self.version}",
            drift.recorded_versions(self.bundle_dir),
            runtime_policy or {},
            lambda message: _drift_log.warning(json.dumps({"event": "runtime_drift", "message": message})),
        )
        self.program = load_program(self.bundle_dir, pipeline["entrypoint"], self.commit or self.version)
        self.lm = lm if lm is not None else make_lm(self.config.get("lm", {}))
        self.inputs = [f["name"] for f in self.interface["inputs"]]
        self.required = [f["name"] for f in self.interface["inputs"] if f.get("required", True)]
        self.outputs = [f["name"] for f in self.interface["outputs"]]

    def predict(self, **inputs: Any) -> dict[str, Any]:
        return self.run(inputs).outputs

    def lm_problem(self) -> str | None:
        """Why no request can be answered (no LM to ask), or None; servers say it in /ready instead of 502s."""
        import dspy

        if self.lm is None and dspy.settings.lm is None:
            return f"no LM configured: set {ENV_MODEL} (and {ENV_API_KEY} or the provider's key variable)"
        return None

    def run(self, inputs: dict[str, Any]) -> Result:
        import dspy

        unknown = sorted(set(inputs) - set(self.inputs))
        missing = [name for name in self.required if name not in inputs]
        if unknown or missing:
            parts = ([f"unknown {', '.join(unknown)}"] if unknown else []) + (
                [f"missing {', '.join(missing)}"] if missing else []
            )
            raise InputError(f"inputs do not fit {self.name} {self.version}: {'; '.join(parts)}")
        problem = self.lm_problem()
        if problem is not None:
            raise LMFailure(problem)
        lm = self.lm.copy() if self.lm is not None else None  # a private history per request: its own usage
        try:
            with dspy.context(lm=lm, track_usage=True) if lm is not None else dspy.context(track_usage=True):
                prediction = self.program(**inputs)
        except Exception as err:
            if _is_lm_failure(err):
                raise LMFailure(_one_line(err)) from err
            raise ProgramFailure(f"{type(err).__name__}: {_one_line(err)}") from err
        outputs = {name: jsonable(prediction.get(name)) for name in self.outputs}
        return Result(outputs, _usage(prediction, lm))


def _usage(prediction: Any, lm: Any) -> Usage:
    tokens: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    by_model = prediction.get_lm_usage() if hasattr(prediction, "get_lm_usage") else None
    for usage in (by_model or {}).values():
        for key in tokens:
            tokens[key] += int(usage.get(key) or 0)
    history = list(getattr(lm, "history", []) or [])
    costs = [entry.get("cost") for entry in history]
    cost = sum(c for c in costs if c is not None) if costs and all(c is not None for c in costs) else None
    return Usage(**tokens, cost=cost, lm_calls=len(history))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:500]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description='Run this bundle once: python inference.py \'{"question": "..."}\'')
    parser.add_argument("inputs", help="the program's inputs as a JSON object, or @file.json")
    args = parser.parse_args()
    text = Path(args.inputs[1:]).read_text() if args.inputs.startswith("@") else args.inputs
    server = PipelineServer(Path(__file__).parent)
    print(json.dumps(server.predict(**json.loads(text)), indent=2, ensure_ascii=False))
