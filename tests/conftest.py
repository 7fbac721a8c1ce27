"""Shared fixtures: an isolated HOME and git identity, the example's two optimized states, real registries, and a
real `git daemon` serving a remote registry to client "machines" (each its own DSPYREG_CACHE)."""

from __future__ import annotations

import compileall
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dspy_registry.bundle import import_program
from dspy_registry.registry import Registry
from dspy_registry.state import read_state_file

from .serving import free_port

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL_HOME = Path.home()  # before the isolated HOME: where pip's cache is
EXAMPLE_SPEC = f"{ROOT / 'examples' / 'qa_program.py'}:DocsQA"


def isolate(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """HOME, git's configuration and identity, the bundle cache and the LM settings of one test, away from this
    machine's."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Author")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "author@example.com")
    monkeypatch.setenv("DSPYREG_CACHE", str(home / "cache"))
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "true")  # nothing fetches from the internet
    monkeypatch.delenv("DSPYREG_REGISTRY", raising=False)
    for key in ("DSPYREG_LM_MODEL", "DSPYREG_LM_API_BASE", "DSPYREG_LM_API_KEY", "DSPYREG_API_TOKEN"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path_factory.mktemp("home"))


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile dspy_registry once, before any test: the suite starts hundreds of dspyreg processes, and where
    PYTHONDONTWRITEBYTECODE is set (as on CI machines) an editable install is never cached, so each process would
    compile every module it imports again (~0.03-0.05 s of CPU each)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        compileall.compile_dir(ROOT / "dspy_registry", quiet=1)


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two workers per core. A third of a worker's time goes to waiting on the servers, git processes and
    CLI subprocesses its tests start, so one worker per core leaves the cores idle that long (on 2 cores the suite
    took 315-368 s with 2 workers, 288 s with 4)."""
    return 2 * len(os.sched_getaffinity(0))


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder that `make(folder)` fills once for the whole run: xdist's workers share the first one's (they take
    turns on a lock beside their temporary folders, the rest find it made). Tests read it, never change it."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".made").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            (folder / ".made").touch()
    return folder


@pytest.fixture(scope="session")
def states(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The example compiled offline into two different optimized states, as program.save() wrote them."""

    def optimize(out: Path) -> None:
        script = ROOT / "examples" / "optimize.py"
        subprocess.run([sys.executable, str(script), str(out)], check=True, capture_output=True)

    out = once_per_run(tmp_path_factory, "states", optimize)
    return {"v1.0": out / "qa-v1.0.json", "v1.1": out / "qa-v1.1.json"}


@pytest.fixture
def registry_path(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A new registry; for a test that uses `published`, a copy of the one published once per session."""
    path = tmp_path / "registry"
    if "published" in request.fixturenames:
        shutil.copytree(request.getfixturevalue("published_once"), path, symlinks=True)
    else:
        Registry.init(path).close()
    return path


@pytest.fixture
def registry(registry_path: Path) -> Iterator[Registry]:
    with Registry.open(registry_path) as reg:
        yield reg


def publish_args(spec: str, state: Path | str, version: str, *, name: str = "qa") -> list[str]:
    """The arguments of `dspyreg publish SPEC --state STATE --name NAME --version VERSION`."""
    return ["publish", spec, "--state", str(state), "--name", name, "--version", version]


def publish_example(reg: Registry, state: Path, version: str, name: str = "qa", **meta: object) -> str:
    result = reg.publish(import_program(EXAMPLE_SPEC), read_state_file(state), name=name, version=version, **meta)  # type: ignore[arg-type]
    return result.commit


@pytest.fixture(scope="session")
def published_once(tmp_path_factory: pytest.TempPathFactory, states: dict[str, Path]) -> Path:
    """qa v1.0 and v1.1 published in an isolated environment like every test's; `published` copies it (a copy of
    a bare repository is the same registry, and two publishes per test cost more than the rest of most tests)."""

    def publish_both(folder: Path) -> None:
        with pytest.MonkeyPatch.context() as monkeypatch:
            isolate(monkeypatch, folder / "home")
            with Registry.init(folder / "registry") as reg:
                for version, optimizer, score, size in (
                    ("v1.0", "BootstrapFewShot", 0.6, 8),
                    ("v1.1", "COPRO", 0.7, 7),
                ):
                    publish_example(
                        reg, states[version], version, optimizer=optimizer, dev_score=score, trainset_size=size
                    )

    return once_per_run(tmp_path_factory, "published", publish_both) / "registry"


@pytest.fixture
def published(registry: Registry) -> Registry:
    """A registry holding qa v1.0 and v1.1 (registry_path copies `published_once` for tests that use this)."""
    return registry


@pytest.fixture
def prod_v11(published: Registry) -> Registry:
    """`published` with prod moved to v1.0, then to v1.1 (so rollback names v1.0)."""
    published.promote("v1.0", "prod")
    published.promote("v1.1", "prod")
    return published


def git(path: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True, text=True).stdout


def ref_snapshot(path: Path) -> str:
    """Every ref and what it points to: equal snapshots mean the registry did not change."""
    return git(path, "for-each-ref", "--format=%(refname) %(objectname)")


def fake_lm_env(fake: Any) -> dict[str, str]:
    """The DSPYREG_LM_* variables that point dspyreg at the fake LM server `fake`."""
    return {
        "DSPYREG_LM_MODEL": "openai/fake-model",
        "DSPYREG_LM_API_BASE": fake.base_url,
        "DSPYREG_LM_API_KEY": "sk-test-not-a-secret",
        "DSPYREG_LM_NUM_RETRIES": "0",
    }


@pytest.fixture
def fake_lm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fake OpenAI-compatible LM server on 127.0.0.1, wired in through the DSPYREG_LM_* variables."""
    from dspy_registry.fake_lm import FakeLM

    with FakeLM() as fake:
        for key, value in fake_lm_env(fake).items():
            monkeypatch.setenv(key, value)
        yield fake


def tamper(registry: Path, tmp_path: Path, *, move_env: str | None = "prod", edit: str = "qa/prompts.json") -> str:
    """A bundle file changed by a plain git commit on main (and `move_env` force-moved to it), as a person might."""
    clone = tmp_path / "tamper-clone"
    git(tmp_path, "clone", "-q", str(registry), str(clone))
    path = clone / edit
    path.write_text(path.read_text().replace("Using only facts", "Ignore the passages and"))
    git(clone, "-c", "user.name=Mallory", "-c", "user.email=m@example.com", "commit", "-qam", "tweak prompt")
    git(clone, "push", "-q", "origin", "main")
    commit = git(clone, "rev-parse", "HEAD").strip()
    if move_env:
        git(
            clone,
            "-c",
            "user.name=Mallory",
            "-c",
            "user.email=m@example.com",
            "tag",
            "-f",
            "-a",
            f"qa/{move_env}",
            "-m",
            "hotfix",
            commit,
        )
        git(clone, "push", "-q", "--force", "origin", f"refs/tags/qa/{move_env}")
    return commit


def point_prod_at_unloadable(registry: Path, tmp_path: Path) -> None:
    """prod force-moved by hand to a commit whose program.json lacks a predictor: it fails to verify and to load."""
    clone = tmp_path / "broken-clone"
    git(tmp_path, "clone", "-q", str(registry), str(clone))
    state = json.loads((clone / "qa/program.json").read_text())
    del state["check"]
    (clone / "qa/program.json").write_text(json.dumps(state))
    who = ["-c", "user.name=Mallory", "-c", "user.email=m@example.com"]
    git(clone, *who, "commit", "-qam", "break")
    git(clone, "push", "-q", "origin", "main")
    git(clone, *who, "tag", "-f", "-a", "qa/prod", "-m", "x", "HEAD")
    git(clone, "push", "-q", "--force", "origin", "refs/tags/qa/prod")


# -- remote registries on a real `git daemon` -------------------------------------------------------------------
DAEMONS: dict[str, subprocess.Popen[bytes]] = {}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """A real git server on 127.0.0.1 that accepts pushes; yields the URL of an empty bare repository."""
    base = tmp_path / "server"
    base.mkdir()
    git(base, "init", "-q", "--bare", "registry.git")
    port = free_port()
    proc = subprocess.Popen(
        [
            "git",
            "daemon",
            "--reuseaddr",
            f"--base-path={base}",
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
            f"--port={port}",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"git://127.0.0.1:{port}/registry.git"
    deadline = time.time() + 10
    while subprocess.run(["git", "ls-remote", url], capture_output=True).returncode != 0:
        assert time.time() < deadline, "git daemon did not start"
        time.sleep(0.1)
    DAEMONS[url] = proc
    try:
        yield url
    finally:
        for running in {proc, DAEMONS.pop(url)}:  # a test may have restarted it (a new process on the same port)
            running.terminate()
            running.wait(timeout=10)


def server_repo(url: str, tmp_path: Path) -> Path:
    return tmp_path / "server" / "registry.git"


class Machine:
    """One client machine: its own DSPYREG_CACHE."""

    def __init__(self, url: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url, self.cache, self.monkeypatch = url, cache, monkeypatch

    def open(self) -> Registry:
        self.monkeypatch.setenv("DSPYREG_CACHE", str(self.cache))
        return Registry.open(self.url)

    def env(self) -> dict[str, str]:
        return {**os.environ, "DSPYREG_CACHE": str(self.cache)}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dspy_registry.cli", *args, "--registry", self.url],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture
def machines(daemon: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, remote_seed: Path) -> list[Machine]:
    """Three machines sharing one remote registry that holds qa v1.0, v1.1 and v1.2 (the server's repository gets
    the refs of `remote_seed`, published once per run; the first machine has read it, as if it had published)."""
    ms = [Machine(daemon, tmp_path / f"cache-{i}", monkeypatch) for i in range(3)]
    monkeypatch.setenv("DSPYREG_CACHE", str(ms[0].cache))
    git(server_repo(daemon, tmp_path), "fetch", "-q", str(remote_seed), "+refs/*:refs/*")
    ms[0].open().close()
    return ms


@pytest.fixture(scope="session")
def remote_seed(tmp_path_factory: pytest.TempPathFactory, states: dict[str, Path]) -> Path:
    """A registry holding qa v1.0, v1.1 and v1.2 (v1.0's state again), published as in an isolated test."""

    def publish_three(folder: Path) -> None:
        with pytest.MonkeyPatch.context() as monkeypatch:
            isolate(monkeypatch, folder / "home")
            with Registry.init(folder / "registry") as reg:
                for version, state in (("v1.0", "v1.0"), ("v1.1", "v1.1"), ("v1.2", "v1.0")):
                    publish_example(reg, states[state], version)

    return once_per_run(tmp_path_factory, "remote-seed", publish_three) / "registry"
