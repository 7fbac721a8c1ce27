"""The guard around every REST request (api.GuardAndLog), a pure ASGI middleware: the app served by uvicorn in this
process on 127.0.0.1, called over HTTP; the access log read from its logger, the metrics from the process's
Prometheus registry."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dspy_registry.runtime import api, calls, telemetry

from .serving import http
from .test_metrics import in_process

TOKEN = "middleware-test-token"


class Broken:
    """A backend with no version loaded whose status raises: /predict fails inside the handler."""

    environment = None
    program = "broken-program"

    def current(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        raise RuntimeError("secret detail that must not reach the client")


@pytest.fixture
def access_lines() -> Iterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    handler = Collect()
    level = calls.access_log.level
    calls.access_log.addHandler(handler)
    calls.access_log.setLevel(logging.INFO)
    try:
        yield lines
    finally:
        calls.access_log.removeHandler(handler)
        calls.access_log.setLevel(level)


def listening(base: str) -> None:
    deadline = time.time() + 30
    while True:
        try:
            http("GET", base + "/health", timeout=2)
            return
        except OSError:
            assert time.time() < deadline, "not listening"
            time.sleep(0.1)


def errors_counted(kind: str) -> float:
    found = telemetry.metrics()
    assert found is not None and found.registry is not None
    labels = {"program": "broken-program", "version": "", "door": "rest", "kind": kind}
    return found.registry.get_sample_value("dspyreg_errors_total", labels) or 0.0


def test_the_guard_is_not_starlettes_base_http_middleware() -> None:
    from starlette.middleware.base import BaseHTTPMiddleware

    app = api.create_app(Broken())
    assert app.user_middleware, "the guard is installed"
    assert all(m.cls is not BaseHTTPMiddleware for m in app.user_middleware)


def test_each_refusal_is_json_logged_once_and_counted(access_lines: list[dict[str, Any]]) -> None:
    app = api.create_app(Broken(), token=TOKEN, max_body_bytes=100)
    before = {kind: errors_counted(kind) for kind in ("internal", "unauthorized", "too_large")}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with in_process(app) as base:
        listening(base)
        del access_lines[:]
        crashed = http("POST", base + "/predict", {"question": "q"}, headers=auth)
        refused = http("POST", base + "/predict", {"question": "q"})
        too_large = http("POST", base + "/predict", {"question": "q" * 200}, headers=auth)
        health = http("GET", base + "/health")
    assert crashed[:2] == (500, {"error": "internal_error", "detail": "RuntimeError"})
    assert refused[:2] == (401, {"error": "unauthorized", "detail": "send Authorization: Bearer <DSPYREG_API_TOKEN>"})
    assert refused[2]["www-authenticate"] == "Bearer"
    assert too_large[:2] == (413, {"error": "too_large", "detail": "the body is over 100 bytes"})
    assert health[:2] == (200, {"status": "ok"})
    assert [(line["method"], line["path"], line["status"], line["version"]) for line in access_lines] == [
        ("POST", "/predict", 500, None),
        ("POST", "/predict", 401, None),
        ("POST", "/predict", 413, None),
        ("GET", "/health", 200, None),
    ]
    assert all(line["latency_ms"] >= 0 for line in access_lines)
    after = {kind: errors_counted(kind) for kind in before}
    assert {kind: after[kind] - before[kind] for kind in before} == {"internal": 1, "unauthorized": 1, "too_large": 1}
