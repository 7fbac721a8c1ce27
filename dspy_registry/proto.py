"""The typed gRPC interface of a program version: a .proto generated from its signature.

A version's .proto follows from interface.json (its inputs and outputs, their types and descriptions) and a table of
field numbers (`number`): the numbers handed out over the interface.json of the published versions of the program up
to it, in semantic-version order. So field numbers are stable: a field keeps its number while its name and wire type
stay, a field added later takes the next free number, and a field that is gone has its number and name reserved. The
same holds for the values of an enum. The table is fixed when a version is published (field_numbers.py stores it);
`render` numbers a whole history, `render_numbered` renders with a table as given.

Types come from the JSON Schema that publish recorded for each field in interface.json (runtime/signature.py):
string, integer, number and boolean map to string, int64, double and bool; an array to `repeated X`; an enum of
strings (a Literal) to an enum (of ints or bools to int64 or bool; other enums to string or JSON text); an object with
properties (a pydantic model) to a message of its own; anything else (dict, Any, unions, nested lists...) to a string
holding JSON text. Every singular field is `optional`, so a server tells an unset field from a zero value, as REST
tells a missing key from 0. A version published before schemas were recorded has only its type text: builtins,
Literals and lists of them are read from it, and a type it only names (a pydantic model) travels as JSON text. No
version's code is ever imported here: `dspyreg proto` and `dspyreg export` run no registry code.

Pure functions over interfaces and tables: the registry reads them from git and hands them in (field_numbers.py). No
grpc here: the server side is grpc_api.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .runtime.signature import ORDER, SCHEMA, UnknownType, annotation_from_text, interface_schema

Kind = Literal["string", "int64", "double", "bool", "json", "enum", "message"]  # "json": JSON text in a string
# Protobuf keeps 19000-19999 for itself.
RESERVED_BY_PROTOBUF = range(19000, 20000)


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
    type_text: str = ""  # the Python type, as interface.json writes it (or, in a message, as its schema says)
    named: bool = False  # no schema, and the type text names a type only the code defines: JSON text for now


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


# -- JSON Schemas -> shapes -------------------------------------------------------------------------------------------
_SCALAR_TYPES: dict[str, Kind] = {"string": "string", "integer": "int64", "number": "double", "boolean": "bool"}


def _is_null(schema: Any) -> bool:
    return isinstance(schema, Mapping) and (schema.get("type") == "null" or schema.get("const", 0) is None)


class _Shaper:
    """Turns the JSON Schemas of interface.json into shapes, collecting objects with properties (pydantic models)
    as messages of their own. Each field's schema carries its own `$defs`."""

    def __init__(self, taken: set[str]) -> None:
        self.messages: dict[str, tuple[FieldShape, ...]] = {}
        self.docs: dict[str, str] = {}
        self._names: dict[str, str] = {}  # a definition (as JSON) -> its message's name
        self._taken = set(taken)

    def field(self, name: str, schema: Mapping[str, Any], description: str, required: bool, text: str) -> FieldShape:
        defs = schema.get("$defs")
        shape = self.shape(schema, defs if isinstance(defs, Mapping) else {})
        return FieldShape(name, shape, description, required, text)

    def shape(self, schema: Any, defs: Mapping[str, Any], depth: int = 0) -> Shape:
        schema, title = _resolve(schema, defs)
        if depth > 64:  # a schema nested deeper than any signature: a forged one
            return JSON
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                rest = [s for s in schema[key] if not _is_null(s)]
                return self.shape(rest[0], defs, depth + 1) if len(rest) == 1 else JSON
        if isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
            return self.shape(schema["allOf"][0], defs, depth + 1)
        if isinstance(schema.get("enum"), list):
            return _literal(schema["enum"])
        if "const" in schema:
            return _literal([schema["const"]])
        kind = schema.get("type")
        if isinstance(kind, list):
            rest = [k for k in kind if k != "null"]
            kind = rest[0] if len(rest) == 1 else None
        if isinstance(kind, str) and kind in _SCALAR_TYPES:
            return Shape(_SCALAR_TYPES[kind])
        if kind == "array":
            items = schema.get("items")
            if "prefixItems" in schema or not isinstance(items, Mapping) or _nullable(items, defs):
                return JSON  # a fixed-length tuple is a record, and a repeated field holds no nulls
            inner = self.shape(items, defs, depth + 1)
            return JSON if inner.repeated or inner.kind == "json" else replace(inner, repeated=True)
        if kind == "object" and isinstance(schema.get("properties"), Mapping):
            return Shape("message", message=self._message(schema, title, defs, depth))
        return JSON

    def _message(self, schema: Mapping[str, Any], title: str, defs: Mapping[str, Any], depth: int) -> str:
        identity = json.dumps([title, schema], sort_keys=True, default=str)
        if identity in self._names:
            return self._names[identity]
        base = re.sub(r"[^0-9A-Za-z_]", "_", title or str(schema.get("title") or "")).strip("_") or "Model"
        base = f"M{base}" if base[0].isdigit() else base
        name, n = base, 2
        while name in self._taken:
            name, n = f"{base}{n}", n + 1
        self._taken.add(name)
        self._names[identity] = name
        self.messages[name] = ()  # a model that refers to itself finds its name while its fields are read
        self.docs[name] = str(schema.get("description") or "").strip()
        properties: Mapping[str, Any] = schema["properties"]
        listed = schema.get("required")
        required = set(map(str, listed)) if isinstance(listed, list) else set()
        order = [p for p in schema.get(ORDER) or () if p in properties]
        order += sorted(p for p in properties if p not in order)
        fields = []
        for field_name in order:
            prop = properties[field_name] if isinstance(properties[field_name], Mapping) else {}
            fields.append(
                FieldShape(
                    field_name,
                    self.shape(prop, defs, depth + 1),
                    " ".join(str(prop.get("description") or "").split()),
                    field_name in required,
                    schema_text(prop, defs),
                )
            )
        self.messages[name] = _settle_enums(tuple(fields))
        return name


def _resolve(schema: Any, defs: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """A schema with its `$ref`s to `$defs` followed: (the definition, the name it is defined under, else "")."""
    title = ""
    seen: set[str] = set()
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and schema["$ref"] not in seen:
        ref = schema["$ref"]
        seen.add(ref)
        title = ref.rsplit("/", 1)[-1]
        schema = defs.get(title) if ref.startswith("#/$defs/") else None
    return (schema if isinstance(schema, Mapping) else {}), title


def _nullable(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> bool:
    resolved, _ = _resolve(schema, defs)
    return _is_null(resolved) or any(_is_null(s) for s in resolved.get("anyOf") or ())


def schema_text(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> str:
    """A JSON Schema as a Python type's text, for the comments of the .proto (`list[Item]`, `Literal['s', 'm']`)."""
    resolved, title = _resolve(schema, defs)
    if depth > 16:
        return "Any"
    if title:
        return plain_type(title)
    if isinstance(resolved.get("anyOf"), list):
        return " | ".join(schema_text(s, defs, depth + 1) for s in resolved["anyOf"])
    if isinstance(resolved.get("allOf"), list) and len(resolved["allOf"]) == 1:
        return schema_text(resolved["allOf"][0], defs, depth + 1)
    if isinstance(resolved.get("enum"), list) or "const" in resolved:
        values = resolved["enum"] if isinstance(resolved.get("enum"), list) else [resolved["const"]]
        return f"Literal[{', '.join(repr(v) for v in values)}]"
    kind = resolved.get("type")
    if kind == "array":
        return f"list[{schema_text(resolved.get('items', {}), defs, depth + 1)}]"
    if kind == "object":
        if isinstance(resolved.get("properties"), Mapping):
            return plain_type(str(resolved.get("title") or "dict"))
        extra = resolved.get("additionalProperties")
        return f"dict[str, {schema_text(extra, defs, depth + 1)}]" if isinstance(extra, Mapping) else "dict"
    names = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "null": "None"}
    return names.get(str(kind), "Any")


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


_QUALIFIED = re.compile(r"""('[^']*'|"[^"]*")|\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])""")


def plain_type(text: str) -> str:
    """A type's text without module names (`list[dspyreg_user_qa_1a2b.Answer]` -> `list[Answer]`): where a
    version's code was imported from is no part of its signature."""
    return _QUALIFIED.sub(lambda m: m.group(1) or "", text)


def signature(program: str, interface: Mapping[str, Any]) -> Signature:
    """One version's interface in .proto terms, from interface.json alone: each field's JSON Schema as publish
    recorded it, else what its type text alone says (runtime/signature.py); never the program's code."""
    shaper = _Shaper(Names.of(program).all())

    def one(side: int, spec: Mapping[str, Any]) -> FieldShape:
        text = str(spec.get("type") or "Any")
        required = side == 0 and bool(spec.get("required", True))
        description = " ".join(str(spec.get("description") or "").split())
        found = shaper.field(spec["name"], interface_schema(spec), description, required, plain_type(text))
        return replace(found, named=not isinstance(spec.get(SCHEMA), dict) and _names_a_type(text))

    def fields(side: str) -> list[Mapping[str, Any]]:  # interface.json is read from git: skip what is no field
        found = interface.get(side)
        items = found if isinstance(found, list) else []
        return [f for f in items if isinstance(f, Mapping) and isinstance(f.get("name"), str)]

    inputs = _settle_enums(tuple(one(0, f) for f in fields("inputs")))
    outputs = _settle_enums(tuple(one(1, f) for f in fields("outputs")))
    return Signature(inputs, outputs, dict(shaper.messages), dict(shaper.docs))


def _names_a_type(text: str) -> bool:
    try:
        annotation_from_text(text)
    except UnknownType:
        return True
    return False


def adopt_later_types(history: Sequence[Signature]) -> list[Signature]:
    """`history` (oldest first) as it numbers fields: a field of an earlier version that has no schema and whose type
    text only names its type (published before schemas were recorded) is numbered as the same field of the next
    version, when that one has the same type text and a schema. So a pydantic-typed field keeps the numbers that
    dspyreg gave it when it read the type from the program. The last signature, the one rendered, stays as it is."""
    out = list(history)
    for i in range(len(out) - 2, -1, -1):
        earlier, later = out[i], out[i + 1]

        def adopt(fields: tuple[FieldShape, ...], later_fields: tuple[FieldShape, ...]) -> tuple[FieldShape, ...]:
            by_name = {f.name: f for f in later_fields}
            adopted = []
            for f in fields:
                g = by_name.get(f.name)
                if f.named and g is not None and not g.named and g.type_text == f.type_text:
                    f = replace(f, shape=g.shape, named=False)
                adopted.append(f)
            return tuple(adopted)

        inputs, outputs = adopt(earlier.inputs, later.inputs), adopt(earlier.outputs, later.outputs)
        if (inputs, outputs) != (earlier.inputs, earlier.outputs):
            messages = {**later.messages, **earlier.messages}
            out[i] = Signature(inputs, outputs, messages, {**later.docs, **earlier.docs})
    return [*out[:-1], *history[-1:]]


# -- numbering --------------------------------------------------------------------------------------------------------
Table = dict[str, dict[str, int]]  # scope (a message, or `<message>.<enum field>`) -> key -> number


class _Numbers:
    """Numbers handed out per scope (a message, or an enum), each to a key, never to another key."""

    def __init__(self, given: Mapping[str, Mapping[str, int]] | None = None) -> None:
        self.given: Table = {scope: dict(keys) for scope, keys in (given or {}).items()}

    def assign(self, scope: str, key: str) -> int:
        given = self.given.setdefault(scope, {})
        if key not in given:
            n = max(given.values(), default=0) + 1
            given[key] = n if n not in RESERVED_BY_PROTOBUF else RESERVED_BY_PROTOBUF.stop
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


def numbered_keys(program: str, sig: Signature) -> Iterator[tuple[str, str]]:
    """(scope, key) of every number the .proto of `sig` shows, in the order numbering hands them out."""
    for scope, fields in _scopes(Names.of(program), sig):
        for f in fields:
            yield scope, _field_key(f)
            if f.shape.kind == "enum":
                for value in f.shape.values:
                    yield f"{scope}.{f.name}", value


def number(program: str, history: Sequence[Signature], given: Mapping[str, Mapping[str, int]] | None = None) -> Table:
    """The numbers of `history` (oldest first, see adopt_later_types) handed out on top of `given` (a copy of it is
    extended; without it, from 1 in every scope): what the .proto of the last signature is rendered with."""
    numbers = _Numbers(given)
    for sig in adopt_later_types(history):
        for scope, key in numbered_keys(program, sig):
            numbers.assign(scope, key)
    return numbers.given


# -- rendering --------------------------------------------------------------------------------------------------------
def render(program: str, history: Sequence[Signature]) -> str:
    """The .proto of the last signature of `history`, numbered by all of them (oldest first)."""
    if not history:
        raise ValueError("render needs at least the signature of the version to render")
    return render_numbered(program, history[-1], number(program, history))


def render_numbered(program: str, sig: Signature, table: Mapping[str, Mapping[str, int]]) -> str:
    """The .proto of `sig` with the numbers of `table` (see `number`), which holds every key numbered_keys yields
    for `sig`; its other keys are reserved."""
    names = Names.of(program)
    numbers = _Numbers(table)
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


# -- a program's history ---------------------------------------------------------------------------------------------
def program_proto(program: str, interfaces: Sequence[bytes | None]) -> str:
    """The .proto of the last of `interfaces`, the raw interface.json of each published version of `program` up to
    it in semantic-version order: the earlier ones number its fields."""
    return render(program, history_signatures(program, interfaces))


def history_signatures(
    program: str, interfaces: Sequence[bytes | None], known: Mapping[bytes | None, Signature] | None = None
) -> list[Signature]:
    """The signatures that number the last of `interfaces` (raw interface.json, oldest first; None for a version
    without one): each distinct interface parsed once (not at all when `known` holds its signature already), and a
    run of equal ones kept as one."""
    # A run of equal interfaces numbers as one of them does (numbering is idempotent), and an interface reads to the
    # same signature every time: ten thousand versions with a few interface changes cost a few parses.
    kept = [raw for i, raw in enumerate(interfaces) if i == len(interfaces) - 1 or raw != interfaces[i + 1]]
    parsed: dict[bytes | None, Signature] = dict(known or {})
    signatures = []
    for raw in kept:
        if raw not in parsed:
            parsed[raw] = signature(program, read_interface(raw))
        signatures.append(parsed[raw])
    return signatures


def read_interface(raw: bytes | None) -> dict[str, Any]:
    """A raw interface.json as a dict; one that is missing or unreadable (a version from before it, or a commit made
    by hand) reads as {}, which numbers nothing."""
    try:
        interface = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        return {}
    return interface if isinstance(interface, dict) else {}
