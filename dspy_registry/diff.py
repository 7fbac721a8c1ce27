"""Pure semantic diff of two program versions: instructions (word diff), fields, demos, lm, metadata.

Both sides are first brought to a `ProgramView`, from a bundle (prompts.json knows field names and types) or from a
bare saved state of any DSPy version (which knows only prefixes and descriptions), so one algorithm serves both.
A view never holds a secret: LM keys outside the allowlist, and credential-named keys elsewhere, keep their name with
`***` as their value, so every rendering of a diff is safe to print.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .saved_state import saved_with
from .state import METADATA_KEY, is_predictor_state, mask_credentials, mask_lm_state

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


@dataclass(frozen=True)
class ProgramView:
    label: str
    predictors: Mapping[str, PredictorView]
    params: Mapping[str, Any]  # non-predictor entries, e.g. {"retrieve": {"k": 3}}
    metadata: Mapping[str, Any]  # flat: dev_score, optimizer, runtime.dspy, ...


# -- building views --------------------------------------------------------------------------------------------------
def view_from_bundle(
    label: str, prompts: Mapping[str, Any], state: Mapping[str, Any], meta: Mapping[str, Any]
) -> ProgramView:
    predictors = {}
    for name, p in prompts.items():
        fields = tuple(
            FieldView(f["name"], role, f.get("type"), f.get("description", ""), f.get("prefix", ""))
            for role, key in (("input", "inputs"), ("output", "outputs"))
            for f in p.get(key, [])
        )
        predictors[name] = PredictorView(
            instructions=p.get("instructions"),
            fields=fields,
            demos=tuple(p.get("demos", [])),
            lm=mask_lm_state(p.get("lm")),
            input_names=tuple(f["name"] for f in p.get("inputs", [])),
        )
    params = {k: mask_credentials(v) for k, v in state.items() if k != METADATA_KEY and k not in prompts}
    return ProgramView(label, predictors, params, meta)


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
            params[name] = mask_credentials(entry)
            continue
        predictors[name] = _predictor_from_state(entry, typed.get(name) if typed else None)
    # What saved the file, named as a bundle's manifest names it ([saved_with]), so a file and a ref compare.
    metadata = {f"saved_with.{key}": value for key, value in saved_with(state).items()}
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
    )


# -- the diff --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WordOp:
    op: str  # "equal", "insert", "delete"
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


@dataclass(frozen=True)
class Diff:
    a: str
    b: str
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: Mapping[str, PredictorDiff]
    metadata: Mapping[str, Change] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.metadata)

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
    )


def _diff_predictor(a: PredictorView, b: PredictorView) -> PredictorDiff:
    instructions = None
    if a.instructions != b.instructions:
        instructions = TextChange(a.instructions, b.instructions, word_diff(a.instructions or "", b.instructions or ""))
    lm = Change(a.lm, b.lm) if a.lm != b.lm else None
    return PredictorDiff(instructions, _diff_fields(a.fields, b.fields), _diff_demos(a, b), lm)


def word_diff(before: str, after: str) -> tuple[WordOp, ...]:
    """Word-level diff; whitespace travels with the word before it, so joining the texts rebuilds each side."""
    old, new = re.findall(r"\S+\s*|\s+", before), re.findall(r"\S+\s*|\s+", after)
    ops: list[WordOp] = []
    matcher = difflib.SequenceMatcher(a=[w.strip() for w in old], b=[w.strip() for w in new], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            ops.append(WordOp("equal", "".join(new[j1:j2])))
            continue
        if i2 > i1:
            ops.append(WordOp("delete", "".join(old[i1:i2])))
        if j2 > j1:
            ops.append(WordOp("insert", "".join(new[j1:j2])))
    return tuple(ops)


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
    names = b.input_names or a.input_names
    a_ids = [_demo_identity(d, names) for d in a.demos]
    b_ids = [_demo_identity(d, names) for d in b.demos]
    a_by, b_by = dict(zip(a_ids, a.demos)), dict(zip(b_ids, b.demos))
    added = tuple(d for i, d in zip(b_ids, b.demos) if i not in a_by)
    removed = tuple(d for i, d in zip(a_ids, a.demos) if i not in b_by)
    changed = tuple(
        Change(a_by[i], d)
        for i, d in zip(b_ids, b.demos)
        if i in a_by and (_demo_content(a_by[i]) != _demo_content(d) or a_by[i].get("augmented") != d.get("augmented"))
    )
    common_a = [i for i in a_ids if i in b_by]
    common_b = [i for i in b_ids if i in a_by]
    reordered = common_a != common_b
    if not (added or removed or changed or reordered):
        return None
    return DemoChanges(added, removed, changed, reordered, _counts(a.demos), _counts(b.demos), names or ())


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
    return out
