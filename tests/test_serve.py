"""`dspyreg serve` for real: uvicorn on 127.0.0.1, a fake OpenAI-compatible LM on 127.0.0.1, real registries.

What REST and gRPC share (failures, the token, readiness, hot swap, workers) is tested once for both in test_doors.py;
here is what only the HTTP door has. The tests that only send requests share one server per module."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.fake_lm import FakeLM
from dspy_registry.registry import Registry

from .conftest import tamper
from .serving import Server, dspyreg_serve, raw_post
from .shared_server import Shared, shared_fixture, shared_serve

QUESTION = {"question": "How do I roll back?"}


shared = shared_fixture()


@pytest.fixture(scope="module")
def server(shared: Shared) -> Iterator[Server]:
    with shared_serve(shared, "--poll-seconds", "0.5") as srv:
        yield srv


@pytest.fixture
def shared_lm(shared: Shared) -> Iterator[FakeLM]:
    """The shared fake LM, its overrides restored after the test."""
    before = dict(shared.fake_lm.overrides)
    yield shared.fake_lm
    shared.fake_lm.overrides.clear()
    shared.fake_lm.overrides.update(before)


def test_endpoints(server: Server, shared_lm: FakeLM) -> None:
    shared_lm.overrides["answer"] = "Run dspyreg rollback."
    assert server.get("/health")[:2] == (200, {"status": "ok"})
    status, ready, _ = server.get("/ready")
    assert status == 200 and ready["ready"] is True and ready["version"] == "v1.1"
    status, version, _ = server.get("/version")
    assert status == 200 and version["program"] == "qa" and version["version"] == "v1.1"
    assert version["environment"] == "prod" and len(version["commit"]) == 40
    status, body, headers = server.post("/predict", QUESTION)
    assert status == 200 and body["answer"] == "Run dspyreg rollback." and body["confidence"] == 0.5
    assert body["program"] == "qa" and body["version"] == "v1.1" and headers["x-dspyreg-version"] == "v1.1"
    assert body["usage"]["total_tokens"] > 0 and body["usage"]["lm_calls"] == 3
    status, batch, _ = server.post("/predict/batch", {"inputs": [QUESTION, {"question": "What is DSPy?"}]})
    assert status == 200 and [r["answer"] for r in batch["results"]] == ["Run dspyreg rollback."] * 2
    assert all(r["model"] == "fake-model" for r in shared_lm.requests)


def test_openapi_has_the_signature_types(server: Server) -> None:
    status, spec, _ = server.get("/openapi.json")
    assert status == 200
    schemas = spec["components"]["schemas"]
    request = schemas["QaRequest"]
    assert request["required"] == ["question"] and request["properties"]["question"]["type"] == "string"
    assert "user question" in request["properties"]["question"]["description"]
    response = schemas["QaResponse"]["properties"]
    assert response["confidence"]["anyOf"][0]["type"] == "number"
    assert response["supported"]["anyOf"][0]["type"] == "boolean"
    assert response["passages"]["anyOf"][0] == {"type": "array", "items": {"type": "string"}}
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/QaRequest"}
    import urllib.request

    with urllib.request.urlopen(server.base + "/docs", timeout=10) as page:
        assert page.status == 200 and b"swagger" in page.read().lower()


def test_errors_are_json_and_never_tracebacks(server: Server) -> None:
    cases = [
        (server.post("/predict", {"question": 3}), 422, "invalid_input"),
        (server.post("/predict", {"question": "x", "extra": 1}), 422, "invalid_input"),
        (server.post("/predict", {}), 422, "invalid_input"),
        (server.post("/predict", raw=b"{not json"), 422, "invalid_json"),
        (server.post("/predict/batch", {"inputs": "nope"}), 422, "invalid_input"),
    ]
    for (status, body, _), expected, kind in cases:
        assert status == expected and body["error"] == kind, body
    big = b'{"question": "' + b"x" * (2 << 20) + b'"}'
    declared = raw_post(server.base, "/predict", {"Content-Length": str(len(big))}, [big])
    chunked_body = [
        f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in (big[i : i + 65536] for i in range(0, len(big), 65536))
    ]
    chunked = raw_post(server.base, "/predict", {"Transfer-Encoding": "chunked"}, [*chunked_body, b"0\r\n\r\n"])
    for status, body in (declared, chunked):
        assert status == 413 and body["error"] == "too_large", body
    assert not any("Traceback" in json.dumps(line) for line in server.log_lines())
    assert "Traceback" not in server.log.read_text()


def test_access_log_has_one_json_line_per_request(server: Server) -> None:
    server.post("/predict", QUESTION)
    server.post("/predict", {"question": 1})
    server.get("/version")
    lines = [line for line in server.log_lines() if "path" in line]
    assert [(e["path"], e["status"]) for e in lines[-3:]] == [("/predict", 200), ("/predict", 422), ("/version", 200)]
    for entry in lines[-3:]:
        assert set(entry) >= {"time", "path", "status", "latency_ms", "version"} and entry["version"] == "v1.1"
    assert "sk-test-not-a-secret" not in server.log.read_text()


def test_serve_refuses_a_target_that_fails_verification(
    prod_v11: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `dspyreg serve` run in this process: the refusal comes before any server starts (one that did would fail here).
    import dspy_registry.serve

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError("serve started a server")

    monkeypatch.setattr(dspy_registry.serve, "serve", started)
    tamper(Path(prod_v11.location), tmp_path)
    result = CliRunner().invoke(app, ["serve", "--registry", prod_v11.location])
    assert result.exit_code == 1 and "fails verification" in result.stderr and "prompts.json" in result.stderr


@pytest.mark.slow
def test_a_version_failing_verification_is_not_swapped_in(prod_v11: Registry, fake_lm: Any, tmp_path: Path) -> None:
    with dspyreg_serve(prod_v11.location, tmp_path, "--poll-seconds", "0.3") as srv:
        srv.wait_ready()
        commit = tamper(Path(prod_v11.location), tmp_path)  # prod force-moved to a changed bundle
        deadline = time.time() + 10
        while "not_swapped_in" not in srv.get("/ready")[1] and time.time() < deadline:
            time.sleep(0.1)
        status, ready, _ = srv.get("/ready")
        assert status == 200 and ready["version"] == "v1.1"  # still serving the verified version
        assert ready["not_swapped_in"]["tag"] and "fails verification" in ready["not_swapped_in"]["error"]
        status, body, _ = srv.post("/predict", QUESTION)
        assert status == 200 and body["version"] == "v1.1"
        assert srv.get("/version")[1]["commit"] != commit
        events = [e for e in srv.log_lines() if e.get("event") == "not_swapped_in"]
        assert events and "prompts.json" in events[0]["error"]


def test_the_first_load_checks_again_only_what_serve_did_not_check(
    prod_v11: Registry, fake_lm: Any, tmp_path: Path
) -> None:
    # `dspyreg serve` checks the version before it starts and hands it over (`vetted`), so the first load does not
    # verify it twice; a ref that moved in between names something unchecked, and that is verified as ever.
    from dspy_registry.serve import FollowingBackend, ServeConfig

    config = ServeConfig(registry=prod_v11.location, ref="prod", name="qa")
    checked = prod_v11.checked("prod", "qa")
    tamper(Path(prod_v11.location), tmp_path)  # prod force-moved to a changed bundle after the check
    moved = FollowingBackend(config, vetted=checked)
    assert not moved.refresh() and moved.current() is None
    assert "fails verification" in moved.status()["not_swapped_in"]["error"]

    with Registry.open(prod_v11.location) as reg:
        handed = reg.resolve("prod", "qa")  # what the caller vouches for is taken as checked
    trusted = FollowingBackend(config, vetted=handed)
    assert trusted.refresh() and trusted.status()["commit"] == handed.commit
