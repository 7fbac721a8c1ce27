"""A git clone used as `--registry` stands for its origin: dspyreg works through the shared cache of the origin and
never deletes or rewrites the user's own branches, tags or checkout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import Machine, git, publish_example, ref_snapshot, server_repo


def clone_with_own_work(url: str, tmp_path: Path) -> Path:
    """A clone of the registry holding a branch with an unpushed commit and a tag of the user's own."""
    clone = tmp_path / "my-clone"
    git(tmp_path, "clone", "-q", url, str(clone))
    git(clone, "switch", "-q", "-c", "wip")
    (clone / "NOTES.md").write_text("my unpushed notes\n")
    git(clone, "add", "NOTES.md")
    git(clone, "commit", "-qm", "my unpushed work")
    git(clone, "tag", "-a", "mine", "-m", "my own tag")
    git(clone, "switch", "-q", "main")
    return clone


def in_clone(machine: Machine, clone: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    """The CLI of `machine` with `--registry` naming the clone."""
    return Machine(str(clone), machine.cache, monkeypatch)


def test_a_clone_keeps_the_users_branches_tags_and_checkout(
    machines: list[Machine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = machines[0]
    clone = clone_with_own_work(a.url, tmp_path)
    before = ref_snapshot(clone)
    head = git(clone, "symbolic-ref", "HEAD")
    cli = in_clone(a, clone, monkeypatch)

    listed = cli.cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["version"] for v in json.loads(listed.stdout)] == ["v1.0", "v1.1", "v1.2"]
    promoted = cli.cli("promote", "v1.1", "--to", "prod")
    assert promoted.returncode == 0, promoted.stderr

    assert ref_snapshot(clone) == before  # wip (with its unpushed commit), the tag, origin/* refs: all untouched
    assert git(clone, "log", "-1", "--format=%s", "wip").strip() == "my unpushed work"
    assert git(clone, "symbolic-ref", "HEAD") == head and git(clone, "status", "--porcelain") == ""
    server = server_repo(a.url, tmp_path)
    assert "v1.1" in git(server, "cat-file", "-p", "refs/tags/qa/prod")  # the move went to the origin


def test_a_clone_keeps_working_when_the_remote_main_moves(
    machines: list[Machine], states: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = machines
    clone = clone_with_own_work(a.url, tmp_path)
    cli = in_clone(a, clone, monkeypatch)
    assert cli.cli("list").returncode == 0
    main = git(clone, "rev-parse", "main")
    with b.open() as reg:  # another machine publishes: the origin's main moves past the clone's checked-out main
        publish_example(reg, states["v1.1"], "v1.3")

    listed = cli.cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [v["version"] for v in json.loads(listed.stdout)][-1] == "v1.3"
    promoted = cli.cli("promote", "v1.3", "--to", "staging")
    assert promoted.returncode == 0, promoted.stderr
    shown = cli.cli("show", "staging", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["version"] == "v1.3"
    assert git(clone, "rev-parse", "main") == main  # the user's checkout is theirs to pull
    with b.open() as reg:
        assert reg.resolve("staging").version == "v1.3"


def test_a_clone_reaches_its_origin_with_its_own_settings(
    machines: list[Machine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clone's own settings for reaching its origin (url.*.insteadOf here; the auth header actions/checkout
    writes, credential helpers, core.sshCommand) apply to the cache's fetches and pushes, without being stored."""
    a = machines[0]
    clone = clone_with_own_work(a.url, tmp_path)
    alias = "git://registry.invalid/"
    git(clone, "remote", "set-url", "origin", a.url.replace(a.url.rsplit("/", 1)[0] + "/", alias))
    git(clone, "config", f"url.{a.url.rsplit('/', 1)[0]}/.insteadOf", alias)
    cli = in_clone(a, clone, monkeypatch)
    before = ref_snapshot(clone)
    promoted = cli.cli("promote", "v1.2", "--to", "staging")
    assert promoted.returncode == 0, promoted.stderr
    assert ref_snapshot(clone) == before
    listed = cli.cli("list", "--json")
    assert listed.returncode == 0 and "staging" in json.loads(listed.stdout)[-1]["environments"]
    for cache in (a.cache / "remotes").iterdir():
        assert "insteadof" not in git(cache, "config", "--list").lower()
