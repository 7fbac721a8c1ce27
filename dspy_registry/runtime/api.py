"""The HTTP API of a dspyreg bundle (FastAPI + uvicorn).

Copied verbatim into every exported bundle as `api.py` (run `python api.py --port 8000` there); `dspyreg serve`
builds the same app over a backend that follows an environment and swaps versions. Endpoints:

    POST /predict          the program's inputs -> its outputs, plus program, version and usage
    POST /predict/batch    {"inputs": [...]} -> {"results": [...]} on one version
    GET  /health           liveness (always open)
    GET  /ready            200 once a verified version is loaded, else 503
    GET  /version          program, version, commit, environment (and the canary side, with --canary)
    GET  /metrics          Prometheus text: requests, errors, latency, LM tokens and cost per program and version
    GET  /docs             OpenAPI, with request and response schemas from the loaded version's signature

The call itself (bearer check, validation, run, access-log line) is calls.py's, shared with gRPC; this module is
the HTTP door: it reads bodies and maps each CallFailure kind to a status in one table, REST_ERRORS. Program calls
run in a bounded thread pool, off the event loop, so slow LM calls proceed in parallel. Each request runs on the
version that was current when it arrived, even if a swap happens meanwhile. Errors are JSON, never a traceback:
401 without the DSPYREG_API_TOKEN bearer token, 413 above the body limit or a batch above --max-batch, 408 when a
body does not arrive within --body-timeout, 422 for a body that does not fit (strict_json: no NaN, no
1e999999, no deep nesting, no lone surrogates), 502 when the LM fails or answers something unparseable, 503 when not
ready or when the process already holds --max-connections connections (LimitedH11Protocol, which also
closes a connection whose request head has not arrived within --header-timeout).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import anyio
import h11
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # inside the dspyreg package
    from . import calls, inference, server_limits, telemetry
except ImportError:  # in an exported bundle, beside calls.py, inference.py, server_limits.py, signature.py...
    import calls  # type: ignore[no-redef]
    import inference  # type: ignore[no-redef]
    import server_limits  # type: ignore[no-redef]
    import telemetry  # type: ignore[no-redef]

DEFAULT_MAX_BODY = 1 << 20
DEFAULT_THREADS = 64
ENV_METRICS_PUBLIC = "DSPYREG_METRICS_PUBLIC"  # "1": /metrics needs no bearer token (a Prometheus scrape has none)
PREDICT_PATHS = frozenset({"/predict", "/predict/batch"})  # the calls /metrics counts
# Each calls.CallFailure kind as (HTTP status, the "error" of the JSON body): the one place REST says how calls fail.
REST_ERRORS = {
    calls.UNAUTHORIZED: (401, "unauthorized"),
    calls.INVALID_JSON: (422, "invalid_json"),
    calls.INVALID_INPUT: (422, "invalid_input"),
    calls.TOO_LARGE: (413, "too_large"),
    calls.BODY_TIMEOUT: (408, "body_timeout"),
    calls.BATCH_TOO_LARGE: (413, "batch_too_large"),
    calls.LM_FAILURE: (502, "lm_error"),
    calls.PROGRAM_FAILURE: (500, "program_error"),
    calls.NOT_READY: (503, "not_ready"),
    calls.DEADLINE_EXCEEDED: (504, "deadline_exceeded"),
    calls.INTERNAL: (500, "internal_error"),
}


class Backend(Protocol):
    """What the app serves: the current loaded version (None until one is), and why it is or is not ready."""

    environment: str | None

    def current(self) -> inference.PipelineServer | None: ...

    def status(self) -> dict[str, Any]: ...


class StaticBackend:
    """One bundle folder, loaded once at startup."""

    environment: str | None = None

    def __init__(self, bundle_dir: str | Path) -> None:
        self.server = inference.PipelineServer(bundle_dir)

    def current(self) -> inference.PipelineServer:
        return self.server

    def status(self) -> dict[str, Any]:
        problem = self.server.lm_problem()
        if problem is not None:
            return {"ready": False, "version": self.server.version, "reason": problem}
        return {"ready": True, "version": self.server.version}


def failure_body(failure: calls.CallFailure) -> tuple[int, dict[str, Any]]:
    """A failed call as REST answers it: (status, {"error": ..., "detail": ...})."""
    status, error = REST_ERRORS[failure.kind]
    return status, {"error": error, "detail": failure.body_detail}


def failure_response(failure: calls.CallFailure) -> Any:
    status, body = failure_body(failure)
    response = JSONResponse(body, status_code=status)
    if failure.kind == calls.UNAUTHORIZED:
        response.headers["WWW-Authenticate"] = "Bearer"
    elif failure.kind == calls.BODY_TIMEOUT:
        response.headers["Connection"] = "close"  # the rest of a slow body is not waited for
    return response


SPLIT_PATHS = frozenset({"/predict", "/predict/batch"})  # the calls a canary splits (serve --canary)


def header(scope: dict[str, Any], name: bytes) -> str:
    """The first value of header `name` (lower case) of an ASGI request, "" when absent."""
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return ""


class GuardAndLog:
    """Around every HTTP request: the version that serves it (scope state `server`, chosen on arrival), the bearer
    check, the Content-Length limit, a JSON error instead of a traceback, one access-log line and the metrics of a
    predict call. The handler that answers with a failure leaves its kind in scope state `failure`."""

    def __init__(
        self,
        app: Any,
        *,
        backend: Backend,
        program: str,
        token: str | None,
        open_paths: set[str],
        max_body_bytes: int,
    ) -> None:
        self.app, self.backend, self.program, self.token = app, backend, program, token
        self.open_paths, self.max_body_bytes = open_paths, max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        if path in SPLIT_PATHS:  # a call to the program may go to a canary's version (one side per request)
            server = calls.serving(self.backend, lambda name: header(scope, name.lower().encode("latin-1")) or None)
        else:
            server = self.backend.current()
        state = scope.setdefault("state", {})
        state["server"] = server
        method = scope["method"]
        status = [500]
        sent = [False]

        async def logged_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                sent[0] = True
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # logged before the last bytes go out, so the line is written once the client has its answer
                self.ended(method, path, status[0], started, server, state.get("failure"))
            await send(message)

        failure: calls.CallFailure | None = None
        try:
            if (
                self.token
                and path not in self.open_paths
                and not calls.authorized(header(scope, b"authorization"), self.token)
            ):
                raise calls.CallFailure(calls.UNAUTHORIZED, "send Authorization: Bearer <DSPYREG_API_TOKEN>")
            if int(header(scope, b"content-length") or 0) > self.max_body_bytes:
                raise calls.CallFailure(calls.TOO_LARGE, f"the body is over {self.max_body_bytes} bytes")
            await self.app(scope, receive, logged_send)
            return
        except calls.CallFailure as err:
            failure = err
        except Exception as err:  # never a traceback to the client
            if sent[0]:
                raise  # the answer is under way: nothing else can be said to the client
            failure = calls.CallFailure.internal(err)
        state["failure"] = failure.kind
        await failure_response(failure)(scope, receive, logged_send)

    def ended(self, method: str, path: str, status: int, started: float, server: Any, kind: str | None) -> None:
        calls.log_call(method, path, {"status": status}, started, server)
        if method == "POST" and path in PREDICT_PATHS:
            telemetry.call_ended(self.program, server, telemetry.REST, kind, started)


# -- the app -----------------------------------------------------------------------------------------------------------
def create_app(
    backend: Backend,
    *,
    threads: int = DEFAULT_THREADS,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    token: str | None = None,
    max_batch: int = server_limits.DEFAULT_MAX_BATCH,
    body_timeout: float = server_limits.DEFAULT_BODY_TIMEOUT,
    metrics_public: bool = False,
) -> Any:
    token = calls.configured_token(token)
    limiter = anyio.CapacityLimiter(threads)
    app = FastAPI(title="dspyreg program API", version="1", docs_url="/docs", openapi_url="/openapi.json")
    open_paths = {"/health", "/ready", *(["/metrics"] if metrics_public else [])}
    no_metrics = telemetry.enable_metrics()
    no_tracing = telemetry.enable_tracing()
    if no_tracing is not None:
        logging.getLogger("dspyreg.telemetry").warning(no_tracing)
    program = str(getattr(backend, "program", ""))  # what a call that found no loaded version is counted under

    # A pure ASGI middleware: Starlette's BaseHTTPMiddleware (`@app.middleware`) runs each request in an extra task
    # with memory streams between them, about a fifth of the request thread's time under load.
    app.add_middleware(
        GuardAndLog,
        backend=backend,
        program=program,
        token=token,
        open_paths=open_paths,
        max_body_bytes=max_body_bytes,
    )

    async def read_json(request: Request) -> Any:
        chunks, size = [], 0
        try:
            with anyio.fail_after(body_timeout):  # a body trickling in must not hold a connection for ever
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > max_body_bytes:  # a chunked body has no Content-Length to refuse it by
                        raise calls.CallFailure(calls.TOO_LARGE, f"the body is over {max_body_bytes} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise calls.CallFailure(calls.BODY_TIMEOUT, f"the body did not arrive within {body_timeout:g} s") from None
        try:
            return server_limits.strict_json(b"".join(chunks) or b"null")
        except server_limits.JsonRefused as err:
            raise calls.CallFailure(calls.INVALID_JSON, str(err)) from None

    async def answer(server: inference.PipelineServer, inputs: dict[str, Any]) -> dict[str, Any]:
        """The response body for one input, run off the event loop; a failure raises calls.CallFailure."""
        answered: calls.Answer = await anyio.to_thread.run_sync(calls.run, server, inputs, limiter=limiter)
        return answered.body

    def served(server: inference.PipelineServer, body: dict[str, Any]) -> Any:
        return JSONResponse(body, headers={"X-Dspyreg-Program": server.name, "X-Dspyreg-Version": server.version})

    @app.post("/predict", summary="Run the program on one input")
    async def predict(request: Request) -> Any:
        server = request.state.server
        try:
            if server is None:
                raise calls.not_ready(backend.status())
            return served(server, await answer(server, calls.validated(server, await read_json(request))))
        except calls.CallFailure as failure:
            request.state.failure = failure.kind
            return failure_response(failure)

    @app.post("/predict/batch", summary="Run the program on several inputs, in parallel, on one version")
    async def predict_batch(request: Request) -> Any:
        server = request.state.server
        try:
            if server is None:
                raise calls.not_ready(backend.status())
            data = await read_json(request)
            if not isinstance(data, dict) or set(data) != {"inputs"} or not isinstance(data["inputs"], list):
                raise calls.CallFailure(calls.INVALID_INPUT, 'expected {"inputs": [{...}, ...]}')
            calls.check_batch(len(data["inputs"]), max_batch)
            batch = [calls.validated(server, item, f"inputs[{i}]") for i, item in enumerate(data["inputs"])]
        except calls.CallFailure as failure:
            request.state.failure = failure.kind
            return failure_response(failure)
        results: list[dict[str, Any]] = [{} for _ in batch]

        async def one(i: int, inputs: dict[str, Any]) -> None:
            try:
                results[i] = await answer(server, inputs)
            except calls.CallFailure as failure:  # one failed input does not fail the others
                telemetry.input_failed(server, telemetry.REST, failure.kind)
                status, body = failure_body(failure)
                results[i] = {"error": body, "status": status}

        async with anyio.create_task_group() as group:
            for i, inputs in enumerate(batch):
                group.start_soon(one, i, inputs)
        return served(server, {"program": server.name, "version": server.version, "results": results})

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: 200 once a verified version is loaded")
    async def ready() -> Any:
        status = backend.status()
        return JSONResponse(status, status_code=200 if status.get("ready") else 503)

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics() -> Any:
        found = telemetry.metrics()
        if found is None:
            return JSONResponse({"error": "not_found", "detail": no_metrics}, status_code=404)
        text, content_type = found.exposition()
        return Response(text, media_type=content_type)

    @app.get("/version", summary="What is being served")
    async def version(request: Request) -> Any:
        server = request.state.server
        if server is None:
            return failure_response(calls.not_ready(backend.status()))
        body = {
            "program": server.name,
            "version": server.version,
            "commit": server.commit,
            "environment": backend.environment,
        }
        canary = getattr(backend, "canary_status", None)  # serving with --canary: the other side too
        return body if canary is None else {**body, "canary": canary()}

    def openapi() -> dict[str, Any]:
        """OpenAPI with the loaded version's request and response schemas, so client generators see real types."""
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        server = backend.current()
        if server is None:
            return schema
        request_model, response_model = calls.models(server)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (request_model, response_model):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema

        def ref(model: Any) -> dict[str, str]:
            return {"$ref": f"#/components/schemas/{model.__name__}"}

        errors = {
            str(code): {"description": text, "content": {"application/json": {"schema": {"type": "object"}}}}
            for code, text in (
                (408, "Body too slow"),
                (413, "Body or batch too large"),
                (422, "Invalid input"),
                (502, "LM failure"),
                (503, "Not ready, or too many connections"),
            )
        }
        single = schema["paths"]["/predict"]["post"]
        single["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(request_model)}}}
        single["responses"] = {
            "200": {"description": "The outputs", "content": {"application/json": {"schema": ref(response_model)}}},
            **errors,
        }
        batch = schema["paths"]["/predict/batch"]["post"]
        batch["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["inputs"],
                        "properties": {"inputs": {"type": "array", "items": ref(request_model)}},
                    }
                }
            },
        }
        batch["responses"] = {
            "200": {
                "description": "One result per input, in order",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "program": {"type": "string"},
                                "version": {"type": "string"},
                                "results": {"type": "array", "items": ref(response_model)},
                            },
                        }
                    }
                },
            },
            **errors,
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with Nagle's algorithm off on every connection.

    With --workers > 1, uvicorn hands its workers a socket on which asyncio does not set TCP_NODELAY, so a response
    written as headers then body waits for the client's delayed ACK: about 40 ms per keep-alive request.
    """

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


_OVERLOADED = json.dumps(
    {"error": "too_many_connections", "detail": "the server holds its maximum of connections: retry shortly"}
).encode()


class LimitedH11Protocol(NoDelayH11Protocol):
    """Connection limits uvicorn lacks: a cap on open connections and a deadline for each request head.

    uvicorn's limit_concurrency answers 503 only once a request arrives, and counts idle keep-alive connections
    against every request; a connection that sends nothing (or a header a byte at a time) holds its file descriptor
    for ever. Here a connection over ConnectionLimits.max_connections gets 503 and is closed as soon as it is
    accepted, and one whose request line and headers have not all arrived within header_timeout is closed (the
    keep-alive timeout covers the wait between requests; the body has its own deadline in the app).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = server_limits.ConnectionLimits.from_env()
        self._head_deadline: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"retry-after: 1\r\ncontent-length: %d\r\n\r\n%s" % (len(_OVERLOADED), _OVERLOADED)
            )
            transport.close()
            return
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm_head_deadline()  # a new request head starts (after a keep-alive wait, say)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_head_deadline()  # the head is complete: the request runs

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(module: str = __name__, limits: server_limits.ConnectionLimits | None = None) -> dict[str, Any]:
    """What every server of ours passes to uvicorn.run; workers import the protocol by name, and read `limits`
    (exported to the environment here) when they build it."""
    (limits or server_limits.ConnectionLimits.from_env()).export_to_env()
    return {
        "http": f"{module}:LimitedH11Protocol",
        "access_log": False,
        "log_level": "warning",
        "timeout_keep_alive": server_limits.DEFAULT_KEEP_ALIVE,
        "h11_max_incomplete_event_size": server_limits.MAX_HEAD_BYTES,
    }


def configure_access_log() -> None:
    if not calls.access_log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        calls.access_log.addHandler(handler)
        calls.access_log.setLevel(logging.INFO)
        calls.access_log.propagate = False


def bundle_app() -> Any:
    """The app of the bundle this file sits in (or DSPYREG_BUNDLE_DIR): uvicorn's factory for `--workers`."""
    configure_access_log()
    bundle = os.environ.get("DSPYREG_BUNDLE_DIR") or str(Path(__file__).resolve().parent)
    return create_app(
        StaticBackend(bundle),
        threads=int(os.environ.get("DSPYREG_THREADS", DEFAULT_THREADS)),
        max_body_bytes=int(os.environ.get("DSPYREG_MAX_BODY_BYTES", DEFAULT_MAX_BODY)),
        max_batch=int(os.environ.get(server_limits.ENV_MAX_BATCH) or server_limits.DEFAULT_MAX_BATCH),
        body_timeout=float(os.environ.get(server_limits.ENV_BODY_TIMEOUT) or server_limits.DEFAULT_BODY_TIMEOUT),
        metrics_public=os.environ.get(ENV_METRICS_PUBLIC) == "1",
    )


def main() -> None:
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(description="Serve this bundle over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="processes (each loads the bundle)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="concurrent program calls per process")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY)
    defaults = server_limits.ConnectionLimits.from_env()
    parser.add_argument(
        "--max-batch",
        type=int,
        default=int(os.environ.get(server_limits.ENV_MAX_BATCH) or server_limits.DEFAULT_MAX_BATCH),
        help="inputs per /predict/batch request; more get 413 (env DSPYREG_MAX_BATCH)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="open connections per process; more get 503 and are closed (env DSPYREG_MAX_CONNECTIONS)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=defaults.header_timeout,
        help="seconds for a request line and headers to arrive (env DSPYREG_HEADER_TIMEOUT)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=float(os.environ.get(server_limits.ENV_BODY_TIMEOUT) or server_limits.DEFAULT_BODY_TIMEOUT),
        help="seconds for a request body to arrive; slower gets 408 (env DSPYREG_BODY_TIMEOUT)",
    )
    args = parser.parse_args()
    if min(args.max_batch, args.max_connections, args.header_timeout, args.body_timeout) <= 0:
        parser.error("--max-batch, --max-connections, --header-timeout and --body-timeout must be positive")
    os.environ.setdefault("DSPYREG_BUNDLE_DIR", str(Path(__file__).resolve().parent))
    os.environ["DSPYREG_THREADS"] = str(args.threads)
    os.environ["DSPYREG_MAX_BODY_BYTES"] = str(args.max_body_bytes)
    os.environ[server_limits.ENV_MAX_BATCH] = str(args.max_batch)
    os.environ[server_limits.ENV_BODY_TIMEOUT] = str(args.body_timeout)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    module = Path(__file__).stem
    problem = server_limits.port_problem(args.host, args.port)
    if problem is not None:
        parser.exit(1, f"error: cannot serve on {args.host}:{args.port}: {problem}: stop what uses it or pass --port\n")
    bundle = os.environ["DSPYREG_BUNDLE_DIR"]
    config = json.loads((Path(bundle) / "config.json").read_text())["pipeline"]
    # uvicorn logs at warning level only: say here where to send requests.
    print(
        f"Serving {config['name']} {config['version']} on http://{args.host}:{args.port} "
        f"({args.workers} worker(s)); GET /ready says whether it can answer",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        f"{module}:bundle_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        **uvicorn_options(module, server_limits.ConnectionLimits(args.max_connections, args.header_timeout)),
    )


if __name__ == "__main__":
    main()
