"""DSPy program + state -> bundle files, and bundle files -> a ready program. The only module that imports dspy.

dspy is imported inside the functions, so importing this module stays cheap; commands that only read or move refs
never call into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import platform
import re
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadProgramSpec, BadState
from .manifest import Manifest, Optimization, ProgramInfo
from .state import (
    LEGACY_PREDICTOR_KEYS,
    METADATA_KEY,
    PREDICTOR_KEYS,
    canonical_json,
    strip_secrets,
)

if TYPE_CHECKING:
    import dspy

PROGRAM_JSON = "program.json"
PROMPTS_JSON = "prompts.json"
MANIFEST_TOML = "manifest.toml"
CODE_DIR = "code"
PROMPTS_DIR = "prompts"
_LM_FIELDS = ("model", "temperature", "max_tokens", "model_type", "num_retries", "timeout")


@dataclass(frozen=True)
class ProgramSource:
    """A live program and the source files that rebuild it (`code/` of a bundle)."""

    program: dspy.Module
    code: Mapping[str, bytes]
    entrypoint: str


@dataclass(frozen=True)
class PublishMeta:
    name: str
    version: str
    created: str
    author: str
    optimizer: str | None = None
    trainset_size: int | None = None
    dev_score: float | None = None
    notes: str = ""
    lm: Mapping[str, Any] | None = None
    metrics: Mapping[str, float] | None = None


@dataclass(frozen=True)
class Bundle:
    files: Mapping[str, bytes]  # paths relative to `<program>/`, manifest.toml included
    manifest: Manifest
    warnings: tuple[str, ...]


# -- program specs ---------------------------------------------------------------------------------------------------
def import_program(spec: str) -> ProgramSource:
    """`path/to/file.py:Attr` or `package.module:Attr` -> the program and its source files."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise BadProgramSpec(f"invalid program spec {spec!r}: use path/to/file.py:Attr or package.module:Attr")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.is_file():
                raise BadProgramSpec(f"program spec {spec!r}: {target} does not exist")
            module = _import_file(path, f"dspyreg_user_{_safe(path.stem)}_{_digest(str(path))[:8]}")
            code, entrypoint = {path.name: path.read_bytes()}, f"{path.stem}:{attr}"
        else:
            sys.path.insert(0, str(Path.cwd()))
            try:
                module = importlib.import_module(target)
            finally:
                sys.path.remove(str(Path.cwd()))
            code, entrypoint = _module_code(module), f"{target}:{attr}"
    except BadProgramSpec:
        raise
    except BaseException as err:  # user code may raise anything, SystemExit included
        raise BadProgramSpec(f"program spec {spec!r} does not import: {type(err).__name__}: {err}") from None
    return ProgramSource(_instantiate(module, attr, spec), code, entrypoint)


def program_from_code(code_dir: Path, entrypoint: str, tag: str) -> dspy.Module:
    """Instantiate the entrypoint of a bundle's `code/`, imported under names unique to `tag` (a commit)."""
    module_name, _, attr = entrypoint.partition(":")
    if "." not in module_name:
        module = _import_file(code_dir / f"{module_name}.py", f"dspyreg_code_{tag[:12]}_{_safe(module_name)}")
    else:
        sys.path.insert(0, str(code_dir))
        try:
            module = importlib.import_module(module_name)
        finally:
            sys.path.remove(str(code_dir))
    return _instantiate(module, attr, entrypoint)


def _import_file(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadProgramSpec(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic and dataclasses look their module up while the body runs
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(path.parent))
    return module


def _module_code(module: Any) -> dict[str, bytes]:
    file = Path(module.__file__)
    package = (module.__package__ or "").split(".")[0]
    if not package:
        return {file.name: file.read_bytes()}
    root = file.parent
    for _ in range(module.__name__.count(".") - 1):
        root = root.parent
    return {
        str(p.relative_to(root.parent)): p.read_bytes()
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _instantiate(module: Any, attr: str, spec: str) -> dspy.Module:
    import dspy

    obj = getattr(module, attr, None)
    if obj is None:
        raise BadProgramSpec(f"program spec {spec!r}: {attr!r} is not defined in {module.__name__}")
    if isinstance(obj, dspy.Module):
        return obj
    if not callable(obj):
        raise BadProgramSpec(f"program spec {spec!r}: {attr} is not a dspy.Module subclass or factory")
    try:
        program = obj()
    except Exception as err:
        raise BadProgramSpec(f"program spec {spec!r}: calling {attr}() failed: {type(err).__name__}: {err}") from None
    if not isinstance(program, dspy.Module):
        raise BadProgramSpec(f"program spec {spec!r}: {attr}() gave {type(program).__name__}, not a dspy.Module")
    return program


# -- state <-> program -----------------------------------------------------------------------------------------------
def apply_state(program: dspy.Module, state: dict[str, Any], *, source: str = "state") -> list[str]:
    """Check `state` against the live program and load it; warnings for secrets removed. Raises BadState."""
    import dspy

    state, warnings = strip_secrets(state)
    params = dict(program.named_parameters())
    names = set(state) - {METADATA_KEY}
    missing, extra = sorted(params.keys() - names), sorted(names - params.keys())
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"lacks {', '.join(missing)}")
        if extra:
            parts.append(f"has {', '.join(extra)} that the program does not")
        raise BadState(f"{source} does not match the program's predictors: it {' and '.join(parts)}")
    for name, param in params.items():
        entry = state[name]
        if not isinstance(entry, dict):
            raise BadState(f"{source}: entry {name!r} is {type(entry).__name__}, expected an object")
        if not isinstance(param, dspy.Predict):
            continue
        legacy = sorted(entry.keys() & LEGACY_PREDICTOR_KEYS)
        if legacy:
            raise BadState(
                f"{source}: predictor {name!r} has {', '.join(legacy)} from DSPy < 2.6: re-save it with this DSPy"
            )
        unknown = sorted(entry.keys() - PREDICTOR_KEYS)
        if unknown:
            raise BadState(f"{source}: predictor {name!r} has unknown keys {', '.join(unknown)}: refusing to load them")
        signature = entry.get("signature")
        if not isinstance(signature, dict) or not isinstance(signature.get("fields"), list):
            raise BadState(f"{source}: predictor {name!r} has no signature with fields")
        found, expected = len(signature["fields"]), len(param.signature.fields)
        if found != expected:
            raise BadState(f"{source}: predictor {name!r} has {found} fields, the program's signature has {expected}")
        if not isinstance(entry.get("demos", []), list):
            raise BadState(f"{source}: predictor {name!r} demos must be a list")
    try:
        program.load_state(state)
    except Exception as err:
        raise BadState(f"{source} does not load into the program: {type(err).__name__}: {err}") from None
    return warnings


def current_state(program: dspy.Module) -> dict[str, Any]:
    """What `program.save("x.json")` would write, as a dict."""
    from dspy.utils.saving import get_dependency_versions

    state: dict[str, Any] = program.dump_state()
    state[METADATA_KEY] = {"dependency_versions": get_dependency_versions()}
    return state


# -- prompts -----------------------------------------------------------------------------------------------------
def type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\b(typing|builtins|collections\.abc)\.", "", repr(annotation))


def _field_view(name: str, info: Any) -> dict[str, Any]:
    extra = info.json_schema_extra or {}
    desc = extra.get("desc", "")
    return {
        "name": name,
        "type": type_name(info.annotation),
        "description": "" if desc == f"${{{name}}}" else desc,
        "prefix": extra.get("prefix", ""),
    }


def program_prompts(program: dspy.Module) -> dict[str, Any]:
    """prompts.json: per predictor, DSPy's own names: signature, instructions, typed fields, demos, lm."""
    prompts: dict[str, Any] = {}
    for name, predictor in program.named_predictors():
        sig = predictor.signature
        prompts[name] = {
            "signature": sig.signature,
            "instructions": sig.instructions,
            "inputs": [_field_view(n, f) for n, f in sig.input_fields.items()],
            "outputs": [_field_view(n, f) for n, f in sig.output_fields.items()],
            "demos": [_plain(d) for d in predictor.demos],
            "lm": predictor.lm.dump_state() if predictor.lm is not None else None,
        }
    return prompts


def _plain(demo: Any) -> dict[str, Any]:
    from dspy.adapters.utils import serialize_for_json

    items = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
    return {k: serialize_for_json(v) for k, v in items.items()}


def render_prompt(name: str, predictor: Any) -> str:
    """The exact messages DSPy's ChatAdapter sends for `predictor`, with `{field}` placeholders for the inputs."""
    import dspy

    sig = predictor.signature
    placeholders = {field: f"{{{field}}}" for field in sig.input_fields}
    messages = dspy.ChatAdapter().format(sig, [dspy.Example(**_plain(d)) for d in predictor.demos], placeholders)
    lines = [
        f"# {name}",
        "",
        f"`{sig.signature}` — rendered by dspy.ChatAdapter with {len(predictor.demos)} demos; "
        "`{field}` marks where each call's inputs go.",
    ]
    for i, message in enumerate(messages, 1):
        content = message["content"] if isinstance(message["content"], str) else str(message["content"])
        fence = "`" * max(3, _longest_backtick_run(content) + 1)
        lines += ["", f"## {i}. {message['role']}", "", f"{fence}text", content, fence]
    return "\n".join(lines) + "\n"


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


def prompt_file(predictor_name: str) -> str:
    return f"{PROMPTS_DIR}/{_safe(predictor_name)}.md"


# -- the bundle ------------------------------------------------------------------------------------------------------
def build_bundle(source: ProgramSource, state: dict[str, Any], meta: PublishMeta, *, origin: str = "state") -> Bundle:
    """Every file of `<program>/` for this version, the manifest last (it holds the others' sha256).

    `origin` names where the state came from (a file name) in error messages.
    """
    import dspy

    warnings = apply_state(source.program, state, source=origin)
    clean_state, _ = strip_secrets(state)
    files: dict[str, bytes] = {
        PROGRAM_JSON: canonical_json(clean_state),
        PROMPTS_JSON: canonical_json(program_prompts(source.program)),
    }
    for name, predictor in source.program.named_predictors():
        files[prompt_file(name)] = render_prompt(name, predictor).encode()
    for path, data in source.code.items():
        files[f"{CODE_DIR}/{path}"] = data
    lm = dict(meta.lm) if meta.lm else _lm_settings(source.program)
    manifest = Manifest(
        program=ProgramInfo(meta.name, meta.version, source.entrypoint, meta.created, meta.author, meta.notes),
        optimization=Optimization(meta.optimizer, meta.trainset_size, meta.dev_score, dict(meta.metrics or {})),
        runtime={
            "python": platform.python_version(),
            "dspy": dspy.__version__,
            **_versions("pydantic", "litellm"),
        },
        lm=lm,
        files={path: hashlib.sha256(data).hexdigest() for path, data in files.items()},
    )
    files[MANIFEST_TOML] = manifest.dumps().encode()
    return Bundle(files, manifest, tuple(warnings))


def lm_config(lm: Any) -> dict[str, Any]:
    """The manifest's [lm] for a dspy.LM or a model name: model and generation settings, never a key."""
    if isinstance(lm, str):
        return {"model": lm}
    kwargs = getattr(lm, "kwargs", {}) or {}
    config = {"model": getattr(lm, "model", None), "model_type": getattr(lm, "model_type", None)}
    config |= {k: kwargs[k] for k in ("temperature", "max_tokens", "timeout") if k in kwargs}
    return {k: v for k, v in config.items() if v is not None and isinstance(v, (str, int, float, bool))}


def _lm_settings(program: Any) -> dict[str, Any]:
    import dspy

    for _, predictor in program.named_predictors():
        if predictor.lm is not None:
            return lm_config(predictor.lm)
    if dspy.settings.lm is not None and hasattr(dspy.settings.lm, "model"):
        return lm_config(dspy.settings.lm)
    return {}


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
