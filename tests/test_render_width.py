"""Tables fit the terminal: at 60, 80 and 120 columns every value of `list` and `log` is shown, none cut silently,
and no line is wider than the terminal; piped output carries no trailing padding."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.registry import JournalEntry, Registry, VersionInfo
from dspy_registry.render import log_table, versions_table

NOTES = "Bootstrapped demos from the docs FAQ; instructions rewritten by COPRO for terse answers"
VERSIONS = [
    VersionInfo("qa", "v1.0", "a" * 40, "2026-01-01T10:00:00Z", ("prod", "rollback"), 0.6, "MIPROv2[light]", 8, NOTES),
    VersionInfo("qa", "v1.1", "b" * 40, "2026-01-02T11:30:00Z", ("staging",), 0.7, "BootstrapFewShot", 8, "", 0.75),
]
ENTRIES = [
    JournalEntry("qa", "staging", None, "v1.0", "promote", "Alexandra Q. Longname <a@x.io>", "2026-01-01T10:00:00Z"),
    JournalEntry(
        "qa", "prod", "v1.0", "v1.1", "promote", "Bob <b@x.io>", "2026-01-02T11:31:00Z", "better on the dev set"
    ),
]


def rendered(renderable: object, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [60, 80, 120])
def test_list_shows_every_column_at_every_width(width: int) -> None:
    lines = rendered(versions_table(VERSIONS, width=width), width)
    text = "\n".join(lines)
    assert all(len(line.rstrip()) <= width for line in lines), text
    for value in ("v1.0", "v1.1", "prod", "rollback", "staging", "0.600", "0.700", "0.750", "aaaaaaa", "bbbbbbb"):
        assert value in text
    for value in ("MIPROv2[light]", "BootstrapFewShot", "2026-01-01 10:00", "2026-01-02 11:30"):
        assert value in text, f"{value} dropped at {width} columns:\n{text}"
    assert "Bootstrapped demos from" in text  # notes: shortened with an ellipsis at most, never left out
    assert "rollback" in text and not any(line.strip() in ("ro", "ll", "ba") for line in lines)


@pytest.mark.parametrize("width", [60, 80, 120])
def test_log_shows_whole_actors_and_reasons_at_every_width(width: int) -> None:
    lines = rendered(log_table(ENTRIES, width=width), width)
    text = "\n".join(lines)
    assert all(len(line.rstrip()) <= width for line in lines), text
    assert "Alexandra Q. Longname" in text and "Bob" in text  # the actor is never wrapped inside a name
    assert "better on the dev set" in " ".join(text.split())
    assert "2026-01-02 11:31:00" in text and "v1.0" in text and "v1.1" in text and "promote" in text


def test_wide_terminals_keep_one_row_per_version() -> None:
    lines = rendered(versions_table(VERSIONS, width=160), 160)
    assert len(lines) == 3 and "optimizer" in lines[0] and "notes" in lines[0]


def test_piped_list_log_and_show_have_no_trailing_padding(
    registry_path: Path, states: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import publish_example

    with Registry.open(registry_path) as reg:
        publish_example(reg, states["v1.0"], "v1.0", optimizer="MIPROv2", notes="short")
        reg.promote("v1.0", name="qa")
    monkeypatch.setenv("COLUMNS", "80")
    for command in (["list"], ["log"], ["show", "v1.0"]):
        result = CliRunner().invoke(app, [*command, "--registry", str(registry_path)], catch_exceptions=False)
        assert result.exit_code == 0
        lines = result.stdout.splitlines()
        assert len(lines) >= 2 and all(line == line.rstrip() for line in lines), result.stdout
