"""Semantic `git diff`: plain git (diff, log -p, show) on program.json and prompts.json prints dspyreg's per-predictor
view through the `dspyreg textconv` driver that `init` and `git-setup` set up, in a registry and in a clone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dspy_registry.registry import Registry

from .conftest import git, publish_example, ref_snapshot

DSPYREG = [sys.executable, "-m", "dspy_registry"]
ATTRIBUTE_LINES = ("*/program.json diff=dspyreg", "*/prompts.json diff=dspyreg")


def dspyreg(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[bytes]:
    import os

    return subprocess.run([*DSPYREG, *args], capture_output=True, cwd=cwd, env={**os.environ, **env})


def changed_instructions(repo: Path) -> tuple[str, str]:
    """A predictor whose instructions v1.0 and v1.1 differ in, and its v1.1 instructions."""
    old = json.loads(git(repo, "show", "qa/v1.0:qa/prompts.json"))
    new = json.loads(git(repo, "show", "qa/v1.1:qa/prompts.json"))
    name = next(n for n in new if n in old and old[n]["instructions"] != new[n]["instructions"])
    return name, new[name]["instructions"]


def assert_semantic(out: str, predictor: str, instructions: str) -> None:
    assert f"predictor {predictor}" in out
    assert f"+    {instructions.splitlines()[0]}" in out  # the changed instruction line, as an added line
    assert "input question: str" in out  # a field with its type
    assert '"instructions":' not in out and '"inputs": [' not in out  # no raw JSON


def test_plain_git_diff_log_and_show_print_the_view(published: Registry, registry_path: Path) -> None:
    predictor, instructions = changed_instructions(registry_path)
    diff = git(registry_path, "diff", "qa/v1.0", "qa/v1.1", "--", "qa/prompts.json")
    assert_semantic(diff, predictor, instructions)
    log = git(registry_path, "log", "-p", "main", "--", "qa/prompts.json")
    assert_semantic(log, predictor, instructions)
    show = git(registry_path, "show", "qa/v1.1", "--", "qa/prompts.json")
    assert_semantic(show, predictor, instructions)
    # program.json, a bare DSPy state, reads as one too (its fields have no types: DSPy does not save them).
    state = git(registry_path, "diff", "qa/v1.0", "qa/v1.1", "--", "qa/program.json")
    assert f"predictor {predictor}" in state and f"+    {instructions.splitlines()[0]}" in state
    assert '"signature": {' not in state
    # The lines that name the driver are in the registry's first commit, as `init` wrote it.
    root = git(registry_path, "rev-list", "--max-parents=0", "main").strip()
    attributes = git(registry_path, "show", f"{root}:.gitattributes").splitlines()
    assert set(ATTRIBUTE_LINES) <= set(attributes)


def test_a_git_clone_with_git_setup_prints_the_view(published: Registry, registry_path: Path, tmp_path: Path) -> None:
    predictor, instructions = changed_instructions(registry_path)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(registry_path), str(clone))
    git(clone, "fetch", "-q", "--tags")
    before = git(clone, "diff", "qa/v1.0", "qa/v1.1", "--", "qa/prompts.json")
    assert '"instructions":' in before  # git config is never cloned: raw JSON until the clone is set up
    snapshot = ref_snapshot(registry_path)
    proc = dspyreg("git-setup", "--registry", ".", cwd=clone)
    assert proc.returncode == 0, proc.stderr
    assert ref_snapshot(registry_path) == snapshot  # .gitattributes was there: nothing committed
    assert str((clone / ".git").resolve()) in " ".join(proc.stdout.decode().split())
    assert_semantic(git(clone, "diff", "qa/v1.0", "qa/v1.1", "--", "qa/prompts.json"), predictor, instructions)
    assert_semantic(git(clone, "log", "-p", "origin/main", "--", "qa/prompts.json"), predictor, instructions)
    assert_semantic(git(clone, "show", "qa/v1.1", "--", "qa/prompts.json"), predictor, instructions)


def test_git_setup_commits_the_attributes_once_on_an_older_registry(
    registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    # A registry as dspyreg wrote it before the driver: no lines in .gitattributes, no config, no info/attributes.
    clone = tmp_path / "old"
    git(tmp_path, "clone", "-q", str(registry_path), str(clone))
    kept = [line for line in (clone / ".gitattributes").read_text().splitlines() if "dspyreg" not in line]
    (clone / ".gitattributes").write_text("\n".join(kept) + "\n")
    git(clone, "commit", "-qam", "as before")
    git(clone, "push", "-q", "origin", "main")
    git(registry_path, "config", "--unset", "diff.dspyreg.textconv")
    (registry_path / "info" / "attributes").unlink()
    with Registry.open(registry_path) as reg:
        publish_example(reg, states["v1.0"], "v1.0")
        publish_example(reg, states["v1.1"], "v1.1")
    assert '"instructions":' in git(registry_path, "diff", "qa/v1.0", "qa/v1.1", "--", "qa/prompts.json")
    main = git(registry_path, "rev-parse", "main").strip()

    proc = dspyreg("git-setup", "--registry", str(registry_path))
    assert proc.returncode == 0, proc.stderr
    assert git(registry_path, "rev-parse", "main~1").strip() == main  # one commit on main
    changed = git(registry_path, "diff-tree", "--no-commit-id", "--name-only", "-r", "main").split()
    assert changed == [".gitattributes"]
    assert set(ATTRIBUTE_LINES) <= set(git(registry_path, "show", "main:.gitattributes").splitlines())
    predictor, instructions = changed_instructions(registry_path)
    assert_semantic(git(registry_path, "diff", "qa/v1.0", "qa/v1.1", "--", "qa/prompts.json"), predictor, instructions)
    snapshot = ref_snapshot(registry_path)
    again = dspyreg("git-setup", "--registry", str(registry_path))
    assert again.returncode == 0, again.stderr
    assert ref_snapshot(registry_path) == snapshot  # only if missing: a second run commits nothing


@pytest.mark.parametrize(
    "content",
    [
        b"not json at all \x00\xff\n",
        b'{"a": 1, "b": [1, 2]}\n',
        b"[1, 2, 3]\n",
        b'{"qa": {"inputs": "not a list"}}',
        b"",
    ],
)
def test_anything_else_is_printed_unchanged(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(content)
    proc = dspyreg("textconv", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == content and proc.stderr == b""


def test_a_huge_file_is_printed_unchanged(published: Registry, registry_path: Path, tmp_path: Path) -> None:
    data = git(registry_path, "show", "qa/v1.1:qa/prompts.json").encode()
    path = tmp_path / "prompts"
    path.write_bytes(data)
    assert dspyreg("textconv", str(path)).stdout.startswith(b"dspyreg view of prompts.json")
    proc = dspyreg("textconv", str(path), DSPYREG_MAX_STATE_BYTES=str(len(data) - 1))
    assert proc.returncode == 0 and proc.stdout == data


def secret_state() -> dict[str, Any]:
    lm = {"model": "openai/gpt-4o-mini", "temperature": 0.0, "api_key": "sk-live-0123456789abcdefghijkl"}
    return {
        "qa": {
            "demos": [{"question": "q1", "answer": "a1"}],
            "signature": {"instructions": "Answer.", "fields": [{"prefix": "Question:", "description": "q"}]},
            "lm": {**lm, "aws_secret_access_key": "AKIAABCDEFGHIJKLMNOP"},
            "client_secret": "hunter2-hunter2",
        },
        "metadata": {"dependency_versions": {"dspy": "3.0.0"}},
    }


def test_credentials_are_never_printed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text(json.dumps(secret_state()))
    prompts = tmp_path / "prompts"
    lm = secret_state()["qa"]["lm"]
    field = {"name": "question", "type": "str", "description": "", "prefix": "Question:"}
    prompts.write_text(json.dumps({"qa": {"instructions": "Answer.", "inputs": [field], "outputs": [], "lm": lm}}))
    for path in (state, prompts):
        out = dspyreg("textconv", str(path)).stdout.decode()
        assert "predictor qa" in out and "openai/gpt-4o-mini" in out
        assert '"api_key": "***"' in out  # named, never shown
        for secret in ("sk-live-0123456789abcdefghijkl", "AKIAABCDEFGHIJKLMNOP"):
            assert secret not in out
    assert "hunter2" not in dspyreg("textconv", str(state)).stdout.decode()


def test_a_missing_file_is_one_red_line(published: Registry, registry_path: Path, tmp_path: Path) -> None:
    snapshot = ref_snapshot(registry_path)
    for args in (["textconv", str(tmp_path / "nope.json")], ["textconv", str(tmp_path)]):
        proc = dspyreg(*args, cwd=registry_path)
        assert proc.returncode == 1
        assert proc.stdout == b""
        err = proc.stderr.decode()
        assert err.count("\n") == 1 and err.startswith("error:"), err
    bad = dspyreg("git-setup", "--registry", str(tmp_path / "no-registry"))
    assert bad.returncode == 1 and bad.stderr.decode().count("\n") == 1
    assert not (tmp_path / "no-registry").exists()
    assert ref_snapshot(registry_path) == snapshot


def test_diff_masks_a_credential_named_predictor_key(tmp_path: Path) -> None:
    """The view textconv prints is `dspyreg diff`'s: a key named like a credential is masked there too."""
    old, new = secret_state(), secret_state()
    new["qa"]["client_secret"] = "hunter3-hunter3"
    (tmp_path / "a.json").write_text(json.dumps(old))
    (tmp_path / "b.json").write_text(json.dumps(new))
    proc = dspyreg("diff", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "hunter" not in out


def test_a_remote_registry_is_set_up_in_its_cache_clone(daemon: str, states: dict[str, Path], tmp_path: Path) -> None:
    with Registry.init(daemon) as reg:
        cache = reg.store.git_dir
    with Registry.open(daemon) as reg:
        publish_example(reg, states["v1.0"], "v1.0")
        publish_example(reg, states["v1.1"], "v1.1")
    predictor, instructions = changed_instructions(cache)
    assert_semantic(git(cache, "diff", "qa/v1.0", "qa/v1.1", "--", "qa/prompts.json"), predictor, instructions)
    # Another machine's cache has no driver until git-setup names it there; the remote gets no new commit.
    other = tmp_path / "other-cache"
    server = tmp_path / "server" / "registry.git"
    snapshot = ref_snapshot(server)
    proc = dspyreg("git-setup", "--registry", daemon, DSPYREG_CACHE=str(other))
    assert proc.returncode == 0, proc.stderr
    assert ref_snapshot(server) == snapshot
    (other_cache,) = (other / "remotes").iterdir()
    assert_semantic(git(other_cache, "diff", "qa/v1.0", "qa/v1.1", "--", "qa/prompts.json"), predictor, instructions)
