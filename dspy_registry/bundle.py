"""A live DSPy program + its state -> the files of a version (`<program>/` in its commit), manifest last.

Also where the program comes from (a program spec imported: `file.py:Attr` or `package.module:Attr`, with its source
files) and how a state is checked against it and loaded into it. What the bundle's files hold is built by
prompts.py (prompts.json, prompts/*.md) and interface.py (interface.json, examples/). dspy is imported inside the
functions, so importing this module stays cheap; commands that only read or move refs never call into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import platform
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BadProgramSpec, BadState, RegistryError
from .field_numbers import FIELD_NUMBERS_JSON
from .interface import example_input, example_output, interface_inputs, interface_outputs
from .lineage import Lineage
from .manifest import Manifest, Optimization, ProgramInfo
from .prompts import program_prompts as program_prompts  # re-exported: registry.py reads prompts from here
from .prompts import render_prompt, unrendered_demos
from .rendered import RENDERED_JSON, rendered_document
from .runtime.signature import record_schemas
from .saved_state import check_saved_state, invalid_text, saved_with, version_warning
from .state import (
    LEGACY_PREDICTOR_KEYS,
    METADATA_KEY,
    PREDICTOR_KEYS,
    canonical_json,
    example_findings,
    is_predictor_state,
    lm_findings,
    lm_removed_warning,
    screen_lm_state,
    secret_findings,
    state_json,
    strip_secrets,
)
from .tokens import TokenFigures, measure_program

if TYPE_CHECKING:
    import dspy

PROGRAM_JSON = "program.json"
PROMPTS_JSON = "prompts.json"
MANIFEST_TOML = "manifest.toml"
CODE_DIR = "code"
PROMPTS_DIR = "prompts"
INTERFACE_JSON = "interface.json"
EXAMPLE_INPUT = "examples/input.json"
EXAMPLE_OUTPUT = "examples/output.json"
_LM_FIELDS = ("model", "temperature", "max_tokens", "model_type", "num_retries", "timeout")


@dataclass(frozen=True)
class ProgramSource:
    """A live program and the source files that rebuild it (`code/` of a bundle)."""

    program: dspy.Module
    code: Mapping[str, bytes]
    entrypoint: str
    path: Path | None = None  # the source file (or package folder) on disk, for [lineage.code]; None when unknown


@dataclass(frozen=True, kw_only=True)
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
    record_with: Any = None  # a dspy LM: run the program once on the example input and record what it said
    allow_unrendered_demos: bool = False  # publish demos DSPy would not render (with a warning) instead of refusing
    lineage: Lineage = field(default_factory=Lineage)  # what produced the version (provenance.py gathers it)


@dataclass(frozen=True)
class Bundle:
    files: Mapping[str, bytes]  # paths relative to `<program>/`, manifest.toml included
    manifest: Manifest
    warnings: tuple[str, ...]


# -- program specs ---------------------------------------------------------------------------------------------------
def import_target(spec: str, what: str, error: type[RegistryError]) -> tuple[Any, str, Path | None]:
    """`path/to/file.py:Attr` or `package.module:Attr` -> (module, attr, file path or None); `error` says why not."""
    from .runtime.inference import import_file

    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise error(f"invalid {what} {spec!r}: use path/to/file.py:Name or package.module:Name")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.is_file():
                raise error(f"{what} {spec!r}: {target} does not exist")
            return import_file(path, f"dspyreg_user_{_safe(path.stem)}_{_digest(str(path))[:8]}"), attr, path
        sys.path.insert(0, str(Path.cwd()))
        try:
            return importlib.import_module(target), attr, None
        finally:
            sys.path.remove(str(Path.cwd()))
    except (RegistryError, KeyboardInterrupt):
        raise
    except BaseException as err:  # user code may raise anything, SystemExit included
        line = _user_line(err, Path(target).resolve() if target.endswith(".py") else None)
        raise error(f"{what} {spec!r} does not import: {type(err).__name__}: {_first_line(err)}{line}") from None


def _user_line(err: BaseException, path: Path | None) -> str:
    """` (file.py, line N)` of the deepest frame in the user's file, so an import error points at their line."""
    if path is None:
        return ""
    found = ""
    tb = err.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename) == path:
            found = f" ({path.name}, line {tb.tb_lineno})"
        tb = tb.tb_next
    return found


def _first_line(err: BaseException) -> str:
    """An exception in one line: pydantic's ValidationError (what calling a Signature raises) as its field errors,
    not its pages of input values and links; others by their first line."""
    errors = getattr(err, "errors", None)
    if callable(errors) and hasattr(err, "title"):
        try:
            found = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors())
        except Exception:  # not pydantic's after all: fall back to its text
            found = ""
        if found:
            return f"{err.title}: {found}"
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def import_program(spec: str) -> ProgramSource:
    """`path/to/file.py:Attr` or `package.module:Attr` -> the program and its source files."""
    from .runtime.inference import instantiate

    module, attr, path = import_target(spec, "program spec", BadProgramSpec)
    if path is not None:
        code, entrypoint, origin = {path.name: path.read_bytes()}, f"{path.stem}:{attr}", path
    else:
        code, entrypoint = _module_code(module), f"{spec.rpartition(':')[0]}:{attr}"
        origin = _module_root(module)
    _check_attribute(module, attr, spec, spec.rpartition(":")[0])
    try:
        program = instantiate(module, attr, f"program spec {spec!r}")
    except TypeError as err:
        cause = err.__cause__
        if cause is None:
            raise BadProgramSpec(str(err)) from None
        raise BadProgramSpec(
            f"program spec {spec!r}: calling {attr}() from {spec.rpartition(':')[0]} failed: "
            f"{type(cause).__name__}: {_first_line(cause)}"
        ) from None
    return ProgramSource(program, code, entrypoint, origin)


def _check_attribute(module: Any, attr: str, spec: str, where: str) -> None:
    """Name the user's file and attribute when the spec names nothing, or a Signature instead of a program (the
    module's own name is internal for a file path, and calling a Signature dumps a pydantic ValidationError)."""
    import difflib

    import dspy

    target = getattr(module, attr, None)
    if target is None:
        names = [n for n in vars(module) if not n.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise BadProgramSpec(
            f"program spec {spec!r}: {attr!r} is not defined in {where}{hint}; name a dspy.Module subclass or a "
            "zero-argument factory"
        )
    if isinstance(target, type) and issubclass(target, dspy.Signature):
        raise BadProgramSpec(
            f"program spec {spec!r}: {attr} in {where} is a dspy.Signature, not a program: name the dspy.Module "
            f"that uses it (one whose __init__ makes e.g. dspy.Predict({attr}))"
        )


def _module_root(module: Any) -> Path:
    """What _module_code bundles: the module's file, or its top package's folder."""
    file = Path(module.__file__)
    if not (module.__package__ or "").split(".")[0]:
        return file
    root = file.parent
    for _ in range(module.__name__.count(".") - 1):
        root = root.parent
    return root


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


# -- state <-> program -----------------------------------------------------------------------------------------------
def apply_state(program: dspy.Module, state: dict[str, Any], *, source: str = "state") -> list[str]:
    """Check `state` against the live program and load it; warnings for secrets removed. Raises BadState."""
    import dspy

    check_saved_state(keyed_state(program, state), source)  # the format and exactness first: they say what to do
    state, warnings = strip_secrets(keyed_state(program, state))
    params = dict(program.named_parameters())
    names = set(state) - {METADATA_KEY}
    missing, extra = sorted(params.keys() - names), sorted(names - params.keys())
    stray = [name for name in extra if not is_predictor_state(state[name])]
    if stray and not missing:  # DSPy's load_state ignores them; a registry keeps only what loads
        raise BadState(
            f"{source}: top-level key{'s' if len(stray) > 1 else ''} {', '.join(map(repr, stray))} "
            "is neither a part of the program nor DSPy's metadata: remove it"
        )
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
        program.load_state(_saved_shape(program, {k: v for k, v in state.items() if k != METADATA_KEY}))
    except Exception as err:
        raise BadState(f"{source} does not load into the program: {type(err).__name__}: {err}") from None
    return warnings


def _bare_predictor(program: Any) -> bool:
    """A dspy.Predict published on its own: its save() writes its entry's keys at the top, not under a name."""
    return [name for name, _ in program.named_parameters()] == ["self"]


def keyed_state(program: Any, state: dict[str, Any]) -> dict[str, Any]:
    """`state` keyed by predictor name, as every check reads it (a bare predictor's entry goes under `self`)."""
    if not _bare_predictor(program) or "self" in state:
        return state
    entry = {k: v for k, v in state.items() if k != METADATA_KEY}
    return {"self": entry, **({METADATA_KEY: state[METADATA_KEY]} if METADATA_KEY in state else {})}


def _saved_shape(program: Any, state: dict[str, Any]) -> dict[str, Any]:
    """The inverse of keyed_state: what the program's own save() writes and load_state() takes."""
    if not _bare_predictor(program) or "self" not in state:
        return state
    return {**state["self"], **({METADATA_KEY: state[METADATA_KEY]} if METADATA_KEY in state else {})}


def current_state(program: dspy.Module) -> dict[str, Any]:
    """What `program.save("x.json")` would write, as a dict."""
    from dspy.utils.saving import get_dependency_versions

    state: dict[str, Any] = program.dump_state()
    state[METADATA_KEY] = {"dependency_versions": get_dependency_versions()}
    return state


# -- prompt files ----------------------------------------------------------------------------------------------------
def prompt_file(predictor_name: str) -> str:
    return f"{PROMPTS_DIR}/{_safe(predictor_name)}.md"


def prompt_files(predictor_names: list[str]) -> dict[str, str]:
    """predictor -> its prompts/*.md, distinct for every predictor: names that sanitize to the same file name, also
    on a case-insensitive disk (`hops[0]` and `hops_0_`, `QA` and `qa`), each get a suffix from their own hash, so
    a name's file never depends on the order of the others."""
    taken: dict[str, int] = {}
    for name in predictor_names:
        key = prompt_file(name).casefold()
        taken[key] = taken.get(key, 0) + 1
    return {
        name: prompt_file(name)
        if taken[prompt_file(name).casefold()] == 1
        else f"{PROMPTS_DIR}/{_safe(name)}-{_digest(name)[:8]}.md"
        for name in predictor_names
    }


# -- the bundle ------------------------------------------------------------------------------------------------------
def build_bundle(
    source: ProgramSource,
    state: dict[str, Any],
    meta: PublishMeta,
    *,
    origin: str = "state",
    field_numbers: Callable[[bytes], bytes] | None = None,
) -> Bundle:
    """Every file of `<program>/` for this version, the manifest last (it holds the others' sha256).

    `origin` names where the state came from (a file name) in error messages.
    """
    import dspy

    texts = {"notes": meta.notes, "optimizer": meta.optimizer, "author": meta.author, **(meta.metrics or {})}
    for key, text in {**texts, **{f"lm.{k}": v for k, v in (meta.lm or {}).items()}}.items():
        if (isinstance(text, str) and invalid_text(text)) or invalid_text(key):
            raise BadState(f"{key} is not valid Unicode (a lone surrogate): pass UTF-8 text")
    warnings = apply_state(source.program, state, source=origin)
    unrendered = unrendered_demos(source.program)
    if unrendered and not meta.allow_unrendered_demos:
        raise BadState(f"{origin}: {'; '.join(unrendered)}: fix the demos, or publish with --allow-unrendered-demos")
    warnings += [f"{line} (published anyway: --allow-unrendered-demos)" for line in unrendered]
    clean_state = _saved_shape(source.program, strip_secrets(keyed_state(source.program, state))[0])
    for name, predictor in source.program.named_predictors():
        # The live LM may differ from the stored one (DSPy adds its defaults): what prompts.json would lose is said
        # once per key, beside what program.json lost.
        dropped = screen_lm_state(predictor.lm.dump_state()).dropped if predictor.lm is not None else ()
        warnings += [lm_removed_warning(key, f"the LM state of {name!r}") for key in dropped]
    warnings = list(dict.fromkeys(warnings))
    warnings += [
        f"{origin}: {finding.path} holds {finding.what}; kept, as demos are user data: "
        "make sure it is not a real credential"
        for finding in example_findings(clean_state)
    ]
    files: dict[str, bytes] = {
        PROGRAM_JSON: state_json(clean_state),
        PROMPTS_JSON: canonical_json(program_prompts(source.program)),
    }
    prompt_paths = prompt_files([name for name, _ in source.program.named_predictors()])
    for name, predictor in source.program.named_predictors():
        files[prompt_paths[name]] = render_prompt(name, predictor).encode()
    for path, data in source.code.items():
        files[f"{CODE_DIR}/{path}"] = data
    inputs = interface_inputs(source.program)
    example = example_input(source.program, inputs)
    outputs = interface_outputs(source.program, example)
    calls: list[tuple[str, dict[str, Any]]] = []
    output = example_output(source.program, example, [f["name"] for f in outputs], meta.record_with, calls)
    files[RENDERED_JSON] = canonical_json(rendered_document(source.program, [f["name"] for f in inputs], calls))
    run = calls if meta.record_with is not None else None  # the recorded run's LM calls, for [tokens]
    # Each field's JSON Schema beside its type text, so the .proto is built without importing this code again.
    files[INTERFACE_JSON] = canonical_json(record_schemas(source.program, {"inputs": inputs, "outputs": outputs}))
    if field_numbers is not None:  # the registry numbers the fields on the versions published before this one
        files[FIELD_NUMBERS_JSON] = field_numbers(files[INTERFACE_JSON])
    files[EXAMPLE_INPUT] = canonical_json(example)
    files[EXAMPLE_OUTPUT] = canonical_json(output)
    screen = screen_lm_state(dict(meta.lm) if meta.lm else _lm_settings(source.program))
    warnings += [lm_removed_warning(key, "the manifest's [lm]") for key in screen.dropped]
    lm = screen.kept
    _refuse_secrets(files, lm)
    tokens, tokens_warning = _token_figures(source.program, example, lm.get("model"), run)
    warnings += [tokens_warning] if tokens_warning else []
    saved = saved_with(state)
    warnings += [w for w in [version_warning(origin, saved, dspy.__version__)] if w]
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
        saved_with=saved,
        tokens=tokens,
        lineage=meta.lineage,
    )
    files[MANIFEST_TOML] = manifest.dumps().encode()
    return Bundle(files, manifest, tuple(warnings))


def _token_figures(
    program: Any, example: Mapping[str, Any], model: Any, run: list[Any] | None
) -> tuple[TokenFigures | None, str | None]:
    """[tokens] of the manifest, or a warning saying why there is none (publishing never fails for a count)."""
    try:
        return measure_program(program, example, model if isinstance(model, str) else None, run), None
    except Exception as err:  # a tokenizer not bundled, or an adapter that cannot render these inputs
        return None, f"prompt tokens not recorded: {type(err).__name__}: {_first_line(err)}"


def _refuse_secrets(files: Mapping[str, bytes], lm: Mapping[str, Any]) -> None:
    """Publish never writes what verify refuses: a credential-named key left outside any LM state (e.g. in a
    signature) makes the state unpublishable, named by its path and never by its value."""
    found = [(PROGRAM_JSON, f) for f in secret_findings(json.loads(files[PROGRAM_JSON]))]
    found += [(PROMPTS_JSON, f) for f in secret_findings(json.loads(files[PROMPTS_JSON]))]
    found += [(MANIFEST_TOML, f) for f in lm_findings(lm, "[lm]")]
    if found:
        file, finding = found[0]
        raise BadState(
            f"{file} would hold {finding.what} at {finding.path}: remove it from the state; "
            "credentials belong in the environment, never in the registry"
        )


def lm_config(lm: Any) -> dict[str, Any]:
    """The manifest's [lm] for a dspy.LM or a model name: model and generation settings, never a key."""
    if isinstance(lm, str):
        return {"model": lm}
    kwargs = getattr(lm, "kwargs", {}) or {}
    config = {"model": getattr(lm, "model", None), "model_type": getattr(lm, "model_type", None)}
    config |= {k: kwargs[k] for k in ("temperature", "max_tokens", "timeout") if k in kwargs}
    plain = {k: v for k, v in config.items() if v is not None and isinstance(v, (str, int, float, bool))}
    return screen_lm_state(plain).kept


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
