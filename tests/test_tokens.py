"""Prompt tokens and cost per 1,000 calls: measured at publish into manifest.toml's [tokens] (tiktoken encodings
bundled with LiteLLM, never downloaded; LiteLLM's local price map), shown by show and diff without importing dspy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dspy
import pytest
from dspy.utils import DummyLM
from typer.testing import CliRunner

from dspy_registry import tokens
from dspy_registry.bundle import import_program
from dspy_registry.cli import app
from dspy_registry.manifest import BadManifest, Manifest
from dspy_registry.registry import Registry
from dspy_registry.state import read_state_file

from .conftest import EXAMPLE_SPEC, ROOT, publish_example
from .test_imports import HEAVY, PROBE
from .zoo.programs import KINDS, optimize

ZOO = ROOT / "tests" / "zoo" / "programs.py"
MODEL = "openai/gpt-4o-mini"
runner = CliRunner()


@pytest.fixture(scope="module")
def litellm() -> Any:
    """LiteLLM, for the tests that compare with it: imported by them, not at collection (~2.6 s in every worker)."""
    import litellm

    return litellm


@pytest.fixture
def priced(registry: Registry, states: dict[str, Path]) -> Registry:
    """qa v1.0 and v1.1 published for gpt-4o-mini (a model with a list price)."""
    publish_example(registry, states["v1.0"], "v1.0", lm={"model": MODEL})
    publish_example(registry, states["v1.1"], "v1.1", lm={"model": MODEL})
    return registry


def test_example_counts_are_pinned(priced: Registry) -> None:
    v10, v11 = (priced.manifest(priced.resolve(v)).tokens for v in ("v1.0", "v1.1"))
    assert v10 is not None and v11 is not None
    assert v11.tokenizer == "tiktoken o200k_base"
    assert {n: p.tokens for n, p in v11.predictors.items()} == {
        "generate_query": 300,
        "answer.predict": 859,
        "check": 654,
    }
    assert (v11.total, v11.calls) == (1813, 3)
    assert v11.cost_per_1k_calls == pytest.approx(1813 * 0.15e-6 * 1000)
    assert v11.basis.startswith("one call per predictor, no recorded run")
    assert "answer.predict, check from their first demo" in v11.basis
    assert v10.total != v11.total  # the two optimized states render different prompts


def test_zoo_program_counts_are_pinned(registry: Registry, tmp_path: Path) -> None:
    """A model with no list price and no o200k family: cl100k_base and "unknown price"."""
    program = optimize("cot", import_program(f"{ZOO}:{KINDS['cot'].attr}").program)
    program.save(str(tmp_path / "cot.json"))
    source = import_program(f"{ZOO}:{KINDS['cot'].attr}")
    registry.publish(
        source, read_state_file(tmp_path / "cot.json"), name="cot", version="v1", lm={"model": "openai/fake"}
    )
    figures = registry.manifest(registry.resolve("cot/v1")).tokens
    assert figures is not None
    assert figures.tokenizer == "tiktoken cl100k_base"
    assert {n: p.tokens for n, p in figures.predictors.items()} == {"predict": 280}
    assert figures.cost_per_1k_calls is None
    assert figures.price_source == "unknown price: openai/fake is not in litellm's local price map"


def test_counts_match_litellm_token_counter_for_openai_models(litellm: Any) -> None:
    program = import_program(EXAMPLE_SPEC).program
    for predictor in program.predictors():
        inputs = {f: "How do I roll back a release?" for f in predictor.signature.input_fields}
        messages = dspy.ChatAdapter().format(predictor.signature, [], inputs)
        for model, encoding in (("gpt-4o-mini", "o200k_base"), ("gpt-3.5-turbo", "cl100k_base")):
            assert tokens.encoding_name(model) == encoding
            assert tokens.count_messages(messages, encoding) == litellm.token_counter(model=model, messages=messages)


def test_price_from_the_local_map_and_unknown_price(litellm: Any) -> None:
    price, source = tokens.list_price(MODEL)
    assert price == litellm.model_cost["gpt-4o-mini"]["input_cost_per_token"]
    assert "litellm local price map" in source
    assert tokens.list_price("openai/no-such-model-xyz") == (
        None,
        "unknown price: openai/no-such-model-xyz is not in litellm's local price map",
    )
    assert tokens.list_price(None) == (None, "unknown price: no model recorded")


def test_a_listed_price_is_litellms_and_needs_no_litellm_import(litellm: Any) -> None:
    """The price read straight from the bundled map is the one litellm.get_model_info gives, for every model the map
    lists, by its name and as provider/name; only where litellm's own lookup fails on a name its map lists (it raises,
    or answers 0 for a field it fills in) does the listed price stand. Reading it imports no litellm."""
    listed = 0
    for key, entry in tokens._price_map().items():
        provider = entry.get("litellm_provider") if isinstance(entry, dict) else None
        for model in [key] + ([f"{provider}/{key}"] if provider and not key.startswith(f"{provider}/") else []):
            price = tokens._listed_price(model)
            if price is None:
                continue
            listed += 1
            try:
                theirs = litellm.get_model_info(model).get("input_cost_per_token")
            except Exception:
                continue
            assert theirs in (price, 0), model
    assert listed > 1000
    probe = "import sys\nfrom dspy_registry import tokens\n"
    probe += f"print(tokens.list_price({MODEL!r})[0], 'litellm' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == [str(litellm.model_cost["gpt-4o-mini"]["input_cost_per_token"]), "False"]


def test_counting_needs_no_network(tmp_path: Path) -> None:
    """In a fresh interpreter with sockets refused and TIKTOKEN_CACHE_DIR at an empty folder: the bundled files are
    read, nothing is fetched or written, and the user's setting is restored."""
    empty = tmp_path / "cache"
    empty.mkdir()
    script = """
import os, socket
def refuse(*a, **k):
    raise OSError("network used")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from dspy_registry import tokens
print(tokens.count_messages([{"role": "user", "content": "hello world"}], "o200k_base"))
print(tokens.count_messages([{"role": "user", "content": "hello world"}], "cl100k_base"))
print(os.environ["TIKTOKEN_CACHE_DIR"])
"""
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(empty), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["9", "9", str(empty)]  # 3 per message + "user" + "hello world" + 3
    assert list(empty.iterdir()) == []


def test_recorded_react_run_counts_every_call(registry: Registry, tmp_path: Path) -> None:
    kind = KINDS["react"]
    program = optimize("react", import_program(f"{ZOO}:{kind.attr}").program)
    program.save(str(tmp_path / "react.json"))
    lm = DummyLM(
        [
            {"next_thought": "Search.", "next_tool_name": "search_docs", "next_tool_args": '{"query": "rollback"}'},
            {"next_thought": "Count.", "next_tool_name": "count_words", "next_tool_args": '{"text": "a b"}'},
            {"next_thought": "Done.", "next_tool_name": "finish", "next_tool_args": "{}"},
            {"reasoning": "Found it.", "answer": "dspyreg rollback"},
        ]
    )
    source = import_program(f"{ZOO}:{kind.attr}")
    registry.publish(source, read_state_file(tmp_path / "react.json"), name="react", version="v1", record_with=lm)
    figures = registry.manifest(registry.resolve("react/v1")).tokens
    assert figures is not None
    assert figures.basis == "recorded run at publish (4 LM calls)"
    assert {n: p.calls for n, p in figures.predictors.items()} == {"react": 3, "extract.predict": 1}
    # the three react steps, each with the trajectory so far, and the extract step
    assert {n: p.tokens for n, p in figures.predictors.items()} == {"react": 2304, "extract.predict": 376}


def test_diff_shows_tokens_in_text_markdown_and_json(priced: Registry) -> None:
    args = ["diff", "v1.0", "v1.1", "--registry", priced.location]
    data = json.loads(runner.invoke(app, [*args, "--format", "json"]).stdout)["tokens"]
    v10 = priced.manifest(priced.resolve("v1.0")).tokens
    assert v10 is not None
    assert data["b"]["total"] == 1813 and data["a"]["total"] == v10.total
    assert data["total_delta"] == 1813 - v10.total
    assert data["predictors"]["check"]["b"] == 654
    assert data["cost_per_1k_calls_delta"] == pytest.approx(
        data["b"]["cost_per_1k_calls"] - data["a"]["cost_per_1k_calls"]
    )
    text = runner.invoke(app, [*args]).stdout
    assert "prompt tokens" in text and f"whole call: {v10.total:,} -> 1,813 ({1813 - v10.total:+,})" in text
    assert "check: " in text and "-> 654" in text and "tiktoken o200k_base" in text
    assert "cost per 1,000 calls: $" in text
    markdown = runner.invoke(app, [*args, "--format", "markdown"]).stdout
    assert "#### Prompt tokens" in markdown
    assert f"| **whole call** | {v10.total:,} | 1,813 | {1813 - v10.total:+,} |" in markdown
    assert "| `check` |" in markdown


def test_show_prints_the_figures(priced: Registry) -> None:
    shown = json.loads(runner.invoke(app, ["show", "v1.1", "--json", "--registry", priced.location]).stdout)
    assert shown["manifest"]["tokens"]["total"] == 1813
    assert shown["manifest"]["tokens"]["predictors"]["answer.predict"] == {"tokens": 859, "calls": 1}
    text = runner.invoke(app, ["show", "v1.1", "--registry", priced.location]).stdout
    assert "prompt tokens per call: 1,813 over 3 LM calls" in text
    assert "answer.predict: 859" in text and "counted with tiktoken o200k_base" in text


def test_versions_without_figures_say_not_recorded() -> None:
    assert tokens.figures_lines(None) == ["prompt tokens: not recorded (published before dspyreg measured them)"]
    b = tokens.TokenFigures("tiktoken o200k_base", "b", {"qa": tokens.PredictorTokens(10, 1)}, None, "unknown price")
    lines = tokens.delta_lines(tokens.TokenDelta(None, b))
    assert lines[:3] == [
        "qa: not recorded -> 10",
        "whole call: not recorded -> 10",
        "cost per 1,000 calls: not recorded -> unknown price",
    ]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("tokenizer = 3\nbasis = 'x'\nprice_source = 'y'", "[tokens] tokenizer must be text"),
        ("tokenizer = 't'\nbasis = 'x'\nprice_source = 'y'\ncost_per_1k_calls = 'free'", "cost_per_1k_calls"),
        ("tokenizer = 't'\nbasis = 'x'\nprice_source = 'y'\ntotal = -1", "[tokens] total must be a count"),
        ("tokenizer = 't'\nbasis = 'x'\nprice_source = 'y'\npredictors = {qa = {tokens = true, calls = 1}}", "'qa'"),
    ],
)
def test_forged_tokens_table_is_refused(priced: Registry, table: str, message: str) -> None:
    text = priced.store.read_blob(priced.resolve("v1.1").commit, "qa/manifest.toml").decode()
    forged = text.split("[tokens]")[0] + "[tokens]\n" + table + "\n"
    with pytest.raises(BadManifest, match=message.replace("[", r"\[").replace("]", r"\]")):
        Manifest.loads(forged)
    assert Manifest.loads(text).tokens == priced.manifest(priced.resolve("v1.1")).tokens  # round trip


@pytest.mark.parametrize("command", [["show", "v1.1", "--json"], ["diff", "v1.0", "v1.1", "--format", "json"]])
def test_show_and_diff_read_tokens_without_dspy(priced: Registry, command: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *command, "--registry", priced.location],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"tokens"' in proc.stdout and "1813" in proc.stdout
    assert json.loads(proc.stdout.rsplit("HEAVY=", 1)[1]) == []
