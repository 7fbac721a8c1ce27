"""/metrics and traces (runtime/telemetry.py): real `dspyreg serve` processes with the fake LM, called through REST and
gRPC, scraped over HTTP and read with prometheus_client's own text parser; spans caught by the OpenTelemetry SDK's
in-memory exporter around an app built in this process and served by uvicorn on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from dspy_registry.registry import Registry
from dspy_registry.runtime import telemetry

from .grpc_clients import client_modules, grpc_serve, metadata, proto_of, wait_serving
from .serving import Server, dspyreg_serve, free_port, http, seconds_until

QUESTION = {"question": "How do I roll back?"}
TOKEN = "metrics-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: Server, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(server.base + "/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def samples(text: str) -> Samples:
    """Every sample of the exposition, by name and labels, as prometheus_client parses it."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= set(ls))


def test_requests_errors_latency_tokens_and_cost_per_door_and_version(
    prod_v11: Registry, fake_lm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPYREG_LM_MODEL", "openai/gpt-4o-mini")  # DSPy knows its price: the cost is counted
    pb2, stubs = client_modules(proto_of(prod_v11, "v1.1"), "qa", tmp_path)
    env = {"DSPYREG_API_TOKEN": TOKEN}
    with grpc_serve(prod_v11.location, tmp_path, "--poll-seconds", "0.2", env=env) as (srv, channel, _):
        srv.wait_ready()
        wait_serving(channel)
        stub = stubs.QaStub(channel)
        auth = (("authorization", f"Bearer {TOKEN}"),)
        usages: list[dict[str, Any]] = []
        for _ in range(3):
            status, body, _ = srv.post("/predict", QUESTION, headers=AUTH)
            assert status == 200, body
            usages.append(body["usage"])
        assert srv.post("/predict", {"nope": 1}, headers=AUTH)[0] == 422  # invalid_input
        assert srv.post("/predict", QUESTION)[0] == 401  # unauthorized
        for _ in range(2):
            _, call = stub.Predict.with_call(pb2.QaRequest(**QUESTION), timeout=30, metadata=auth)
            usages.append(json.loads(metadata(call)["x-dspyreg-usage"]))
        fake_lm.fail_with = 500  # the LM is down: lm_failure
        with pytest.raises(grpc.RpcError):
            stub.Predict(pb2.QaRequest(**QUESTION), timeout=30, metadata=auth)
        fake_lm.fail_with = None

        assert scrape(srv)[0] == 401  # /metrics asks for the token as every other path does
        status, text = scrape(srv, AUTH)
        assert status == 200
        found = samples(text)
        v11 = {"program": "qa", "version": "v1.1"}
        assert value(found, "dspyreg_requests_total", **v11, door="rest", outcome="ok") == 3
        assert value(found, "dspyreg_requests_total", **v11, door="rest", outcome="error") == 2
        assert value(found, "dspyreg_requests_total", **v11, door="grpc", outcome="ok") == 2
        assert value(found, "dspyreg_requests_total", **v11, door="grpc", outcome="error") == 1
        assert value(found, "dspyreg_errors_total", **v11, door="rest", kind="invalid_input") == 1
        assert value(found, "dspyreg_errors_total", **v11, door="rest", kind="unauthorized") == 1
        assert value(found, "dspyreg_errors_total", **v11, door="grpc", kind="lm_failure") == 1
        assert total(found, "dspyreg_errors_total") == 3
        for door, count in (("rest", 5), ("grpc", 3)):
            assert value(found, "dspyreg_request_duration_seconds_count", **v11, door=door) == count
            assert value(found, "dspyreg_request_duration_seconds_bucket", **v11, door=door, le="+Inf") == count
        assert value(found, "dspyreg_request_duration_seconds_sum", **v11, door="rest") > 0
        prompt = sum(u["prompt_tokens"] for u in usages)
        completion = sum(u["completion_tokens"] for u in usages)
        cost = sum(u["cost"] for u in usages)
        assert prompt > 0 and completion > 0 and cost > 0
        assert value(found, "dspyreg_lm_prompt_tokens_total", **v11) == prompt
        assert value(found, "dspyreg_lm_completion_tokens_total", **v11) == completion
        assert value(found, "dspyreg_lm_cost_usd_total", **v11) == pytest.approx(cost)
        assert value(found, "dspyreg_lm_calls_total", **v11) == sum(u["lm_calls"] for u in usages)

        prod_v11.promote("v1.0", "prod", reason="metrics follow the swap")
        seconds_until(lambda: str(srv.get("/version", headers=AUTH)[1].get("version")), "v1.0", 30, "the swap")
        assert srv.post("/predict", QUESTION, headers=AUTH)[0] == 200
        stub.Predict(pb2.QaRequest(**QUESTION), timeout=30, metadata=auth)
        after = samples(scrape(srv, AUTH)[1])
        v10 = {"program": "qa", "version": "v1.0"}
        assert value(after, "dspyreg_requests_total", **v10, door="rest", outcome="ok") == 1
        assert value(after, "dspyreg_requests_total", **v10, door="grpc", outcome="ok") == 1
        assert value(after, "dspyreg_requests_total", **v11, door="rest", outcome="ok") == 3  # unchanged
        assert value(after, "dspyreg_lm_prompt_tokens_total", **v10) > 0
        assert value(after, "dspyreg_lm_prompt_tokens_total", **v11) == prompt


def test_workers_share_one_count_and_metrics_public_opens_only_metrics(
    prod_v11: Registry, fake_lm: Any, tmp_path: Path
) -> None:
    """With --workers 2, every scrape shows the whole server, whichever worker answers it; with --metrics-public,
    /metrics answers without the bearer token, and every other path still asks for it."""
    env = {"DSPYREG_API_TOKEN": TOKEN}
    with dspyreg_serve(prod_v11.location, tmp_path, "v1.1", "--workers", "2", "--metrics-public", env=env) as srv:
        srv.wait_ready()
        # each worker loads its version by itself: /ready from one says nothing of the other (each logs its swap)
        seconds_until(lambda: str(sum(e.get("event") == "swapped" for e in srv.log_lines())), "2", 60, "both workers")
        assert srv.post("/predict", QUESTION)[0] == 401
        status, text = scrape(srv)
        assert status == 200 and "# TYPE dspyreg_requests_total counter" in text
        v11 = {"program": "qa", "version": "v1.1"}
        assert value(samples(text), "dspyreg_errors_total", **v11, door="rest", kind="unauthorized") == 1
        for _ in range(6):  # urllib opens a new connection per call: the kernel spreads them over the workers
            assert srv.post("/predict", QUESTION, headers=AUTH)[0] == 200
        for _ in range(6):
            found = samples(scrape(srv)[1])
            assert value(found, "dspyreg_requests_total", **v11, door="rest", outcome="ok") == 6


@contextmanager
def in_process(app: Any) -> Iterator[str]:
    """`app` served by uvicorn in a thread of this process on 127.0.0.1; its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def ready(base: str) -> bool:
    try:
        return http("GET", base + "/ready", timeout=2)[0] == 200
    except OSError:
        return False  # not listening yet


def test_spans_per_request_and_per_lm_call(prod_v11: Registry, fake_lm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from dspy_registry.serve import ServeConfig, build_app

    monkeypatch.setattr(telemetry, "_tracer", None)  # restored after the test: other tests run untraced
    monkeypatch.setattr(telemetry, "_metrics", telemetry.metrics())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert telemetry.enable_tracing(provider) is None
    app = build_app(ServeConfig(registry=prod_v11.location, ref="prod", name="qa", poll_seconds=0.2))
    with in_process(app) as base:
        deadline = time.time() + 60
        while not ready(base):
            assert time.time() < deadline, "not ready"
            time.sleep(0.1)
        status, body, _ = http("POST", base + "/predict", QUESTION)
        assert status == 200, body
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name == "dspyreg.predict"]
    assert len(requests) == 1
    request = requests[0]
    assert dict(request.attributes or {}) == {
        "dspyreg.program": "qa",
        "dspyreg.version": "v1.1",
        "dspyreg.door": "rest",
    }
    calls = [s for s in spans if s.name == "dspyreg.lm_call"]
    assert len(calls) == body["usage"]["lm_calls"] > 0
    for call in calls:
        assert call.parent is not None and call.parent.span_id == request.context.span_id
        assert call.context.trace_id == request.context.trace_id
        assert (call.attributes or {})["gen_ai.request.model"] == "openai/fake-model"
    assert sum((c.attributes or {})["gen_ai.usage.input_tokens"] for c in calls) == body["usage"]["prompt_tokens"]
    assert sum((c.attributes or {})["gen_ai.usage.output_tokens"] for c in calls) == body["usage"]["completion_tokens"]


NO_OTEL_PROBE = """
import sys
from dspy_registry.runtime import api, telemetry

class Empty:
    environment = None
    def current(self): return None
    def status(self): return {"ready": False}

api.create_app(Empty())
print(telemetry.metrics() is not None, telemetry.tracing_wanted(), "opentelemetry.sdk" in sys.modules)
"""


def test_without_otel_variables_the_sdk_is_not_imported(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    without = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    probes = [  # the two processes side by side
        subprocess.Popen([sys.executable, "-c", NO_OTEL_PROBE], env=env, stdout=subprocess.PIPE, text=True)
        for env in (without, {**without, "OTEL_TRACES_EXPORTER": "console"})
    ]
    (out, _), (traced, _) = (probe.communicate(timeout=60) for probe in probes)
    assert [probe.returncode for probe in probes] == [0, 0]
    assert out.split() == ["True", "False", "False"]
    assert traced.split() == ["True", "True", "True"]


class _Empty:
    """A backend with no version loaded: enough to build the app."""

    environment = None

    def current(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"ready": False}


def test_without_prometheus_client_metrics_answers_404_saying_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from dspy_registry.runtime import api

    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed: importing it fails
    monkeypatch.setattr(telemetry, "_metrics", None)
    with in_process(api.create_app(_Empty())) as base:
        deadline = time.time() + 30
        while True:
            try:
                status, body, _ = http("GET", base + "/metrics", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "not listening"
                time.sleep(0.1)
        assert http("POST", base + "/predict", QUESTION)[0] == 503  # the app itself works
    assert status == 404 and body["error"] == "not_found"
    assert body["detail"] == "metrics need prometheus_client: pip install prometheus-client (or 'dspy-registry[serve]')"
