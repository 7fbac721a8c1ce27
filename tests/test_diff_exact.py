"""Exactness of `diff` on real programs: it hides no change and leaks no secret (issue 11, items 4 and 7)."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from dspy_registry.bundle import import_program
from dspy_registry.diff import Diff, FieldView, PredictorView, diff_views, view_from_state
from dspy_registry.registry import Registry, diff_files
from dspy_registry.render_diff import diff_markdown, diff_view
from dspy_registry.state import read_state_file

from .conftest import EXAMPLE_SPEC, publish_example

QUESTION = "How does the registry keep every published version of an optimized program?"
TYPED = {
    "qa": PredictorView(
        None,
        (FieldView("question", "input", "str", "", ""), FieldView("n_words", "output", "int", "", "")),
        (),
        None,
        ("question",),
    )
}


def _state(demos: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "traces": [],
        "train": [],
        "demos": demos,
        "signature": {
            "instructions": "Count the words of the answer.",
            "fields": [
                {"prefix": "Question:", "description": "${question}"},
                {"prefix": "N Words:", "description": "${n_words}"},
            ],
        },
        "lm": None,
    }
    entry.update(extra)
    return {"qa": entry}


def _diff(a: dict[str, Any], b: dict[str, Any]) -> Diff:
    return diff_views(view_from_state("a.json", a, TYPED), view_from_state("b.json", b, TYPED))


def _text(diff: Diff) -> str:
    out = io.StringIO()
    Console(file=out, width=120, color_system=None).print(diff_view(diff, plain=True))
    return out.getvalue()


def _all_formats(diff: Diff) -> list[str]:
    return [_text(diff), diff_markdown(diff), json.dumps(diff.to_json())]


def _write(path: Path, state: dict[str, Any]) -> Path:
    path.write_text(json.dumps(state))
    return path


# -- item 4: the diff hides nothing --------------------------------------------------------------------------------
def test_a_changed_answer_shows_both_answers() -> None:
    """Both sides used to be cut to the same 48-character prefix: a changed answer printed as two equal strings."""
    before = "Every version is a commit on main and an annotated tag named after the program, says ALPHA."
    after = "Every version is a commit on main and an annotated tag named after the program, says BRAVO."
    diff = _diff(
        _state([{"question": QUESTION, "answer": before}]),
        _state([{"question": QUESTION, "answer": after}]),
    )
    for out in _all_formats(diff)[:2]:
        assert "ALPHA" in out and "BRAVO" in out, out
    assert "answer" in _text(diff)


def test_a_field_prefix_change_is_shown() -> None:
    """COPRO optimizes prefixes besides instructions; the field line used to read `n_words: int -> n_words: int`."""
    b = _state([])
    b["qa"]["signature"]["fields"][1]["prefix"] = "Number of words:"
    diff = _diff(_state([]), b)
    text, md, js = _all_formats(diff)
    for out in (text, md):
        assert "N Words:" in out and "Number of words:" in out, out
    changed = json.loads(js)["predictors"]["changed"]["qa"]["fields"]["changed"]
    assert changed[0]["before"]["prefix"] == "N Words:" and changed[0]["after"]["prefix"] == "Number of words:"


@pytest.mark.parametrize(
    ("key", "before", "after"),
    [
        ("train", [], [{"question": "q", "n_words": 3}]),
        ("traces", [], [{"step": 1}]),
        ("fields", {"n_words": {"prefix": "N:"}}, {"n_words": {"prefix": "Words:"}}),
        ("custom_setting", 1, 2),
    ],
)
def test_other_predictor_keys_are_reported(key: str, before: Any, after: Any) -> None:
    diff = _diff(_state([], **{key: before}), _state([], **{key: after}))
    assert not diff.is_empty
    text, md, js = _all_formats(diff)
    assert "No differences" not in text and "No differences" not in md
    assert key in text and key in md
    other = json.loads(js)["predictors"]["changed"]["qa"]["other"]
    assert other[key] == {"before": before, "after": after}


def test_duplicate_demos_count_as_a_multiset() -> None:
    demo = {"question": QUESTION, "n_words": 4}
    grown = _diff(_state([demo]), _state([demo, demo])).changed["qa"].demos
    assert grown is not None and list(grown.added) == [demo] and grown.removed == () and grown.changed == ()
    shrunk = _diff(_state([demo, demo]), _state([demo])).changed["qa"].demos
    assert shrunk is not None and list(shrunk.removed) == [demo] and shrunk.added == ()
    # Without input names (identity by content) too.
    bare = diff_views(view_from_state("a", _state([demo])), view_from_state("b", _state([demo, demo, demo])))
    demos = bare.changed["qa"].demos
    assert demos is not None and list(demos.added) == [demo, demo]


def test_a_key_order_change_inside_a_demo_value_is_a_change() -> None:
    """DSPy renders a dict value in its key order: another order is another prompt."""
    a = _state([{"question": QUESTION, "n_words": {"min": 1, "max": 9}}])
    b = _state([{"question": QUESTION, "n_words": {"max": 9, "min": 1}}])
    demos = _diff(a, b).changed["qa"].demos
    assert demos is not None and len(demos.changed) == 1
    assert '"max": 9, "min": 1' in _text(_diff(a, b)).replace("\n", " ")


@pytest.fixture
def reordered_states(states: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """The example's two states, the second with a demo answer changed, a duplicated demo and a dict value whose
    keys are in another order."""
    a, b = json.loads(states["v1.0"].read_text()), json.loads(states["v1.1"].read_text())
    for state, order in ((a, ("first", "second")), (b, ("second", "first"))):
        demos = state["generate_query"]["demos"]
        demos.append({"question": "Which order?", "query": {key: key.upper() for key in order}})
    shared = next(d for d in b["answer.predict"]["demos"] if d in a["answer.predict"]["demos"])
    b["answer.predict"]["demos"].append(dict(shared))
    return _write(tmp_path / "a.json", a), _write(tmp_path / "b.json", b)


def test_files_and_refs_give_the_same_demo_changes(
    registry: Registry, reordered_states: tuple[Path, Path], tmp_path: Path
) -> None:
    a, b = reordered_states
    publish_example(registry, a, "v1.0")
    publish_example(registry, b, "v1.1")

    def demos(diff: Diff) -> dict[str, Any]:
        return {name: change["demos"] for name, change in diff.to_json()["predictors"]["changed"].items()}

    as_refs = demos(registry.diff("v1.0", "v1.1"))
    as_files = demos(diff_files(str(a), str(b), EXAMPLE_SPEC))
    assert as_refs == as_files
    # The order change inside a dict value is a changed demo both ways; the duplicated demo is one added demo.
    changed = as_refs["generate_query"]["changed"]
    assert [list(c["after"]["query"]) for c in changed if c["after"]["question"] == "Which order?"] == [
        ["second", "first"]
    ]
    assert len(as_refs["answer.predict"]["added"]) >= 1


def test_multi_paragraph_instructions_render_as_valid_markdown() -> None:
    before = "Answer the question.\n\nCite the passage you used.\n\nKeep it short: one *sentence* at most."
    after = "Answer the question.\n\nKeep it short: one *sentence* at most.\n\nSay `unknown` when unsure."
    a, b = _state([]), _state([])
    a["qa"]["signature"]["instructions"], b["qa"]["signature"]["instructions"] = before, after
    md = diff_markdown(_diff(a, b))
    parser = MarkdownIt("commonmark").enable("strikethrough")
    tokens = parser.parse(md)
    quoted, depth, struck, inside_strike = [], 0, [], False
    for token in tokens:
        if token.type == "blockquote_open":
            depth += 1
        elif token.type == "blockquote_close":
            depth -= 1
        elif token.type == "inline":
            if depth:
                quoted.append(token.content)
            for child in token.children or []:
                if child.type == "s_open":
                    inside_strike = True
                elif child.type == "s_close":
                    inside_strike = False
                elif inside_strike and child.type == "text":
                    struck.append(child.content)
    html = parser.render(md)
    assert "Cite the passage you used." in " ".join(struck), md
    for paragraph in ("Answer the question.", "Cite the passage", "Keep it short", "unknown"):
        assert any(paragraph in q for q in quoted), (paragraph, md)
    assert "<em>sentence</em>" not in html and "*sentence*" in html  # the instructions' own markup stays text
    assert "<code>unknown</code>" in html or "`unknown`" in html


def test_a_one_word_change_in_large_instructions_prints_with_context() -> None:
    words = [f"word{i}" for i in range(14_000)]
    before = " ".join(words)
    assert len(before) > 100_000
    words[7_000] = "CHANGED"
    after = " ".join(words)
    a, b = _state([]), _state([])
    a["qa"]["signature"]["instructions"], b["qa"]["signature"]["instructions"] = before, after
    diff = _diff(a, b)
    for out in (_text(diff), diff_markdown(diff)):
        assert len(out) < 3_000, len(out)
        assert "CHANGED" in out and "word7000" in out and "word6998" in out and "word7002" in out


def test_secrets_in_a_state_file_never_print(tmp_path: Path) -> None:
    a = _state([])
    b = _state([], lm={"model": "openai/gpt-4o-mini", "api_key": "sk-live-0123456789abcdefghij"})
    b["qa"]["lm"]["api_base"] = "https://internal.example.com/v1"
    b["qa"]["custom"] = {"client_secret": "hunter2-hunter2", "token": "t0ps3cr3t"}
    b["retriever"] = {"api_key": "sk-other-0123456789abcdefghij", "k": 3}
    b["metadata"] = {"dependency_versions": {"dspy": "3.0"}, "auth_token": "metadata-secret"}
    diff = diff_files(str(_write(tmp_path / "a.json", a)), str(_write(tmp_path / "b.json", b)))
    for out in _all_formats(diff):
        for secret in ("sk-live", "internal.example.com", "hunter2", "t0ps3cr3t", "sk-other", "metadata-secret"):
            assert secret not in out, (secret, out)
        assert "api_key" in out and "custom" in out


# -- item 7: same name, different program ---------------------------------------------------------------------------
PROGRAM_V1 = """
import dspy

class QA(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.Predict("question, context -> answer, sources: list[str]")

    def forward(self, question: str, context: str = ""):
        return self.answer(question=question, context=context)
"""
PROGRAM_V2 = """
import dspy

class Answerer(dspy.Module):
    def __init__(self):
        super().__init__()
        self.answer = dspy.Predict("question, context, style -> answer: int, confidence: float")

    def forward(self, question: str, context: str, style: str):
        return self.answer(question=question, context=context, style=style)
"""


def _publish_program(reg: Registry, folder: Path, source: str, attr: str, version: str) -> list[str]:
    folder.mkdir()
    (folder / "prog.py").write_text(textwrap.dedent(source))
    program = import_program(f"{folder / 'prog.py'}:{attr}")
    program.program.save(str(folder / "state.json"))
    result = reg.publish(program, read_state_file(folder / "state.json"), name="qa", version=version)
    return list(result.warnings)


def test_a_new_interface_is_diffed_and_warned_about(registry: Registry, tmp_path: Path) -> None:
    assert _publish_program(registry, tmp_path / "one", PROGRAM_V1, "QA", "v1.0") == []
    warnings = _publish_program(registry, tmp_path / "two", PROGRAM_V2, "Answerer", "v1.1")
    joined = "\n".join(warnings)
    assert "v1.0" in joined and "entrypoint" in joined and "sources" in joined and "v2.0" in joined, joined

    diff = registry.diff("v1.0", "v1.1")
    interface = diff.to_json()["interface"]
    assert interface["entrypoint"] == {"before": "prog:QA", "after": "prog:Answerer"}
    assert [f["name"] for f in interface["inputs"]["added"]] == ["style"]
    assert [f["name"] for f in interface["inputs"]["newly_required"]] == ["context"]
    assert [f["name"] for f in interface["outputs"]["removed"]] == ["sources"]
    assert [f["name"] for f in interface["outputs"]["added"]] == ["confidence"]
    assert [(c["name"], c["before"], c["after"]) for c in interface["outputs"]["retyped"]] == [("answer", "str", "int")]
    assert interface["breaking"] is True
    for out in (_text(diff), diff_markdown(diff)):
        for word in ("prog:Answerer", "style", "confidence", "sources", "int", "major"):
            assert word in out, (word, out)


def test_an_unchanged_interface_is_null_and_not_warned_about(registry: Registry, tmp_path: Path) -> None:
    _publish_program(registry, tmp_path / "one", PROGRAM_V1, "QA", "v1.0")
    assert _publish_program(registry, tmp_path / "two", PROGRAM_V1, "QA", "v1.1") == []
    assert registry.diff("v1.0", "v1.1").to_json()["interface"] is None
