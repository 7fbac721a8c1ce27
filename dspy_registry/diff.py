"""Pure semantic diff of two program versions: instructions (word diff), fields, demos, lm, metadata.

Both sides are first brought to a `ProgramView`, from a bundle (prompts.json knows field names and types) or from a
bare saved state of any DSPy version (which knows only prefixes and descriptions), so one algorithm serves both.
A view never holds a secret: LM keys outside the allowlist, and credential-named keys elsewhere, keep their name with
`***` as their value, so every rendering of a diff is safe to print. Examples (demos, train, traces) are user data
and are shown as they are.

Demos keep DSPy's key order (it is the order of the prompt), so two demos that differ only in the order of a dict's
keys are different demos. Demos with the same identity are matched in order, as a multiset.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .interface_diff import InterfaceChanges, diff_interface
from .saved_state import saved_with
from .state import (
    EXAMPLE_KEYS,
    LEGACY_PREDICTOR_KEYS,
    MASK,
    METADATA_KEY,
    is_credential_name,
    is_predictor_state,
    mask_credentials,
    mask_lm_state,
)
from .tokens import TokenDelta, TokenFigures

VOLATILE_DEMO_KEYS = frozenset({"augmented", "dspy_uuid", "dspy_split"})


@dataclass(frozen=True)
class FieldView:
    name: str | None
    role: str  # "input", "output", or "field" when a bare state does not say
    type: str | None
    description: str
    prefix: str


@dataclass(frozen=True)
class PredictorView:
    instructions: str | None
    fields: tuple[FieldView, ...]
    demos: tuple[Mapping[str, Any], ...]
    lm: Any
    input_names: tuple[str, ...] | None  # demo identity; None when unknown
    other: Mapping[str, Any] = field(default_factory=dict)  # every other key of the predictor's state, masked


@dataclass(frozen=True)
class ProgramView:
    label: str
    predictors: Mapping[str, PredictorView]
    params: Mapping[str, Any]  # non-predictor entries, e.g. {"retrieve": {"k": 3}}
    metadata: Mapping[str, Any]  # flat: dev_score, optimizer, runtime.dspy, ...
    entrypoint: str | None = None  # registry sides only: the manifest's entrypoint and interface.json
    interface: Mapping[str, Any] | None = None
    tokens: TokenFigures | None = None  # registry sides published with [tokens] only


# -- building views --------------------------------------------------------------------------------------------------
def view_from_bundle(
    label: str,
    prompts: Mapping[str, Any],
    state: Mapping[str, Any],
    meta: Mapping[str, Any],
    entrypoint: str | None = None,
    interface: Mapping[str, Any] | None = None,
    tokens: TokenFigures | None = None,
) -> ProgramView:
    """A published version. Demos come from program.json when it has them: prompts.json sorts keys, and the order
    of a dict in a demo is part of the prompt (and a file side reads program.json's demos too)."""
    predictors = {}
    for name, p in prompts.items():
        entry = state.get(name)
        entry = entry if isinstance(entry, dict) else {}
        saved_demos = entry.get("demos")
        demos = saved_demos if isinstance(saved_demos, list) else p.get("demos", [])
        fields = tuple(
            FieldView(f["name"], role, f.get("type"), f.get("description", ""), f.get("prefix", ""))
            for role, key in (("input", "inputs"), ("output", "outputs"))
            for f in p.get(key, [])
        )
        predictors[name] = PredictorView(
            instructions=p.get("instructions"),
            fields=fields,
            demos=tuple(d if isinstance(d, dict) else {"value": d} for d in demos),
            lm=mask_lm_state(p.get("lm")),
            input_names=tuple(f["name"] for f in p.get("inputs", [])),
            other=_other_keys(entry, BUNDLE_PREDICTOR_KEYS),
        )
    params = {k: _masked(k, v) for k, v in state.items() if k != METADATA_KEY and k not in prompts}
    return ProgramView(label, predictors, params, meta, entrypoint, interface, tokens)


# What a view reads from a predictor's state; every other key is compared as it is. prompts.json already holds the
# signature of a published version, so legacy signature keys are read from there.
STATE_PREDICTOR_KEYS = frozenset({"demos", "signature", "lm", "signature_instructions", "signature_prefix"})
BUNDLE_PREDICTOR_KEYS = frozenset({"demos", "signature", "lm"}) | LEGACY_PREDICTOR_KEYS


def _other_keys(entry: Mapping[str, Any], read: frozenset[str]) -> dict[str, Any]:
    return {
        k: v if k in EXAMPLE_KEYS else _masked(str(k), v)  # examples are user data, shown like demos
        for k, v in entry.items()
        if k not in read
    }


def _masked(key: str, value: Any) -> Any:
    """A value fit to print under its key: all of it masked when the key is named like a credential."""
    return MASK if is_credential_name(key) else mask_credentials(value)


def view_from_state(
    label: str, state: Mapping[str, Any], typed: Mapping[str, PredictorView] | None = None
) -> ProgramView:
    """A bare saved state; `typed` (predictor -> view from the live program) supplies field names and types."""
    predictors: dict[str, PredictorView] = {}
    params: dict[str, Any] = {}
    for name, entry in state.items():
        if name == METADATA_KEY:
            continue
        if not is_predictor_state(entry):
            params[name] = _masked(name, entry)
            continue
        predictors[name] = _predictor_from_state(entry, typed.get(name) if typed else None)
    # What saved the file, named as a bundle's manifest names it ([saved_with]), so a file and a ref compare.
    metadata: dict[str, Any] = {f"saved_with.{key}": value for key, value in saved_with(state).items()}
    saved = state.get(METADATA_KEY)
    for key, value in (saved if isinstance(saved, dict) else {}).items():
        if key != "dependency_versions":  # any other key DSPy may add is compared too; a credential name is masked
            metadata[f"metadata.{key}"] = MASK if is_credential_name(str(key)) else mask_credentials(value)
    return ProgramView(label, predictors, params, metadata)


def _predictor_from_state(entry: Mapping[str, Any], live: PredictorView | None) -> PredictorView:
    raw_signature = entry.get("signature")
    signature: Mapping[str, Any] = raw_signature if isinstance(raw_signature, dict) else {}
    instructions = signature.get("instructions", entry.get("signature_instructions"))
    raw_fields = signature.get("fields") or []
    fields = []
    for i, f in enumerate(raw_fields):
        f = f if isinstance(f, dict) else {}
        known = live.fields[i] if live and i < len(live.fields) else None
        desc = str(f.get("description", ""))
        placeholder = re.fullmatch(r"\$\{(\w+)\}", desc)
        name = known.name if known else (placeholder.group(1) if placeholder else None)
        fields.append(
            FieldView(
                name=name,
                role=known.role if known else "field",
                type=known.type if known else None,
                description="" if placeholder else desc,
                prefix=str(f.get("prefix", "")),
            )
        )
    if not fields and "signature_prefix" in entry:
        fields.append(FieldView(None, "output", None, "", str(entry["signature_prefix"])))
    raw_demos = entry.get("demos")
    demos: list[Any] = raw_demos if isinstance(raw_demos, list) else []
    return PredictorView(
        instructions=instructions,
        fields=tuple(fields),
        demos=tuple(d if isinstance(d, dict) else {"value": d} for d in demos),
        lm=mask_lm_state(entry.get("lm")),
        input_names=live.input_names if live else None,
        other=_other_keys(entry, STATE_PREDICTOR_KEYS),
    )


# -- the diff --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WordOp:
    op: str  # "equal", "insert", "delete"; "skip" (unchanged words left out) only from `with_context`
    text: str


@dataclass(frozen=True)
class TextChange:
    before: str | None
    after: str | None
    words: tuple[WordOp, ...]


@dataclass(frozen=True)
class Change:
    before: Any
    after: Any


@dataclass(frozen=True)
class FieldChanges:
    added: tuple[FieldView, ...] = ()
    removed: tuple[FieldView, ...] = ()
    renamed: tuple[Change, ...] = ()  # before/after names
    changed: tuple[tuple[str, Change], ...] = ()  # (field label, before/after view)


@dataclass(frozen=True)
class DemoCounts:
    bootstrapped: int
    labeled: int


@dataclass(frozen=True)
class DemoChanges:
    added: tuple[Mapping[str, Any], ...]
    removed: tuple[Mapping[str, Any], ...]
    changed: tuple[Change, ...]
    reordered: bool
    before: DemoCounts
    after: DemoCounts
    input_names: tuple[str, ...] = ()  # the fields that identify a demo, when known


@dataclass(frozen=True)
class PredictorDiff:
    instructions: TextChange | None = None
    fields: FieldChanges | None = None
    demos: DemoChanges | None = None
    lm: Change | None = None
    other: Mapping[str, Change] = field(default_factory=dict)  # any other key of the predictor's state


@dataclass(frozen=True)
class Diff:
    a: str
    b: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: Mapping[str, PredictorDiff]
    metadata: Mapping[str, Change] = field(default_factory=dict)
    interface: InterfaceChanges | None = None  # entrypoint, inputs, outputs: between registry sides only
    tokens: TokenDelta | None = None  # prompt tokens and cost A -> B, as each version recorded them at publish

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.metadata or self.interface)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "predictors": {
                "added": list(self.added),
                "removed": list(self.removed),
                "changed": {name: _predictor_json(d) for name, d in self.changed.items()},
            },
            "metadata": {k: {"before": c.before, "after": c.after} for k, c in self.metadata.items()},
            "interface": self.interface.to_json() if self.interface else None,
            "tokens": self.tokens.to_json() if self.tokens else None,
        }


def diff_views(a: ProgramView, b: ProgramView) -> Diff:
    changed = {}
    for name in [n for n in b.predictors if n in a.predictors]:
        d = _diff_predictor(a.predictors[name], b.predictors[name])
        if d != PredictorDiff():
            changed[name] = d
    metadata = {}
    for key in sorted(set(a.metadata) | set(b.metadata)):
        before, after = a.metadata.get(key), b.metadata.get(key)
        if before != after:
            metadata[key] = Change(before, after)
    for key in sorted(set(a.params) | set(b.params)):
        before, after = a.params.get(key), b.params.get(key)
        if before != after:
            metadata[f"state.{key}"] = Change(before, after)
    return Diff(
        a=a.label,
        b=b.label,
        added=tuple(n for n in b.predictors if n not in a.predictors),
        removed=tuple(n for n in a.predictors if n not in b.predictors),
        changed=changed,
        metadata=metadata,
        interface=diff_interface(a.entrypoint, a.interface, b.entrypoint, b.interface),
        tokens=TokenDelta(a.tokens, b.tokens) if a.entrypoint or b.entrypoint else None,
    )


def _diff_predictor(a: PredictorView, b: PredictorView) -> PredictorDiff:
    instructions = None
    if a.instructions != b.instructions:
        instructions = TextChange(a.instructions, b.instructions, word_diff(a.instructions or "", b.instructions or ""))
    lm = Change(a.lm, b.lm) if a.lm != b.lm else None
    other = {
        key: Change(a.other.get(key), b.other.get(key))
        for key in [*a.other, *(k for k in b.other if k not in a.other)]
        if _ordered(a.other.get(key)) != _ordered(b.other.get(key))
    }
    return PredictorDiff(instructions, _diff_fields(a.fields, b.fields), _diff_demos(a, b), lm, other)


def word_diff(before: str, after: str) -> tuple[WordOp, ...]:
    """Word-level diff; whitespace travels with the word before it, so joining the texts rebuilds each side.

    The common head and tail are set aside before matching: a one-word change in 100 KB is then matched in
    milliseconds (difflib alone is quadratic in the repeated words of long instructions)."""
    old, new = re.findall(r"\S+\s*|\s+", before), re.findall(r"\S+\s*|\s+", after)
    old_words, new_words = [w.strip() for w in old], [w.strip() for w in new]
    head = 0
    while head < min(len(old), len(new)) and old_words[head] == new_words[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old_words[-1 - tail] == new_words[-1 - tail]:
        tail += 1
    ops: list[WordOp] = []
    if head:
        ops.append(WordOp("equal", "".join(new[:head])))
    matcher = difflib.SequenceMatcher(
        a=old_words[head : len(old) - tail], b=new_words[head : len(new) - tail], autojunk=False
    )
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        i1, i2, j1, j2 = i1 + head, i2 + head, j1 + head, j2 + head
        if tag == "equal":
            ops.append(WordOp("equal", "".join(new[j1:j2])))
            continue
        if i2 > i1:
            ops.append(WordOp("delete", "".join(old[i1:i2])))
        if j2 > j1:
            ops.append(WordOp("insert", "".join(new[j1:j2])))
    if tail:
        ops.append(WordOp("equal", "".join(new[len(new) - tail :])))
    return tuple(ops)


CONTEXT_WORDS = 12


def with_context(ops: Sequence[WordOp], context: int = CONTEXT_WORDS) -> tuple[WordOp, ...]:
    """The ops to print: an unchanged run longer than twice `context` words keeps `context` words on each side of
    a change, and the rest becomes one "skip" op saying how many words it leaves out. Paragraph breaks in a kept
    part stay, so a quoted paragraph stays a paragraph."""
    if all(op.op == "equal" for op in ops):
        return tuple(ops)
    out: list[WordOp] = []
    for i, op in enumerate(ops):
        words = re.findall(r"\S+\s*|\s+", op.text) if op.op == "equal" else []
        keep_head = context if i > 0 else 0  # words after the change before this run
        keep_tail = context if i < len(ops) - 1 else 0  # words before the change after it
        if len(words) <= keep_head + keep_tail + context:
            out.append(op)
            continue
        if keep_head:
            out.append(WordOp("equal", "".join(words[:keep_head])))
        left_out = len(words) - keep_head - keep_tail
        out.append(WordOp("skip", f"… {left_out} unchanged words …"))
        if keep_tail:
            out.append(WordOp("equal", "".join(words[len(words) - keep_tail :])))
    return tuple(out)


def value_text(value: Any) -> str:
    """A value as it reads in a prompt: text as it is, anything else as JSON in its own key order."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def value_diff(before: Any, after: Any) -> tuple[WordOp, ...]:
    """The word diff of two values, with context around the changes."""
    return with_context(word_diff(value_text(before), value_text(after)))


def _ordered(value: Any) -> str:
    """Equal only for equal values with their dicts' keys in the same order (Python's == ignores the order)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def field_desc(f: FieldView) -> str:
    """`question: str — The user question.`: a field as the diff's views name it."""
    parts = [f.name or f.prefix or "?"]
    if f.type:
        parts.append(f": {f.type}")
    if f.description:
        parts.append(f" — {f.description}")
    return "".join(parts)


def _field_label(f: FieldView, index: int) -> str:
    return f.name or f.prefix.rstrip(":") or f"#{index}"


def _diff_fields(a: Sequence[FieldView], b: Sequence[FieldView]) -> FieldChanges | None:
    if tuple(a) == tuple(b):
        return None
    named = all(f.name for f in (*a, *b))
    if not named:  # bare states: compare by position
        added = tuple(b[len(a) :])
        removed = tuple(a[len(b) :])
        changed = tuple((_field_label(y, i), Change(x, y)) for i, (x, y) in enumerate(zip(a, b)) if x != y)
        return FieldChanges(added, removed, (), changed)
    a_by, b_by = {f.name: f for f in a}, {f.name: f for f in b}
    new_fields = [f for f in b if f.name not in a_by]
    gone_fields = [f for f in a if f.name not in b_by]
    renamed = []
    for old in list(gone_fields):
        match = next(
            (n for n in new_fields if (n.role, n.type, n.description) == (old.role, old.type, old.description)), None
        )
        if match is not None:
            renamed.append(Change(old.name, match.name))
            gone_fields.remove(old)
            new_fields.remove(match)
    changed = tuple((str(f.name), Change(a_by[f.name], f)) for f in b if f.name in a_by and a_by[f.name] != f)
    return FieldChanges(tuple(new_fields), tuple(gone_fields), tuple(renamed), changed)


def _demo_identity(demo: Mapping[str, Any], input_names: tuple[str, ...] | None) -> str:
    if input_names and any(k in demo for k in input_names):
        return json.dumps([demo.get(k) for k in input_names], sort_keys=True, default=str)
    if "dspy_uuid" in demo:
        return f"uuid:{demo['dspy_uuid']}"
    return json.dumps(_demo_content(demo), sort_keys=True, default=str)


def _demo_content(demo: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in demo.items() if k not in VOLATILE_DEMO_KEYS}


def _counts(demos: Sequence[Mapping[str, Any]]) -> DemoCounts:
    boot = sum(1 for d in demos if d.get("augmented"))
    return DemoCounts(boot, len(demos) - boot)


def _diff_demos(a: PredictorView, b: PredictorView) -> DemoChanges | None:
    """Demos matched by identity as a multiset: the n-th demo of an identity on one side pairs with the n-th of the
    same identity on the other, so a duplicated demo is one added demo."""
    names = b.input_names or a.input_names
    waiting: dict[str, list[int]] = {}
    for i, demo in enumerate(a.demos):
        waiting.setdefault(_demo_identity(demo, names), []).append(i)
    pairs: list[tuple[int, int]] = []  # (index in a, index in b), in b's order
    added = []
    for j, demo in enumerate(b.demos):
        queue = waiting.get(_demo_identity(demo, names))
        if queue:
            pairs.append((queue.pop(0), j))
        else:
            added.append(demo)
    paired = {i for i, _ in pairs}
    removed = tuple(d for i, d in enumerate(a.demos) if i not in paired)
    changed = tuple(
        Change(a.demos[i], b.demos[j])
        for i, j in pairs
        if _ordered(_demo_content(a.demos[i])) != _ordered(_demo_content(b.demos[j]))
        or a.demos[i].get("augmented") != b.demos[j].get("augmented")
    )
    order = [i for i, _ in pairs]
    reordered = order != sorted(order)
    if not (added or removed or changed or reordered):
        return None
    return DemoChanges(tuple(added), removed, changed, reordered, _counts(a.demos), _counts(b.demos), names or ())


def _field_json(f: FieldView) -> dict[str, Any]:
    return {"name": f.name, "role": f.role, "type": f.type, "description": f.description, "prefix": f.prefix}


def _predictor_json(d: PredictorDiff) -> dict[str, Any]:
    out: dict[str, Any] = {"instructions": None, "fields": None, "demos": None, "lm": None}
    if d.instructions:
        out["instructions"] = {
            "before": d.instructions.before,
            "after": d.instructions.after,
            "words": [{"op": w.op, "text": w.text} for w in d.instructions.words],
        }
    if d.fields:
        out["fields"] = {
            "added": [_field_json(f) for f in d.fields.added],
            "removed": [_field_json(f) for f in d.fields.removed],
            "renamed": [{"before": c.before, "after": c.after} for c in d.fields.renamed],
            "changed": [
                {"field": label, "before": _field_json(c.before), "after": _field_json(c.after)}
                for label, c in d.fields.changed
            ],
        }
    if d.demos:
        out["demos"] = {
            "added": list(d.demos.added),
            "removed": list(d.demos.removed),
            "changed": [{"before": c.before, "after": c.after} for c in d.demos.changed],
            "reordered": d.demos.reordered,
            "counts": {
                "before": vars(d.demos.before),
                "after": vars(d.demos.after),
            },
        }
    if d.lm:
        out["lm"] = {"before": d.lm.before, "after": d.lm.after}
    out["other"] = {key: {"before": c.before, "after": c.after} for key, c in d.other.items()} or None
    return out
