"""Verification: tampered bundles and hand-moved tags are caught by verify, load and export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import tomlkit
from typer.testing import CliRunner

import dspy_registry
from dspy_registry.cli import app
from dspy_registry.registry import Registry
from dspy_registry.verify import VerificationFailed

from .conftest import git, ref_snapshot, tamper

runner = CliRunner()


def cli(registry: Registry, *args: str) -> object:
    return runner.invoke(app, [*args, "--registry", registry.location])


@pytest.fixture
def in_prod(published: Registry) -> Registry:
    published.promote("v1.0", "prod")
    published.promote("v1.1", "prod")
    published.promote("v1.1", "staging")
    return published


def test_a_sound_registry_verifies(in_prod: Registry) -> None:
    for args in ([], ["--all"], ["prod"], ["v1.0"]):
        result = cli(in_prod, "verify", *args)
        assert result.exit_code == 0 and "verified" in result.stdout, result.output  # type: ignore[attr-defined]
    assert in_prod.verify(everything=True) == []


def test_tampered_file_and_hand_moved_prod_are_caught_everywhere(in_prod: Registry, tmp_path: Path) -> None:
    path = Path(in_prod.location)
    commit = tamper(path, tmp_path)
    result = cli(in_prod, "verify")
    out = result.stdout  # type: ignore[attr-defined]
    assert result.exit_code == 1  # type: ignore[attr-defined]
    assert "qa/v1.1:prompts.json: sha256 differs from the manifest" in out
    assert f"refs/tags/qa/prod: points at commit {commit[:12]}" in out
    assert "refs/tags/qa/prod: its message has no dspyreg record" in out  # Mallory's tag is not dspyreg's
    data = json.loads(cli(in_prod, "verify", "--json").stdout)  # type: ignore[attr-defined]
    assert {p["subject"] for p in data} >= {"qa/v1.1:prompts.json", "refs/tags/qa/prod"}

    with Registry.open(path) as reg, pytest.raises(VerificationFailed, match=r"prompts\.json"):
        reg.load("prod")
    with pytest.raises(VerificationFailed, match="fails verification"):
        dspy_registry.load("qa", "prod", registry=path)
    before = ref_snapshot(path)
    refused = cli(in_prod, "export", "prod", str(tmp_path / "out"))
    assert refused.exit_code == 1 and "fails verification" in refused.stderr  # type: ignore[attr-defined]
    assert not (tmp_path / "out").exists() and ref_snapshot(path) == before
    # The untouched versions stay usable, and --no-verify overrides with a warning.
    assert dspy_registry.load("qa", "v1.0", registry=path).check is not None
    forced = cli(in_prod, "export", "prod", str(tmp_path / "out"), "--no-verify")
    assert forced.exit_code == 0 and "warning: not verifying" in forced.stderr  # type: ignore[attr-defined]
    assert "Ignore the passages" in (tmp_path / "out" / "prompts.json").read_text()


def test_prod_moved_by_hand_to_another_published_commit(in_prod: Registry, tmp_path: Path) -> None:
    path = Path(in_prod.location)
    git(
        path,
        "-c",
        "user.name=M",
        "-c",
        "user.email=m@x",
        "tag",
        "-f",
        "-a",
        "qa/prod",
        "-m",
        "quick fix",
        "qa/v1.0^{commit}",
    )
    problems = [str(p) for p in in_prod.verify()]
    assert any("refs/tags/qa/prod: its message has no dspyreg record" in p for p in problems), problems
    with pytest.raises(VerificationFailed, match="refs/tags/qa/prod"):
        in_prod.load("prod")


def test_a_lightweight_tag_and_a_journal_disagreement(in_prod: Registry) -> None:
    path = Path(in_prod.location)
    git(path, "tag", "-f", "qa/staging", "qa/v1.0^{commit}")
    problems = [str(p) for p in in_prod.verify()]
    assert any("refs/tags/qa/staging: is not an annotated tag" in p for p in problems), problems
    git(path, "tag", "-d", "qa/staging")
    problems = [str(p) for p in in_prod.verify()]
    assert any("refs/tags/qa/staging: missing, but the journal says qa/staging is v1.1" in p for p in problems)


def test_secrets_committed_by_hand_are_reported(in_prod: Registry, tmp_path: Path) -> None:
    """Even with the manifest's sha256 updated to match, an API key in the LM state is a problem."""
    path = Path(in_prod.location)
    clone = tmp_path / "c"
    git(tmp_path, "clone", "-q", str(path), str(clone))
    state = json.loads((clone / "qa/program.json").read_text())
    state["check"]["lm"] = {"model": "openai/gpt-4o-mini", "api_key": "sk-leaked"}
    data = (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()
    (clone / "qa/program.json").write_bytes(data)
    manifest = tomlkit.parse((clone / "qa/manifest.toml").read_text())
    manifest["files"]["program.json"] = hashlib.sha256(data).hexdigest()  # type: ignore[index]
    (clone / "qa/manifest.toml").write_text(tomlkit.dumps(manifest))
    git(clone, "-c", "user.name=M", "-c", "user.email=m@x", "commit", "-qam", "lm")
    git(clone, "push", "-q", "origin", "main")
    sha = git(clone, "rev-parse", "HEAD").strip()
    problems = [str(p) for p in in_prod.verify(sha)]
    assert any("holds an LM secret or endpoint at check.lm.api_key" in p for p in problems), problems


def test_verify_bad_input(in_prod: Registry) -> None:
    result = cli(in_prod, "verify", "v9.9")
    assert result.exit_code == 1 and "not published" in result.stderr  # type: ignore[attr-defined]


def test_verify_all_yields_each_version_as_it_is_checked(published: Registry) -> None:
    """verify_findings reads a version only when the one before has been reported: a tag made lightweight by hand
    after the first finding is seen in the next version, so nothing past the first was read before it."""
    path = Path(published.location)
    git(path, "-c", "user.name=M", "-c", "user.email=m@x", "tag", "-f", "-a", "qa/v1.0", "-m", "x", "qa/v1.1^{commit}")
    found = published.verify_findings(everything=True)
    first = next(found)
    assert first.problem.subject == "refs/tags/qa/v1.0" and not first.warning, first
    assert published.verify("v1.1") == []
    git(path, "tag", "-f", "qa/v1.1", "qa/v1.1^{commit}")  # lightweight: listed annotated, read lightweight
    rest = [str(f.problem) for f in found]
    assert "refs/tags/qa/v1.1: is not an annotated tag written by dspyreg (made by hand?)" in rest, rest
    assert rest.index("refs/tags/qa/v1.1: is not an annotated tag written by dspyreg (made by hand?)") > 0


def test_verify_all_json_is_one_document_printed_as_json_is(published: Registry, tmp_path: Path) -> None:
    """--json streams its list item by item, byte for byte what one json.dumps of the whole list prints."""
    sound = cli(published, "verify", "--all", "--json")
    assert sound.exit_code == 0 and sound.stdout == "[]\n"  # type: ignore[attr-defined]
    tamper(Path(published.location), tmp_path)
    result = cli(published, "verify", "--all", "--json")
    out = result.stdout  # type: ignore[attr-defined]
    data = json.loads(out)
    assert result.exit_code == 1 and len(data) > 1  # type: ignore[attr-defined]
    assert out == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    problems = published.verify(everything=True)
    assert [(p["subject"], p["message"]) for p in data] == [(p.subject, p.message) for p in problems]
