"""`dspyreg diff A B --examples` for people: the score delta with its interval, a verdict, and the examples that
flipped with their inputs; as text (colored by rich when the terminal has color) or markdown (PR comments)."""

from __future__ import annotations

import json
from typing import Any

from .example_compare import RESAMPLES, SEED, ExampleComparison

INPUTS_SHOWN = 300  # characters of an example's inputs in the text view (markdown and json show them whole)


def verdict(c: ExampleComparison) -> str:
    if c.ci_low > 0:
        return f"{c.b} is better than {c.a}: the 95% interval lies above 0"
    if c.ci_high < 0:
        return f"{c.b} is worse than {c.a}: the 95% interval lies below 0"
    return f"no clear difference between {c.a} and {c.b}: the 95% interval contains 0"


def _inputs(inputs: dict[str, Any]) -> str:
    return json.dumps(inputs, ensure_ascii=False)


def _leakage(c: ExampleComparison) -> str:
    def count(value: int | None) -> str:
        return "not checked" if value is None else str(value)

    return f"dev examples found among the demos: {c.a} {count(c.leakage_a)}, {c.b} {count(c.leakage_b)}"


def _head(c: ExampleComparison) -> list[str]:
    return [
        f"{c.a} -> {c.b} on {c.devset or 'the dev set'} (sha256 {c.devset_sha256[:12]}), "
        f"metric {c.metric}, {c.n} examples",
        f"score {c.score_a:.3f} -> {c.score_b:.3f}: delta {c.delta:+.3f}, 95% interval "
        f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] (paired bootstrap, {RESAMPLES:,} resamples, seed {SEED})",
        verdict(c),
        _leakage(c),
    ]


def examples_text(c: ExampleComparison) -> Any:
    """A rich Text: red for what got worse, green for what got better."""
    from rich.text import Text

    out = Text("\n".join(_head(c)) + "\n")
    out.append(f"{len(c.flips)} of {c.n} examples changed" + (":" if c.flips else "") + "\n")
    for flip in c.flips:
        shown = _inputs(flip.inputs)
        if len(shown) > INPUTS_SHOWN:
            shown = shown[: INPUTS_SHOWN - 1] + "…"
        style = "green" if flip.after > flip.before else "red"
        out.append(f"  {flip.change:<13}", style=style)
        out.append(f" {flip.id}  {flip.before:g} -> {flip.after:g}  {shown}\n")
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def examples_markdown(c: ExampleComparison) -> str:
    head = _head(c)
    lines = [f"### Examples: {c.a} -> {c.b}", "", *(f"- {_cell(line)}" for line in head[:1]), ""]
    lines += [f"**{_cell(head[1])}**", "", f"{_cell(head[2])}; {_cell(head[3])}.", ""]
    if not c.flips:
        lines.append(f"No example of {c.n} changed.")
        return "\n".join(lines) + "\n"
    lines += [f"{len(c.flips)} of {c.n} examples changed:", "", "| change | id | before | after | inputs |"]
    lines.append("|---|---|---|---|---|")
    for flip in c.flips:
        lines.append(
            f"| {flip.change} | `{flip.id}` | {flip.before:g} | {flip.after:g} | {_cell(_inputs(flip.inputs))} |"
        )
    return "\n".join(lines) + "\n"
