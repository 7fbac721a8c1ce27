"""rendered.json and `dspyreg diff --rendered`: the exact chat messages each predictor's adapter sends, rendered for
an input under two versions and diffed message by message.

At publish (`rendered_document`, dspy imported inside) each predictor's messages are rendered once by the
program's adapter (dspy.settings.adapter, else ChatAdapter; ChatAdapter and JSONAdapter are supported) with a unique
sentinel string as every input value: a str value renders verbatim whatever the field's annotation, so the result is
a template. Beside it: whether each input field is annotated `str` (the one thing DSPy's format_field_value reads of
a field), the program's inputs, and, when publish recorded a run, each predictor's first call's inputs as DSPy
formatted them (so later predictors of a multi-step program render with the intermediate values of that run).

At diff time (`rendered_diff`) the template is filled: each sentinel replaced with DSPy's own format_field_value of
the value (the only dspy import, done for exactness; no LM, no network), a program input absent from the input has
its `[[ ## name ## ]]` section removed as the adapter omits it, and a field that has no value at all is shown as a
`{name}` placeholder and the predictor is reported as rendered from demos only. A registry is input written by
others: rendered.json is validated by type and size (`parse_rendered`), and no version's code is imported.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from .diff import WordOp, with_context, word_diff
from .errors import RegistryError

RENDERED_JSON = "rendered.json"
SCHEMA = 1
SUPPORTED_ADAPTERS = ("ChatAdapter", "JSONAdapter")
ROLES = ("system", "user", "assistant")
MAX_BYTES = 16 * 1024 * 1024  # a bound on what a diff reads from an untrusted registry
MAX_ITEMS = 10_000  # predictors, messages per predictor, fields per predictor


class BadRendered(RegistryError):
    """rendered.json of a version does not have the shape dspyreg writes."""


class BadInput(RegistryError):
    """The input given to `diff --rendered` is not a JSON object."""


@dataclass(frozen=True)
class InputSlot:
    name: str
    is_str: bool  # annotated `str`: a list value renders as a numbered list, as DSPy does
    sentinel: str


@dataclass(frozen=True)
class Template:
    messages: tuple[tuple[str, str], ...]  # (role, content), the last one the request holding every sentinel
    inputs: tuple[InputSlot, ...]


@dataclass(frozen=True)
class RenderedDoc:
    adapter: str
    predictors: Mapping[str, Template]
    program_inputs: tuple[str, ...]
    recorded: Mapping[str, Mapping[str, str]]  # predictor -> field -> text as DSPy formatted it in the recorded run
    unsupported: str | None = None


@dataclass(frozen=True)
class RenderedPredictor:
    messages: tuple[tuple[str, str], ...]
    source: str  # "input", "recorded run" or "demos only"
    placeholders: tuple[str, ...]  # fields rendered as `{name}`: no value in the input nor the recorded run


@dataclass(frozen=True)
class MessageChange:
    op: str  # "changed", "added" or "removed"
    index_a: int | None  # 1-based position in A's messages
    index_b: int | None
    role: str
    words: tuple[WordOp, ...]  # the word diff, with context (for "added"/"removed": the whole message)


@dataclass(frozen=True)
class SideRendering:
    label: str
    adapter: str | None
    missing: str | None  # why this side could not be rendered (published before rendered.json, ...)
    predictors: Mapping[str, RenderedPredictor]

    @property
    def demos_only(self) -> list[str]:
        return [name for name, p in self.predictors.items() if p.source == "demos only"]


@dataclass(frozen=True)
class RenderedDiff:
    a: SideRendering
    b: SideRendering
    input_source: str
    changes: Mapping[str, tuple[MessageChange, ...]]  # predictor -> changes; absent when equal
    added: tuple[str, ...]
    removed: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        def side(s: SideRendering) -> dict[str, Any]:
            return {
                "label": s.label,
                "adapter": s.adapter,
                "missing": s.missing,
                "demos_only": s.demos_only,
                "predictors": {
                    name: {
                        "source": p.source,
                        "placeholders": list(p.placeholders),
                        "messages": [{"role": r, "content": c} for r, c in p.messages],
                    }
                    for name, p in s.predictors.items()
                },
            }

        return {
            "a": side(self.a),
            "b": side(self.b),
            "input": self.input_source,
            "predictors": {
                "added": list(self.added),
                "removed": list(self.removed),
                "changed": {
                    name: [
                        {
                            "op": c.op,
                            "index_a": c.index_a,
                            "index_b": c.index_b,
                            "role": c.role,
                            "words": [{"op": w.op, "text": w.text} for w in c.words],
                        }
                        for c in changes
                    ]
                    for name, changes in self.changes.items()
                },
            },
        }


# -- publish: the document -------------------------------------------------------------------------------------------
def rendered_document(
    program: Any, program_inputs: Sequence[str], calls: Sequence[tuple[str, Mapping[str, Any]]] = ()
) -> dict[str, Any]:
    """rendered.json for a live program; `calls` are (predictor name, inputs) of a recorded run, in call order."""
    import dspy
    from dspy.adapters.utils import format_field_value

    adapter = dspy.settings.adapter or dspy.ChatAdapter()
    name = type(adapter).__name__
    doc: dict[str, Any] = {"schema": SCHEMA, "adapter": name, "program_inputs": list(program_inputs)}
    if name not in SUPPORTED_ADAPTERS:
        return {**doc, "unsupported": f"{name} is not supported (only {', '.join(SUPPORTED_ADAPTERS)})"}
    # Derived from what is rendered, so the same program publishes the same bytes; a hash cannot occur in its text.
    seen = [(n, p.signature.signature, p.signature.instructions, p.demos) for n, p in program.named_predictors()]
    nonce = hashlib.sha256(json.dumps(seen, default=str).encode()).hexdigest()[:16]
    predictors: dict[str, Any] = {}
    unrenderable: list[str] = []
    for pname, predictor in program.named_predictors():
        sig = predictor.signature
        sentinels = {f: f"\u27e6dspyreg:{nonce}:{f}\u27e7" for f in sig.input_fields}
        try:
            messages = adapter.format(sig, list(predictor.demos), dict(sentinels))
        except Exception as err:  # e.g. a dspy.History field, which a sentinel cannot stand for
            unrenderable.append(f"{pname}: {type(err).__name__}")
            continue
        if not _is_template(messages, sentinels.values()):
            unrenderable.append(f"{pname}: its messages are not plain text holding each input once")
            continue
        predictors[pname] = {
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "inputs": [
                {"name": f, "str": info.annotation is str, "sentinel": sentinels[f]}
                for f, info in sig.input_fields.items()
            ],
        }
    recorded: dict[str, dict[str, str]] = {}
    named = dict(program.named_predictors())
    for pname, inputs in calls:
        if pname in recorded or pname not in named:
            continue  # the first call of each predictor (ReAct calls its step once per iteration)
        fields = named[pname].signature.input_fields
        recorded[pname] = {f: format_field_value(fields[f], v) for f, v in inputs.items() if f in fields}
    doc |= {"predictors": predictors, "recorded": recorded}
    if unrenderable:
        doc["unrenderable"] = unrenderable
    return doc


def _is_template(messages: Sequence[Mapping[str, Any]], sentinels: Any) -> bool:
    if not all(isinstance(m.get("content"), str) for m in messages) or not messages:
        return False
    last = messages[-1]["content"]
    others = "".join(m["content"] for m in messages[:-1])
    return all(last.count(s) == 1 and s not in others for s in sentinels)


# -- diff: reading, checked ------------------------------------------------------------------------------------------
def parse_rendered(data: bytes, where: str) -> RenderedDoc:
    """rendered.json read from a registry, checked by type and size; BadRendered says what is wrong."""
    if len(data) > MAX_BYTES:
        raise BadRendered(f"{where} is larger than {MAX_BYTES} bytes")
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRendered(f"{where} is not valid JSON") from None
    if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
        raise BadRendered(f"{where} is not a schema {SCHEMA} object")
    adapter = _str(raw.get("adapter"), f"{where}: adapter")
    unsupported = raw.get("unsupported")
    if unsupported is not None:
        return RenderedDoc(adapter, {}, (), {}, _str(unsupported, f"{where}: unsupported"))
    program_inputs = tuple(_str(x, f"{where}: program_inputs") for x in _list(raw.get("program_inputs"), where))
    predictors = {
        _str(name, f"{where}: predictor name"): _template(entry, f"{where}: {name}")
        for name, entry in _dict(raw.get("predictors"), f"{where}: predictors").items()
    }
    recorded = {
        _str(name, f"{where}: recorded"): {
            _str(f, f"{where}: recorded {name}"): _str(v, f"{where}: recorded {name}.{f}")
            for f, v in _dict(values, f"{where}: recorded {name}").items()
        }
        for name, values in _dict(raw.get("recorded", {}), f"{where}: recorded").items()
    }
    return RenderedDoc(adapter, predictors, program_inputs, recorded)


def _template(entry: Any, where: str) -> Template:
    entry = _dict(entry, where)
    messages = []
    for m in _list(entry.get("messages"), f"{where}: messages"):
        m = _dict(m, f"{where}: message")
        role = _str(m.get("role"), f"{where}: role")
        if role not in ROLES:
            raise BadRendered(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        messages.append((role, _str(m.get("content"), f"{where}: content")))
    inputs = []
    for f in _list(entry.get("inputs"), f"{where}: inputs"):
        f = _dict(f, f"{where}: input")
        is_str = f.get("str")
        if not isinstance(is_str, bool):
            raise BadRendered(f"{where}: input str must be true or false")
        inputs.append(InputSlot(_str(f.get("name"), f"{where}: input name"), is_str, _str(f.get("sentinel"), where)))
    if not messages:
        raise BadRendered(f"{where}: no messages")
    if not _is_template([{"content": c} for _, c in messages], [s.sentinel for s in inputs]) or any(
        not s.sentinel for s in inputs
    ):
        raise BadRendered(f"{where}: each input's sentinel must appear once, in the last message")
    return Template(tuple(messages), tuple(inputs))


def _dict(value: Any, where: str) -> dict[Any, Any]:
    if not isinstance(value, dict) or len(value) > MAX_ITEMS:
        raise BadRendered(f"{where} must be an object of at most {MAX_ITEMS} entries")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise BadRendered(f"{where} must be a list of at most {MAX_ITEMS} items")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise BadRendered(f"{where} must be a string")
    return value


def rendered_problem(data: bytes | None) -> str | None:
    """Why a bundle's rendered.json is unsound (verify's static check); None when sound or absent."""
    if data is None:
        return None
    try:
        parse_rendered(data, RENDERED_JSON)
    except BadRendered as err:
        return str(err)
    return None


def parse_input(text: str, where: str) -> dict[str, Any]:
    """The input of `diff --rendered --input/--input-json`: a JSON object."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise BadInput(f"{where} is not valid JSON ({err}): pass a JSON object of input values") from None
    if not isinstance(value, dict):
        raise BadInput(f"{where} must be a JSON object of input values, not {type(value).__name__}")
    return value


# -- diff: rendering and comparing ------------------------------------------------------------------------------------
def render_predictor(
    template: Template, values: Mapping[str, Any], recorded: Mapping[str, str] | None, program_inputs: Sequence[str]
) -> RenderedPredictor:
    """The messages of one predictor for `values` (or, when given, the recorded run's formatted inputs)."""
    from dspy.adapters.utils import format_field_value

    *head, (role, last) = template.messages
    placeholders: list[str] = []
    for slot in template.inputs:
        if recorded is not None and slot.name in recorded:
            text = recorded[slot.name]
        elif slot.name in values:
            info = SimpleNamespace(annotation=str if slot.is_str else object)  # all format_field_value reads
            text = str(format_field_value(info, values[slot.name]))
        elif slot.name in program_inputs:
            last = _omit_section(last, slot)
            continue
        else:
            text = f"{{{slot.name}}}"
            placeholders.append(slot.name)
        last = last.replace(slot.sentinel, text, 1)
    source = "demos only" if placeholders else "recorded run" if recorded is not None else "input"
    return RenderedPredictor((*head, (role, last)), source, tuple(placeholders))


def _omit_section(content: str, slot: InputSlot) -> str:
    """The request without `slot`'s section, as ChatAdapter.format_user_message_content leaves out a field that is not
    in the inputs: its parts are joined by a blank line and the whole stripped."""
    section = f"[[ ## {slot.name} ## ]]\n{slot.sentinel}"
    if content.startswith(section + "\n\n"):
        return content[len(section) + 2 :]
    if "\n\n" + section in content:
        return content.replace("\n\n" + section, "", 1)
    return content.replace(section, "", 1).strip()


def render_side(label: str, doc: RenderedDoc, values: Mapping[str, Any], use_recorded: bool) -> SideRendering:
    predictors = {
        name: render_predictor(t, values, doc.recorded.get(name) if use_recorded else None, doc.program_inputs)
        for name, t in doc.predictors.items()
    }
    return SideRendering(label, doc.adapter, None, predictors)


def missing_side(label: str, why: str) -> SideRendering:
    return SideRendering(label, None, why, {})


def diff_messages(a: Sequence[tuple[str, str]], b: Sequence[tuple[str, str]]) -> tuple[MessageChange, ...]:
    """Message-by-message: equal messages matched as a sequence (a demo added shifts none of the others), the rest
    paired in order within each replaced run and word-diffed."""
    changes: list[MessageChange] = []
    matcher = difflib.SequenceMatcher(a=list(a), b=list(b), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            ia, ib = i1 + k, j1 + k
            if ia < i2 and ib < j2:
                words = with_context(word_diff(a[ia][1], b[ib][1]))
                role = a[ia][0] if a[ia][0] == b[ib][0] else f"{a[ia][0]} -> {b[ib][0]}"
                changes.append(MessageChange("changed", ia + 1, ib + 1, role, words))
            elif ia < i2:
                changes.append(MessageChange("removed", ia + 1, None, a[ia][0], (WordOp("delete", a[ia][1]),)))
            else:
                changes.append(MessageChange("added", None, ib + 1, b[ib][0], (WordOp("insert", b[ib][1]),)))
    return tuple(changes)


def rendered_diff(a: SideRendering, b: SideRendering, input_source: str) -> RenderedDiff:
    names = [*a.predictors, *(n for n in b.predictors if n not in a.predictors)]
    changes = {}
    for name in names:
        if name in a.predictors and name in b.predictors:
            found = diff_messages(a.predictors[name].messages, b.predictors[name].messages)
            if found:
                changes[name] = found
    both = not a.missing and not b.missing
    added = tuple(n for n in b.predictors if n not in a.predictors) if both else ()
    removed = tuple(n for n in a.predictors if n not in b.predictors) if both else ()
    return RenderedDiff(a, b, input_source, changes, added, removed)
