"""Deployment bundles: `dspyreg export`, the standalone runtime in process, and the files that deploy it."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import tomlkit
import yaml
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.export import API_COMMAND
from dspy_registry.registry import Registry

runner = CliRunner()


@pytest.fixture
def exported(published: Registry, tmp_path: Path) -> Path:
    published.promote("v1.1", "prod")
    result = runner.invoke(app, ["export", "prod", str(tmp_path / "deploy"), "--registry", published.location])
    assert result.exit_code == 0, result.output
    return tmp_path / "deploy"


def test_export_writes_the_whole_bundle(exported: Path, published: Registry) -> None:
    files = {str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file()}
    assert {
        "program.json",
        "prompts.json",
        "manifest.toml",
        "interface.json",
        "config.json",
        "requirements.txt",
        "inference.py",
        "calls.py",
        "api.py",
        "Dockerfile",
        "docker-compose.yml",
        "README.md",
        "examples/input.json",
        "examples/output.json",
        "code/qa_program.py",
        "prompts/answer.predict.md",
    } <= files
    assert not any(f.endswith((".pkl", ".pickle")) for f in files)
    manifest = tomlkit.parse((exported / "manifest.toml").read_text()).unwrap()
    for path, digest in manifest["files"].items():
        assert hashlib.sha256((exported / path).read_bytes()).hexdigest() == digest, path
    config = json.loads((exported / "config.json").read_text())
    commit = published.resolve("v1.1").commit
    assert config["pipeline"] == {
        "type": "dspy",
        "name": "qa",
        "version": "v1.1",
        "commit": commit,
        "checkpoint": "program.json",
        "entrypoint": "qa_program:DocsQA",
        "interface": "interface.json",
    }
    assert config["lm"]["timeout"] == 30 and config["performance"] == {"dev_score": 0.7}
    requirements = (exported / "requirements.txt").read_text().splitlines()
    assert f"dspy=={manifest['runtime']['dspy']}" in requirements
    assert any(r.startswith("fastapi") for r in requirements) and any(r.startswith("uvicorn") for r in requirements)
    assert any(r.startswith("prometheus-client") for r in requirements)  # the image's /metrics works
    assert not any("dspy-registry" in r or "dspy_registry" in r for r in requirements)
    for runtime_file in ("inference.py", "api.py"):  # the runtime never needs dspyreg itself
        assert not re.search(r"^\s*(from|import) dspy_registry", (exported / runtime_file).read_text(), re.M)


def test_interface_and_examples(exported: Path) -> None:
    interface = json.loads((exported / "interface.json").read_text())
    assert [(f["name"], f["type"], f["required"]) for f in interface["inputs"]] == [("question", "str", True)]
    assert [(f["name"], f["type"]) for f in interface["outputs"]] == [
        ("answer", "str"),
        ("confidence", "float"),
        ("supported", "bool"),
        ("passages", "list[str]"),
    ]
    example = json.loads((exported / "examples/input.json").read_text())
    output = json.loads((exported / "examples/output.json").read_text())
    assert set(example) == {"question"}
    assert "taken from a demo" in output["source"] and set(output["output"]) <= {"answer", "confidence", "passages"}
    assert output["output"]["answer"]


def test_inference_in_process(exported: Path, fake_lm: Any) -> None:
    from dspy_registry.runtime.inference import InputError, LMFailure, PipelineServer

    fake_lm.overrides["answer"] = "Publish it with dspyreg."
    server = PipelineServer(exported)
    outputs = server.predict(**json.loads((exported / "examples/input.json").read_text()))
    assert outputs["answer"] == "Publish it with dspyreg." and outputs["confidence"] == 0.5
    assert outputs["supported"] is True and len(outputs["passages"]) == 3
    # The LM saw this version's instructions and demos.
    program = json.loads((exported / "program.json").read_text())
    seen = fake_lm.all_text()
    assert program["answer.predict"]["signature"]["instructions"] in seen
    assert program["generate_query"]["demos"][0]["question"] in seen
    assert all(r["model"] == "fake-model" for r in fake_lm.requests)
    with pytest.raises(InputError, match="missing question"):
        server.predict()
    fake_lm.fail_with = 500
    with pytest.raises(LMFailure):
        server.predict(question="x")


def test_dockerfile_and_compose_run_the_tested_command(exported: Path) -> None:
    compose = yaml.safe_load((exported / "docker-compose.yml").read_text())
    service = compose["services"]["qa"]
    assert service["command"] == API_COMMAND == ["python", "api.py", "--host", "0.0.0.0", "--port", "8000"]
    assert service["build"] == "." and service["ports"] == ["8000:8000"]
    assert "/health" in " ".join(service["healthcheck"]["test"])
    environment = service["environment"]
    assert environment["DSPYREG_LM_API_KEY"] == "${DSPYREG_LM_API_KEY:-}"  # secrets come from the environment
    instructions = {}
    for line in (exported / "Dockerfile").read_text().splitlines():
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.setdefault(keyword, []).append(rest)
    assert instructions["FROM"][0].startswith("python:3.")
    assert json.loads(instructions["CMD"][0]) == API_COMMAND
    assert "/health" in instructions["HEALTHCHECK"][0]
    assert "requirements.txt" in " ".join(instructions["RUN"])
    assert shlex.split(instructions["COPY"][0]) == ["requirements.txt", "."]
    copied = {src for line in instructions["COPY"][1:] for src in json.loads(line)[:-1]}
    assert "." not in copied and {"api.py", "program.json", "code/qa_program.py"} <= copied


def test_export_refusals_write_nothing(published: Registry, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [
        (["export", "v1.0", str(busy)], "is not empty"),
        (["export", "v9.9", str(tmp_path / "new")], "not published"),
        (["export", "prod", str(tmp_path / "new")], "qa/prod is unset"),
        (["export", "v1.0", str(a_file)], "is not a folder"),
    ]
    for args, match in cases:
        result = runner.invoke(app, [*args, "--registry", published.location])
        assert result.exit_code == 1 and match in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in busy.iterdir()] == ["keep.txt"] and a_file.read_text() == "x"
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporary left behind
    forced = runner.invoke(app, ["export", "v1.0", str(busy), "--force", "--registry", published.location])
    assert forced.exit_code == 0 and (busy / "keep.txt").read_text() == "mine" and (busy / "api.py").exists()
