"""Semantic diff: registry refs and bare saved states of any DSPy version, in text, markdown and JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.diff import diff_views, view_from_state, word_diff
from dspy_registry.registry import Registry, diff_files

from .conftest import EXAMPLE_SPEC

runner = CliRunner()

# A DSPy 2.4-era state: no `signature` key, indexed predictor names, a retriever entry.
LEGACY_A: dict[str, Any] = {
    "retrieve": {"k": 3},
    "generate_query[0]": {
        "traces": [],
        "train": [],
        "demos": [
            {
                "question": "Who wrote Hamlet?",
                "query": "hamlet author",
                "augmented": True,
                "dspy_uuid": "u1",
                "dspy_split": "train",
            },
            {"question": "What is DSPy?", "query": "dspy"},
        ],
        "signature_instructions": "Write a search query.",
        "signature_prefix": "Query:",
    },
}
LEGACY_B: dict[str, Any] = {
    "retrieve": {"k": 5},
    "generate_query[0]": {
        "traces": [],
        "train": [],
        "demos": [
            {"question": "What is DSPy?", "query": "dspy framework"},
            {
                "question": "Who wrote Hamlet?",
                "query": "hamlet author",
                "augmented": True,
                "dspy_uuid": "u9",
                "dspy_split": "dev",
            },
            {"question": "What is git?", "query": "git vcs", "augmented": True},
        ],
        "signature_instructions": "Write a short search query for a search engine.",
        "signature_prefix": "Query:",
    },
    "generate_query[1]": {"demos": [], "signature_instructions": "x", "signature_prefix": "Query:"},
}


def _write(tmp_path: Path, name: str, state: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(state))
    return str(path)


def test_word_diff_rebuilds_both_sides() -> None:
    before, after = "Answer the question briefly.", "Answer the user's question in one sentence."
    ops = word_diff(before, after)
    assert "".join(o.text for o in ops if o.op != "insert") == before
    assert "".join(o.text for o in ops if o.op != "delete") == after
    assert {o.op for o in ops} == {"equal", "insert", "delete"}


def test_legacy_states_without_signature_key(tmp_path: Path) -> None:
    a, b = _write(tmp_path, "a.json", LEGACY_A), _write(tmp_path, "b.json", LEGACY_B)
    data = diff_files(a, b).to_json()
    assert data["predictors"]["added"] == ["generate_query[1]"] and data["predictors"]["removed"] == []
    changed = data["predictors"]["changed"]["generate_query[0]"]
    assert changed["instructions"]["before"] == "Write a search query."
    assert changed["instructions"]["after"] == "Write a short search query for a search engine."
    demos = changed["demos"]
    # Without input field names a demo is known by its dspy_uuid, else by its whole content.
    assert [d["question"] for d in demos["added"]] == ["What is DSPy?", "Who wrote Hamlet?", "What is git?"]
    assert [d["question"] for d in demos["removed"]] == ["Who wrote Hamlet?", "What is DSPy?"]
    assert demos["counts"] == {"before": {"bootstrapped": 1, "labeled": 1}, "after": {"bootstrapped": 2, "labeled": 1}}
    assert data["metadata"]["state.retrieve"] == {"before": {"k": 3}, "after": {"k": 5}}


def test_demo_identity_from_input_fields(tmp_path: Path) -> None:
    """With input names known, the same question with a new answer is a changed demo, and order changes are seen."""
    from dspy_registry.diff import PredictorView

    typed = {"generate_query[0]": PredictorView(None, (), (), None, ("question",))}
    a = view_from_state("a", LEGACY_A, typed)
    b = view_from_state("b", LEGACY_B, typed)
    demos = diff_views(a, b).changed["generate_query[0]"].demos
    assert demos is not None
    assert [d["question"] for d in demos.added] == ["What is git?"] and demos.removed == ()
    assert [(c.before["query"], c.after["query"]) for c in demos.changed] == [("dspy", "dspy framework")]
    assert demos.reordered is True


def test_dspy_uuid_and_split_alone_are_not_changes(tmp_path: Path) -> None:
    from dspy_registry.diff import PredictorView

    b = json.loads(json.dumps(LEGACY_A))
    b["generate_query[0]"]["demos"][0]["dspy_uuid"] = "other"
    b["generate_query[0]"]["demos"][0]["dspy_split"] = "dev"
    typed = {"generate_query[0]": PredictorView(None, (), (), None, ("question",))}
    assert diff_views(view_from_state("a", LEGACY_A, typed), view_from_state("b", b, typed)).is_empty


def test_identical_files_have_no_diff(tmp_path: Path, states: dict[str, Path]) -> None:
    result = runner.invoke(app, ["diff", str(states["v1.0"]), str(states["v1.0"])])
    assert result.exit_code == 0 and "No differences" in result.stdout


def test_registry_diff_json_shape(published: Registry) -> None:
    result = runner.invoke(app, ["diff", "v1.0", "v1.1", "--format", "json", "--registry", published.location])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["a"] == "qa/v1.0" and data["b"] == "qa/v1.1"
    assert set(data["predictors"]) == {"added", "removed", "changed"}
    changed = data["predictors"]["changed"]
    assert set(changed) == {"generate_query", "answer.predict", "check"}
    assert changed["check"]["instructions"] is None  # unchanged parts are null
    gq = changed["generate_query"]
    assert set(gq) == {"instructions", "fields", "demos", "lm", "other"} and gq["fields"] is None and gq["lm"] is None
    assert gq["instructions"]["after"].startswith("Rewrite the question")
    assert set(gq["demos"]) >= {"added", "removed", "changed", "reordered"}
    assert isinstance(gq["demos"]["reordered"], bool)
    assert [d["question"] for d in gq["demos"]["removed"]] == ["What becomes the instructions of a DSPy signature?"]
    assert len(gq["demos"]["added"]) == 2
    assert data["metadata"]["dev_score"] == {"before": 0.6, "after": 0.7}
    assert data["metadata"]["optimizer"] == {"before": "BootstrapFewShot", "after": "COPRO"}


def test_registry_diff_text_and_markdown(published: Registry) -> None:
    text = runner.invoke(app, ["diff", "v1.0", "v1.1", "--registry", published.location])
    assert text.exit_code == 0
    # No terminal here, so the word diff carries git's markers instead of colors.
    assert "[-Write a short keyword-]" in text.stdout and "{+Rewrite the question as 3-6 lowercase+}" in text.stdout
    assert "2 -> 3 demos" in text.stdout and "dev_score" in text.stdout
    md = runner.invoke(app, ["diff", "v1.0", "v1.1", "--format", "markdown", "--registry", published.location])
    assert md.exit_code == 0
    assert md.stdout.startswith("### dspyreg diff `qa/v1.0` → `qa/v1.1`")
    assert "~~Write a short keyword~~ **Rewrite the question as 3-6 lowercase**" in md.stdout
    assert "| ➕ |" in md.stdout and "| ➖ |" in md.stdout and "| dev_score | 0.6 | 0.7 |" in md.stdout


def test_diff_between_a_ref_and_a_file(published: Registry, states: dict[str, Path]) -> None:
    result = runner.invoke(
        app, ["diff", "v1.0", str(states["v1.1"]), "--format", "json", "--registry", published.location]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    changed = data["predictors"]["changed"]
    assert changed["generate_query"]["instructions"]["after"].startswith("Rewrite")
    # The file side borrows field names and types from the registry side: no spurious field changes.
    assert all(c["fields"] is None for c in changed.values())


def test_files_with_program_spec_know_field_names(states: dict[str, Path], tmp_path: Path) -> None:
    state = json.loads(states["v1.1"].read_text())
    state["check"]["signature"]["fields"][0]["description"] = "The answer to check."
    edited = _write(tmp_path, "edited.json", state)
    data = diff_files(str(states["v1.1"]), edited, EXAMPLE_SPEC).to_json()
    fields = data["predictors"]["changed"]["check"]["fields"]
    assert fields["changed"][0]["field"] == "answer"
    assert fields["changed"][0]["after"]["type"] == "str"
    assert fields["changed"][0]["after"]["description"] == "The answer to check."


def test_field_changes_between_versions(published: Registry, states: dict[str, Path], tmp_path: Path) -> None:
    """A bare state with an extra field shows it as added, by position."""
    a = json.loads(states["v1.0"].read_text())
    b = json.loads(json.dumps(a))
    b["check"]["signature"]["fields"].append({"prefix": "Reason:", "description": "${reason}"})
    data = diff_files(_write(tmp_path, "a.json", a), _write(tmp_path, "b.json", b)).to_json()
    fields = data["predictors"]["changed"]["check"]["fields"]
    assert [f["name"] for f in fields["added"]] == ["reason"] and fields["removed"] == []
