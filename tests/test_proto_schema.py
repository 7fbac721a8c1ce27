"""The .proto from interface.json's JSON Schemas (runtime/signature.py records them at publish): messages for
models, enums for Literals, and stable numbers across the versions published before schemas were recorded."""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from dspy_registry import proto
from dspy_registry.runtime.signature import field_schema, interface_schema


class Verdict(pydantic.BaseModel):
    """How the claim fares."""

    score: float = pydantic.Field(description="From 0 to 1.")
    label: Literal["yes", "no"]
    notes: list[str] | None = None


def _interface(verdict: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": [{"name": "claim", "type": "str", "description": "", "required": True}],
        "outputs": [{"name": "answer", "type": "str", "description": ""}, {"name": "verdict", **verdict}],
    }


def test_a_model_from_its_schema_is_a_message_in_the_models_field_order() -> None:
    sig = proto.signature("demo", _interface({"type": "Verdict", "schema": field_schema(Verdict)}))
    assert [(f.name, f.shape.key, f.required, f.type_text) for f in sig.messages["Verdict"]] == [
        ("score", "double", True, "float"),
        ("label", "enum", True, "Literal['yes', 'no']"),
        ("notes", "repeated string", False, "list[str] | None"),
    ]
    assert sig.docs["Verdict"] == "How the claim fares."
    text = proto.render("demo", [sig])
    assert "  Verdict verdict = 2;" in text and "  optional double score = 1;" in text


def test_a_pre_schema_version_keeps_the_numbers_of_its_named_types() -> None:
    """v1 was published before schemas: its `verdict` says only `Verdict` (JSON text in its own .proto). Numbered
    as v2 describes the same field, it keeps the number that the model's message has in v2."""
    old = proto.signature("demo", _interface({"type": "Verdict"}))
    assert {f.name: f.shape.key for f in old.outputs} == {"answer": "string", "verdict": "json"}
    assert "  // DSPy type: Verdict, as JSON text.\n  optional string verdict = 2;" in proto.render("demo", [old])
    new = proto.signature("demo", _interface({"type": "Verdict", "schema": field_schema(Verdict)}))
    assert proto.render("demo", [old, new]) == proto.render("demo", [new])  # nothing reserved, nothing renumbered
    other = proto.signature("demo", _interface({"type": "Other"}))  # another type: a new number, as any type change
    assert "  Verdict verdict = 3;" in proto.render("demo", [other, new])


def test_old_type_text_reads_without_code() -> None:
    assert interface_schema({"type": "Optional[int]"}) == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert interface_schema({"type": "Literal['a', 'b']"}) == {"enum": ["a", "b"], "type": "string"}
    assert interface_schema({"type": "mod.Verdict"}) == {}  # only the code knows it: any JSON
    assert interface_schema({"type": "__import__('os').system('x')"}) == {}  # parsed, never evaluated
