"""`dspyreg diff --rendered`: the messages each predictor's adapter sends, under two versions, diffed per message.

What a version reports is checked string for string against the adapter's own `format()` on the live program, for
the example program and every kind of the module zoo (and a JSONAdapter program); then the wiring: a changed
instruction, --input/--input-json, a recorded multi-step run, demos-only reporting, versions published before
rendered.json, bad input, verify's check of rendered.json, and that only --rendered imports dspy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing
from dataclasses import replace
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM
from typer.testing import CliRunner

from dspy_registry import bundle as bundle_module
from dspy_registry.bundle import Bundle, apply_state, import_program
from dspy_registry.cli import app
from dspy_registry.registry import Registry
from dspy_registry.state import read_state_file

from .conftest import EXAMPLE_SPEC, ROOT, git, publish_example, ref_snapshot
from .zoo.programs import KINDS, optimize

ZOO = ROOT / "tests" / "zoo" / "programs.py"
runner = CliRunner()
QA_INPUT = {
    "question": "How do I roll back prod?",
    "passages": ["Rolling back means loading an earlier tag.", "Tags | are immutable."],
    "answer": "Load the state of the earlier tag.",
}


def cli(reg: Registry, *args: str) -> Any:
    return runner.invoke(app, [*args, "--registry", reg.location])


def rendered_json(reg: Registry, *args: str) -> dict[str, Any]:
    result = cli(reg, "diff", *args, "--rendered", "--format", "json")
    assert result.exit_code == 0, result.output
    value: dict[str, Any] = json.loads(result.stdout)
    return value


def live(spec: str, state: Path) -> dspy.Module:
    program = import_program(spec).program
    apply_state(program, read_state_file(state))
    return program


def messages_of(report: dict[str, Any], side: str, predictor: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = report[side]["predictors"][predictor]["messages"]
    return found


def adapter_messages(adapter: Any, predictor: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = {k: v for k, v in values.items() if k in predictor.signature.input_fields}
    return [dict(m) for m in adapter.format(predictor.signature, list(predictor.demos), inputs)]


# -- string for string -------------------------------------------------------------------------------------------------
def test_example_program_messages_equal_chat_adapter(published: Registry, states: dict[str, Path]) -> None:
    report = rendered_json(published, "v1.0", "v1.1", "--input-json", json.dumps(QA_INPUT))
    for side, version in (("a", "v1.0"), ("b", "v1.1")):
        program = live(EXAMPLE_SPEC, states[version])
        assert report[side]["adapter"] == "ChatAdapter"
        for name, predictor in program.named_predictors():
            expected = adapter_messages(dspy.ChatAdapter(), predictor, QA_INPUT)
            assert messages_of(report, side, name) == expected, (version, name)
            assert report[side]["predictors"][name]["source"] == "input"
        assert report[side]["demos_only"] == []


def _sample(annotation: Any, field: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is int or (origin is typing.Union and int in typing.get_args(annotation)):
        return 3
    if origin is list:
        return [f"{field} one", f"{field} two"]
    if origin is dict or annotation is dict:
        return {"zeta": field, "alpha": [1, 2]}
    return f"value of {field}\nwith a second line"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_zoo_messages_equal_chat_adapter(kind: str, registry: Registry, tmp_path: Path) -> None:
    spec = f"{ZOO}:{KINDS[kind].attr}"
    program = optimize(kind, import_program(spec).program)
    state = tmp_path / f"{kind}.json"
    program.save(str(state))
    registry.publish(import_program(spec), read_state_file(state), name="zoo", version="v1.0")
    values = {
        f: _sample(info.annotation, f)
        for _, predictor in program.named_predictors()
        for f, info in predictor.signature.input_fields.items()
    }
    report = registry.diff_rendered("v1.0", "v1.0", "zoo", values).to_json()
    assert set(report["a"]["predictors"]) == {name for name, _ in program.named_predictors()}
    for name, predictor in program.named_predictors():
        assert messages_of(report, "a", name) == adapter_messages(dspy.ChatAdapter(), predictor, values), name
    assert report["predictors"]["changed"] == {}


def test_json_adapter_program(registry: Registry, tmp_path: Path) -> None:
    spec = f"{ZOO}:{KINDS['typed'].attr}"
    program = optimize("typed", import_program(spec).program)
    state = tmp_path / "typed.json"
    program.save(str(state))
    with dspy.context(adapter=dspy.JSONAdapter()):
        registry.publish(import_program(spec), read_state_file(state), name="typed", version="v1.0")
    values = {"claim": "Tags move.", "tags": ["git", "refs"], "limit": 4}
    report = registry.diff_rendered("v1.0", "v1.0", "typed", values).to_json()
    assert report["a"]["adapter"] == "JSONAdapter"
    (name, predictor), *_ = program.named_predictors()
    expected = adapter_messages(dspy.JSONAdapter(), predictor, values)
    assert messages_of(report, "a", name) == expected
    assert expected != adapter_messages(dspy.ChatAdapter(), predictor, values)  # the adapter matters


# -- what changed ---------------------------------------------------------------------------------------------------
def test_changed_instruction_is_a_word_change_in_the_system_message(
    registry: Registry, states: dict[str, Path], tmp_path: Path
) -> None:
    publish_example(registry, states["v1.0"], "v1.0")
    state = json.loads(states["v1.0"].read_text())
    state["generate_query"]["signature"]["instructions"] = "Write a very short keyword search query, in English."
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(state))
    publish_example(registry, changed, "v1.1")
    report = rendered_json(registry, "v1.0", "v1.1")
    assert list(report["predictors"]["changed"]) == ["generate_query"]
    (change,) = report["predictors"]["changed"]["generate_query"]
    assert (change["op"], change["role"], change["index_a"], change["index_b"]) == ("changed", "system", 1, 1)
    inserted = "".join(w["text"] for w in change["words"] if w["op"] == "insert")
    assert "very" in inserted and "English." in inserted
    text = cli(registry, "diff", "v1.0", "v1.1", "--rendered")
    assert text.exit_code == 0, text.output
    assert "generate_query" in text.stdout and "changed message #1 -> #1 (system)" in text.stdout
    markdown = cli(registry, "diff", "v1.0", "v1.1", "--rendered", "--format", "markdown").stdout
    assert "#### `generate_query`" in markdown and "**very**" in markdown


def test_input_json_and_input_file(published: Registry, tmp_path: Path) -> None:
    by_flag = rendered_json(published, "v1.0", "v1.1", "--input-json", '{"question": "Where are tags kept?"}')
    path = tmp_path / "input.json"
    path.write_text('{"question": "Where are tags kept?"}')
    by_file = rendered_json(published, "v1.0", "v1.1", "--input", str(path))
    assert by_flag == by_file
    last = messages_of(by_flag, "b", "generate_query")[-1]
    assert last["role"] == "user" and "[[ ## question ## ]]\nWhere are tags kept?\n\n" in last["content"]
    default = rendered_json(published, "v1.0", "v1.1")
    example = json.loads(published.store.read_blob(published.resolve("v1.1").commit, "qa/examples/input.json") or b"")
    assert f"[[ ## question ## ]]\n{example['question']}" in messages_of(default, "b", "generate_query")[-1]["content"]


def test_absent_program_input_is_left_out_as_the_adapter_does(published: Registry, states: dict[str, Path]) -> None:
    report = rendered_json(published, "v1.0", "v1.1", "--input-json", "{}")
    program = live(EXAMPLE_SPEC, states["v1.1"])
    predictor = dict(program.named_predictors())["generate_query"]
    assert messages_of(report, "b", "generate_query") == adapter_messages(dspy.ChatAdapter(), predictor, {})


def test_recorded_run_gives_later_predictors_their_intermediate_inputs(
    registry: Registry, states: dict[str, Path]
) -> None:
    answer = {
        "query": "rollback earlier tag",
        "reasoning": "The passages say so.",
        "answer": "Load the earlier tag.",
        "confidence": "0.9",
        "supported": "True",
    }
    publish_example(registry, states["v1.0"], "v1.0", record_with=DummyLM([answer] * 20))
    report = rendered_json(registry, "v1.0", "v1.0")
    assert report["a"]["demos_only"] == []
    program = live(EXAMPLE_SPEC, states["v1.0"])
    question = json.loads(registry.store.read_blob(registry.resolve("v1.0").commit, "qa/examples/input.json") or b"")
    from examples.qa_program import search  # type: ignore[import-not-found]

    passages = search(answer["query"], 3)
    values = {**question, "passages": passages, "answer": answer["answer"]}
    for name, predictor in program.named_predictors():
        assert messages_of(report, "a", name) == adapter_messages(dspy.ChatAdapter(), predictor, values), name
    assert report["a"]["predictors"]["check"]["source"] == "recorded run"


def test_predictors_without_values_are_rendered_from_demos_only(published: Registry) -> None:
    report = rendered_json(published, "v1.0", "v1.1")
    assert report["b"]["demos_only"] == ["answer.predict", "check"]
    check = report["b"]["predictors"]["check"]
    assert check["placeholders"] == ["answer", "passages"]
    assert "[[ ## answer ## ]]\n{answer}\n\n[[ ## passages ## ]]\n{passages}" in check["messages"][-1]["content"]
    text = cli(published, "diff", "v1.0", "v1.1", "--rendered").stdout
    assert "qa/v1.1: rendered from demos only (no value for answer, passages): answer.predict, check" in " ".join(
        text.split()
    )


def test_version_published_without_rendered_json(
    registry: Registry, states: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    built = bundle_module.build_bundle

    def before_rendered_json(*args: Any, **kwargs: Any) -> Bundle:
        b = built(*args, **kwargs)
        manifest = replace(b.manifest, files={k: v for k, v in b.manifest.files.items() if k != "rendered.json"})
        files = {k: v for k, v in b.files.items() if k != "rendered.json"}
        return Bundle({**files, "manifest.toml": manifest.dumps().encode()}, manifest, b.warnings)

    monkeypatch.setattr(bundle_module, "build_bundle", before_rendered_json)
    publish_example(registry, states["v1.0"], "v1.0")
    monkeypatch.undo()
    publish_example(registry, states["v1.1"], "v1.1")
    assert registry.verify("v1.0") == []
    result = cli(registry, "diff", "v1.0", "v1.1", "--rendered")
    assert result.exit_code == 0, result.output
    assert "qa/v1.0 was published without rendered.json; republish to render it" in " ".join(result.stdout.split())
    report = rendered_json(registry, "v1.0", "v1.1")
    assert report["a"]["missing"] and report["a"]["predictors"] == {}
    assert set(report["b"]["predictors"]) == {"generate_query", "answer.predict", "check"}


@pytest.mark.parametrize(
    "args",
    [
        ["--input-json", "{not json"],
        ["--input-json", "[1, 2]"],
        ["--input", "missing.json"],
        ["--input", "BAD"],
    ],
)
def test_bad_input_is_one_red_line(published: Registry, tmp_path: Path, args: list[str]) -> None:
    if args[-1] == "BAD":
        (tmp_path / "bad.json").write_text("{'single': 'quotes'}")
        args = ["--input", str(tmp_path / "bad.json")]
    elif args[0] == "--input":
        args = ["--input", str(tmp_path / args[1])]
    before = ref_snapshot(Path(published.location))
    result = cli(published, "diff", "v1.0", "v1.1", "--rendered", *args)
    assert result.exit_code == 1, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "--input" in result.stderr
    assert ref_snapshot(Path(published.location)) == before


def test_rendered_json_is_listed_and_checked(published: Registry) -> None:
    from dspy_registry.rendered import BadRendered, parse_rendered

    commit = published.resolve("v1.1").commit
    assert "rendered.json" in published.manifest(published.resolve("v1.1")).files
    assert published.verify("v1.1") == []
    good = json.loads(published.store.read_blob(commit, "qa/rendered.json") or b"")
    parse_rendered(json.dumps(good).encode(), "rendered.json")
    forged: list[Any] = [
        [],
        {**good, "schema": 2},
        {**good, "predictors": {"x": {"messages": [{"role": "tool", "content": "hi"}], "inputs": []}}},
        {**good, "predictors": {"x": {"messages": [{"role": "user", "content": 3}], "inputs": []}}},
        {**good, "predictors": {"x": {"messages": [{"role": "user", "content": "hi"}], "inputs": [{"name": "q"}]}}},
        {**good, "recorded": {"check": {"answer": ["not text"]}}},
        {**good, "predictors": {str(i): {} for i in range(10_001)}},
    ]
    for doc in forged:
        with pytest.raises(BadRendered):
            parse_rendered(json.dumps(doc).encode(), "rendered.json")


PROBE = """
import json, sys
from dspy_registry.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
print("DSPY=" + json.dumps("dspy" in sys.modules))
"""


def test_only_rendered_imports_dspy(published: Registry) -> None:
    def dspy_imported(*args: str) -> bool:
        proc = subprocess.run(
            [sys.executable, "-c", PROBE, "diff", "v1.0", "v1.1", *args, "--registry", published.location],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return bool(json.loads(proc.stdout.rsplit("DSPY=", 1)[1]))

    assert not dspy_imported("--format", "json")
    assert dspy_imported("--rendered", "--format", "json")


def test_without_input_both_versions_render_the_newer_versions_example(published: Registry) -> None:
    """The same input under A and B (B's examples/input.json): the call itself differs only where the prompt does."""
    example = json.loads(git(Path(published.location), "show", "qa/v1.1:qa/examples/input.json"))
    report = rendered_json(published, "v1.0", "v1.1")
    assert "v1.1's examples/input.json" in report["input"]
    for side in ("a", "b"):
        last = messages_of(report, side, "generate_query")[-1]
        assert last["role"] == "user" and example["question"] in last["content"]
    assert messages_of(report, "a", "generate_query")[-1] == messages_of(report, "b", "generate_query")[-1]
