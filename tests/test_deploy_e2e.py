"""The exported bundle deployed as a user would: a fresh venv from its requirements.txt, `python api.py`, HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.export import API_COMMAND
from dspy_registry.registry import Registry

from .conftest import ORIGINAL_HOME
from .serving import free_port, http


def wait_for(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            if http("GET", url, timeout=2)[0] == 200:
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer in {seconds} s")


@pytest.mark.slow
def test_exported_bundle_runs_in_a_fresh_venv(published: Registry, fake_lm: Any, tmp_path: Path) -> None:
    published.promote("v1.1", "prod")
    bundle = tmp_path / "deploy"
    result = CliRunner().invoke(app, ["export", "prod", str(bundle), "--registry", published.location])
    assert result.exit_code == 0, result.output

    # A venv without pip, filled by this interpreter's pip (--python, pip >= 22.3): ensurepip's pip and setuptools
    # would cost seconds and are not the bundle's. --no-compile: the server compiles only what it imports.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of this checkout on the bundle's path
    env |= {"PIP_CACHE_DIR": str(ORIGINAL_HOME / ".cache" / "pip"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile", "-r", "requirements.txt"],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    listed = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(*(d.metadata['Name'] for d in m.distributions()))"],
        cwd=bundle,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "dspy" in listed and "fastapi" in listed, listed  # what requirements.txt installed, seen by the venv
    assert "dspy-registry" not in listed  # the bundle stands alone

    port = free_port()
    command = [python, *API_COMMAND[1:]]
    command[command.index("0.0.0.0")] = "127.0.0.1"  # the same command as the Dockerfile's, on loopback
    command[command.index("8000")] = str(port)
    server = subprocess.Popen(command, cwd=bundle, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health", server)
        fake_lm.overrides["answer"] = "Roll back with dspyreg rollback."
        status, body, _ = http("POST", f"{base}/predict", json.loads((bundle / "examples/input.json").read_text()))
        assert status == 200, body
        assert body["answer"] == "Roll back with dspyreg rollback." and body["version"] == "v1.1"
        assert body["confidence"] == 0.5 and body["supported"] is True and body["usage"]["total_tokens"] > 0
        program = json.loads((bundle / "program.json").read_text())
        seen = fake_lm.all_text()
        assert program["answer.predict"]["signature"]["instructions"] in seen
        assert program["answer.predict"]["demos"][0]["question"] in seen
        assert http("GET", f"{base}/version")[1]["version"] == "v1.1"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:  # its library is in requirements.txt
            assert 'dspyreg_requests_total{door="rest"' in response.read().decode()
        assert http("POST", f"{base}/predict", {"question": ["not", "a", "string"]})[0] == 422
        assert http("POST", f"{base}/predict", {"nope": 1})[0] == 422
        fake_lm.fail_with = 503
        status, body, _ = http("POST", f"{base}/predict", {"question": "x"})
        assert status == 502 and body["error"] == "lm_error" and "Traceback" not in json.dumps(body)
    finally:
        server.terminate()
        server.wait(timeout=10)
    log = server.stdout.read().decode() if server.stdout else ""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert {(e["path"], e["status"]) for e in lines} >= {("/predict", 200), ("/predict", 422), ("/predict", 502)}
    assert "sk-test-not-a-secret" not in log
