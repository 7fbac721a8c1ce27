"""Every bad input: one clear line on stderr, a non-zero exit, no traceback, and the registry unchanged."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app

from .conftest import EXAMPLE_SPEC, git, publish_args, ref_snapshot

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def assert_refused(result: Any, registry: Path | None, before: str | None, match: str, code: int = 1) -> None:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1, result.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in result.output
    if registry is not None:
        assert ref_snapshot(registry) == before


@pytest.fixture
def with_v1(registry_path: Path, states: dict[str, Path]) -> Path:
    result = run(
        *publish_args(EXAMPLE_SPEC, states["v1.0"], "v1.0"),
        "--registry",
        str(registry_path),
    )
    assert result.exit_code == 0, result.output
    return registry_path


def _state(states: dict[str, Path]) -> dict[str, Any]:
    return json.loads(states["v1.0"].read_text())


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _edited(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, dict[str, Path]], Path]:
    def make(tmp_path: Path, states: dict[str, Path]) -> Path:
        state = _state(states)
        edit(state)
        return _write(tmp_path, "state.json", json.dumps(state).encode())

    return make


def _pickle_file(tmp_path: Path, states: dict[str, Path]) -> Path:
    return _write(tmp_path, "program.pkl", pickle.dumps(_state(states)))


def _pickle_bytes_as_json(tmp_path: Path, states: dict[str, Path]) -> Path:
    return _write(tmp_path, "program.json", pickle.dumps(_state(states)))


def _save_program_folder(tmp_path: Path, states: dict[str, Path]) -> Path:
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "program.pkl").write_bytes(b"\x80\x05.")
    (folder / "metadata.json").write_text("{}")
    return folder


def _rename(state: dict[str, Any]) -> None:
    state["checker"] = state.pop("check")


def _drop_field(state: dict[str, Any]) -> None:
    state["check"]["signature"]["fields"].pop()


BAD_STATES: dict[str, tuple[Callable[[Path, dict[str, Path]], Path], str]] = {
    "pickle file": (_pickle_file, "pickle"),
    "pickle bytes named .json": (_pickle_bytes_as_json, "pickle"),
    "save_program folder": (_save_program_folder, "save_program=True"),
    "not JSON": (lambda t, s: _write(t, "s.json", b"demos: [1, 2]"), "not valid JSON"),
    "truncated JSON": (lambda t, s: _write(t, "s.json", s["v1.0"].read_bytes()[:200]), "not valid JSON"),
    "not UTF-8": (lambda t, s: _write(t, "s.json", b'{"check": "\xff\xfe"}'), "not UTF-8"),
    "JSON but not an object": (lambda t, s: _write(t, "s.json", b"[1, 2]"), "not a DSPy state"),
    "missing predictor": (_edited(lambda st: st.pop("check")), "lacks check"),
    "extra predictor": (_edited(lambda st: st.__setitem__("extra", st["check"])), "has extra"),
    "renamed predictor": (_edited(_rename), "lacks check and has checker"),
    "wrong field count": (_edited(_drop_field), "has 2 fields, the program's signature has 3"),
    "unknown predictor key": (_edited(lambda st: st["check"].__setitem__("config", {"x": 1})), "unknown keys config"),
    "legacy predictor key": (_edited(lambda st: st["check"].__setitem__("extended_signature", {})), "DSPy < 2.6"),
    "missing file": (lambda t, s: t / "nope.json", "does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_STATES))
def test_bad_states_are_refused(case: str, registry_path: Path, states: dict[str, Path], tmp_path: Path) -> None:
    make, match = BAD_STATES[case]
    before = ref_snapshot(registry_path)
    path = make(tmp_path, states)
    result = run(
        *publish_args(EXAMPLE_SPEC, path, "v1.0"),
        "--registry",
        str(registry_path),
    )
    assert_refused(result, registry_path, before, match)
    assert str(path) in result.stderr  # the message names the file


def test_lm_secrets_are_stripped_with_a_warning(registry_path: Path, states: dict[str, Path], tmp_path: Path) -> None:
    state = _state(states)
    state["check"]["lm"] = {"model": "openai/gpt-4o-mini", "api_key": "sk-live-123", "api_base": "https://internal"}
    path = _write(tmp_path, "s.json", json.dumps(state).encode())
    result = run(
        *publish_args(EXAMPLE_SPEC, path, "v1.0"),
        "--registry",
        str(registry_path),
    )
    assert result.exit_code == 0, result.output
    assert "warning: removed 'api_base'" in result.stderr and "warning: removed 'api_key'" in result.stderr
    assert b"sk-live-123" not in git(registry_path, "show", "qa/v1.0:qa/program.json").encode()


def _spec_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "prog.py"
    path.write_text(body)
    return f"{path}:Prog"


BAD_SPECS: dict[str, tuple[Callable[[Path], str], str]] = {
    "no colon": (lambda t: "examples/qa_program.py", "invalid program spec"),
    "missing file": (lambda t: f"{t}/nope.py:Prog", "does not exist"),
    "missing module": (lambda t: "no_such_module_xyz:Prog", "does not import: ModuleNotFoundError"),
    "syntax error": (lambda t: _spec_file(t, "def broken(:\n"), "does not import: SyntaxError"),
    "raises on import": (
        lambda t: _spec_file(t, "raise RuntimeError('boom')\n"),
        "does not import: RuntimeError: boom",
    ),
    "missing attribute": (lambda t: _spec_file(t, "x = 1\n"), "'Prog' is not defined"),
    "not a module": (lambda t: _spec_file(t, "class Prog:\n    pass\n"), "not a dspy.Module"),
    "not callable": (lambda t: _spec_file(t, "Prog = 3\n"), "not a dspy.Module subclass or factory"),
}


@pytest.mark.parametrize("case", list(BAD_SPECS))
def test_bad_program_specs_are_refused(case: str, registry_path: Path, states: dict[str, Path], tmp_path: Path) -> None:
    make, match = BAD_SPECS[case]
    before = ref_snapshot(registry_path)
    result = run(
        *publish_args(make(tmp_path), states["v1.0"], "v1.0"),
        "--registry",
        str(registry_path),
    )
    assert_refused(result, registry_path, before, match)


@pytest.mark.parametrize("name", ["../x", "a/../b", "Q A", "qa@{", "qa~1", "qa^", "qa:x", "qa?", "qa*", "qa[", "qa\\"])
def test_invalid_program_names(name: str, registry_path: Path, states: dict[str, Path]) -> None:
    before = ref_snapshot(registry_path)
    result = run(
        *publish_args(EXAMPLE_SPEC, states["v1.0"], "v1.0", name=name),
        "--registry",
        str(registry_path),
    )
    assert_refused(result, registry_path, before, "invalid program name")


@pytest.mark.parametrize(
    "version", ["../x", "a/../b", "v1..2", "prod", "v1 .0", "v1@{0}", "v1~", "v1^", "v1:", "v1?", "v1*", "v1[", "v1\\"]
)
def test_invalid_versions(version: str, registry_path: Path, states: dict[str, Path]) -> None:
    before = ref_snapshot(registry_path)
    result = run(
        *publish_args(EXAMPLE_SPEC, states["v1.0"], version),
        "--registry",
        str(registry_path),
    )
    assert_refused(result, registry_path, before, "invalid version")


def test_duplicate_version(with_v1: Path, states: dict[str, Path]) -> None:
    before = ref_snapshot(with_v1)
    result = run(
        *publish_args(EXAMPLE_SPEC, states["v1.1"], "1.0"),
        "--registry",
        str(with_v1),
    )
    assert_refused(result, with_v1, before, "qa v1.0 is already published")


@pytest.mark.parametrize(
    "args,match",
    [
        (["promote", "v9.9"], "qa v9.9 is not published"),
        (["promote", "v1.0", "--to", "qa-live"], "unknown environment 'qa-live'"),
        (["promote", "v1.0", "--to", "rollback"], "managed by dspyreg"),
        (["promote", "staging"], "qa/staging is unset"),
        (["promote", "../x"], "invalid ref"),
        (["rollback", "qa-live"], "unknown environment 'qa-live'"),
        (["rollback"], "nothing to roll back"),
        (["rollback", "v1.0"], "invalid environment name"),
        (["show", "v9.9"], "not published"),
        (["show", "deadbeef"], "not a commit of this registry"),
        (["log", "--env", "qa-live"], "unknown environment"),
        (["list", "Bad/Name"], "invalid program name"),
        (["diff", "v1.0", "v9.9"], "not published"),
    ],
)
def test_unknown_refs_and_environments(args: list[str], match: str, with_v1: Path) -> None:
    before = ref_snapshot(with_v1)
    assert_refused(run(*args, "--registry", str(with_v1)), with_v1, before, match)


@pytest.mark.parametrize(
    "command", [["list"], ["show", "prod"], ["log"], ["promote", "v1.0"], ["rollback"], ["diff", "v1.0", "v1.1"]]
)
def test_registry_paths_that_are_not_registries(command: list[str], tmp_path: Path) -> None:
    assert_refused(run(*command, "--registry", str(tmp_path / "missing")), None, None, "does not exist")
    (tmp_path / "plain").mkdir(exist_ok=True)
    assert_refused(run(*command, "--registry", str(tmp_path / "plain")), None, None, "not a git repository")
    if not (tmp_path / "repo").exists():
        git(tmp_path, "init", "-q", "repo")
    assert_refused(run(*command, "--registry", str(tmp_path / "repo")), None, None, "not a dspyreg registry")
    assert git(tmp_path / "repo", "for-each-ref") == ""  # nothing was written into the plain repository


def test_diff_of_bad_files(tmp_path: Path, states: dict[str, Path]) -> None:
    bad = _write(tmp_path, "bad.json", b"{nope")
    assert_refused(run("diff", str(states["v1.0"]), str(bad)), None, None, "not valid JSON")
    pkl = _write(tmp_path, "old.pkl", b"\x80\x04K\x01.")
    assert_refused(run("diff", str(pkl), str(states["v1.0"])), None, None, "pickle")
