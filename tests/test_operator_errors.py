"""Every error leads somewhere: each message names what is wrong in the user's words; its hint works when followed."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.registry import Registry

from .conftest import ROOT, git, publish_args, ref_snapshot
from .serving import free_port, http

runner = CliRunner()


def dspyreg(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "dspy_registry.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- serve ------------------------------------------------------------------------------------------------------------
def test_serve_without_the_serve_extra_says_how_to_install_it(published: Registry, tmp_path: Path) -> None:
    fake = tmp_path / "no-extra"
    (fake / "fastapi").mkdir(parents=True)
    (fake / "fastapi" / "__init__.py").write_text('raise ImportError("fastapi is not installed (test)")\n')
    pythonpath = os.pathsep.join([str(fake), str(ROOT), os.environ.get("PYTHONPATH", "")])
    result = dspyreg("serve", "v1.1", "--registry", published.location, env={"PYTHONPATH": pythonpath})
    assert result.returncode == 1, result.stderr
    line = one_error(result.stderr)
    assert "pip install 'dspy-registry[serve]'" in line and "fastapi" in line
    assert "ModuleNotFoundError" not in result.stderr and "Serving" not in result.stderr + result.stdout


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_a_busy_port_is_refused_before_serving(published: Registry, busy_port: int) -> None:
    result = dspyreg("serve", "v1.1", "--port", str(busy_port), "--registry", published.location)
    assert result.returncode == 1, result.stderr  # 3 is for registry conflicts only
    line = one_error(result.stderr)
    assert f"127.0.0.1:{busy_port}" in line and "in use" in line and "--port" in line
    assert "Serving" not in result.stderr + result.stdout


# -- where the registry is --------------------------------------------------------------------------------------------
def follow_init_hint(message: str) -> list[str]:
    """Run the `dspyreg init ...` the message suggests, and give back the `--registry ...` it says to use then."""
    init = re.search(r"`dspyreg (init [^`]+)`", message)
    use = re.search(r"`(--registry [^`]+)`", message)
    assert init and use, message
    created = runner.invoke(app, shlex.split(init.group(1)))
    assert created.exit_code == 0, created.output
    return shlex.split(use.group(1))


def test_hints_for_a_folder_that_is_not_a_registry_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, states: dict[str, Path]
) -> None:
    monkeypatch.chdir(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("the user's own things")
    refused = runner.invoke(app, ["init", "project"])
    assert refused.exit_code == 1 and "not empty" in refused.stderr
    registry_args = follow_init_hint(refused.stderr)
    listed = runner.invoke(app, ["list", *registry_args])
    assert listed.exit_code == 0, listed.output
    assert (project / "notes.txt").read_text() == "the user's own things"

    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("a,b\n")
    for command in (["list"], ["show", "v1.0"], ["log"], ["verify"], ["promote", "v1.0"]):
        result = runner.invoke(app, [*command, "--registry", "other"])
        assert result.exit_code == 1 and "not a git repository" in result.stderr, (command, result.output)
        assert "`dspyreg init other`" not in result.stderr  # init refuses a folder that is not empty
    registry_args = follow_init_hint(runner.invoke(app, ["list", "--registry", "other"]).stderr)
    published = runner.invoke(
        app, [*publish_args(f"{ROOT}/examples/qa_program.py:DocsQA", states["v1.0"], "v1.0"), *registry_args]
    )
    assert published.exit_code == 0, published.output
    assert runner.invoke(app, ["show", "v1.0", *registry_args]).exit_code == 0

    # A code repository with a main branch: init refuses it, so the hint must name a new folder.
    code = tmp_path / "code"
    code.mkdir()
    git(code, "init", "-q", "-b", "main")
    (code / "app.py").write_text("print('hi')\n")
    git(code, "add", "app.py")
    git(code, "commit", "-qm", "app")
    result = runner.invoke(app, ["list", "--registry", "code"])
    assert result.exit_code == 1 and "not a dspyreg registry" in result.stderr, result.output
    registry_args = follow_init_hint(result.stderr)
    assert runner.invoke(app, ["list", *registry_args]).exit_code == 0
    assert git(code, "log", "--format=%s").split() == ["app"]  # the user's repository is untouched


@pytest.mark.parametrize("bare", [True, False])
def test_a_command_run_inside_the_registry_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, states: dict[str, Path], bare: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    created = runner.invoke(app, ["init", "--bare" if bare else "--worktree"])  # ./registry, the default
    assert created.exit_code == 0, created.output
    spec = f"{ROOT}/examples/qa_program.py:DocsQA"
    assert runner.invoke(app, publish_args(spec, states["v1.0"], "v1.0")).exit_code == 0
    monkeypatch.chdir(tmp_path / "registry")
    listed = runner.invoke(app, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [v["version"] for v in json.loads(listed.stdout)] == ["v1.0"]
    assert runner.invoke(app, ["promote", "v1.0"]).exit_code == 0
    assert not (tmp_path / "registry" / "registry").exists()


# -- program specs ----------------------------------------------------------------------------------------------------
USER_FILE = '''import dspy


class Ask(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


class AskProgram(dspy.Module):
    def __init__(self):
        super().__init__()
        self.ask = dspy.Predict(Ask)

    def forward(self, question):
        return self.ask(question=question)


def broken_factory():
    return Ask()  # a pydantic ValidationError, as a user's factory might raise
'''


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("my_program.py:Ask", ["my_program.py", "Ask", "dspy.Signature"]),
        ("my_program.py:AskProgrm", ["my_program.py", "'AskProgrm'", "did you mean AskProgram?"]),
        ("my_program.py:broken_factory", ["my_program.py", "broken_factory()", "question: Field required"]),
        ("failing.py:Program", ["(failing.py, line 2)", "ModuleNotFoundError", "not_a_module_xyz"]),
    ],
)
def test_a_bad_program_spec_is_one_line_in_the_users_words(
    published: Registry,
    states: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    names: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_program.py").write_text(USER_FILE)
    (tmp_path / "failing.py").write_text("import dspy\nimport not_a_module_xyz\n")
    before = ref_snapshot(published.store.git_dir)
    result = runner.invoke(app, [*publish_args(spec, states["v1.0"], "v9.0"), "--registry", published.location])
    assert result.exit_code == 1, result.output
    line = one_error(result.stderr)
    for name in names:
        assert name in line, line
    assert "dspyreg_user" not in line and "errors.pydantic.dev" not in line and "input_value" not in line
    assert ref_snapshot(published.store.git_dir) == before


# -- the exported api.py ----------------------------------------------------------------------------------------------
@pytest.fixture
def bundle(published: Registry, tmp_path: Path) -> Path:
    result = runner.invoke(app, ["export", "v1.1", str(tmp_path / "deploy"), "--registry", published.location])
    assert result.exit_code == 0, result.output
    return tmp_path / "deploy"


def run_api(bundle: Path, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "api.py", "--port", str(port)],
            cwd=bundle,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


def wait_health(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"api.py exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            http("GET", base + "/health", timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"api.py did not listen: {log.read_text()[-2000:]}")


def api_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DSPYREG_LM_", "OPENAI_"))}
    env.pop("PYTHONPATH", None)  # the bundle runs without dspyreg
    return {**env, **(extra or {})}


def test_exported_api_says_where_it_listens_and_is_not_ready_without_an_lm(bundle: Path, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    proc = run_api(bundle, port, log, api_env())
    try:
        base = f"http://127.0.0.1:{port}"
        wait_health(base, proc, log)
        assert f"Serving qa v1.1 on http://127.0.0.1:{port}" in log.read_text()
        status, body, _ = http("GET", base + "/ready")
        assert status == 503 and body["ready"] is False and "DSPYREG_LM_MODEL" in body["reason"]
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_exported_api_is_ready_with_an_lm(bundle: Path, tmp_path: Path, fake_lm: Any) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    proc = run_api(bundle, port, log, api_env({k: v for k, v in os.environ.items() if k.startswith("DSPYREG_LM_")}))
    try:
        base = f"http://127.0.0.1:{port}"
        wait_health(base, proc, log)
        status, body, _ = http("GET", base + "/ready")
        assert status == 200 and body["ready"] is True and "reason" not in body
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_exported_api_refuses_a_busy_port(bundle: Path, tmp_path: Path, busy_port: int) -> None:
    result = subprocess.run(
        [sys.executable, "api.py", "--port", str(busy_port)],
        cwd=bundle,
        capture_output=True,
        text=True,
        timeout=120,
        env=api_env(),
    )
    assert result.returncode == 1, result.stderr
    line = one_error(result.stderr)
    assert f"127.0.0.1:{busy_port}" in line and "Serving" not in result.stderr


# -- an environment tag moved outside dspyreg -------------------------------------------------------------------------
def test_show_warns_about_a_tag_moved_outside_dspyreg(published: Registry) -> None:
    published.promote("v1.1", "prod")
    where = published.store.git_dir
    git(where, "tag", "-f", "-a", "-m", "moved by hand", "qa/prod", "qa/v1.0^{commit}")
    shown = runner.invoke(app, ["show", "prod", "--registry", published.location])
    assert shown.exit_code == 0, shown.output
    verified = runner.invoke(app, ["verify", "prod", "--registry", published.location])
    problems = [line.removeprefix("problem: ") for line in verified.stdout.splitlines() if line.startswith("problem")]
    assert verified.exit_code == 1 and problems
    warnings = [line.removeprefix("warning: ") for line in shown.stderr.splitlines() if line.startswith("warning")]
    assert [w.removesuffix(" (see `dspyreg verify`)") for w in warnings] == problems
    # A tag that agrees with the journal is shown without a warning.
    clean = runner.invoke(app, ["show", "v1.1", "--registry", published.location])
    assert clean.exit_code == 0 and clean.stderr == ""
