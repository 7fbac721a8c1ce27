"""Locks and races: a lock file left by a crash is named with the command to clear it (exit 1, at once), a lock a
running git holds is waited for, a ref that vanishes mid-fetch is fetched again, and a lost race names the move that
actually won. The CLI commands run in this process (the same command code as `dspyreg`, without starting Python
and importing DSPy again for each)."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from dspy_registry import gitstore
from dspy_registry.cli import app
from dspy_registry.errors import ConflictError, RegistryError
from dspy_registry.gitstore import GitStore
from dspy_registry.registry import Registry

from ..conftest import EXAMPLE_SPEC, Machine, git, publish_args, publish_example, ref_snapshot, server_repo

JOURNAL = "refs/heads/dspyreg/journal"


def leave_stale_lock(git_dir: Path, ref: str, minutes: float = 3) -> Path:
    """The lock file a git that crashed mid-transaction leaves behind, last written `minutes` ago."""
    lock = git_dir.resolve() / f"{ref}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    then = time.time() - minutes * 60
    os.utime(lock, (then, then))
    return lock


def local_cli(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
    return Machine(str(path), tmp_path / "cli-cache", monkeypatch)


def cli(machine: Machine, *args: str) -> Result:
    """`dspyreg ARGS --registry URL` on `machine`, run in this process."""
    machine.monkeypatch.setenv("DSPYREG_CACHE", str(machine.cache))
    return CliRunner().invoke(app, [*args, "--registry", machine.url])


def assert_names_stale_lock(stderr: str, ref: str, lock: Path) -> None:
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert f"a stale lock blocks {ref}: {lock} is 3 min old" in stderr, stderr
    assert f"rm '{lock}'" in stderr, stderr
    assert "another writer" not in stderr


def test_a_stale_env_tag_lock_is_named_with_the_command_to_clear_it(
    published: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(published.location)
    published.promote("v1.0", "prod")
    lock = leave_stale_lock(path, "refs/tags/qa/prod")
    before = ref_snapshot(path)
    machine = local_cli(path, tmp_path, monkeypatch)
    result = cli(machine, "promote", "v1.1", "--to", "prod")
    assert result.exit_code == 1, result.stderr
    assert_names_stale_lock(result.stderr, "refs/tags/qa/prod", lock)
    assert ref_snapshot(path) == before and lock.exists()
    lock.unlink()  # what the message says to do: then the same command goes through
    result = cli(machine, "promote", "v1.1", "--to", "prod")
    assert result.exit_code == 0, result.stderr


def test_a_stale_main_lock_fails_publish_at_once_naming_it(
    published: Registry, states: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(published.location)
    lock = leave_stale_lock(path, "refs/heads/main")
    before = ref_snapshot(path)
    result = cli(local_cli(path, tmp_path, monkeypatch), *publish_args(EXAMPLE_SPEC, states["v1.1"], "v1.2"))
    assert result.exit_code == 1, result.stderr
    assert_names_stale_lock(result.stderr, "refs/heads/main", lock)
    assert "kept moving" not in result.stderr
    assert ref_snapshot(path) == before


def test_a_stale_packed_refs_lock_is_named(published: Registry) -> None:
    path = Path(published.location)
    published.promote("v1.0", "prod")
    published.promote("v1.1", "prod")
    published.rollback()  # prod back to v1.0: the rollback tag is deleted, which needs packed-refs.lock
    lock = leave_stale_lock(path, "packed-refs")
    before = ref_snapshot(path)
    published.promote("v1.1", "prod")  # sets rollback again: no deletion, the packed refs are not needed
    with pytest.raises(RegistryError) as caught:
        published.rollback()
    assert caught.value.exit_code == 1
    assert f"a stale lock blocks the packed refs: {lock} is 3 min old" in str(caught.value)
    assert ref_snapshot(path) != before  # the promote went through
    assert published.resolve("prod").version == "v1.1"


def test_a_fresh_lock_held_by_a_running_git_is_waited_for(published: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real git holds the journal's lock in a prepared transaction until our promote has met it (and looked at
    the lock file), then commits: our promote waits and goes through, as one more writer queued behind another."""
    path = Path(published.location)
    journal = git(path, "rev-parse", JOURNAL).strip()
    holder = subprocess.Popen(
        ["git", "-C", str(path), "update-ref", "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    holder.stdin.write(f"start\nupdate {JOURNAL} {journal} {journal}\nprepare\n")
    holder.stdin.flush()
    assert holder.stdout.readline().strip() == "start: ok"
    assert holder.stdout.readline().strip() == "prepare: ok"
    held = (path / f"{JOURNAL}.lock").resolve()
    assert held.exists()

    met = threading.Event()
    seen: list[Any] = []
    real_present_locks = gitstore.present_locks

    def present_locks(*args: Any, **kwargs: Any) -> Any:  # the real one, noting when it finds the held lock
        found = real_present_locks(*args, **kwargs)
        seen.extend(lock for lock in found if lock.path == held and not lock.stale)
        if seen:
            met.set()
        return found

    monkeypatch.setattr(gitstore, "present_locks", present_locks)

    def commit() -> None:
        met.wait(timeout=30)
        assert holder.stdin is not None
        holder.stdin.write("commit\n")
        holder.stdin.close()

    release = threading.Thread(target=commit)
    release.start()
    try:
        result = published.promote("v1.1", "staging", reason="queued")
    finally:
        met.set()
        release.join()
        holder.wait(timeout=10)
    assert seen, "the promote did not meet the held lock"
    assert result.changed and published.resolve("staging").version == "v1.1"
    assert [e.reason for e in published.log(env="staging")] == ["queued"]


def _rival_wins_twice(ours: Registry, rival: Registry) -> None:
    """Between our reads and our write, a rival promotes prod (the move that beats ours), then rolls it back."""
    real_identity = ours.store.identity
    fired: list[bool] = []

    def identity() -> Any:
        if not fired:
            fired.append(True)
            rival.promote("v1.1", "prod", reason="the winner")
            rival.rollback(reason="a later move")
        return real_identity()

    ours.store.identity = identity  # type: ignore[method-assign]


def test_a_lost_race_names_the_move_that_won_not_the_latest(published: Registry, states: dict[str, Path]) -> None:
    publish_example(published, states["v1.0"], "v1.2")
    published.promote("v1.0", "prod")
    before = published.store.ref_value(JOURNAL)
    with Registry.open(published.location) as rival:
        _rival_wins_twice(published, rival)
        with pytest.raises(ConflictError) as caught:
            published.promote("v1.2", "prod")
    message = str(caught.value)
    assert "another writer moved qa/prod first (promote qa/prod v1.0 -> v1.1 by Test Author" in message, message
    assert "rollback" not in message
    assert before is not None and published.store.ref_value(JOURNAL) != before
    assert published.resolve("prod").version == "v1.0"


def test_a_lost_remote_race_names_the_move_that_won(machines: list[Machine], tmp_path: Path) -> None:
    a, b, _ = machines
    with a.open() as reg:
        reg.promote("v1.0", "prod")
    with a.open() as ours, b.open() as rival:
        _rival_wins_twice(ours, rival)
        with pytest.raises(ConflictError) as caught:
            ours.promote("v1.2", "prod")
    message = str(caught.value)
    assert "another writer moved qa/prod first (promote qa/prod v1.0 -> v1.1 by Test Author" in message, message
    assert "rollback" not in message
    with b.open() as reg:  # none of ours reached the server
        assert [e.reason for e in reg.log(env="prod")] == ["", "the winner", "a later move"]
        assert reg.resolve("prod").version == "v1.0"


def _flaky_listing(store: GitStore, server: Path, *, every_time: bool) -> list[int]:
    """ls-remote as seen by a client whose fetch comes just after another client deleted a ref it listed."""
    real = store.remote_refs
    calls: list[int] = []

    def remote_refs(*patterns: str) -> dict[str, str]:
        calls.append(1)
        if every_time:
            git(server, "tag", "-a", "-f", "qa/flicker", "-m", "here, then gone", "main")
        listed = real(*patterns)
        if every_time or len(calls) == 1:
            gone = "refs/tags/qa/flicker" if every_time else "refs/tags/qa/staging"
            git(server, "update-ref", "-d", gone)
        return listed

    store.remote_refs = remote_refs  # type: ignore[method-assign]
    return calls


def test_a_ref_deleted_between_ls_remote_and_fetch_is_listed_again(
    machines: list[Machine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = machines
    with a.open() as reg:
        reg.promote("v1.0", "staging")
    server = server_repo(a.url, tmp_path)
    store = GitStore.cache_of(a.url, b.cache)  # b never synced: its first fetch asks for qa/staging
    calls = _flaky_listing(store, server, every_time=False)
    store.sync()
    store.close()
    assert len(calls) == 2
    assert git(store.git_dir, "for-each-ref", "refs/heads", "refs/tags") == git(
        server, "for-each-ref", "refs/heads", "refs/tags"
    )
    assert store.ref_value("refs/tags/qa/staging") is None


def test_refs_that_keep_vanishing_mid_fetch_are_a_conflict(machines: list[Machine], tmp_path: Path) -> None:
    a, b, _ = machines
    server = server_repo(a.url, tmp_path)
    store = GitStore.cache_of(a.url, b.cache)
    calls = _flaky_listing(store, server, every_time=True)
    with pytest.raises(ConflictError) as caught:
        store.sync()
    store.close()
    assert 1 < len(calls) <= 5
    message = str(caught.value)
    assert caught.value.exit_code == 3 and len(message.splitlines()) == 1
    assert a.url in message and "re-run" in message
    assert store.ref_value("refs/tags/qa/flicker") is None


def test_a_stale_lock_in_the_cache_is_named(machines: list[Machine]) -> None:
    a, b, _ = machines
    assert cli(b, "list").exit_code == 0  # b's cache now holds every ref
    cache = next((b.cache / "remotes").iterdir())
    lock = leave_stale_lock(cache, "refs/tags/qa/prod")
    with a.open() as reg:
        reg.promote("v1.0", "prod")  # b's next command must fetch qa/prod into its cache
    result = cli(b, "show", "prod")
    assert result.exit_code == 1, result.stderr
    assert_names_stale_lock(result.stderr, "refs/tags/qa/prod", lock)


def test_a_stale_lock_on_the_server_is_not_a_conflict(machines: list[Machine], tmp_path: Path) -> None:
    a = machines[0]
    server = server_repo(a.url, tmp_path)
    lock = leave_stale_lock(server, "refs/tags/qa/prod")
    before = git(server, "for-each-ref")
    result = cli(a, "promote", "v1.0", "--to", "prod")
    assert result.exit_code == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "another writer" not in result.stderr
    assert f"{a.url} holds a lock on refs/tags/qa/prod ({lock})" in result.stderr, result.stderr
    assert git(server, "for-each-ref") == before
