"""CLI wiring: every command end to end, output for people, --json for scripts, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app

from .conftest import EXAMPLE_SPEC, git, publish_args

runner = CliRunner()


def ok(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture
def reg(tmp_path: Path, states: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "reg"
    monkeypatch.setenv("DSPYREG_REGISTRY", str(path))  # every command below finds the registry through it
    assert "Initialized dspyreg registry" in ok("init")
    for version, state in (("v1.0", states["v1.0"]), ("1.1", states["v1.1"])):
        ok(
            *publish_args(EXAMPLE_SPEC, state, version),
            "--optimizer",
            "BootstrapFewShot",
            "--dev-score",
            "0.5",
            "--trainset-size",
            "8",
            "--notes",
            "n",
        )
    return path


def test_publish_json(tmp_path: Path, states: dict[str, Path]) -> None:
    ok("init", str(tmp_path / "r"))
    out = ok(
        *publish_args(EXAMPLE_SPEC, states["v1.0"], "v1.0"),
        "--registry",
        str(tmp_path / "r"),
        "--json",
        "--lm",
        "openai/gpt-4o-mini",
    )
    data = json.loads(out)
    assert data["version"] == "v1.0" and len(data["commit"]) == 40 and "manifest.toml" in data["files"]
    assert git(tmp_path / "r", "rev-parse", "qa/v1.0^{commit}").strip() == data["commit"]


def test_list_show_log_json_shapes(reg: Path) -> None:
    ok("promote", "v1.0", "--to", "prod", "--reason", "first")
    ok("promote", "v1.1")
    versions = json.loads(ok("list", "--json"))
    assert [v["version"] for v in versions] == ["v1.0", "v1.1"]
    assert set(versions[0]) >= {"name", "version", "commit", "created", "environments", "dev_score"}
    assert versions[0]["environments"] == ["prod"] and versions[1]["environments"] == ["staging"]
    shown = json.loads(ok("show", "qa/prod", "--json"))
    assert set(shown) >= {"name", "version", "commit", "created", "environments", "manifest", "predictors"}
    assert shown["version"] == "v1.0" and shown["manifest"]["optimization"]["trainset_size"] == 8
    assert set(shown["predictors"]) == {"generate_query", "answer.predict", "check"}
    log = json.loads(ok("log", "--json"))
    assert [(e["env"], e["to_version"], e["reason"]) for e in log] == [
        ("prod", "v1.0", "first"),
        ("staging", "v1.1", ""),
    ]
    assert set(log[0]) >= {"program", "env", "from_version", "to_version", "action", "actor", "time", "reason"}
    assert json.loads(ok("log", "qa", "--env", "staging", "--json"))[0]["to_version"] == "v1.1"


def test_people_output(reg: Path) -> None:
    assert "qa/staging: unset -> v1.1" in ok("promote", "v1.1")
    assert "qa/prod: unset -> v1.1" in ok("promote", "staging")
    assert "Nothing to do" in ok("promote", "staging")
    table = ok("list")
    assert "v1.0" in table and "staging prod" in table and "0.500" in table
    shown = ok("show", "prod")
    assert "answer.predict" in shown and "3 (3 bootstrapped)" in shown and "COPRO" not in shown
    assert "promote" in ok("log")


def test_rollback_output_and_errors(reg: Path) -> None:
    ok("promote", "v1.0", "--to", "prod")
    ok("promote", "v1.1", "--to", "prod")
    out = ok("rollback", "--reason", "bad answers")
    assert "qa/prod: v1.1 -> v1.0" in out and "qa/rollback: v1.0 -> unset" in out
    result = runner.invoke(app, ["rollback"])
    assert result.exit_code == 1 and "nothing to roll back" in result.stderr


def test_unexpected_errors_exit_2_and_traceback_shows_them(reg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dspy_registry.registry import Registry

    def boom(self: Registry, program: str | None = None, **_: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(Registry, "versions", boom)
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 2 and "rerun with --traceback" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["list", "--traceback"])
    assert isinstance(result.exception, ZeroDivisionError)


def test_every_option_has_help() -> None:
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help, name
        for param in command.params:
            if param.param_type_name == "option":
                assert getattr(param, "help", None), f"{name} {param.name}"


@pytest.mark.parametrize("command", ["list", "show", "log", "diff", "promote", "rollback", "publish"])
def test_common_options(command: str) -> None:
    out = ok(command, "--help")
    for option in ("--registry", "--traceback"):
        assert option in out
    if command in ("list", "show", "log", "diff"):
        assert "--json" in out


def test_console_script_runs(reg: Path) -> None:
    exe = Path(sys.executable).parent / "dspyreg"
    assert exe.exists(), "the dspyreg console script is installed with the package"
    proc = subprocess.run([str(exe), "list", "--json", "--registry", str(reg)], capture_output=True, text=True)
    assert proc.returncode == 0 and json.loads(proc.stdout)[0]["version"] == "v1.0"


def test_brackets_are_not_markup(tmp_path: Path, states: dict[str, Path]) -> None:
    ok("init", str(tmp_path / "r"))
    ok(
        *publish_args(EXAMPLE_SPEC, states["v1.0"], "v1.0"),
        "--optimizer",
        "MIPROv2[light]",
        "--registry",
        str(tmp_path / "r"),
    )
    assert "MIPROv2[light]" in ok("list", "--registry", str(tmp_path / "r"))
    assert "MIPROv2[light]" in ok("show", "v1.0", "--registry", str(tmp_path / "r"))


def test_unknown_program_is_an_error(reg: Path) -> None:
    for command in (["log", "nosuch"], ["list", "nosuch"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1 and "no program 'nosuch'" in result.stderr


def test_a_file_named_like_a_ref_does_not_turn_diff_into_a_file_diff(
    reg: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "v1.0").write_text("not a state")
    data = json.loads(ok("diff", "v1.0", "v1.1", "--format", "json"))
    assert data["a"] == "qa/v1.0"


def test_list_for_people_shows_the_newest_and_what_environments_hold(tmp_path: Path) -> None:
    from dspy_registry.registry import VersionInfo
    from dspy_registry.render import versions_table

    versions = [
        VersionInfo("qa", f"v1.{i}", "0" * 40, "2026-01-01T00:00:00Z", ("prod",) if i == 3 else (), None)
        for i in range(80)
    ]
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(versions_table(versions, limit=50))
    text = console.export_text()
    assert "v1.79" in text and "v1.30" in text and "v1.29" not in text and "v1.3 " in text
    assert "29 older versions not shown" in text


def test_publish_record_example_uses_the_lm_variables(tmp_path: Path, states: dict[str, Path], fake_lm: object) -> None:
    ok("init", str(tmp_path / "r"))
    ok(
        *publish_args(EXAMPLE_SPEC, states["v1.0"], "v1.0"),
        "--record-example",
        "--registry",
        str(tmp_path / "r"),
    )
    output = json.loads(git(tmp_path / "r", "show", "qa/v1.0:qa/examples/output.json"))
    assert output["source"] == "recorded at publish with openai/fake-model" and output["output"]["confidence"] == 0.5
