"""Commands that only read or move refs (verify without --load too) never import dspy, litellm or fastapi (checked in a
fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dspy_registry.registry import Registry

HEAVY = ("dspy", "litellm", "fastapi", "uvicorn", "openai", "prometheus_client", "opentelemetry")

PROBE = """
import json, sys
from dspy_registry.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY=" + json.dumps(heavy))
"""


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["list", "--json"],
        ["show", "v1.0"],
        ["show", "prod", "--json"],
        ["log"],
        ["log", "--json"],
        ["diff", "v1.0", "v1.1"],
        ["diff", "v1.0", "v1.1", "--format", "markdown"],
        ["diff", "v1.0", "v1.1", "--format", "json"],
        ["promote", "v1.1"],
        ["promote", "staging"],
        ["rollback"],
        ["verify"],
        ["verify", "--all"],
        ["verify", "v1.0", "--json"],
    ],
)
def test_ref_commands_stay_light(command: list[str], published: Registry) -> None:
    published.promote("v1.0", "prod")
    published.promote("v1.1", "staging")
    published.promote("v1.1", "prod")
    published.promote("v1.0", "staging")
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *command, "--registry", published.location],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    heavy = json.loads(proc.stdout.rsplit("HEAVY=", 1)[1])
    assert heavy == [], f"{command} imported {heavy}"


def test_diff_of_two_state_files_stays_light(states: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), "diff", str(states["v1.0"]), str(states["v1.1"])],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.rsplit("HEAVY=", 1)[1]) == []
    assert "generate_query" in proc.stdout


@pytest.mark.parametrize("fast_path", [True, False])
def test_textconv_stays_light(fast_path: bool, published: Registry, tmp_path: Path) -> None:
    """git runs the diff driver once per file version: through the console script's fast path and through typer."""
    prompts = tmp_path / "prompts"
    prompts.write_bytes(
        subprocess.run(
            ["git", "-C", published.location, "show", "qa/v1.1:qa/prompts.json"], capture_output=True, check=True
        ).stdout
    )
    probe = FAST_PROBE if fast_path else PROBE
    proc = subprocess.run(
        [sys.executable, "-c", probe.format(heavy=HEAVY), "textconv", str(prompts)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert "dspyreg view of prompts.json" in proc.stdout
    assert json.loads(proc.stdout.rsplit("HEAVY=", 1)[1]) == []


FAST_PROBE = """
import json, sys
from dspy_registry.entry import main
sys.argv = ["dspyreg", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY=" + json.dumps(heavy))
"""
