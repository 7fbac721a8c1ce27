"""Lifecycle: yank/unyank (PyPI's meaning), unassign, and approvals with the `approvals` gate, each journaled in one
transaction on a real registry; signed approvals checked against registry.toml's keys."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry import lifecycle
from dspy_registry.cli import app
from dspy_registry.errors import CorruptRecord, GateRefused
from dspy_registry.refs import JOURNAL_REF
from dspy_registry.registry import Registry

from .conftest import git, ref_snapshot
from .security.test_signing import make_key, set_signing, use_key

runner = CliRunner()


def cli(reg: Registry, *args: str) -> Any:
    return runner.invoke(app, [*args, "--registry", reg.location])


def as_person(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", name)
        monkeypatch.setenv(f"GIT_{role}_EMAIL", f"{name.lower()}@example.com")


def journal_commits(reg: Registry) -> int:
    return int(git(Path(reg.location), "rev-list", "--count", JOURNAL_REF).strip() or 0)


def test_yank_hides_from_list_refuses_promote_and_flags_show_and_load(published: Registry) -> None:
    result = cli(published, "yank", "v1.0", "--reason", "leaks PII in a demo")
    assert result.exit_code == 0, result.output
    assert "qa v1.0: yanked (leaks PII in a demo)" in result.stdout

    listed = json.loads(cli(published, "list", "--json").stdout)
    assert [v["version"] for v in listed] == ["v1.1"]
    every = json.loads(cli(published, "list", "--json", "--yanked").stdout)
    assert [(v["version"], v["yanked"]) for v in every] == [("v1.0", "leaks PII in a demo"), ("v1.1", None)]
    assert "yanked" in cli(published, "list", "--yanked").stdout

    shown = cli(published, "show", "v1.0")
    assert "yanked" in shown.stdout and "leaks PII in a demo" in shown.stdout
    assert json.loads(cli(published, "show", "v1.0", "--json").stdout)["yanked"] == "leaks PII in a demo"

    before = ref_snapshot(Path(published.location))
    refused = cli(published, "promote", "v1.0", "--to", "prod")
    assert refused.exit_code == 1 and refused.stderr.count("\n") == 1
    assert "qa v1.0 is yanked (leaks PII in a demo)" in refused.stderr and "unyank" in refused.stderr
    assert ref_snapshot(Path(published.location)) == before

    with pytest.warns(UserWarning, match="qa v1.0 is yanked: leaks PII in a demo"):
        program = published.load("v1.0")
    assert program is not None  # still resolvable by its exact ref

    log = json.loads(cli(published, "log", "--json").stdout)
    assert [(e["action"], e["to_version"], e["reason"]) for e in log] == [("yank", "v1.0", "leaks PII in a demo")]

    assert cli(published, "unyank", "v1.0").exit_code == 0
    assert [v["version"] for v in json.loads(cli(published, "list", "--json").stdout)] == ["v1.0", "v1.1"]
    assert cli(published, "promote", "v1.0", "--to", "prod").exit_code == 0


def test_lifecycle_bad_input_changes_nothing(published: Registry) -> None:
    published.yank("v1.1", reason="bad")
    before, commits = ref_snapshot(Path(published.location)), journal_commits(published)
    cases = [
        (("yank", "v1.0", "--reason", " "), "yank needs --reason"),
        (("yank", "v1.1", "--reason", "again"), "qa v1.1 is yanked already (bad)"),
        (("unyank", "v1.0"), "qa v1.0 is not yanked"),
        (("yank", "prod", "--reason", "x"), "yank takes a version"),
        (("yank", "v9.9", "--reason", "x"), "qa v9.9 is not published"),
        (("approve", "v1.0", "--for", "nowhere"), "nowhere"),
        (("approve", "staging", "--for", "prod"), "approve takes a version"),
        (("unassign", "prod"), "qa/prod is unset already"),
        (("unassign", "rollback"), "rollback"),
    ]
    for args, message in cases:
        result = cli(published, *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr and result.stderr.count("\n") == 1, (args, result.stderr)
    assert ref_snapshot(Path(published.location)) == before and journal_commits(published) == commits


def test_unassign_clears_an_environment_and_rollback_brings_it_back(prod_v11: Registry) -> None:
    result = cli(prod_v11, "unassign", "prod", "--reason", "incident 42", "--json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)
    assert [(e["env"], e["from_version"], e["to_version"], e["action"]) for e in entries] == [
        ("prod", "v1.1", None, "unassign"),
        ("rollback", "v1.0", "v1.1", "managed"),
    ]
    assert git(Path(prod_v11.location), "tag", "-l", "qa/prod") == ""
    assert prod_v11.environments_of("qa").get("prod") is None
    assert cli(prod_v11, "show", "prod").exit_code == 1
    assert cli(prod_v11, "verify").exit_code == 0, cli(prod_v11, "verify").output

    back = prod_v11.rollback()
    assert (back.entries[0].env, back.entries[0].to_version) == ("prod", "v1.1")
    assert prod_v11.resolve("prod").version == "v1.1"


def _gate(reg: Registry, tmp_path: Path, toml: str) -> Registry:
    """Append `toml` to registry.toml on main; the registry opened afresh (an open one keeps the config it read)."""
    set_signing(Path(reg.location), tmp_path, toml)
    return Registry.open(reg.location)


def test_approvals_gate_needs_someone_other_than_the_publisher(
    published: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = _gate(published, tmp_path, "\n[gates.prod]\napprovals = 1\n")
    with pytest.raises(GateRefused, match=r"v1.1 has 0 approval\(s\) from someone other than its publisher, 1 needed"):
        published.promote("v1.1", "prod")

    self_approved = cli(published, "approve", "v1.1", "--for", "prod", "--reason", "looks good")
    assert self_approved.exit_code == 0 and "approved for prod by Test Author" in self_approved.stdout
    with pytest.raises(GateRefused, match="0 approval"):  # the publisher approving their own version does not count
        published.promote("v1.1", "prod")

    as_person(monkeypatch, "Bob")
    assert cli(published, "approve", "v1.1", "--for", "staging").exit_code == 0  # another environment
    with pytest.raises(GateRefused):
        published.promote("v1.1", "prod")
    result = cli(published, "approve", "v1.1", "--for", "prod", "--reason", "reviewed the diff", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        **{k: json.loads(result.stdout)[k] for k in ("time",)},
        "version": "v1.1",
        "env": "prod",
        "actor": "Bob <bob@example.com>",
        "reason": "reviewed the diff",
    }
    moved = published.promote("v1.1", "prod")
    assert moved.entries[0].to_version == "v1.1"
    actions = [e.action for e in published.log("qa")]
    assert actions == ["approve", "approve", "approve", "promote"]


def test_forced_promote_without_approval_is_journaled(published: Registry, tmp_path: Path) -> None:
    published = _gate(published, tmp_path, "\n[gates.prod]\napprovals = 2\n")
    result = cli(published, "promote", "v1.1", "--to", "prod", "--force", "--reason", "hotfix")
    assert result.exit_code == 0, result.output
    entry = published.log("qa", "prod")[-1]
    assert "0 approval(s)" in entry.override and entry.reason == "hotfix"


def test_signed_approvals_count_only_with_an_allowed_key(
    published: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    alice, mallory = make_key(folder, "alice"), make_key(folder, "mallory")
    published = _gate(
        published,
        tmp_path,
        f'\n[gates.prod]\napprovals = 1\n\n[signing.environments]\nprod = ["{alice.public}"]\n',
    )
    as_person(monkeypatch, "Mallory")
    use_key(mallory)
    assert cli(published, "approve", "v1.1", "--for", "prod", "--sign").exit_code == 0
    with pytest.raises(GateRefused, match="signed by a key"):
        published.promote("v1.1", "prod")

    as_person(monkeypatch, "Eve")
    assert cli(published, "approve", "v1.1", "--for", "prod").exit_code == 0  # unsigned: does not count either
    with pytest.raises(GateRefused):
        published.promote("v1.1", "prod")

    as_person(monkeypatch, "Alice")
    use_key(alice)
    signed = cli(published, "approve", "v1.1", "--for", "prod", "--sign")
    assert signed.exit_code == 0 and "(signed)" in signed.stdout
    found = lifecycle.approvals(published.store, "qa")
    assert found[-1].signature is not None and found[-1].signature.startswith("-----BEGIN SSH SIGNATURE-----")
    assert published.promote("v1.1", "prod").entries[0].to_version == "v1.1"


def test_a_forged_signature_does_not_count(
    published: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "keys"
    folder.mkdir()
    alice = make_key(folder, "alice")
    as_person(monkeypatch, "Alice")
    use_key(alice)  # before the registry is opened: an open registry reads git's config once
    published = _gate(
        published, tmp_path, f'\n[gates.prod]\napprovals = 1\n\n[signing.environments]\nprod = ["{alice.public}"]\n'
    )
    published.approve("v1.0", "prod", sign=True)  # a real signature, but over an approval of v1.0
    signature = lifecycle.approvals(published.store, "qa")[0].signature
    assert signature is not None
    forged = {
        "approvals": [
            {
                "version": "v1.1",
                "env": "prod",
                "actor": "Alice <alice@example.com>",
                "time": "2026-01-01T00:00:00Z",
                "reason": "",
                "signature": signature,
            }
        ]
    }
    _write_journal_file(published, tmp_path, "qa/_approvals.json", forged)
    with pytest.raises(GateRefused, match="0 approval"):
        published.promote("v1.1", "prod")


def _write_journal_file(reg: Registry, tmp_path: Path, path: str, value: Any) -> None:
    """Rewrite a file on the journal as someone with push access could (a plain commit on the journal ref)."""
    clone = tmp_path / "journal-clone"
    git(tmp_path, "clone", "-q", "--no-checkout", reg.location, str(clone))
    git(clone, "fetch", "-q", "origin", f"{JOURNAL_REF}:{JOURNAL_REF}")
    git(clone, "checkout", "-q", JOURNAL_REF.removeprefix("refs/heads/"))
    target = clone / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(value))
    git(clone, "add", path)
    git(clone, "-c", "user.name=M", "-c", "user.email=m@x", "commit", "-qm", "forge")
    git(clone, "push", "-q", "origin", f"HEAD:{JOURNAL_REF}")


@pytest.mark.parametrize(
    "path, value",
    [
        ("qa/_yanked.json", {"yanked": {"v1.0": {"reason": 1, "actor": "a", "time": "t"}}}),
        ("qa/_yanked.json", {"yanked": {"../x": {"reason": "r", "actor": "a", "time": "t"}}}),
        ("qa/_yanked.json", {"yanked": []}),
        ("qa/_approvals.json", {"approvals": [{"version": "v1.1", "env": "prod"}]}),
        (
            "qa/_approvals.json",
            {"approvals": [{"version": "v1.1", "env": "prod", "actor": "a", "time": "t", "reason": "", "extra": 1}]},
        ),
        ("qa/_approvals.json", "not json at all"),
    ],
)
def test_a_corrupt_lifecycle_file_is_refused_naming_it(
    published: Registry, tmp_path: Path, path: str, value: Any
) -> None:
    published.promote("v1.0", "staging")  # the journal exists
    _write_journal_file(published, tmp_path, path, value)
    reader = lifecycle.yanked if "yanked" in path else lifecycle.approvals
    with pytest.raises(CorruptRecord, match=path.split("/")[1]):
        reader(published.store, "qa")
    result = cli(published, "list")
    if "yanked" in path:
        assert result.exit_code == 1 and path in result.stderr and result.stderr.count("\n") == 1


def test_yank_and_approve_land_in_one_journal_commit_each(published: Registry) -> None:
    commits = journal_commits(published) if published.store.ref_value(JOURNAL_REF) else 0
    published.yank("v1.0", reason="r")
    published.approve("v1.1", "prod")
    assert journal_commits(published) == commits + 2
    head = git(Path(published.location), "log", "-1", "--format=%B", JOURNAL_REF)
    assert head.startswith("approve qa v1.1 for prod")
    tree = subprocess.run(
        ["git", "-C", published.location, "ls-tree", "-r", "--name-only", JOURNAL_REF],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(tree) == ["qa/_approvals.json", "qa/_yanked.json"]
