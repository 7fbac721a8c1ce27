"""What users notice: --version, whole command summaries, plain usage lines, one word for an unset environment, no
doubled words, a readable bench line, and a demo that shows the commands it runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from dspy_registry import __version__
from dspy_registry.cli import app
from dspy_registry.registry import Registry

from .conftest import ROOT, publish_args

runner = CliRunner()
DOUBLED = re.compile(r"\b(\w+) \1\b", re.IGNORECASE)


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"dspyreg {__version__}\n"


def test_top_level_help_shows_each_summary_whole() -> None:
    text = " ".join(runner.invoke(app, ["--help"]).stdout.partition("Commands:")[2].split())
    assert "..." not in text
    for command in typer.main.get_command(app).commands.values():  # type: ignore[attr-defined]
        summary = " ".join((command.help or "").split("\n\n")[0].split())
        assert summary in text, command.name


def test_usage_lines_name_arguments_plainly() -> None:
    for name in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        usage = runner.invoke(app, [name, "--help"]).stdout.splitlines()[0]
        assert "{" not in usage and "}" not in usage, usage
        assert not re.search(r"\[?[a-z_]+\]?$", usage.split("[OPTIONS]")[-1].strip() or "X"), usage
    publish = runner.invoke(app, ["publish", "--help"]).stdout.splitlines()[0]
    assert publish.endswith("publish [OPTIONS] PROGRAM_SPEC")


def test_one_word_for_an_unset_environment(published: Registry) -> None:
    def run(*args: str) -> Any:
        return runner.invoke(app, [*args, "--registry", published.location])

    unset = run("show", "prod")
    assert unset.exit_code == 1 and "qa/prod is unset" in unset.stderr
    assert "qa/staging: unset -> v1.1" in run("promote", "v1.1").stdout
    run("promote", "v1.0", "--to", "prod")
    run("promote", "v1.1", "--to", "prod")
    assert "qa/rollback: v1.0 -> unset" in run("rollback").stdout
    log = run("log").stdout
    assert "unset" in log and " - " not in log and "(unset)" not in log


def test_no_doubled_words_with_the_default_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, states: dict[str, Path]
) -> None:
    monkeypatch.chdir(tmp_path)
    outputs = [runner.invoke(app, ["list"]), runner.invoke(app, ["init"]), runner.invoke(app, ["list"])]
    outputs += [runner.invoke(app, ["show", "v1.0"]), runner.invoke(app, ["list", "nope"])]
    spec = f"{ROOT}/examples/qa_program.py:DocsQA"
    outputs.append(runner.invoke(app, publish_args(spec, states["v1.0"], "v1.0")))
    outputs += [runner.invoke(app, ["list", "nope"]), runner.invoke(app, ["promote", "staging"])]
    for result in outputs:
        assert not DOUBLED.search(result.output), result.output


def test_bench_says_an_unknown_cost_in_a_sentence(published: Registry, fake_lm: Any, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text(json.dumps({"question": "q?"}) + "\n")
    result = runner.invoke(app, ["bench", "v1.1", "--inputs", str(inputs), "--registry", published.location])
    assert result.exit_code == 0, result.output
    line = " ".join(result.stdout.split())
    assert "cost unknown" in line and "unknown per query" not in line and "$unknown" not in line


def test_demo_prints_each_command_as_it_could_be_pasted(tmp_path: Path) -> None:
    """The demo's `step` function, run on its own: what it prints is the command, quoted where needed."""
    script = (ROOT / "examples" / "demo.sh").read_text()
    step = script[script.index("step() {") : script.index("\n}\n", script.index("step() {")) + 3]
    shown = subprocess.run(
        ["bash", "-c", step + 'step echo --notes "first optimization" "it\'s" a:b'],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = shown.strip().splitlines()[0]
    assert command == "$ echo --notes 'first optimization' 'it'\\''s' a:b"
    assert subprocess.run(["bash", "-c", command[2:]], capture_output=True, text=True).stdout == (
        "--notes first optimization it's a:b\n"
    )
