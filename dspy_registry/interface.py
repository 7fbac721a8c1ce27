"""A live program's interface and example: interface.json (its inputs from forward()'s parameters, its outputs
found by one offline probe run with a DummyLM) and examples/input.json and examples/output.json.

dspy is imported inside the functions that need it; the probe never reaches an LM provider.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from typing import Any

from .prompts import field_view, plain_dict, type_name
from .runtime.signature import forward_inputs as _forward_inputs


def _known_fields(program: Any) -> dict[str, dict[str, Any]]:
    """Every field name any predictor declares -> its view (the first declaration wins: inputs before outputs)."""
    known: dict[str, dict[str, Any]] = {}
    for _, predictor in program.named_predictors():
        sig = predictor.signature
        for name, info in (*sig.input_fields.items(), *sig.output_fields.items()):
            known.setdefault(name, field_view(name, info))
    return known


def _interface_field(known: Mapping[str, dict[str, Any]], name: str, annotation: Any, required: bool) -> dict[str, Any]:
    field = dict(known.get(name) or {"name": name, "type": "Any", "description": ""})
    field.pop("prefix", None)
    if annotation is not inspect.Parameter.empty and annotation is not None:
        field["type"] = annotation if isinstance(annotation, str) else type_name(annotation)
    return {**field, "required": required}


def interface_inputs(program: Any) -> list[dict[str, Any]]:
    """The program's inputs: forward()'s parameters, typed and described by the predictor fields of the same name."""
    known = _known_fields(program)
    return [_interface_field(known, n, annotation, required) for n, annotation, required in _forward_inputs(program)]


def interface_outputs(program: Any, example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What the program returns, found by running it once offline on `example` with a DummyLM that answers every
    field with a value of its type; when that fails, the output fields of its last predictor. A field is typed as a
    predictor declares it as an output, else by the value the program returned (ReAct's trajectory is a dict)."""
    known = _known_fields(program)
    declared, inputs = _declared_types(program)
    returned = _probe_outputs(program, example)
    if returned is None:
        predictors = program.predictors()
        returned = dict.fromkeys(predictors[-1].signature.output_fields) if predictors else {}
    outputs = []
    for name, value in returned.items():
        annotation: Any = inspect.Parameter.empty  # the type `known` has for it
        if name in declared:
            annotation = declared[name]
        elif value is not None and not (name in inputs and _fits(inputs[name], value)):
            annotation = type(value)
        outputs.append(_interface_field(known, name, annotation, True))
    return outputs


def _declared_types(program: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(output fields, input fields) that any predictor declares -> annotation; the first declaration wins."""
    outputs: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    for _, predictor in program.named_predictors():
        for name, info in predictor.signature.output_fields.items():
            outputs.setdefault(name, info.annotation)
        for name, info in predictor.signature.input_fields.items():
            inputs.setdefault(name, info.annotation)
    return outputs, inputs


def _fits(annotation: Any, value: Any) -> bool:
    """Is `value` of type `annotation`, as pydantic checks it without coercion?"""
    from pydantic import TypeAdapter

    try:
        TypeAdapter(annotation).validate_python(value, strict=True)
    except Exception:
        return False
    return True


def _probe_outputs(program: Any, example: Mapping[str, Any]) -> dict[str, Any] | None:
    import dspy
    from dspy.utils import DummyLM

    answer = {
        name: _probe_answer(name, info.annotation)
        for _, predictor in program.named_predictors()
        for name, info in predictor.signature.output_fields.items()
    }
    probe = program.deepcopy()
    for _, predictor in probe.named_predictors():
        predictor.lm = None  # a predictor's own LM wins over the context: the probe must never reach a provider
    try:
        with dspy.context(lm=DummyLM([answer] * 200), track_usage=False):
            prediction = probe(**example)
    except Exception:
        return None
    return dict(prediction.items()) if isinstance(prediction, dspy.Prediction) else None


def _probe_answer(name: str, annotation: Any) -> str:
    """The probe's answer for one output field: a value of its type, as ChatAdapter parses it."""
    from pydantic import TypeAdapter

    from .fake_lm import answer_text

    text = type_name(annotation)
    if annotation in (str, int, float, bool) or typing.get_origin(annotation) is typing.Literal:
        return answer_text(name, text)
    try:
        schema = TypeAdapter(annotation).json_schema()
    except Exception:  # a type pydantic cannot describe: the fake LM's guess from its name
        return answer_text(name, text)
    return answer_text(name, text, schema)


def example_input(program: Any, inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """examples/input.json: the inputs of the first demo that has them all, else a sample value per input."""
    names = [f["name"] for f in inputs]
    required = [f["name"] for f in inputs if f["required"]]
    for _, predictor in program.named_predictors():
        for demo in map(plain_dict, predictor.demos):
            if all(k in demo for k in required):
                return {k: demo[k] for k in names if k in demo}
    return {f["name"]: _sample(f["type"]) for f in inputs if f["required"]}


def example_output(
    program: Any,
    example: Mapping[str, Any],
    outputs: list[str],
    record_with: Any,
    calls: list[tuple[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """examples/output.json: recorded by running the program when an LM is given; else taken (and labelled so)
    from the demo that shares the example's inputs and holds most of the outputs. A recorded run appends to `calls`
    each LM call's (predictor name, inputs), from dspy's trace (rendered.json renders later predictors with them)."""
    import dspy

    if record_with is not None:
        copy = program.deepcopy()
        with dspy.context(lm=record_with, trace=[]):
            prediction = copy(**example)
            trace = list(dspy.settings.trace or [])
        if calls is not None:
            names = {id(p): n for n, p in copy.named_predictors()}
            calls += [(names[id(p)], dict(inputs)) for p, inputs, _ in trace if id(p) in names]
        model = getattr(record_with, "model", type(record_with).__name__)
        recorded = plain_dict({k: prediction.get(k) for k in outputs})
        return {"source": f"recorded at publish with {model}", "output": recorded}
    candidates = [
        (name, demo)
        for name, predictor in program.named_predictors()
        for demo in map(plain_dict, predictor.demos)
        if all(demo.get(k, v) == v for k, v in example.items()) and any(k in demo for k in outputs)
    ]
    if not candidates:
        return {"source": "no LM at publish and no demo for this input: nothing recorded", "output": {}}
    name, demo = max(candidates, key=lambda c: sum(k in c[1] for k in outputs))
    return {
        "source": f"taken from a demo of predictor {name}, not a recorded run",
        "output": {k: demo[k] for k in outputs if k in demo},
    }


def _sample(type_text: str) -> Any:
    return {"int": 1, "float": 0.5, "bool": True}.get(type_text, [] if type_text.startswith("list") else "example")
