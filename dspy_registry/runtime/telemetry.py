"""Metrics and traces of the serving path: Prometheus counters at /metrics, OpenTelemetry spans when OTEL_* asks.

Both doors (REST api.py, gRPC dspy_registry/grpc_api.py) report each predict call once it ends (`call_ended`: one
request, its latency, its failure kind if any) and each failed input of a batch (`input_failed`); calls.run reports the
LM usage of every program run (`lm_used`). All are labelled by program and version, so a swap shows in the series.

prometheus_client is optional (the `serve` extra brings it): without it `enable_metrics` returns a one-line reason
and every report is a no-op. With several worker processes, prometheus_client's multiprocess mode sums the workers:
its values live in files under PROMETHEUS_MULTIPROC_DIR, which `dspyreg serve --workers N` points at a temporary
folder it owns; a scrape reads them all, so /metrics shows the whole server whichever worker answers.

Tracing is on only when a standard OTEL_* variable names an exporter or endpoint (TRACE_VARIABLES) and
OTEL_SDK_DISABLED is not true: then the SDK is imported and each program run is a `dspyreg.predict` span (program,
version, door) with one `dspyreg.lm_call` child per LM call (model, tokens, cost). Otherwise nothing is imported.

Copied verbatim into every exported bundle as `telemetry.py` and imports nothing of dspyreg.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

log = logging.getLogger("dspyreg.telemetry")

REST = "rest"
GRPC = "grpc"
OK = "ok"
ERROR = "error"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
TRACE_VARIABLES = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# LM calls take from tens of milliseconds to a minute: buckets cover that, not prometheus_client's web defaults.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """The process's Prometheus collectors (one instance per process: see `enable_metrics`)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # In multiprocess mode the values live in files and a scrape collects them; the collectors register nowhere.
        self.registry = None if self.multiprocess else CollectorRegistry()
        labels = ("program", "version")
        self.requests = Counter(
            "dspyreg_requests",
            "Predict calls answered, by door and outcome (ok, or error: see dspyreg_errors_total)",
            (*labels, "door", "outcome"),
            registry=self.registry,
        )
        self.errors = Counter(
            "dspyreg_errors",
            "Failed predict calls and failed inputs of batches, by failure kind",
            (*labels, "door", "kind"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "dspyreg_request_duration_seconds",
            "Predict call latency, arrival to answer",
            (*labels, "door"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter("dspyreg_lm_prompt_tokens", "LM prompt tokens", labels, registry=self.registry)
        self.completion_tokens = Counter(
            "dspyreg_lm_completion_tokens", "LM completion tokens", labels, registry=self.registry
        )
        self.cost = Counter(
            "dspyreg_lm_cost_usd", "LM cost in USD, where DSPy knows the model's price", labels, registry=self.registry
        )
        self.lm_calls = Counter("dspyreg_lm_calls", "LM calls", labels, registry=self.registry)

    def exposition(self) -> tuple[bytes, str]:
        """The text a scrape gets, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        registry = self.registry
        if registry is None:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def enable_metrics() -> str | None:
    """Start counting in this process (once); None when on, else why not (prometheus_client missing), one line."""
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            try:
                _metrics = Metrics()
            except ImportError:
                return "metrics need prometheus_client: pip install prometheus-client (or 'dspy-registry[serve]')"
    return None


def metrics() -> Metrics | None:
    return _metrics


def _labels(server: Any) -> tuple[str, str]:
    return (server.name, server.version) if server is not None else ("", "")


def call_ended(program: str, server: Any, door: str, kind: str | None, started: float) -> None:
    """One predict call answered by `door` (`kind` its CallFailure kind, None when it succeeded); `server` the
    loaded version that served it (None when none was), `program` what the backend serves."""
    found = _metrics
    if found is None:
        return
    version = server.version if server is not None else ""
    program = server.name if server is not None else program
    found.requests.labels(program, version, door, OK if kind is None else ERROR).inc()
    if kind is not None:
        found.errors.labels(program, version, door, kind).inc()
    found.latency.labels(program, version, door).observe(time.perf_counter() - started)


def input_failed(server: Any, door: str, kind: str) -> None:
    """One input of a batch failed while the batch itself was answered."""
    if _metrics is not None:
        _metrics.errors.labels(*_labels(server), door, kind).inc()


def lm_used(server: Any, usage: Any) -> None:
    """The LM usage of one program run (an inference.Usage)."""
    found = _metrics
    if found is None:
        return
    labels = _labels(server)
    found.prompt_tokens.labels(*labels).inc(usage.prompt_tokens)
    found.completion_tokens.labels(*labels).inc(usage.completion_tokens)
    found.lm_calls.labels(*labels).inc(usage.lm_calls)
    if usage.cost is not None:
        found.cost.labels(*labels).inc(usage.cost)


# -- traces ------------------------------------------------------------------------------------------------------------
_tracer: Any = None
_tracer_lock = threading.Lock()


def tracing_wanted() -> bool:
    """The standard OTEL_* variables ask for traces."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return any(os.environ.get(name) for name in TRACE_VARIABLES)


def enable_tracing(provider: Any = None) -> str | None:
    """Trace program runs and LM calls with `provider` (an SDK TracerProvider), or, without one and when the OTEL_*
    variables ask for it, with one built from them. None when tracing is on or not asked for, else why it is off."""
    global _tracer
    with _tracer_lock:
        if _tracer is not None:
            return None
        if provider is None:
            if not tracing_wanted():
                return None
            try:
                provider = _provider_from_env()
            except Exception as err:  # a tracing backend must never keep the server from answering
                return f"tracing is off: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        _tracer = provider.get_tracer("dspyreg")
    return None


def _provider_from_env() -> Any:
    """An SDK TracerProvider with the exporters OTEL_TRACES_EXPORTER names (default otlp), the resource (and so
    OTEL_SERVICE_NAME) read by the SDK from the environment."""
    from importlib.metadata import entry_points

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create())
    names = [n.strip() for n in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",") if n.strip()]
    for name in names:
        found = list(entry_points(group="opentelemetry_traces_exporter", name=name))
        if not found:
            raise RuntimeError(
                f"OTEL_TRACES_EXPORTER={name}: no such exporter is installed "
                "(otlp needs opentelemetry-exporter-otlp; console comes with opentelemetry-sdk)"
            )
        provider.add_span_processor(BatchSpanProcessor(found[0].load()()))
    return provider


@contextmanager
def _traced_run(server: Any, door: str) -> Iterator[Any]:
    import dspy

    with (
        _tracer.start_as_current_span(
            "dspyreg.predict",
            attributes={"dspyreg.program": server.name, "dspyreg.version": server.version, "dspyreg.door": door},
        ) as span,
        dspy.context(callbacks=[*dspy.settings.get("callbacks", []), _LMSpans()]),
    ):
        yield span


def run_span(server: Any, door: str) -> Any:
    """Around one program run: a `dspyreg.predict` span whose LM calls are child spans, or nothing when off."""
    if _tracer is None:
        return nullcontext()
    return _traced_run(server, door)


class _LMSpans:
    """A DSPy callback: a `dspyreg.lm_call` span around each LM call (the outermost of LM.__call__ and forward)."""

    def __init__(self) -> None:
        self._spans: dict[str, tuple[Any, Any, Any, int]] = {}  # call id -> (span, context token, LM, thread)
        self._inner: set[str] = set()
        self._lock = threading.Lock()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        from opentelemetry import context, trace

        thread = threading.get_ident()
        with self._lock:
            if any(owner is instance and where == thread for _, _, owner, where in self._spans.values()):
                self._inner.add(call_id)  # forward() inside __call__ on this thread: one span per LM call
                return
        model = str(getattr(instance, "model", ""))
        span = _tracer.start_span("dspyreg.lm_call", attributes={"gen_ai.request.model": model})
        token = context.attach(trace.set_span_in_context(span))
        with self._lock:
            self._spans[call_id] = (span, token, instance, thread)

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        from opentelemetry import context, trace

        with self._lock:
            if call_id in self._inner:
                self._inner.discard(call_id)
                return
            found = self._spans.pop(call_id, None)
        if found is None:
            return
        span, token, instance, _ = found
        history = getattr(instance, "history", None) or []
        if history and exception is None:
            entry = history[-1]
            usage = entry.get("usage") or {}
            span.set_attribute("gen_ai.response.model", str(entry.get("response_model") or ""))
            span.set_attribute("gen_ai.usage.input_tokens", int(usage.get("prompt_tokens") or 0))
            span.set_attribute("gen_ai.usage.output_tokens", int(usage.get("completion_tokens") or 0))
            if entry.get("cost") is not None:
                span.set_attribute("dspyreg.cost_usd", float(entry["cost"]))
        if exception is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exception).__name__))
        context.detach(token)
        span.end()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):  # the other hooks DSPy may call (modules, adapters, tools): nothing to do
            return _ignore
        raise AttributeError(name)


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None
