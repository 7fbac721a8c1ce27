"""What each predictor of a live program sends the LM: prompts.json (signature, instructions, typed fields, demos,
lm per predictor) and the messages of prompts/<predictor>.md, as DSPy's ChatAdapter renders them.

dspy is imported inside the functions that need it.
"""

from __future__ import annotations

import re
import typing
from typing import TYPE_CHECKING, Any

from .state import screen_lm_state

if TYPE_CHECKING:
    import dspy


def type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return re.sub(r"\b(typing|builtins|collections\.abc)\.", "", repr(annotation))


def field_view(name: str, info: Any) -> dict[str, Any]:
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
            "inputs": [field_view(n, f) for n, f in sig.input_fields.items()],
            "outputs": [field_view(n, f) for n, f in sig.output_fields.items()],
            "demos": [plain_dict(d) for d in predictor.demos],
            "lm": screen_lm_state(predictor.lm.dump_state()).kept if predictor.lm is not None else None,
        }
    return prompts


def plain_dict(demo: Any) -> dict[str, Any]:
    from dspy.adapters.utils import serialize_for_json

    items = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
    return {k: serialize_for_json(v) for k, v in items.items()}


def rendered_demos(predictor: Any) -> list[Any]:
    """The demos DSPy's adapters put in the prompt: those with every field, or with at least one input and one
    output field (the rule of dspy.adapters.base.Adapter.format_demos); the others are silently dropped."""
    sig = predictor.signature
    return [
        demo
        for demo in predictor.demos
        if all(k in demo and demo[k] is not None for k in sig.fields)
        or (any(k in demo for k in sig.input_fields) and any(k in demo for k in sig.output_fields))
    ]


_DEMO_BOOKKEEPING = frozenset({"augmented", "dspy_uuid", "dspy_split"})


def unrendered_demos(program: Any) -> list[str]:
    """One line per predictor whose demos DSPy would drop, naming the demo keys and the signature's fields."""
    problems = []
    for name, predictor in program.named_predictors():
        kept = rendered_demos(predictor)
        if len(kept) == len(predictor.demos):
            continue
        sig = predictor.signature
        dropped = [d for d in predictor.demos if not any(d is k for k in kept)]
        keys = sorted({str(k) for d in dropped for k in plain_dict(d)} - set(sig.fields) - _DEMO_BOOKKEEPING)
        problems.append(
            f"predictor {name!r}: {len(dropped)} of {len(predictor.demos)} demos would not be rendered by DSPy: "
            f"their keys ({', '.join(keys) or 'none'}) do not match the signature's fields ({', '.join(sig.fields)})"
        )
    return problems


def render_prompt(name: str, predictor: Any) -> str:
    """The exact messages DSPy's ChatAdapter sends for `predictor`, with `{field}` placeholders for the inputs."""
    import dspy

    sig = predictor.signature
    placeholders = {field: f"{{{field}}}" for field in sig.input_fields}
    messages = dspy.ChatAdapter().format(sig, [dspy.Example(**plain_dict(d)) for d in predictor.demos], placeholders)
    lines = [
        f"# {name}",
        "",
        f"`{sig.signature}` — rendered by dspy.ChatAdapter with {len(rendered_demos(predictor))} demos; "
        "`{field}` marks where each call's inputs go.",
    ]
    for i, message in enumerate(messages, 1):
        content = message["content"] if isinstance(message["content"], str) else str(message["content"])
        fence = "`" * max(3, _longest_backtick_run(content) + 1)
        lines += ["", f"## {i}. {message['role']}", "", f"{fence}text", content, fence]
    return "\n".join(lines) + "\n"


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)
