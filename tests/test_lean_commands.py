"""The read and move commands start lean (0.1 s budget, docs/performance.md): run as the console script runs them,
they import only their own command's module and nothing their output does not need, and a move starts few git
processes (counted from git's own trace, GIT_TRACE2_EVENT). No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dspy_registry.registry import Registry

# What no read or move command needs: tomlkit (reads take tomllib), importlib.metadata (export and verify's drift
# check ask what is installed), the modules of other commands, and rich when the output is JSON.
NOT_NEEDED = (
    "tomlkit",
    "importlib.metadata",
    "dspy_registry.cli_quality",
    "dspy_registry.cli_serve",
    "dspy_registry.cli_ui",
    "dspy_registry.rendered",
)

PROBE = """
import json, sys
sys.argv = ["dspyreg", *sys.argv[1:]]
from dspy_registry.entry import main
try:
    main()
except SystemExit as exit:
    code = exit.code
print("LOADED=" + json.dumps([m for m in {names!r} if m in sys.modules]) + " CODE=" + json.dumps(code))
"""


def assert_not_imported(command: list[str], names: tuple[str, ...], registry: Registry) -> None:
    """`dspyreg <command>` succeeds, run as the console script runs it, without importing any of `names`."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(names=names), *command, "--registry", registry.location],
        capture_output=True,
        text=True,
    )
    loaded, code = proc.stdout.rsplit("LOADED=", 1)[1].split(" CODE=")
    assert json.loads(code) in (0, None), proc.stderr
    assert json.loads(loaded) == [], f"{command} imported {loaded}"


@pytest.fixture
def moved(published: Registry) -> Registry:
    published.promote("v1.0", "prod")
    published.promote("v1.1", "prod")
    return published


@pytest.mark.parametrize(
    "command",
    [
        ["list", "--json"],
        ["show", "v1.0", "--json"],
        ["show", "prod", "--json"],
        ["log", "--json"],
        ["diff", "v1.0", "v1.1", "--format", "json"],
        ["promote", "v1.0", "--to", "staging", "--json"],
        ["rollback", "--json"],
    ],
)
def test_json_commands_import_neither_rich_nor_what_they_do_not_use(command: list[str], moved: Registry) -> None:
    names = (*NOT_NEEDED, "rich")
    assert_not_imported(command, names, moved)


@pytest.mark.parametrize("command", [["list"], ["show", "prod"], ["log"], ["diff", "v1.0", "v1.1"]])
def test_table_commands_import_only_what_they_draw_with(command: list[str], moved: Registry) -> None:
    assert_not_imported(command, NOT_NEEDED, moved)


def git_processes(command: list[str], registry: Registry, trace: Path) -> list[list[str]]:
    """The argv of every git process `dspyreg <command>` started, from git's trace2 event stream."""
    proc = subprocess.run(
        [sys.executable, "-m", "dspy_registry.cli", *command, "--registry", registry.location],
        capture_output=True,
        text=True,
        env={**os.environ, "GIT_TRACE2_EVENT": str(trace)},
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return [e["argv"] for e in events if e["event"] == "start"]


@pytest.mark.parametrize(
    ("command", "most"),
    [
        # open (rev-parse, one `config --list` for remote, identity and signing), one cat-file --batch reader, the
        # ancestry check, then the writes: mktag, hash-object, two mktree (journal folders), commit-tree, update-ref.
        # 10 to move, plus the `git gc --auto` after every write (it packs a registry only when due)
        (["promote", "v1.0", "--to", "staging"], 11),
        (["rollback"], 11),
    ],
)
def test_a_move_starts_few_git_processes(command: list[str], most: int, moved: Registry, tmp_path: Path) -> None:
    started = git_processes(command, moved, tmp_path / "trace.json")
    assert len(started) <= most, "\n".join(" ".join(argv) for argv in started)
    # No process per config key, and no `ls-tree` of a tree the cat-file reader has already read.
    assert not [argv for argv in started if "ls-tree" in argv or "--get" in argv]


def test_list_for_people_reads_only_the_tag_messages_it_shows(published: Registry, tmp_path: Path) -> None:
    """The newest versions and those an environment holds are shown: the other versions' tags are listed by name
    (show-ref), never read whole (for-each-ref's %(contents) reads every tag of the history)."""
    started = git_processes(["list"], published, tmp_path / "trace.json")
    assert not [argv for argv in started if "for-each-ref" in argv], "\n".join(" ".join(a) for a in started)


# What the facade and the git layer no longer import for every command: publish's, init's and git-setup's modules,
# verification (show of a version, list, log), export's file writing, servers' socket, signing's base64.
@pytest.mark.parametrize(
    ("command", "unused"),
    [
        (["list"], ("dspy_registry.export", "dspy_registry.verify")),
        (["list", "--json"], ("dspy_registry.export", "dspy_registry.verify")),
        (["show", "v1.0"], ("dspy_registry.verify",)),
        (["show", "prod", "--json"], ()),
        (["log"], ("dspy_registry.export", "dspy_registry.verify")),
        (["diff", "v1.0", "v1.1", "--format", "json"], ("dspy_registry.verify",)),
        (["promote", "v1.0", "--to", "staging"], ("dspy_registry.export",)),
        (["rollback", "--json"], ("dspy_registry.export",)),
    ],
)
def test_commands_leave_out_the_modules_of_others(command: list[str], unused: tuple[str, ...], moved: Registry) -> None:
    names = (*unused, "dspy_registry.publishing", "dspy_registry.git_setup", "socket", "base64")
    assert_not_imported(command, names, moved)


def test_a_registry_folder_is_opened_without_asking_git_where_it_is(published: Registry, tmp_path: Path) -> None:
    """A bare registry (or a work tree with a .git folder) is plainly a repository: no `rev-parse` process."""
    started = git_processes(["show", "v1.0", "--json"], published, tmp_path / "trace.json")
    assert not [argv for argv in started if "rev-parse" in argv], "\n".join(" ".join(a) for a in started)
