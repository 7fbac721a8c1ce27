"""The one reader of a program's field types: interface.json, the REST models and the .proto all read them here.

Copied verbatim into every exported bundle (beside api.py), so it imports nothing of dspy_registry; dspy and pydantic
are imported inside the functions that need them.

With the program loaded (publish, `dspyreg serve`, the exported api.py), `field_types` gives each field of
interface.json its live annotation: an input's from forward()'s signature, else from the first predictor that declares
the field (its inputs before its outputs), else from interface.json's type text; an output's from the first predictor
that declares it as an output, else from the type text when the text alone defines the type (publish typed it by the
value the program returned: ReAct's trajectory is a dict), else as for an input.

At publish, every field of interface.json records beside its `type` text a `schema`: the JSON Schema of that live
annotation (`field_schema`; pydantic models with their `$defs`, a Literal as `enum`, Optional as anyOf with null).
Without running any code (`dspyreg proto`, `dspyreg export`), `interface_schema` reads that schema back; a version
published before schemas were recorded gets one derived from its type text when the text alone defines the type
(`list[str]`, `Literal['a', 'b']`, `int | None`), else `{}`: any JSON.
"""

from __future__ import annotations

import ast
import inspect
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

SCHEMA = "schema"  # interface.json's key, beside `type`, for a field's JSON Schema
ORDER = "propertyOrder"  # beside `properties`: interface.json sorts its keys, a message keeps the model's order


@dataclass(frozen=True)
class FieldTypes:
    """The live annotation of every input and output of interface.json, by field name."""

    inputs: Mapping[str, Any]
    outputs: Mapping[str, Any]


# -- type text --------------------------------------------------------------------------------------------------------
class UnknownType(ValueError):
    """The type text names something only the program's code defines (a pydantic model, an Enum...)."""


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
    """The annotation that a type text stands for, when the text alone says it (`list[str]`, `Literal['a', 'b']`,
    `int | None`...). Parsed, never evaluated. Raises UnknownType for a name only the program knows."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise UnknownType(text) from None

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
                raise UnknownType(text) from None
        raise UnknownType(text)

    return build(node)


def _text_annotation(spec: Mapping[str, Any]) -> Any:
    try:
        return annotation_from_text(str(spec.get("type") or "Any"))
    except UnknownType:
        return None


# -- live types -------------------------------------------------------------------------------------------------------
def forward_inputs(program: Any) -> list[tuple[str, Any, bool]]:
    """(name, annotation, required) of what callers pass: forward()'s named parameters, and when it also takes
    **kwargs (dspy.Predict, ChainOfThought, ReAct, BestOfN...), the inputs of the signature it is called with."""
    forward = type(program).forward  # the class's function: DSPy warns when an instance's forward is touched
    try:
        hints = typing.get_type_hints(forward)
    except Exception:  # an annotation that does not resolve: keep its text
        hints = {}
    parameters = list(inspect.signature(forward).parameters.values())[1:]
    named = [(p.name, hints.get(p.name, p.annotation), p.default is p.empty) for p in parameters if p.kind in _NAMED]
    if named and not any(p.kind is p.VAR_KEYWORD for p in parameters):
        return named
    taken = {name for name, _, _ in named}
    return named + [field for field in _signature_inputs(program) if field[0] not in taken]


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _signature_inputs(program: Any) -> list[tuple[str, Any, bool]]:
    """The inputs a module that takes **kwargs passes on: its own `signature` (Predict, ReAct, ProgramOfThought:
    without the fields it fills itself, such as ReAct's trajectory), the module it wraps (BestOfN, Refine), else its
    first predictor's inputs less those the module fills (MultiChainComparison's reasoning attempts)."""
    import dspy

    signature = getattr(program, "signature", None)
    wrapped = getattr(program, "module", None)
    fields: Mapping[str, Any]
    if isinstance(signature, type) and issubclass(signature, dspy.Signature):
        fields = signature.input_fields  # type: ignore[attr-defined]  # a class property of SignatureMeta
    elif isinstance(wrapped, dspy.Module) and wrapped is not program:
        return forward_inputs(wrapped)
    else:
        predictors = program.predictors()
        fields = predictors[0].signature.input_fields if predictors else {}
        if isinstance(program, dspy.MultiChainComparison):
            fields = {k: v for k, v in fields.items() if not re.fullmatch(r"reasoning_attempt_\d+", k)}
    nullable = {name: type(None) in typing.get_args(info.annotation) for name, info in fields.items()}
    return [(name, info.annotation, not nullable[name]) for name, info in fields.items()]


def _usable(annotation: Any) -> bool:
    return annotation is not inspect.Parameter.empty and annotation is not None


def field_types(program: Any, interface: Mapping[str, Any]) -> FieldTypes:
    """The live annotation of every field of `interface` (interface.json), in the precedence publish typed them."""
    declared: dict[str, Any] = {}  # the first declaration of a name: a predictor's inputs before its outputs
    as_output: dict[str, Any] = {}
    for _, predictor in program.named_predictors():
        sig = predictor.signature
        for name, info in (*sig.input_fields.items(), *sig.output_fields.items()):
            declared.setdefault(name, info.annotation)
        for name, info in sig.output_fields.items():
            as_output.setdefault(name, info.annotation)
    forward: dict[str, Any] = {}
    for name, annotation, _ in forward_inputs(program):
        if isinstance(annotation, str):  # an annotation that did not resolve: what its text alone says
            annotation = _text_annotation({"type": annotation})
        if _usable(annotation):
            forward.setdefault(name, annotation)

    def pick(*candidates: Any) -> Any:
        return next((c for c in candidates if _usable(c)), Any)

    inputs = {
        spec["name"]: pick(forward.get(spec["name"]), declared.get(spec["name"]), _text_annotation(spec))
        for spec in interface.get("inputs", [])
    }
    outputs = {
        spec["name"]: pick(as_output.get(spec["name"]), _text_annotation(spec), declared.get(spec["name"]))
        for spec in interface.get("outputs", [])
    }
    return FieldTypes(inputs, outputs)


# -- JSON Schemas -----------------------------------------------------------------------------------------------------
def field_schema(annotation: Any) -> dict[str, Any] | None:
    """The JSON Schema of `annotation` as pydantic validates it, each object's property order beside it; None when
    pydantic cannot describe the type."""
    from pydantic import TypeAdapter

    try:
        schema: dict[str, Any] = TypeAdapter(annotation).json_schema()
    except Exception:  # an arbitrary class, a callable...: the type text alone describes it
        return None
    _keep_order(schema)
    return schema


def _keep_order(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    properties = schema.get("properties")
    if isinstance(properties, dict):
        schema[ORDER] = list(properties)
        for sub in properties.values():
            _keep_order(sub)
    for key in ("items", "additionalProperties", "not"):
        _keep_order(schema.get(key))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for sub in schema.get(key) or ():
            _keep_order(sub)
    for sub in (schema.get("$defs") or {}).values():
        _keep_order(sub)


def record_schemas(program: Any, interface: Mapping[str, Any]) -> dict[str, Any]:
    """`interface` with the JSON Schema of each field's live type beside its type text (what publish writes)."""
    types = field_types(program, interface)
    out: dict[str, Any] = dict(interface)
    for side, live in (("inputs", types.inputs), ("outputs", types.outputs)):
        fields = []
        for spec in interface.get(side, []):
            schema = field_schema(live[spec["name"]])
            fields.append({**spec, SCHEMA: schema} if schema is not None else dict(spec))
        out[side] = fields
    return out


def interface_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    """One field of interface.json as a JSON Schema, without running code: the schema publish recorded, else one
    derived from the type text when the text alone defines the type, else {} (any JSON)."""
    recorded = spec.get(SCHEMA)
    if isinstance(recorded, dict):
        return recorded
    annotation = _text_annotation(spec)
    return (field_schema(annotation) or {}) if annotation is not None else {}
