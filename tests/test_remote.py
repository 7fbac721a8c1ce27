"""Remote registries on a real `git daemon` (and a file:// remote), with separate caches standing for machines."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dspy_registry.errors import ConflictError, RegistryError
from dspy_registry.registry import Registry

from .conftest import DAEMONS, EXAMPLE_SPEC, Machine, git, publish_example, server_repo
from .serving import dspyreg_serve, free_port

# A dspyreg command that says "ready" on stderr once imported, then waits for a line on stdin: racers started one
# after another all begin their command together, as soon as the last is ready.
RACER = """
import sys
from dspy_registry.cli import main
import dspy_registry.bundle, dspy_registry.render
sys.stderr.write("ready\\n")
sys.stderr.flush()
sys.stdin.readline()
sys.argv = ["dspyreg", *sys.argv[1:]]
main()
"""


def race(commands: list[tuple[Machine, list[str]]]) -> list[tuple[str, str, int]]:
    """Each command run on its machine by a racer, all released at once; (stdout, stderr, exit code) of each."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, *args, "--registry", m.url],
            env=m.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for m, args in commands
    ]
    try:
        for p in procs:
            assert p.stderr is not None
            # Nothing else is written before the go, so this reads exactly the line (communicate reads the rest).
            assert p.stderr.readline() == "ready\n", "a racer did not start"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return [(*p.communicate(timeout=120), p.returncode) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_init_publish_and_read_from_another_machine(machines: list[Machine], tmp_path: Path) -> None:
    a, b, _ = machines
    with b.open() as reg:
        assert [v.version for v in reg.versions()] == ["v1.0", "v1.1", "v1.2"]
        assert reg.show("v1.1").info.version == "v1.1"
    server = server_repo(a.url, tmp_path)
    assert git(server, "cat-file", "-t", "refs/tags/qa/v1.1").strip() == "tag"
    git(server, "fsck", "--strict", "--no-dangling")
    # One cache clone per remote per machine, reused: never a clone per command.
    assert len(list((b.cache / "remotes").iterdir())) == 1
    result = b.cli("init")
    assert result.returncode == 1 and "already has a main branch" in result.stderr


def test_a_promote_is_seen_at_once_by_a_machine_that_fetched_the_old_prod(machines: list[Machine]) -> None:
    a, b, _ = machines
    with a.open() as reg:
        reg.promote("v1.0", "prod")
    with b.open() as reg:
        assert reg.resolve("prod").version == "v1.0"  # b's cache now holds the old prod tag
    with a.open() as reg:
        reg.promote("v1.1", "prod")
        reg.rollback()
        reg.promote("v1.2", "prod")
    shown = json.loads(b.cli("show", "prod", "--json").stdout)
    assert shown["version"] == "v1.2" and shown["environments"] == ["prod"]
    with b.open() as reg:
        assert reg.resolve("rollback").version == "v1.0"
        assert [e.to_version for e in reg.log(env="prod")] == ["v1.0", "v1.1", "v1.0", "v1.2"]


def test_a_rejected_push_is_a_conflict_that_names_the_winner(machines: list[Machine], tmp_path: Path) -> None:
    a, b, _ = machines
    server = server_repo(a.url, tmp_path)
    with a.open() as reg_a, b.open() as reg_b:
        reg_a.promote("v1.0", "prod", reason="a")
        before = git(server, "for-each-ref")
        # b read the registry before a's promote: its push carries stale leases and is refused as a whole.
        with pytest.raises(
            ConflictError, match=r"another writer moved qa/prod first \(promote qa/prod unset -> v1.0 by"
        ):
            reg_b.promote("v1.1", "prod", reason="b")
        assert git(server, "for-each-ref") == before  # no tag and no journal entry of b's reached the server
    with b.open() as reg:
        reg.promote("v1.1", "prod", reason="b")  # re-run: it applies on top of a's move
        assert [e.reason for e in reg.log(env="prod")] == ["a", "b"]


@pytest.mark.slow
def test_two_machines_publish_different_programs_at_once(
    machines: list[Machine], states: dict[str, Path], tmp_path: Path
) -> None:
    a, b, _ = machines
    publish = ["publish", EXAMPLE_SPEC, "--state", str(states["v1.1"]), "--version", "v1.0"]
    results = race([(m, [*publish, "--name", name]) for m, name in ((a, "faq"), (b, "support"))])
    assert [r[2] for r in results] == [0, 0], results
    with a.open() as reg:
        assert reg.programs() == ["faq", "qa", "support"]
    git(server_repo(a.url, tmp_path), "fsck", "--strict", "--no-dangling")


@pytest.mark.slow
def test_machines_promoting_prod_at_once(machines: list[Machine], tmp_path: Path) -> None:
    with machines[0].open() as reg:
        reg.promote("v1.0", "prod")
    targets = ["v1.1", "v1.2", "v1.1", "v1.2", "v1.1", "v1.2"]
    raced = race(
        [(m, ["promote", version, "--to", "prod", "--json"]) for m, version in zip(itertools.cycle(machines), targets)]
    )
    results = [((out, err), code) for out, err, code in raced]
    for (_out, err), code in results:
        assert code in (0, 3), err
        if code == 3:
            assert "another writer" in err and len(err.strip().splitlines()) == 1
    moved = sum(1 for (out, _), code in results if code == 0 and json.loads(out))
    assert moved >= 1
    with machines[1].open() as reg:
        prod = reg.log(env="prod")
        assert len(prod) == 1 + moved, [(code, out, err) for (out, err), code in results]  # one entry per success
        for before, after in itertools.pairwise(prod):
            assert after.from_version == before.to_version
        assert reg.resolve("prod").version == prod[-1].to_version
        assert reg.resolve("rollback").version == prod[-1].from_version
        assert reg.verify() == []
    git(server_repo(machines[0].url, tmp_path), "fsck", "--strict", "--no-dangling")


def test_an_unreachable_server_changes_nothing(machines: list[Machine], tmp_path: Path) -> None:
    a = machines[0]
    with a.open() as reg:
        before = git(reg.store.git_dir, "for-each-ref")
    dead = f"git://127.0.0.1:{free_port()}/registry.git"
    for args in (["show", "prod"], ["promote", "v1.0"], ["list"]):
        result = subprocess.run(
            [sys.executable, "-m", "dspy_registry.cli", *args, "--registry", dead],
            env=a.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1 and f"cannot reach the registry {dead}" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    # The daemon dies mid-way: a promote cannot push, and nothing is left locally to be pushed later.
    with a.open() as reg:
        journal = reg.store.ref_value("refs/heads/dspyreg/journal")
    DAEMONS[a.url].terminate()
    DAEMONS[a.url].wait(timeout=10)
    result = a.cli("promote", "v1.1", "--to", "prod")
    assert result.returncode == 1 and a.url in result.stderr
    assert len(list((a.cache / "remotes").iterdir())) == 1  # no cache was made for the dead URL
    cache = next((a.cache / "remotes").iterdir())
    assert git(cache, "rev-parse", "refs/heads/dspyreg/journal").strip() == journal
    assert git(cache, "for-each-ref") == before


def test_a_file_remote_and_a_local_clone_with_a_remote(
    tmp_path: Path, states: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    bare = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    url = f"file://{bare}"
    Registry.init(url).close()
    with Registry.open(url) as reg:
        publish_example(reg, states["v1.0"], "v1.0")
        reg.promote("v1.0", "prod")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    with Registry.open(clone) as reg:  # a clone: its origin is the registry
        assert reg.store.remote == str(bare)
        publish_example(reg, states["v1.1"], "v1.1")
        reg.promote("v1.1", "prod")
    assert git(bare, "cat-file", "-p", "refs/tags/qa/prod").count("v1.1") >= 1
    with Registry.open(url) as reg:
        assert reg.resolve("prod").version == "v1.1" and reg.resolve("rollback").version == "v1.0"


@pytest.mark.slow
def test_serve_follows_a_remote_registry(machines: list[Machine], fake_lm: Any, tmp_path: Path) -> None:
    a, b, _ = machines
    with a.open() as reg:
        reg.promote("v1.0", "prod")
    with dspyreg_serve(a.url, tmp_path, "--poll-seconds", "0.5", env={"DSPYREG_CACHE": str(a.cache)}) as srv:
        srv.wait_ready()
        assert srv.get("/version")[1]["version"] == "v1.0"
        with b.open() as reg:
            reg.promote("v1.1", "prod", reason="from machine b")
        deadline = time.time() + 1.5
        while srv.get("/version")[1]["version"] != "v1.1":
            assert time.time() < deadline, "the server did not follow the remote tag"
            time.sleep(0.05)
        status, body, _ = srv.post("/predict", {"question": "q"})
        assert status == 200 and body["version"] == "v1.1"


def test_remote_bad_input(machines: list[Machine]) -> None:
    result = machines[0].cli("promote", "v9.9")
    assert result.returncode == 1 and "not published" in result.stderr
    with machines[0].open() as reg, pytest.raises(RegistryError):
        reg.promote("v1.0", "nowhere")
