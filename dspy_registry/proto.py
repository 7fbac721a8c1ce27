"""The typed gRPC interface of a program version: a .proto generated from its signature.

A version's .proto follows from interface.json (its inputs and outputs, their types and descriptions), numbered by
the interface.json of every published version of the program up to it, in semantic-version order. So field numbers
are stable: a field keeps its number while its name and wire type stay, a field added later takes the next free
number, and a field that is gone has its number and name reserved. The same holds for the values of an enum.

Types: str, int, float and bool map to string, int64, double and bool; list[X] to `repeated X`; a Literal of strings
to an enum (a Literal of ints or bools to int64 or bool; other Literals to string or JSON text); a pydantic model to
a message of its own; anything else (dict, Any, unions, nested lists...) to a string holding JSON text. Every
singular field is `optional`, so a server tells an unset field from a zero value, as REST tells a missing key from 0.
The type text of interface.json is enough for builtins; a type it only names (a pydantic model) is read from the
version's live program, imported from its bundled code only when needed.

Pure functions over interfaces, apart from `program_proto`, which reads them from the registry. No grpc here: the
server side is grpc_api.py.
"""

from __future__ import annotations

import ast
import collections.abc
import inspect
import json
import os
import re
import shutil
import tempfile
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union

if TYPE_CHECKING:
    from .registry import Registry, Resolved

Kind = Literal["string", "int64", "double", "bool", "json", "enum", "message"]  # "json": JSON text in a string
SCALARS: dict[Any, Kind] = {str: "string", int: "int64", float: "double", bool: "bool"}
# Protobuf keeps 19000-19999 for itself.
_RESERVED_BY_PROTOBUF = range(19000, 20000)
LiveTypes = tuple[Mapping[str, Any], Mapping[str, Any]]  # (inputs, outputs): field name -> live annotation


@dataclass(frozen=True)
class Shape:
    """A field's type as the .proto sees it."""

    kind: Kind
    repeated: bool = False
    message: str = ""  # kind == "message": the message's name
    values: tuple[str, ...] = ()  # kind == "enum": the Literal's strings, in declaration order

    @property
    def key(self) -> str:
        """What a field keeps its number for, beside its name: its wire type."""
        base = f"message {self.message}" if self.kind == "message" else self.kind
        return f"repeated {base}" if self.repeated else base


JSON = Shape("json")


@dataclass(frozen=True)
class FieldShape:
    name: str
    shape: Shape
    description: str = ""
    required: bool = False
    type_text: str = ""  # the Python type, as interface.json (or the model) writes it


@dataclass(frozen=True)
class Signature:
    """One version's interface in .proto terms: its inputs, its outputs, and the messages of its pydantic models."""

    inputs: tuple[FieldShape, ...]
    outputs: tuple[FieldShape, ...]
    messages: Mapping[str, tuple[FieldShape, ...]] = field(default_factory=dict)
    docs: Mapping[str, str] = field(default_factory=dict)  # message name -> the model's docstring


# -- names ------------------------------------------------------------------------------------------------------------
def camel(name: str) -> str:
    """`docs_qa` -> `DocsQa`, as the REST API names its schemas; a leading digit gets a `P` in front."""
    text = "".join(part.capitalize() for part in re.split(r"[-_]+", name) if part)
    text = re.sub(r"[^0-9A-Za-z]", "", text) or "Program"
    return f"P{text}" if text[0].isdigit() else text


def package(program: str) -> str:
    leaf = re.sub(r"[^a-z0-9_]", "_", program.lower())
    return f"dspyreg.{'p' + leaf if leaf[0].isdigit() else leaf}"


def service_name(program: str) -> str:
    """The fully qualified service name, e.g. `dspyreg.qa.Qa`."""
    return f"{package(program)}.{camel(program)}"


def file_name(program: str) -> str:
    return f"{program}.proto"


@dataclass(frozen=True)
class Names:
    """The names the .proto of `program` gives its service and its fixed messages."""

    service: str
    request: str
    response: str
    batch_request: str
    batch_response: str
    batch_result: str
    error: str

    @classmethod
    def of(cls, program: str) -> Names:
        p = camel(program)
        return cls(
            service=p,
            request=f"{p}Request",
            response=f"{p}Response",
            batch_request=f"{p}BatchRequest",
            batch_response=f"{p}BatchResponse",
            batch_result=f"{p}BatchResult",
            error=f"{p}Error",
        )

    def all(self) -> set[str]:
        return set(vars(self).values())


def _upper(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").upper()


def enum_value_name(field_name: str, value: str) -> str:
    """The .proto name of one Literal value of `field_name`: `sentiment`, "very good" -> `SENTIMENT_VERY_GOOD`."""
    return f"{_upper(field_name)}_{_upper(value)}"


# -- Python types -> shapes -------------------------------------------------------------------------------------------
class _Unresolved(Exception):
    """interface.json's type text names something only the live program knows (a pydantic model, an Enum...)."""


_TEXT_NAMES: dict[str, Any] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "bytes": bytes,
    "Any": Any,
    "None": None,
    "NoneType": type(None),
    "list": list,
    "List": list,
    "set": set,
    "Set": set,
    "tuple": tuple,
    "Tuple": tuple,
    "dict": dict,
    "Dict": dict,
    "Optional": Optional,
    "Union": Union,
    "Literal": Literal,
}


def annotation_from_text(text: str) -> Any:
    """The annotation that interface.json's type text stands for, when the text alone says it (`list[str]`,
    `Literal['a', 'b']`, `int | None`...). Raises _Unresolved for a name only the program knows."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise _Unresolved(text) from None

    def build(n: ast.expr) -> Any:
        if isinstance(n, ast.Constant):
            return n.value
        if isinstance(n, ast.Name) and n.id in _TEXT_NAMES:
            return _TEXT_NAMES[n.id]
        if isinstance(n, ast.Attribute) and n.attr in _TEXT_NAMES and n.attr[0].isupper():  # typing.Optional...
            return _TEXT_NAMES[n.attr]
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
            return Union[build(n.left), build(n.right)]  # noqa: UP007 - a union built at run time
        if isinstance(n, ast.Subscript):
            base = build(n.value)
            items = n.slice.elts if isinstance(n.slice, ast.Tuple) else [n.slice]
            args = tuple(build(item) for item in items)
            try:
                return base[args if len(args) > 1 else args[0]]
            except TypeError:
                raise _Unresolved(text) from None
        raise _Unresolved(text)

    return build(node)


def _is_model(annotation: Any) -> bool:
    """A pydantic model class (by its shape: pydantic is not imported here)."""
    return inspect.isclass(annotation) and isinstance(getattr(annotation, "model_fields", None), dict)


def _nullable(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in typing.get_args(annotation)


_LISTS = (list, set, frozenset, tuple, collections.abc.Sequence)


class _Shaper:
    """Turns live annotations into shapes, collecting the pydantic models they use as messages of their own."""

    def __init__(self, taken: set[str]) -> None:
        self.messages: dict[str, tuple[FieldShape, ...]] = {}
        self.docs: dict[str, str] = {}
        self._names: dict[Any, str] = {}
        self._taken = set(taken)

    def shape(self, annotation: Any) -> Shape:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is Annotated:
            return self.shape(args[0])
        if origin in (Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            return self.shape(rest[0]) if len(rest) == 1 else JSON
        if isinstance(annotation, type) and annotation in SCALARS:
            return Shape(SCALARS[annotation])
        if origin is Literal:
            return _literal(args)
        if origin in _LISTS:
            if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
                return JSON  # a fixed-length tuple is a record, not a list
            if not args or _nullable(args[0]):
                return JSON  # a repeated field holds no nulls
            inner = self.shape(args[0])
            return JSON if inner.repeated or inner.kind == "json" else replace(inner, repeated=True)
        if _is_model(annotation):
            return Shape("message", message=self._message(annotation))
        return JSON

    def _message(self, model: Any) -> str:
        if model in self._names:
            return self._names[model]
        base = re.sub(r"[^0-9A-Za-z_]", "_", model.__name__).strip("_") or "Model"
        base = f"M{base}" if base[0].isdigit() else base
        name, n = base, 2
        while name in self._taken:
            name, n = f"{base}{n}", n + 1
        self._taken.add(name)
        self._names[model] = name
        self.messages[name] = ()  # a model that refers to itself finds its name while its fields are read
        self.docs[name] = inspect.cleandoc(model.__doc__) if model.__doc__ else ""
        fields = []
        for field_name, info in model.model_fields.items():
            fields.append(
                FieldShape(
                    field_name,
                    self.shape(info.annotation),
                    " ".join((info.description or "").split()),
                    bool(info.is_required()),
                    _type_text(info.annotation),
                )
            )
        self.messages[name] = _settle_enums(tuple(fields))
        return name


def _literal(values: Sequence[Any]) -> Shape:
    if values and all(isinstance(v, str) for v in values):
        unique = tuple(dict.fromkeys(values))
        names = [_upper(v) for v in unique]
        if all(names) and len(set(names)) == len(names) and "UNSPECIFIED" not in names:
            return Shape("enum", values=unique)
        return Shape("string")  # values that make no enum names: the strings themselves
    if values and all(isinstance(v, bool) for v in values):
        return Shape("bool")
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return Shape("int64")
    return JSON


def _settle_enums(fields: tuple[FieldShape, ...]) -> tuple[FieldShape, ...]:
    """Enum values are named in their message's scope: a field whose value names clash with an earlier one's (say
    `a_b`="c" and `a`="b_c") carries strings instead."""
    seen: set[str] = set()
    out = []
    for f in fields:
        if f.shape.kind == "enum":
            names = {enum_value_name(f.name, v) for v in f.shape.values} | {enum_value_name(f.name, "unspecified")}
            if names & seen:
                f = replace(f, shape=replace(f.shape, kind="string", values=()))
            else:
                seen |= names
        out.append(f)
    return tuple(out)


def _type_text(annotation: Any) -> str:
    from .bundle import type_name

    return plain_type(type_name(annotation))


_QUALIFIED = re.compile(r"""('[^']*'|"[^"]*")|\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])""")


def plain_type(text: str) -> str:
    """A type's text without module names (`list[dspyreg_user_qa_1a2b.Answer]` -> `list[Answer]`): where a
    version's code was imported from is no part of its signature."""
    return _QUALIFIED.sub(lambda m: m.group(1) or "", text)


def live_types(program: Any) -> LiveTypes:
    """The live annotations behind interface.json, as bundle.py wrote them: an input's from forward()'s signature,
    else from the first predictor that declares the field; an output's from the first predictor that declares it
    as an output, else as for an input."""
    from .bundle import _forward_inputs

    declared: dict[str, Any] = {}
    for _, predictor in program.named_predictors():
        sig = predictor.signature
        for name, info in (*sig.input_fields.items(), *sig.output_fields.items()):
            declared.setdefault(name, info.annotation)
    inputs = dict(declared)
    for name, annotation, _ in _forward_inputs(program):
        if annotation is not inspect.Parameter.empty and annotation is not None and not isinstance(annotation, str):
            inputs[name] = annotation
    outputs: dict[str, Any] = {}
    for _, predictor in program.named_predictors():  # an output is typed as a predictor declares it as an output
        for name, info in predictor.signature.output_fields.items():
            outputs.setdefault(name, info.annotation)
    return inputs, {**declared, **outputs}


def signature(
    program: str, interface: Mapping[str, Any], live: Callable[[], LiveTypes | None] | None = None
) -> Signature:
    """One version's interface in .proto terms. `live` gives the program's live annotations; it is called (once)
    only when a type text names something the text alone does not define; without it, such a field is JSON text."""
    shaper = _Shaper(Names.of(program).all())
    loaded: list[LiveTypes | None] = []

    def live_annotation(side: int, name: str) -> Any:
        if live is None:
            return Any
        if not loaded:
            loaded.append(live())
        found = loaded[0]
        return Any if found is None else found[side].get(name, Any)

    def one(side: int, spec: Mapping[str, Any]) -> FieldShape:
        text = str(spec.get("type") or "Any")
        try:
            annotation = annotation_from_text(text)
        except _Unresolved:
            annotation = live_annotation(side, spec["name"])
        required = side == 0 and bool(spec.get("required", True))
        description = " ".join(str(spec.get("description") or "").split())
        return FieldShape(spec["name"], shaper.shape(annotation), description, required, plain_type(text))

    inputs = _settle_enums(tuple(one(0, f) for f in interface.get("inputs", [])))
    outputs = _settle_enums(tuple(one(1, f) for f in interface.get("outputs", [])))
    return Signature(inputs, outputs, dict(shaper.messages), dict(shaper.docs))


# -- numbering --------------------------------------------------------------------------------------------------------
class _Numbers:
    """Numbers handed out per scope (a message, or an enum), each to a key, never to another key."""

    def __init__(self) -> None:
        self.given: dict[str, dict[str, int]] = {}

    def assign(self, scope: str, key: str) -> int:
        given = self.given.setdefault(scope, {})
        if key not in given:
            n = max(given.values(), default=0) + 1
            given[key] = n if n not in _RESERVED_BY_PROTOBUF else _RESERVED_BY_PROTOBUF.stop
        return given[key]

    def unused(self, scope: str, keys: set[str]) -> dict[str, int]:
        """The keys of `scope` seen in earlier versions and not in `keys`, with their numbers."""
        return {k: n for k, n in self.given.get(scope, {}).items() if k not in keys}


def _field_key(f: FieldShape) -> str:
    return f"{f.name} {f.shape.key}"


def _scopes(names: Names, sig: Signature) -> Iterator[tuple[str, tuple[FieldShape, ...]]]:
    yield names.request, sig.inputs
    yield names.response, sig.outputs
    yield from sig.messages.items()


def _number(numbers: _Numbers, names: Names, sig: Signature) -> None:
    for scope, fields in _scopes(names, sig):
        for f in fields:
            numbers.assign(scope, _field_key(f))
            if f.shape.kind == "enum":
                for value in f.shape.values:
                    numbers.assign(f"{scope}.{f.name}", value)


# -- rendering --------------------------------------------------------------------------------------------------------
def render(program: str, history: Sequence[Signature]) -> str:
    """The .proto of the last signature of `history`, numbered by all of them (oldest first)."""
    if not history:
        raise ValueError("render needs at least the signature of the version to render")
    names = Names.of(program)
    numbers = _Numbers()
    for sig in history:
        _number(numbers, names, sig)
    sig = history[-1]
    out = [
        f"// The gRPC interface of the DSPy program `{program}`, generated by dspyreg from its signature.",
        "// Do not edit: `dspyreg proto` prints it and `dspyreg export` writes it into the bundle. Field numbers are",
        "// stable across versions: a field keeps its number while its name and type stay, a new field takes a new",
        "// number, and the numbers and names of removed fields are reserved. Every singular field is `optional`, so",
        "// an unset field differs from a zero value; a string field marked `as JSON text` holds a JSON document.",
        "// Servers (`dspyreg serve --grpc-port`) say which version answered in the `x-dspyreg-version` metadata.",
        'syntax = "proto3";',
        "",
        f"package {package(program)};",
        "",
        f"// Runs the program `{program}` on the version being served.",
        f"service {names.service} {{",
        "  // The program on one input.",
        f"  rpc Predict({names.request}) returns ({names.response});",
        "  // The program on several inputs, run in parallel on one version: one result per input, in order.",
        f"  rpc PredictBatch({names.batch_request}) returns ({names.batch_response});",
        "}",
    ]
    messages = set(sig.messages) | names.all()
    out += _message(names.request, "The program's inputs.", sig.inputs, numbers, messages)
    out += _message(names.response, "The program's outputs.", sig.outputs, numbers, messages)
    for name, fields in sig.messages.items():
        out += _message(name, sig.docs.get(name, ""), fields, numbers, messages)
    out += [
        "",
        f"message {names.batch_request} {{",
        f"  repeated {names.request} inputs = 1;",
        "}",
        "",
        f"message {names.batch_response} {{",
        "  // One per input, in the order of the inputs.",
        f"  repeated {names.batch_result} results = 1;",
        "}",
        "",
        "// One input's outcome: its outputs, or why it failed (the other inputs are not affected).",
        f"message {names.batch_result} {{",
        "  oneof outcome {",
        f"    {names.response} response = 1;",
        f"    {names.error} error = 2;",
        "  }",
        "}",
        "",
        f"message {names.error} {{",
        "  // The name of the gRPC status code a single call would have failed with, e.g. UNAVAILABLE.",
        "  string code = 1;",
        "  string message = 2;",
        "}",
    ]
    return "\n".join(out) + "\n"


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}// {line}".rstrip() for line in text.splitlines() if line.strip()]


def _message(name: str, doc: str, fields: tuple[FieldShape, ...], numbers: _Numbers, messages: set[str]) -> list[str]:
    out = ["", *_comment(doc, ""), f"message {name} {{"]
    taken = messages | {f.name for f in fields}
    enum_types: dict[str, str] = {}
    for f in fields:
        if f.shape.kind != "enum":
            continue
        candidates = (camel(f.name), *(f"{camel(f.name)}Enum{i or ''}" for i in range(len(taken) + 1)))
        enum_name = next(c for c in candidates if c not in taken)
        taken.add(enum_name)
        enum_types[f.name] = enum_name
        scope = f"{name}.{f.name}"
        out += [
            f"  // The values of `{f.name}`.",
            f"  enum {enum_name} {{",
            f"    {enum_value_name(f.name, 'unspecified')} = 0;",
        ]
        for value in f.shape.values:
            out.append(
                f"    {enum_value_name(f.name, value)} = {numbers.assign(scope, value)};  // {json.dumps(value)}"
            )
        current = {enum_value_name(f.name, v) for v in f.shape.values}
        gone = numbers.unused(scope, set(f.shape.values))
        out += _reserved(sorted(gone.values()), sorted({enum_value_name(f.name, v) for v in gone} - current), "    ")
        out.append("  }")
    for f in fields:
        about = f.description + ("\n" if f.description else "")
        about += f"DSPy type: {f.type_text or f.shape.kind}"
        about += ", required" if f.required else ""
        about += ", as JSON text" if f.shape.kind == "json" else ""
        out += _comment(about + ".", "  ")
        number = numbers.assign(name, _field_key(f))
        out.append(f"  {_label(f.shape)}{_type(f.shape, enum_types.get(f.name, ''))} {f.name} = {number};")
    gone = numbers.unused(name, {_field_key(f) for f in fields})
    current_names = {f.name for f in fields}
    out += _reserved(sorted(gone.values()), sorted({k.split(" ", 1)[0] for k in gone} - current_names), "  ")
    out.append("}")
    return out


def _label(shape: Shape) -> str:
    if shape.repeated:
        return "repeated "
    return "" if shape.kind == "message" else "optional "


def _type(shape: Shape, enum_type: str) -> str:
    if shape.kind == "message":
        return shape.message
    if shape.kind == "enum":
        return enum_type
    return "string" if shape.kind == "json" else shape.kind


def _reserved(numbers: list[int], names: list[str], indent: str) -> list[str]:
    out = []
    if numbers:
        out.append(f"{indent}reserved {', '.join(map(str, numbers))};")
    if names:
        out.append(f"{indent}reserved {', '.join(json.dumps(n) for n in names)};")
    return out


# -- from the registry ------------------------------------------------------------------------------------------------
def program_proto(reg: Registry, resolved: Resolved) -> str:
    """The .proto of `resolved`: its signature, numbered by the interfaces of every published version up to it."""
    from .refs import version_key

    program, target = resolved.program, version_key(resolved.version)
    history = [(v.version, v.commit) for v in reg.versions(program) if version_key(v.version) < target]
    history.append((resolved.version, resolved.commit))
    signatures = []
    for _, commit in history:
        raw = reg.store.read_blob(commit, f"{program}/interface.json")
        interface = json.loads(raw) if raw else {"inputs": [], "outputs": []}
        signatures.append(signature(program, interface, partial(_registry_live_types, reg, program, commit)))
    return render(program, signatures)


def _registry_live_types(reg: Registry, program: str, commit: str) -> LiveTypes | None:
    """The live annotations of the program at `commit`, from its bundled code (written once into the cache);
    None when it does not import: its named types then travel as JSON text."""
    from .errors import UnsafeTree
    from .export import write_inside
    from .manifest import Manifest
    from .registry import cache_dir
    from .runtime.inference import import_entrypoint

    manifest = reg.store.read_blob(commit, f"{program}/manifest.toml")
    if manifest is None:
        return None
    entrypoint = Manifest.loads(manifest).program.entrypoint
    folder = cache_dir() / "code" / commit / program
    if not folder.is_dir():
        try:  # every path checked before the first write; a forged tree gives no live types
            code = reg.store.list_bundle(commit, f"{program}/code/", where=f"{program} at {commit[:12]}")
        except UnsafeTree:
            return None
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{program}.tmp-"))
        try:
            write_inside(tmp, {entry.path: reg.store.blob(entry.sha) for entry in code})
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process wrote it first
    try:
        return live_types(import_entrypoint(folder, entrypoint, commit))
    except Exception:
        return None
