"""Several real processes promoting and publishing at once: each succeeds or exits 3; no journal entry is lost."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dspy_registry.errors import ConflictError
from dspy_registry.gitstore import GitStore, RefUpdate
from dspy_registry.registry import Registry

from .conftest import EXAMPLE_SPEC, git, publish_example, ref_snapshot

# Import everything first, then wait for a common start time, so the processes really race.
RACER = """
import sys, time
from dspy_registry.cli import main
import dspy_registry.bundle, dspy_registry.render
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
sys.argv = ["dspyreg", *sys.argv[2:]]
main()
"""


def _race(commands: list[list[str]], registry: Path, delay: float = 4.0) -> list[subprocess.CompletedProcess[str]]:
    start = time.time() + delay
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(start), *cmd, "--registry", str(registry)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in commands
    ]
    results = []
    for cmd, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return results


@pytest.mark.slow
def test_concurrent_promotes_and_publishes(published: Registry, states: dict[str, Path]) -> None:
    path = Path(published.location)
    publish_example(published, states["v1.0"], "v1.2")
    published.promote("v1.0", "prod")
    promotes = [["promote", v, "--to", "prod", "--json"] for v in ("v1.1", "v1.2", "v1.1", "v1.2", "v1.1", "v1.2")]
    publishes = [
        ["publish", EXAMPLE_SPEC, "--state", str(states["v1.1"]), "--name", "qa", "--version", v, "--json"]
        for v in ("v2.0", "v2.1")
    ]
    results = _race(promotes + publishes, path)

    for r in results:
        assert r.returncode in (0, 3), (r.args, r.returncode, r.stderr)
        if r.returncode == 3:
            assert "another writer" in r.stderr or "kept moving" in r.stderr
            assert len(r.stderr.strip().splitlines()) == 1
    moved = sum(1 for r in results[: len(promotes)] if r.returncode == 0 and json.loads(r.stdout))
    print("exit codes:", [r.returncode for r in results], "moved:", moved)
    assert moved >= 1

    with Registry.open(path) as reg:
        prod_moves = [e for e in reg.log(env="prod")]
        # The initial promote plus one entry per process that moved prod: no entry lost, none invented.
        assert len(prod_moves) == 1 + moved
        # Each entry starts where the previous one ended, and the tags agree with the journal.
        for before, after in itertools.pairwise(prod_moves):
            assert after.from_version == before.to_version
        assert reg.resolve("prod").version == prod_moves[-1].to_version
        rollback = [e for e in reg.log(env="rollback")]
        assert reg.resolve("rollback").version == rollback[-1].to_version == prod_moves[-1].from_version
        published_versions = {v.version for v in reg.versions()}
    for r, version in zip(results[len(promotes) :], ("v2.0", "v2.1")):
        assert (version in published_versions) == (r.returncode == 0)
    git(path, "fsck", "--strict", "--no-dangling")


def test_a_lost_race_moves_nothing(published: Registry) -> None:
    """A writer whose expected old values went stale gets ConflictError and leaves every ref as the winner left it."""
    published.promote("v1.0", "prod")
    rival = Registry.open(published.location)
    real = published.store.transaction

    def interleaved(updates: list[RefUpdate], **kwargs: object) -> None:
        rival.promote("v1.1", "prod", reason="rival")  # the rival commits between our read and our write
        published.store.transaction = real  # type: ignore[method-assign]
        snapshot = ref_snapshot(Path(published.location))
        try:
            real(updates)
        finally:
            assert ref_snapshot(Path(published.location)) == snapshot

    published.store.transaction = interleaved  # type: ignore[method-assign]
    with pytest.raises(ConflictError, match="another writer"):
        published.promote("v1.1", "staging")
    rival.close()
    assert [e.reason for e in published.log()][-2:] == ["rival", "previous prod version"]
    assert published.log(env="staging") == []


def test_publish_rebuilds_on_a_moved_main(published: Registry, states: dict[str, Path]) -> None:
    """Another program published between our read of main and our ref update: we retry on the new tip."""
    rival = Registry.open(published.location)
    real = published.store.transaction
    calls = []

    def interleaved(updates: list[RefUpdate], **kwargs: object) -> None:
        if not calls:
            publish_example(rival, states["v1.0"], "v0.1", name="faq")
        calls.append(updates)
        real(updates)

    published.store.transaction = interleaved  # type: ignore[method-assign]
    publish_example(published, states["v1.1"], "v1.2")
    rival.close()
    assert len(calls) == 2
    path = Path(published.location)
    assert set(git(path, "ls-tree", "--name-only", "main").split()) >= {"qa", "faq"}
    assert git(path, "rev-parse", "qa/v1.2^{commit}") == git(path, "rev-parse", "main")


def test_store_transactions_are_all_or_nothing_under_a_stale_expectation(registry_path: Path) -> None:
    store = GitStore.open(registry_path)
    main = store.ref_value("refs/heads/main")
    journal = store.ref_value("refs/heads/dspyreg/journal")
    assert main and journal
    before = ref_snapshot(registry_path)
    with pytest.raises(ConflictError):
        store.transaction(
            [RefUpdate("refs/heads/main", journal, main), RefUpdate("refs/heads/dspyreg/journal", main, main)]
        )
    assert ref_snapshot(registry_path) == before
    store.close()


@pytest.mark.parametrize("action", ["promote", "rollback"])
def test_a_move_between_our_reads_and_our_write_is_never_overwritten(
    published: Registry, states: dict[str, Path], action: str
) -> None:
    """A rival moves prod after we computed the new state but before our transaction: we must lose, not win."""
    publish_example(published, states["v1.0"], "v1.2")
    published.promote("v1.0", "prod")
    published.promote("v1.1", "prod")
    rival = Registry.open(published.location)
    real_identity = published.store.identity
    fired: list[bool] = []

    def identity() -> Any:
        if not fired:
            fired.append(True)
            rival.promote("v1.2", "prod", reason="rival")
        return real_identity()

    published.store.identity = identity  # type: ignore[method-assign]
    with pytest.raises(ConflictError):
        if action == "promote":
            published.promote("v1.0", "prod")
        else:
            published.rollback()
    rival.close()
    prod = [(e.from_version, e.to_version, e.reason) for e in published.log(env="prod")]
    assert prod[-1] == ("v1.1", "v1.2", "rival")
    assert published.resolve("prod").version == "v1.2" and published.resolve("rollback").version == "v1.1"
