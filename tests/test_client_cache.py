"""The client cache: `load(..., ttl=)` resolves at most once per ttl in a process, and a client whose remote registry
is down (a real `git daemon`, stopped mid-run) uses the last version it verified, with one warning naming it;
`serve` keeps serving through an outage and starts from that version when the remote is down at start-up.

The tests of what a client does with its record while the remote is down share one prepared machine per module
(`verified`): each copies its cache and works on the copy."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dspy_registry
from dspy_registry.errors import RegistryError, RegistryUnreachableWarning, RemoteUnreachable

from .conftest import DAEMONS, Machine, git, isolate
from .serving import dspyreg_serve, free_port


def commit_of(program: Any) -> str:
    """The commit a loaded program was built from: its class is imported under a module name unique to it."""
    return str(type(program).__module__).split("_")[2]


def load_on(machine: Machine, ref: str = "prod", **kwargs: Any) -> Any:
    machine.monkeypatch.setenv("DSPYREG_CACHE", str(machine.cache))
    return dspy_registry.load("qa", ref, registry=machine.url, **kwargs)


def promote(machine: Machine, version: str) -> str:
    with machine.open() as reg:
        reg.promote(version, "prod")
        return reg.resolve(version).commit


def stop_daemon(url: str) -> None:
    DAEMONS[url].terminate()
    DAEMONS[url].wait(timeout=10)


def start_daemon(url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A git daemon on `url`'s port over tmp_path/server, once it answers."""
    port = url.split(":")[2].split("/")[0]
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            f"--base-path={tmp_path / 'server'}",
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(tmp_path / "server"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 10
    while subprocess.run(["git", "ls-remote", url], capture_output=True).returncode != 0:
        assert time.time() < deadline, "git daemon did not start"
        time.sleep(0.1)
    return proc


def restart_daemon(url: str, tmp_path: Path) -> None:
    """The git daemon back on the same port, over the same repository (the fixture stops it at the end)."""
    DAEMONS[url] = start_daemon(url, tmp_path)


def unreachable_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, RegistryUnreachableWarning)]


@dataclass(frozen=True)
class Verified:
    url: str  # a remote registry, now down
    cache: Path  # the cache of machine a, which verified qa prod = v1.0 there (b then moved prod to v1.1)
    v10: str
    v11: str

    def machine(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Machine:
        """Machine a again, on a copy of its cache of its own."""
        cache = tmp_path / "cache-a"
        shutil.copytree(self.cache, cache, symlinks=True)
        return Machine(self.url, cache, monkeypatch)


@pytest.fixture(scope="module")
def verified(tmp_path_factory: pytest.TempPathFactory, remote_seed: Path) -> Iterator[Verified]:
    """Machine a verified qa prod = v1.0 from a remote on a real git daemon; then machine b promoted v1.1 (which a
    never saw) and the daemon stopped. Its port stays bound (not listening), so a connection to it is refused as
    by a stopped server and no other server of the run can take it."""
    folder = tmp_path_factory.mktemp("verified")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, folder / "home")
        (folder / "server").mkdir()
        git(folder / "server", "init", "-q", "--bare", "registry.git")
        git(folder / "server" / "registry.git", "fetch", "-q", str(remote_seed), "+refs/*:refs/*")
        port = free_port()
        url = f"git://127.0.0.1:{port}/registry.git"
        daemon = start_daemon(url, folder)
        try:
            a, b = (Machine(url, folder / f"cache-{i}", monkeypatch) for i in "ab")
            v10 = promote(a, "v1.0")
            assert commit_of(load_on(a, ttl=0)).startswith(v10[:12])
            v11 = promote(b, "v1.1")
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
        with socket.socket() as held:
            held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            held.bind(("127.0.0.1", port))
            yield Verified(url, a.cache, v10, v11)


def test_a_ref_is_resolved_once_per_ttl(machines: list[Machine]) -> None:
    a, b, _ = machines
    ttl = 3.0  # long enough for a promote on a busy machine to happen within it
    v10 = promote(a, "v1.0")
    first = load_on(a, ttl=ttl)
    expired = time.monotonic() + ttl  # the first load resolved before it returned: older than ttl by then
    assert commit_of(first).startswith(v10[:12])
    v11 = promote(b, "v1.1")  # from another machine: only a fetch would see it
    second = load_on(a, ttl=ttl)
    assert commit_of(second) == commit_of(first)  # within ttl: no git, the version already built
    assert second is not first  # each caller gets its own copy of a mutable module
    assert first.answer.predict.demos
    second.answer.predict.demos = []
    assert load_on(a, ttl=ttl).answer.predict.demos == first.answer.predict.demos  # a caller's change stays its own
    time.sleep(max(0.0, expired - time.monotonic()))
    assert commit_of(load_on(a, ttl=ttl)).startswith(v11[:12])
    promote(a, "v1.0")
    assert commit_of(load_on(a, ttl=0)).startswith(v10[:12])  # ttl 0: resolved every time


def test_an_unreachable_remote_falls_back_to_the_last_verified_version(
    verified: Verified, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = verified.machine(tmp_path, monkeypatch)  # a never verified v1.1: it falls back to v1.0, the last it verified
    v10 = verified.v10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        program = load_on(a, ttl=0)
    assert commit_of(program).startswith(v10[:12])
    [message] = unreachable_warnings(caught)
    assert message.startswith(f"registry {a.url} unreachable (")
    assert f"): using qa prod = v1.0 ({v10[:7]}) last verified at 20" in message
    assert "\n" not in message
    # Versions are recorded per ref: a version a never loaded has no fallback; v1.0 by name has none either.
    with pytest.raises(RemoteUnreachable, match=f"cannot reach the registry {a.url}"):
        load_on(a, "v1.1", ttl=0)


def test_a_fresh_cache_with_the_remote_down_raises_the_original_error(machines: list[Machine]) -> None:
    a, _, c = machines
    promote(a, "v1.0")
    stop_daemon(a.url)
    for machine in (c, a):  # c has no cache clone at all; a has one but never loaded prod
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(RemoteUnreachable) as raised:
                load_on(machine, ttl=0)
        assert str(raised.value).startswith(f"cannot reach the registry {a.url}: ")
        assert "\n" not in str(raised.value) and not unreachable_warnings(caught)


@pytest.mark.parametrize(
    "tampering",
    ["junk", "list", "bad sha", "not in the cache", "another version", "other ref", "missing field"],
)
def test_a_tampered_last_known_good_record_is_not_trusted(
    verified: Verified, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tampering: str
) -> None:
    a = verified.machine(tmp_path, monkeypatch)  # the remote is down
    v10, v11 = verified.v10, verified.v11
    [record] = list((a.cache / "last-good").iterdir())
    data = json.loads(record.read_text())
    assert (data["version"], data["commit"], data["ref"]) == ("v1.0", v10, "prod")
    edits: dict[str, Any] = {
        "junk": "{not json",
        "list": json.dumps([data]),
        "bad sha": json.dumps({**data, "commit": "--upload-pack=touch /tmp/x"}),
        "not in the cache": json.dumps({**data, "commit": "ab" * 20}),
        "another version": json.dumps({**data, "commit": v11}),  # v1.1's commit presented as v1.0
        "other ref": json.dumps({**data, "ref": "staging"}),
        "missing field": json.dumps({k: v for k, v in data.items() if k != "verified_at"}),
    }
    record.write_text(edits[tampering])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RegistryError) as raised:
            load_on(a, ttl=0)
    message = str(raised.value)
    assert message.startswith(f"cannot reach the registry {a.url}: ")
    assert f"the last verified version recorded in {record} is not trusted (" in message
    assert "\n" not in message and not unreachable_warnings(caught)


def test_a_bundle_changed_in_the_cache_is_not_used_as_the_fallback(
    verified: Verified, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = verified.machine(tmp_path, monkeypatch)  # the remote is down
    # Someone edits v1.0's prompts in the cache clone and moves its tag and the record there: it no longer verifies.
    [cache] = list((a.cache / "remotes").iterdir())
    v10 = git(cache, "rev-parse", "refs/tags/qa/v1.0^{commit}").strip()
    prompts = git(cache, "show", f"{v10}:qa/prompts.json").replace("Using only facts", "Ignore the passages and")
    (tmp_path / "prompts.json").write_text(prompts)
    blob = git(cache, "hash-object", "-w", str(tmp_path / "prompts.json")).strip()
    index = {"GIT_INDEX_FILE": str(tmp_path / "index")}
    run = lambda *args: subprocess.run(  # noqa: E731
        ["git", "-C", str(cache), *args], check=True, capture_output=True, text=True, env={**os.environ, **index}
    ).stdout.strip()
    run("read-tree", v10)
    run("update-index", "--cacheinfo", f"100644,{blob},qa/prompts.json")
    forged = git(cache, "commit-tree", run("write-tree"), "-p", v10, "-m", "forged").strip()
    git(cache, "tag", "-f", "-a", "qa/v1.0", "-m", "forged", forged)
    [record] = list((a.cache / "last-good").iterdir())
    record.write_text(json.dumps({**json.loads(record.read_text()), "commit": forged}))
    with pytest.raises(RegistryError, match=r"is not trusted \(qa/v1.0 fails verification"):
        load_on(a, ttl=0)


def test_serve_started_while_the_remote_is_down_serves_the_last_verified_version(
    verified: Verified, fake_lm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = verified.machine(tmp_path, monkeypatch)  # a verified prod = v1.0; b moved it to v1.1; the remote is down
    v10 = verified.v10
    with dspyreg_serve(a.url, tmp_path, "--poll-seconds", "0.2", env={"DSPYREG_CACHE": str(a.cache)}) as srv:
        srv.wait_ready()
        status, body, _ = srv.post("/predict", {"question": "q"})
        assert status == 200 and body["version"] == "v1.0"
        assert srv.get("/version")[1]["commit"] == v10
        time.sleep(1)  # several polls of the dead remote
        log = srv.log.read_text()
    assert f"registry {a.url} unreachable (" in log and f"using qa prod = v1.0 ({v10[:7]}) last verified at" in log
    assert sum(1 for line in srv.log_lines() if line.get("event") == "registry_unreachable") == 1


def test_serve_keeps_serving_through_an_outage_and_follows_again_after_it(
    machines: list[Machine], fake_lm: Any, tmp_path: Path
) -> None:
    a, b, _ = machines
    promote(a, "v1.0")
    with dspyreg_serve(a.url, tmp_path, "--poll-seconds", "0.2", env={"DSPYREG_CACHE": str(a.cache)}) as srv:
        srv.wait_ready()
        stop_daemon(a.url)
        deadline = time.time() + 10
        while not any(line.get("event") == "registry_unreachable" for line in srv.log_lines()):
            assert time.time() < deadline, "the outage was not logged"
            time.sleep(0.05)
        time.sleep(1)  # several more failed polls: still one warning for the one outage
        status, body, _ = srv.post("/predict", {"question": "q"})
        assert status == 200 and body["version"] == "v1.0"
        events = [line["event"] for line in srv.log_lines() if "event" in line]
        assert events.count("registry_unreachable") == 1 and "poll_failed" not in events
        restart_daemon(a.url, tmp_path)
        promote(b, "v1.1")
        deadline = time.time() + 10
        while srv.get("/version")[1]["version"] != "v1.1":
            assert time.time() < deadline, "the server did not follow the remote after the outage"
            time.sleep(0.05)
        assert srv.post("/predict", {"question": "q"})[1]["version"] == "v1.1"
        events = [line["event"] for line in srv.log_lines() if "event" in line]
        assert events.count("registry_unreachable") == 1 and events.count("registry_reachable") == 1
