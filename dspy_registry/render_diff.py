"""The diff for people: as rich text for the terminal (`diff_view`) and as markdown for pull-request comments
(`diff_markdown`). What changed is computed by diff.py; this module only shows it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .diff import (
    VOLATILE_DEMO_KEYS,
    Change,
    DemoChanges,
    Diff,
    FieldChanges,
    PredictorDiff,
    WordOp,
    field_desc,
    value_diff,
    value_text,
    with_context,
)
from .interface_diff import InterfaceChanges
from .lineage import describe
from .render import add_row, shorten
from .tokens import NOT_RECORDED, TOKENIZERS_DIFFER, TokenDelta, cost_text, delta_lines, signed

if TYPE_CHECKING:  # only `diff --rendered` builds these: a plain diff does not import rendered.py
    from .rendered import MessageChange, RenderedDiff


# -- diff as rich text -------------------------------------------------------------------------------------------------
def _words(ops: Sequence[WordOp], plain: bool) -> Text:
    """Colored word diff; with no colors, git's word-diff markers [-removed-]{+added+} carry the meaning."""
    text = Text()
    for op in ops:
        body = op.text.rstrip()
        tail = op.text[len(body) :]
        if op.op == "insert":
            text.append(f"{{+{body}+}}" if plain else body, style="bold green")
        elif op.op == "delete":
            text.append(f"[-{body}-]" if plain else body, style="red strike")
        elif op.op == "skip":
            text.append(body, style="dim italic")
            tail = " "
        else:
            text.append(body)
        text.append(tail)
    return text


def _demo_line(demo: Mapping[str, Any], limit: int = 100, inputs: Sequence[str] = ()) -> str:
    """`question="..." -> answer="..."`: the identifying inputs first, volatile bookkeeping keys left out."""
    shown = {k: v for k, v in demo.items() if k not in ("augmented", "dspy_uuid", "dspy_split")}

    def fmt(keys: Sequence[str]) -> str:
        return ", ".join(f"{k}={shorten(json.dumps(shown[k], ensure_ascii=False), 48)}" for k in keys)

    first = [k for k in inputs if k in shown]
    rest = [k for k in shown if k not in first]
    line = f"{fmt(first)} -> {fmt(rest)}" if first and rest else fmt(first or rest)
    return shorten(line, limit)


def _fields_table(changes: FieldChanges) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(width=2)
    table.add_column(overflow="fold")
    for f in changes.added:
        add_row(table, Text("+", style="green"), Text(f"{f.role} {field_desc(f)}", style="green"))
    for f in changes.removed:
        add_row(table, Text("-", style="red"), Text(f"{f.role} {field_desc(f)}", style="red"))
    for c in changes.renamed:
        add_row(table, Text("~", style="yellow"), f"renamed {c.before} -> {c.after}")
    for label, c in changes.changed:
        add_row(table, Text("~", style="yellow"), f"{label}: {field_change(c)}")
    return table


FIELD_ATTRIBUTES = ("name", "role", "type", "description", "prefix")


def field_change(c: Change) -> str:
    """What changed in a field, attribute by attribute: `prefix "N Words:" -> "Number of words:"`."""
    return "; ".join(
        f"{attr} {json.dumps(getattr(c.before, attr), ensure_ascii=False)} -> "
        f"{json.dumps(getattr(c.after, attr), ensure_ascii=False)}"
        for attr in FIELD_ATTRIBUTES
        if getattr(c.before, attr) != getattr(c.after, attr)
    )


SHORT_VALUE = 160  # values up to this long print whole on both sides; longer ones as a word diff with context


def demo_field_changes(c: Change) -> list[tuple[str, Change | tuple[WordOp, ...]]]:
    """The keys of a changed demo whose values differ (in the order of the new demo), each as a before/after pair
    when both are short, else as a word diff with context."""
    before, after = c.before, c.after
    keys = [*after, *(k for k in before if k not in after)]
    out: list[tuple[str, Change | tuple[WordOp, ...]]] = []
    for key in keys:
        if key in VOLATILE_DEMO_KEYS and key != "augmented":
            continue
        old, new = before.get(key), after.get(key)
        if value_text(old) == value_text(new) and (key in before) == (key in after):
            continue
        if max(len(value_text(old)), len(value_text(new))) <= SHORT_VALUE:
            out.append((key, Change(old, new)))
        else:
            out.append((key, value_diff(old, new)))
    return out


def _plain_value(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _demos_table(d: DemoChanges, plain: bool) -> Group:
    counts = Text(
        f"{d.before.bootstrapped + d.before.labeled} -> {d.after.bootstrapped + d.after.labeled} demos "
        f"(bootstrapped {d.before.bootstrapped} -> {d.after.bootstrapped}, "
        f"labeled {d.before.labeled} -> {d.after.labeled})" + ("; order changed" if d.reordered else ""),
        style="dim",
    )
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(width=2)
    table.add_column(overflow="fold")
    names = d.input_names
    for demo in d.removed:
        add_row(table, Text("-", style="red"), Text(_demo_line(demo, 240, names), style="red"))
    for demo in d.added:
        add_row(table, Text("+", style="green"), Text(_demo_line(demo, 240, names), style="green"))
    for c in d.changed:
        lines = Text(_demo_line({k: c.after[k] for k in names if k in c.after} or c.after, 240, names))
        for key, change in demo_field_changes(c):
            lines.append(f"\n  {key}: ")
            lines.append_text(_value_change(change, plain))
        add_row(table, Text("~", style="yellow"), lines)
    return Group(counts, table)


def _value_change(change: Change | tuple[WordOp, ...], plain: bool) -> Text:
    if isinstance(change, Change):
        return Text.assemble((_plain_value(change.before), "red"), " => ", (_plain_value(change.after), "green"))
    return _words(change, plain)


def _interface_lines(c: InterfaceChanges) -> Group:
    lines: list[Text] = []
    if c.entrypoint:
        lines.append(Text(f"~ entrypoint {c.entrypoint[0]} -> {c.entrypoint[1]}", style="yellow"))
    for role, changes in (("input", c.inputs), ("output", c.outputs)):
        lines += [Text(f"+ {role} {_iface_field(f)}", style="green") for f in changes.added]
        lines += [Text(f"- {role} {_iface_field(f)}", style="red") for f in changes.removed]
        lines += [Text(f"~ {role} {r.name}: type {r.before} -> {r.after}", style="yellow") for r in changes.retyped]
        lines += [Text(f"! {role} {f['name']} is now required", style="yellow") for f in changes.newly_required]
    if c.breaking:
        lines.append(
            Text(
                "breaks callers (" + "; ".join(c.breaking_changes) + "): publish it as a new major version",
                style="bold red",
            )
        )
    return Group(*lines)


def _iface_field(f: Mapping[str, Any]) -> str:
    optional = "" if f.get("required", True) is not False else ", optional"
    return f"{f.get('name')}: {f.get('type', 'Any')}{optional}"


def _predictor_panel(name: str, d: PredictorDiff, plain: bool) -> Panel:
    parts: list[Any] = []
    if d.instructions:
        parts += [Text("instructions", style="bold"), _words(with_context(d.instructions.words), plain), Text()]
    if d.fields:
        parts += [Text("fields", style="bold"), _fields_table(d.fields), Text()]
    if d.demos:
        parts += [Text("demos", style="bold"), _demos_table(d.demos, plain), Text()]
    if d.lm:
        parts += [Text("lm", style="bold"), Text(f"{json.dumps(d.lm.before)} -> {json.dumps(d.lm.after)}"), Text()]
    for key, c in d.other.items():
        change: Change | tuple[WordOp, ...] = c
        if max(len(_plain_value(c.before)), len(_plain_value(c.after))) > SHORT_VALUE:
            change = value_diff(c.before, c.after)
        parts += [Text.assemble((key, "bold"), " (predictor state)"), _value_change(change, plain), Text()]
    return Panel(Group(*parts), title=Text(name, style="bold cyan"), title_align="left", border_style="dim")


def diff_view(diff: Diff, *, plain: bool = False) -> Group:
    parts: list[Any] = [Text.assemble(("diff ", "bold"), (diff.a, "red"), " -> ", (diff.b, "green"))]
    if diff.is_empty:
        parts.append(Text("No differences.", style="dim"))
        return Group(*parts)
    for name in diff.added:
        parts.append(Text(f"+ predictor {name}", style="green"))
    for name in diff.removed:
        parts.append(Text(f"- predictor {name}", style="red"))
    if diff.interface:
        parts.append(
            Panel(_interface_lines(diff.interface), title=Text("interface", style="bold cyan"), title_align="left")
        )
    for name, d in diff.changed.items():
        parts.append(_predictor_panel(name, d, plain))
    if diff.tokens:
        title = Text("prompt tokens", style="bold cyan")
        lines = Text("\n".join(delta_lines(diff.tokens)))
        parts.append(Panel(lines, title=title, title_align="left", border_style="dim"))
    if diff.metadata:
        table = Table(box=None, header_style="bold", pad_edge=False, title="metadata", title_justify="left")
        for column in ("key", "before", "after"):
            table.add_column(column, overflow="fold")
        for key, c in diff.metadata.items():
            before, after = _meta_value(key, c.before), _meta_value(key, c.after)
            add_row(table, key, Text(before, style="red"), Text(after, style="green"))
        parts.append(table)
    return Group(*parts)


def _value(value: Any) -> str:
    return "-" if value is None else value if isinstance(value, str) else json.dumps(value)


def _meta_value(key: str, value: Any) -> str:
    """A metadata value; a dataset or code of [lineage] as `240 examples (sha256 3c4d5e6f7a8b)`, `def456 (dirty)`."""
    return describe(key, value) or _value(value)


# -- diff as markdown (pull-request comments) -------------------------------------------------------------------------
def _md_Text(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


_MD_INLINE = re.compile(r"([\\`*_\[\]<>|~&])")
_MD_LINE_START = re.compile(r"^(?:([#+=-])|(\d+)([.)]))")
_MD_WRAP = {"insert": "**", "delete": "~~", "skip": "*"}


def md_escape(text: str) -> str:
    """Text that CommonMark shows as it is: inline markup characters escaped (the instructions' own `*`, `_` and
    backticks are text, not emphasis or code)."""
    return _MD_INLINE.sub(r"\\\1", text)


def md_code(text: str) -> str:
    """An inline code span holding `text` exactly: its fence is longer than any run of backticks inside it."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def _md_line_start(line: str) -> str:
    """A line that would open a heading, list or setext underline starts with an escaped character instead."""
    return _MD_LINE_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", line, count=1)


def _md_words(ops: Sequence[WordOp]) -> list[str]:
    """The word diff as lines: each line of the text one line, struck or bold word runs closed on the line they
    open (emphasis never spans a paragraph break), blank lines kept as paragraph breaks."""
    lines: list[str] = [""]
    for op in ops:
        for k, piece in enumerate(op.text.split("\n")):
            if k:
                lines.append("")
            core = piece.strip()
            if not core:
                lines[-1] += piece
                continue
            lead, trail = piece[: len(piece) - len(piece.lstrip())], piece[len(piece.rstrip()) :]
            mark = _MD_WRAP.get(op.op, "")
            if mark and not lead and lines[-1].endswith(("~~", "**", "*")):
                lead = " "  # `~~old~~**new**` (no space between them) would not close and open where meant
            lines[-1] += f"{lead}{mark}{md_escape(core)}{mark}{trail}"
    return [_md_line_start(line.strip()) for line in lines]


def _md_quote(ops: Sequence[WordOp]) -> list[str]:
    """A block quote of the word diff: every line and every paragraph quoted."""
    return [f"> {line}" if line else ">" for line in _md_words(ops)]


def _md_cell(text: str) -> str:
    return md_escape(" ".join(text.split()))


def diff_markdown(diff: Diff) -> str:
    lines = [f"### dspyreg diff `{diff.a}` → `{diff.b}`", ""]
    if diff.is_empty:
        return "\n".join([*lines, "No differences.", ""])
    for name in diff.added:
        lines.append(f"- ➕ predictor `{name}` added")
    for name in diff.removed:
        lines.append(f"- ➖ predictor `{name}` removed")
    if diff.added or diff.removed:
        lines.append("")
    if diff.interface:
        lines += _md_interface(diff.interface)
    for name, d in diff.changed.items():
        lines += [f"#### `{name}`", ""]
        if d.instructions:
            lines += ["**Instructions** (~~removed~~, **added**):", "", *_md_quote(with_context(d.instructions.words))]
            lines.append("")
        if d.fields:
            lines += _md_fields(d.fields)
        if d.demos:
            lines += _md_demos(d.demos)
        if d.lm:
            lines += [f"**LM**: `{json.dumps(d.lm.before)}` → `{json.dumps(d.lm.after)}`", ""]
        for key, c in d.other.items():
            lines += [f"**{md_code(key)}** (predictor state):", "", _md_change(c), ""]
    if diff.tokens:
        lines += _md_tokens(diff.tokens)
    if diff.metadata:
        lines += ["#### Metadata", "", "| key | before | after |", "| --- | --- | --- |"]
        lines += [
            f"| {k} | {_md_Text(_meta_value(k, c.before))} | {_md_Text(_meta_value(k, c.after))} |"
            for k, c in diff.metadata.items()
        ]
        lines.append("")
    return "\n".join(lines)


def _md_tokens(d: TokenDelta) -> list[str]:
    """Prompt tokens per predictor and per whole call, A -> B, and the cost per 1,000 calls, as a table."""

    def num(value: int | None) -> str:
        return NOT_RECORDED if value is None else f"{value:,}"

    def delta(x: int | None, y: int | None) -> str:
        return signed(y - x) if x is not None and y is not None else ""

    lines = ["#### Prompt tokens", "", "| | A | B | delta |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {md_code(name)} | {num(x)} | {num(y)} | {delta(x, y)} |" for name, x, y in d.predictor_rows()]
    a, b = (d.a.total if d.a else None), (d.b.total if d.b else None)
    lines.append(f"| **whole call** | {num(a)} | {num(b)} | {delta(a, b)} |")
    cost_delta = d.to_json()["cost_per_1k_calls_delta"]
    cost_a = cost_text(d.a.cost_per_1k_calls) if d.a else NOT_RECORDED
    cost_b = cost_text(d.b.cost_per_1k_calls) if d.b else NOT_RECORDED
    lines.append(f"| cost per 1,000 calls | {cost_a} | {cost_b} | {signed(cost_delta) if cost_delta else ''} |")
    lines.append("")
    for label, f in (("A", d.a), ("B", d.b)):
        if f is not None:
            lines.append(f"- {label}: {md_escape(f'{f.tokenizer}; {f.basis}; {f.price_source}')}")
    if d.a and d.b and d.a.tokenizer != d.b.tokenizer:
        lines.append(f"- {TOKENIZERS_DIFFER}")
    return [*lines, ""]


def _md_fields(f: FieldChanges) -> list[str]:
    lines = ["**Fields**:", ""]
    lines += [f"- ➕ {f_.role} `{_md_Text(field_desc(f_))}`" for f_ in f.added]
    lines += [f"- ➖ {f_.role} `{_md_Text(field_desc(f_))}`" for f_ in f.removed]
    lines += [f"- renamed `{c.before}` → `{c.after}`" for c in f.renamed]
    lines += [
        f"- `{label}`: {md_escape(field_desc(c.before))} → {md_escape(field_desc(c.after))} "
        f"({md_escape(field_change(c))})"
        for label, c in f.changed
    ]
    return [*lines, ""]


def _md_demos(d: DemoChanges) -> list[str]:
    total_b = d.before.bootstrapped + d.before.labeled
    total_a = d.after.bootstrapped + d.after.labeled
    lines = [
        f"**Demos**: {total_b} → {total_a} (bootstrapped {d.before.bootstrapped} → {d.after.bootstrapped}, "
        f"labeled {d.before.labeled} → {d.after.labeled}){'; order changed' if d.reordered else ''}",
        "",
    ]
    if d.added or d.removed or d.changed:
        lines += ["| | demo |", "| --- | --- |"]
        names = d.input_names
        lines += [f"| ➖ | {_md_Text(_demo_line(x, 200, names))} |" for x in d.removed]
        lines += [f"| ➕ | {_md_Text(_demo_line(x, 200, names))} |" for x in d.added]
        for c in d.changed:
            identity = _demo_line({k: c.after[k] for k in names if k in c.after} or c.after, 200, names)
            parts = [_md_cell(identity)]
            for key, change in demo_field_changes(c):
                parts.append(f"{md_code(key)}: {_md_change(change)}")
            lines.append(f"| ✏️ | {'<br>'.join(parts)} |")
        lines.append("")
    return lines


def _md_change(change: Change | tuple[WordOp, ...]) -> str:
    """One line: a short value before ⇒ after (struck and bold), or the word diff of a long one."""
    if isinstance(change, Change):
        old, new = _md_cell(_plain_value(change.before)), _md_cell(_plain_value(change.after))
        return f"~~{old}~~ ⇒ **{new}**" if old.strip() and new.strip() else f"{old} ⇒ {new}"
    return " ".join(line for line in _md_words(change) if line)


def _md_interface(c: InterfaceChanges) -> list[str]:
    lines = ["#### Interface", ""]
    if c.entrypoint:
        lines.append(f"- entrypoint {md_code(c.entrypoint[0])} → {md_code(c.entrypoint[1])}")
    for role, changes in (("input", c.inputs), ("output", c.outputs)):
        lines += [f"- ➕ {role} {md_code(_iface_field(f))}" for f in changes.added]
        lines += [f"- ➖ {role} {md_code(_iface_field(f))}" for f in changes.removed]
        lines += [f"- {role} {md_code(r.name)}: type {md_code(r.before)} → {md_code(r.after)}" for r in changes.retyped]
        lines += [f"- {role} {md_code(str(f['name']))} is now required" for f in changes.newly_required]
    if c.breaking:
        lines += [
            "",
            f"⚠️ **Breaks callers** ({md_escape('; '.join(c.breaking_changes))}): publish it as a new major version.",
        ]
    return [*lines, ""]


# -- diff --rendered: the messages each predictor sends ----------------------------------------------------------------
def _rendered_notes(rd: RenderedDiff) -> list[str]:
    """What could not be rendered, one line per side, and which predictors were rendered from demos only."""
    notes = [s.missing for s in (rd.a, rd.b) if s.missing]
    for side in (rd.a, rd.b):
        if side.demos_only:
            fields = sorted({f for n in side.demos_only for f in side.predictors[n].placeholders})
            notes.append(
                f"{side.label}: rendered from demos only (no value for {', '.join(fields)}): "
                f"{', '.join(side.demos_only)}"
            )
    return notes


def _message_title(c: MessageChange) -> str:
    where = " -> ".join(f"#{i}" for i in (c.index_a, c.index_b) if i is not None)
    return f"{c.op} message {where} ({c.role})"


def rendered_view(rd: RenderedDiff, *, plain: bool = False) -> Group:
    parts: list[Any] = [
        Text.assemble(("rendered messages ", "bold"), (rd.a.label, "red"), " -> ", (rd.b.label, "green")),
        Text(f"input: {rd.input_source}; adapter {rd.a.adapter or '-'} -> {rd.b.adapter or '-'}", style="dim"),
    ]
    parts += [Text(note, style="yellow") for note in _rendered_notes(rd)]
    parts += [Text(f"+ predictor {n}", style="green") for n in rd.added]
    parts += [Text(f"- predictor {n}", style="red") for n in rd.removed]
    if not rd.changes and not rd.a.missing and not rd.b.missing and not rd.added and not rd.removed:
        parts.append(Text("No differences in the rendered messages.", style="dim"))
    for name, changes in rd.changes.items():
        body: list[Any] = []
        for c in changes:
            body += [Text(_message_title(c), style="bold"), _words(c.words, plain), Text()]
        parts.append(Panel(Group(*body), title=Text(name, style="bold cyan"), title_align="left", border_style="dim"))
    return Group(*parts)


def rendered_markdown(rd: RenderedDiff) -> str:
    lines = [f"### dspyreg diff --rendered `{rd.a.label}` → `{rd.b.label}`", ""]
    lines += [f"Input: {md_escape(rd.input_source)}; adapter {rd.a.adapter or '-'} → {rd.b.adapter or '-'}.", ""]
    notes = _rendered_notes(rd)
    lines += [*(f"- ⚠️ {md_escape(n)}" for n in notes), *([""] if notes else [])]
    lines += [f"- ➕ predictor `{n}` added" for n in rd.added] + [f"- ➖ predictor `{n}` removed" for n in rd.removed]
    if not rd.changes and not rd.a.missing and not rd.b.missing and not rd.added and not rd.removed:
        lines += ["No differences in the rendered messages.", ""]
    for name, changes in rd.changes.items():
        lines += [f"#### `{name}`", ""]
        for c in changes:
            title = md_escape(_message_title(c).replace(" -> ", " → "))
            lines += [f"**{title}** (~~removed~~, **added**):", "", *_md_quote(c.words), ""]
    return "\n".join(lines)
