"""Trust boundary: every hostile CLI input, registry.toml value and corrupt registry record is one red line on
stderr, exit 1, no traceback, and the registry unchanged.

Each case builds its situation (a registry, maybe with a bad registry.toml or a corrupt journal written by hand with
plain git), snapshots every ref, runs one command, and checks the refusal.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.registry import Registry

from ..conftest import EXAMPLE_SPEC, git, publish_args, ref_snapshot

runner = CliRunner()
WHO = ["-c", "user.name=Mallory", "-c", "user.email=m@example.com"]


@dataclass(frozen=True)
class Situation:
    """What a case runs against: the registry, scratch space, and variables to set for the command."""

    registry: Path
    tmp: Path
    states: dict[str, Path]
    env: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def situation(published: Registry, registry_path: Path, tmp_path: Path, states: dict[str, Path]) -> Situation:
    """A registry with qa v1.0 and v1.1 published (a copy of the session's) and v1.0 on staging."""
    published.promote("v1.0")
    return Situation(registry_path, tmp_path, states)


# -- ways to damage a registry, as a person with plain git could ---------------------------------------------------
def commit_file(s: Situation, branch: str, path: str, data: bytes) -> None:
    """Commit `data` at `path` on `branch` of the registry from a clone, and push it."""
    clone = s.tmp / f"clone-{branch.replace('/', '-')}"
    git(s.tmp, "clone", "-q", "-b", branch, str(s.registry), str(clone))
    (clone / path).parent.mkdir(parents=True, exist_ok=True)
    (clone / path).write_bytes(data)
    git(clone, "add", path)
    git(clone, *WHO, "commit", "-qm", "edit by hand")
    git(clone, "push", "-q", "origin", branch)


def registry_toml(extra: str, *, order: str = '["staging", "prod"]') -> Callable[[Situation], None]:
    text = f"schema_version = 1\n\n[environments]\norder = {order}\n\n{extra}\n"
    return lambda s: commit_file(s, "main", "registry.toml", text.encode())


def raw_registry_toml(data: bytes) -> Callable[[Situation], None]:
    return lambda s: commit_file(s, "main", "registry.toml", data)


def journal_blob(data: bytes) -> Callable[[Situation], None]:
    return lambda s: commit_file(s, "dspyreg/journal", "qa/staging.json", data)


def hand_made_version(path: str, data: bytes) -> Callable[[Situation], None]:
    """A bundle file of qa changed by a commit on main, and staging force-moved to that commit, by hand."""

    def make(s: Situation) -> None:
        commit_file(s, "main", path, data)
        git(s.registry, *WHO, "tag", "-f", "-a", "qa/staging", "-m", "hotfix", "main")

    return make


def record_file(data: bytes) -> Callable[[Situation], None]:
    """An evaluation record of qa v1.0 on a dspyreg/records branch pushed by hand."""

    def make(s: Situation) -> None:
        clone = s.tmp / "clone-records"
        git(s.tmp, "clone", "-q", str(s.registry), str(clone))
        git(clone, "checkout", "-q", "--orphan", "dspyreg/records")
        git(clone, "rm", "-rqf", ".")
        (clone / "qa/v1.0/evaluations").mkdir(parents=True)
        (clone / "qa/v1.0/evaluations/1.json").write_bytes(data)
        git(clone, "add", ".")
        git(clone, *WHO, "commit", "-qm", "record by hand")
        git(clone, "push", "-q", "origin", "dspyreg/records")

    return make


def retag(tag: str, message: str) -> Callable[[Situation], None]:
    """Force-move a tag, by hand, to the same commit with another message (e.g. a corrupt payload line)."""

    def make(s: Situation) -> None:
        git(s.registry, *WHO, "tag", "-f", "-a", tag, "-m", message, f"{tag}^{{commit}}")

    return make


def deep_json(depth: int = 100_000) -> bytes:
    return b'{"check": ' + b"[" * depth + b"]" * depth + b"}"


def write(name: str, data: bytes) -> Callable[[Situation], Path]:
    def make(s: Situation) -> Path:
        path = s.tmp / name
        path.write_bytes(data)
        return path

    return make


def unix_socket(name: str) -> Callable[[Situation], Path]:
    """A path that exists but is no regular file (reading it fails; a device like /dev/zero would never end)."""

    def make(s: Situation) -> Path:
        path = s.tmp / name
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        server.close()  # the socket file stays
        return path

    return make


def nothing(s: Situation) -> None:
    return None


# -- the cases: (arrange, command, match) --------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    arrange: Callable[[Situation], Any]
    command: Callable[[Situation], list[str]]
    match: str
    env: tuple[tuple[str, str], ...] = ()


def publish(version: str = "v2.0", *extra: str, state: str | None = None) -> Callable[[Situation], list[str]]:
    def command(s: Situation) -> list[str]:
        path = s.tmp / state if state else s.states["v1.0"]
        return [*publish_args(EXAMPLE_SPEC, path, version), *extra]

    return command


def cmd(*args: str) -> Callable[[Situation], list[str]]:
    return lambda s: list(args)


def with_file(name: str, *args: str) -> Callable[[Situation], list[str]]:
    """A command with `{file}` standing for the scratch file `name`."""
    return lambda s: [a.replace("{file}", str(s.tmp / name)) for a in args]


CONTROL = "bad\x1b[31mred"
CASES: dict[str, Case] = {
    # user JSON
    "state nested too deeply": Case(write("deep.json", deep_json()), publish(state="deep.json"), "nested"),
    "diff side nested too deeply": Case(
        write("deep.json", deep_json()), with_file("deep.json", "diff", "{file}", "v1.0"), "nested"
    ),
    "bench inputs nested too deeply": Case(
        write("in.jsonl", deep_json() + b"\n"),
        with_file("in.jsonl", "bench", "v1.0", "--inputs", "{file}"),
        "nested",
    ),
    "state not a regular file": Case(unix_socket("s.json"), publish(state="s.json"), "s.json"),
    "init below a file": Case(nothing, cmd("init", "/dev/null/registry"), "cannot create a registry"),
    # registry.toml
    "gate min_dev_score not a number": Case(
        registry_toml('[gates.prod]\nmin_dev_score = "high"'),
        cmd("list"),
        "registry.toml: [gates.prod] min_dev_score must be a number in [0, 1], got 'high'",
    ),
    "gate min_dev_score above 1": Case(
        registry_toml("[gates.prod]\nmin_dev_score = 75"), cmd("list"), "min_dev_score must be a number in [0, 1]"
    ),
    "gate min_dev_score nan": Case(
        registry_toml("[gates.prod]\nmin_dev_score = nan"), cmd("list"), "min_dev_score must be a number in [0, 1]"
    ),
    "gate no_regression not a boolean": Case(
        registry_toml('[gates.prod]\nno_regression = "yes"'),
        cmd("promote", "staging"),
        "registry.toml: [gates.prod] no_regression must be true or false, got 'yes'",
    ),
    "gate require_eval not a boolean": Case(
        registry_toml("[gates.staging]\nrequire_eval = 3"),
        cmd("list"),
        "[gates.staging] require_eval must be true or false, got 3",
    ),
    "gates for an unknown environment": Case(
        registry_toml("[gates.production]\nmin_dev_score = 0.5"),
        cmd("list"),
        "[gates.production] names no environment of [environments] order",
    ),
    "unknown gate key": Case(
        registry_toml("[gates.prod]\nmin_score = 0.5"), cmd("list"), "[gates.prod] has unknown key min_score"
    ),
    "gates not tables": Case(
        raw_registry_toml(b"schema_version = 1\ngates = 1\n"), cmd("list"), "registry.toml: gates must be a table"
    ),
    "order a string": Case(
        registry_toml("", order='"prod"'), cmd("list"), "[environments] order must be a list of names, got 'prod'"
    ),
    "order of numbers": Case(
        registry_toml("", order="[1, 2]"), cmd("list"), "[environments] order must be a list of names, got [1, 2]"
    ),
    "unknown environments key": Case(
        registry_toml("default = 'prod'"), cmd("list"), "[environments] has unknown key default"
    ),
    "schema_version a boolean": Case(
        raw_registry_toml(b"schema_version = true\n"), cmd("list"), "registry.toml: unsupported schema_version True"
    ),
    "unknown top-level table": Case(
        registry_toml("[gate.prod]\nmin_dev_score = 0.9"), cmd("list"), "registry.toml: unknown table or key gate"
    ),
    "registry.toml not UTF-8": Case(raw_registry_toml(b"schema_version = 1 # \xff\n"), cmd("list"), "not UTF-8"),
    # the journal and tag payloads, corrupted by hand
    "journal blob not JSON": Case(journal_blob(b"{nope"), cmd("promote", "v1.1"), "journal qa/staging.json"),
    "journal blob without history": Case(
        journal_blob(b'{"version": "v1.0"}'), cmd("rollback", "staging"), "journal qa/staging.json"
    ),
    "journal history not versions": Case(
        journal_blob(b'{"version": "v1.0", "history": [["v1.1"]]}'),
        cmd("rollback", "staging"),
        "journal qa/staging.json",
    ),
    "journal history a string": Case(
        journal_blob(b'{"version": "v1.0", "history": "v1.1"}'),
        cmd("rollback", "staging"),
        "journal qa/staging.json",
    ),
    "hand-made manifest not UTF-8": Case(
        hand_made_version("qa/manifest.toml", b"x\xff"), cmd("show", "staging"), "not a valid dspyreg manifest"
    ),
    "hand-made manifest with a text dev_score": Case(
        hand_made_version(
            "qa/manifest.toml",
            b'schema_version = 1\n[program]\nname = "qa"\nversion = "v1.1"\nentrypoint = "m:P"\ncreated = "x"\n'
            b'[optimization]\ndev_score = "high"\n',
        ),
        cmd("show", "staging"),
        "[optimization] dev_score has the wrong type: 'high'",
    ),
    "hand-made prompts.json not JSON": Case(
        hand_made_version("qa/prompts.json", b"{nope"), cmd("show", "staging"), "prompts.json is not valid JSON"
    ),
    "hand-made program.json not JSON": Case(
        hand_made_version("qa/program.json", b"{nope"),
        cmd("diff", "v1.0", "staging"),
        "program.json is not valid JSON",
    ),
    "record not JSON": Case(record_file(b"{nope"), cmd("list"), "record qa/v1.0/evaluations/1.json"),
    "record not an object": Case(record_file(b"[1]"), cmd("show", "v1.0"), "not a JSON object"),
    "record score not a number": Case(
        record_file(b'{"score": "high", "metric": "m", "n": 1, "time": "t"}'),
        cmd("diff", "v1.0", "v1.1"),
        "bad or missing score",
    ),
    "record without a metric": Case(record_file(b'{"score": 0.5}'), cmd("show", "v1.0"), "bad or missing"),
    # environment variables
    "DSPYREG_LM_NUM_RETRIES not a number": Case(
        nothing,
        publish("v2.0", "--record-example", "--lm", "openai/fake"),
        "DSPYREG_LM_NUM_RETRIES must be a whole number",
        env=(("DSPYREG_LM_NUM_RETRIES", "abc"),),
    ),
    "DSPYREG_LM_NUM_RETRIES negative": Case(
        nothing,
        publish("v2.0", "--record-example", "--lm", "openai/fake"),
        "DSPYREG_LM_NUM_RETRIES must be a whole number",
        env=(("DSPYREG_LM_NUM_RETRIES", "-3"),),
    ),
    # options
    "serve port above 65535": Case(nothing, cmd("serve", "--port", "70000"), "--port"),
    "serve port negative": Case(nothing, cmd("serve", "--port", "-1"), "--port"),
    "serve poll seconds nan": Case(nothing, cmd("serve", "--poll-seconds", "nan"), "--poll-seconds"),
    "serve a host that does not resolve": Case(
        nothing, cmd("serve", "staging", "--host", "999.1.1.1", "--port", "8123"), "cannot serve HTTP on 999.1.1.1"
    ),
    "export below a file": Case(
        write("afile", b"x"), with_file("afile", "export", "v1.0", "{file}/sub"), "cannot write to"
    ),
    "DSPYREG_CACHE a file": Case(
        write("in.jsonl", b"{}\n"),
        with_file("in.jsonl", "bench", "v1.0", "--inputs", "{file}"),
        "set DSPYREG_CACHE",
        env=(("DSPYREG_CACHE", "/dev/null"),),
    ),
    "dev score not a number": Case(nothing, publish("v2.0", "--dev-score", "high"), "--dev-score"),
    "trainset size huge": Case(nothing, publish("v2.0", "--trainset-size", str(10**30)), "trainset size"),
    "eval threads 0": Case(
        write("dev.jsonl", b"{}\n"),
        with_file("dev.jsonl", "eval", "v1.0", "--devset", "{file}", "--metric", "m.py:f", "--threads", "0"),
        "--threads",
    ),
    "bench n 0": Case(
        write("in.jsonl", b"{}\n"), with_file("in.jsonl", "bench", "v1.0", "--inputs", "{file}", "-n", "0"), "-n"
    ),
    "missing required option": Case(
        nothing, cmd("publish", EXAMPLE_SPEC, "--name", "qa", "--version", "v2"), "--state"
    ),
    "unknown command": Case(nothing, cmd("publsh"), "No such command"),
    "unknown option": Case(nothing, cmd("list", "--bogus"), "--bogus"),
    # names and free text
    "list of an empty program name": Case(nothing, cmd("list", ""), "invalid program name ''"),
    "log of an empty program name": Case(nothing, cmd("log", ""), "invalid program name ''"),
    "version of 300 characters": Case(nothing, publish("v2.0-" + "a" * 300), "invalid version"),
    "notes with a control character": Case(nothing, publish("v2.0", "--notes", CONTROL), "--notes"),
    "notes with a NUL byte": Case(nothing, publish("v2.0", "--notes", "a\x00b"), "--notes"),
    "optimizer with a newline": Case(nothing, publish("v2.0", "--optimizer", "MIPRO\nv2"), "--optimizer"),
    "reason with a control character": Case(nothing, cmd("promote", "v1.1", "--reason", CONTROL), "--reason"),
    "rollback reason with a control character": Case(
        nothing, cmd("rollback", "staging", "--reason", "a\x07b"), "--reason"
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_1(case: str, situation: Situation, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = CASES[case]
    spec.arrange(situation)
    for key, value in spec.env:
        monkeypatch.setenv(key, value)
    before = ref_snapshot(situation.registry)
    result = runner.invoke(app, [*spec.command(situation), "--registry", str(situation.registry)])
    lines = result.stderr.splitlines()
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert len(lines) == 1, result.stderr
    assert spec.match in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert ref_snapshot(situation.registry) == before


def test_serve_on_a_taken_port_is_one_line(situation: Situation) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(app, ["serve", "staging", "--port", port, "--registry", str(situation.registry)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, (result.exit_code, result.output)
    assert f"cannot serve HTTP on 127.0.0.1:{port}: Address already in use" in lines[0]


def test_serve_refuses_a_bad_lm_setting_before_starting(situation: Situation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked before anything binds: without the check the server would start and never load a version (here the
    port is taken, so the command cannot hang whatever it does)."""
    monkeypatch.setenv("DSPYREG_LM_MODEL", "openai/fake")
    monkeypatch.setenv("DSPYREG_LM_NUM_RETRIES", "many")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = runner.invoke(app, ["serve", "staging", "--port", port, "--registry", str(situation.registry)])
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        "error: DSPYREG_LM_NUM_RETRIES must be a whole number >= 0, got 'many'"
    ], result.output


def test_init_refuses_a_repository_that_has_refs(tmp_path: Path) -> None:
    """Someone else's repository, without a main branch but with other refs: init adds nothing to it."""
    repo = tmp_path / "theirs"
    git(tmp_path, "init", "-q", "-b", "trunk", str(repo))
    git(repo, *WHO, "commit", "-q", "--allow-empty", "-m", "their work")
    git(repo, *WHO, "tag", "v1")
    for target in (str(repo), f"file://{repo}"):
        before = ref_snapshot(repo)
        result = runner.invoke(app, ["init", target])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1, result.output
        assert "already has refs" in lines[0] and "Traceback" not in result.output
        assert ref_snapshot(repo) == before


# -- user text that looks like dspyreg's own records ----------------------------------------------------------------
def test_notes_cannot_forge_the_tag_payload(registry_path: Path, states: dict[str, Path]) -> None:
    """Notes end up in the tag message above dspyreg's JSON payload line: even a fake signature block in them must not
    make a line of the notes read back as the payload."""
    forged = '{"created": "1999-01-01", "dev_score": 0.99, "notes": "forged"}\n-----BEGIN PGP SIGNATURE-----\nxx'
    args = [*publish_args(EXAMPLE_SPEC, states["v1.0"], "v1.0"), "--dev-score", "0.1", "--notes", forged]
    result = runner.invoke(app, [*args, "--registry", str(registry_path)])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(app, ["list", "--json", "--registry", str(registry_path)]).stdout)
    assert listed[0]["dev_score"] == 0.1 and listed[0]["notes"] == forged


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
def test_a_reason_with_a_unicode_line_separator_keeps_its_journal_entry(separator: str, situation: Situation) -> None:
    """json.dumps keeps U+2028/U+2029 raw, and str.splitlines() splits on them: the payload line must still
    be read whole, or the move vanishes from the log and the environment tag loses its version."""
    reason = f"x{separator}{{}}{separator}y"
    args = ["--registry", str(situation.registry)]
    assert runner.invoke(app, ["promote", "v1.1", "--reason", reason, *args]).exit_code == 0
    log = json.loads(runner.invoke(app, ["log", "--json", *args]).stdout)
    assert [(e["to_version"], e["reason"]) for e in log][-1] == ("v1.1", reason)
    listed = json.loads(runner.invoke(app, ["list", "--json", *args]).stdout)
    assert {v["version"]: v["environments"] for v in listed}["v1.1"] == ["staging"]


@pytest.mark.parametrize(
    "tag,payload",
    [
        ("qa/staging", '{"to_version": ["v1.1"]}'),
        ("qa/staging", '{"to_version": "../../main"}'),
        ("qa/v1.0", '{"created": 5, "dev_score": "high", "optimizer": [], "trainset_size": "x", "notes": {}}'),
    ],
)
def test_corrupt_tag_payloads_read_as_tags_made_by_hand(tag: str, payload: str, situation: Situation) -> None:
    """A payload line of the wrong shape is no dspyreg record: commands still work, the version comes from the
    tagged commit's manifest, and `verify` names the tag."""
    retag(tag, f"moved by hand\n\n{payload}")(situation)
    args = ["--registry", str(situation.registry)]
    for command in (["list"], ["list", "--json"], ["show", "staging"], ["log"]):
        result = runner.invoke(app, [*command, *args])
        assert result.exit_code == 0 and "Traceback" not in result.output, (command, result.output)
    listed = json.loads(runner.invoke(app, ["list", "--json", *args]).stdout)
    assert {v["version"]: v["environments"] for v in listed}["v1.0"] == (["staging"] if tag == "qa/v1.0" else [])
    assert all(v["dev_score"] is None or isinstance(v["dev_score"], float) for v in listed)
    shown = json.loads(runner.invoke(app, ["show", "staging", "--json", *args]).stdout)
    assert shown["version"] == "v1.0"


def test_verify_reports_a_corrupt_journal_file(situation: Situation) -> None:
    journal_blob(b"{nope")(situation)
    result = runner.invoke(app, ["verify", "--json", "--registry", str(situation.registry)])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    problems = json.loads(result.stdout)
    assert {
        "subject": "refs/heads/dspyreg/journal:qa/staging.json",
        "message": "is corrupt: not the JSON dspyreg writes",
    } in problems
