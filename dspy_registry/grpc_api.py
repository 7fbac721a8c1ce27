"""gRPC beside REST: `dspyreg serve --grpc-port` serves the same backend, so one process has one loaded version and
one hot swap for both.

The service `dspyreg.<program>.<Program>` (see proto.py) has `Predict` and `PredictBatch`. Its messages come from the
`<program>.proto` of the bundle being served, compiled (grpc_codec.py) before that version is swapped in; a call reads
its request bytes with the message classes of the version that serves it, so a swap never mixes two signatures. The
call itself is REST's (runtime/calls.py: the bearer check, the request model's validation, the run, the response
model, the access-log line); this module is the gRPC door, mapping each CallFailure kind to a status in GRPC_CODES.

Beside it: the standard health service (grpc.health.v1: SERVING once a version is loaded, NOT_SERVING before) and
server reflection (v1alpha, of the version being served). Status codes mirror REST: INVALID_ARGUMENT (422),
UNAVAILABLE (503 not ready, 502 LM failure), RESOURCE_EXHAUSTED (413, above --max-body-bytes, or a PredictBatch of more
than --max-batch inputs, refused before any input runs), UNAUTHENTICATED (401,
without `authorization: Bearer <DSPYREG_API_TOKEN>` metadata; health stays open), INTERNAL (500, never a traceback),
DEADLINE_EXCEEDED at the client's deadline. Answers carry x-dspyreg-program, x-dspyreg-version and x-dspyreg-commit
metadata, and x-dspyreg-usage (JSON) in the trailers.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from . import proto
from .errors import RegistryError
from .grpc_codec import VersionApi, decode, encode, parse, version_api
from .runtime import calls, telemetry
from .runtime.api import Backend
from .runtime.calls import CallFailure
from .runtime.inference import PipelineServer, Usage
from .runtime.server_limits import DEFAULT_MAX_BATCH, JsonRefused, check_value

HEALTH_POLL_SECONDS = 0.1
NO_DEADLINE = 365 * 24 * 3600.0  # a deadline further away than this is no deadline
UNAUTHENTICATED = "send `authorization: Bearer <DSPYREG_API_TOKEN>` metadata"
# Each CallFailure kind as (status code, words before its detail): the one place gRPC says how calls fail.
GRPC_CODES = {
    calls.UNAUTHORIZED: (grpc.StatusCode.UNAUTHENTICATED, ""),
    calls.INVALID_JSON: (grpc.StatusCode.INVALID_ARGUMENT, ""),
    calls.INVALID_INPUT: (grpc.StatusCode.INVALID_ARGUMENT, ""),
    calls.TOO_LARGE: (grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    calls.BODY_TIMEOUT: (grpc.StatusCode.DEADLINE_EXCEEDED, ""),
    calls.BATCH_TOO_LARGE: (grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
    calls.LM_FAILURE: (grpc.StatusCode.UNAVAILABLE, "the LM failed: "),
    calls.PROGRAM_FAILURE: (grpc.StatusCode.INTERNAL, "the program failed: "),
    calls.NOT_READY: (grpc.StatusCode.UNAVAILABLE, ""),
    calls.DEADLINE_EXCEEDED: (grpc.StatusCode.DEADLINE_EXCEEDED, ""),
    calls.INTERNAL: (grpc.StatusCode.INTERNAL, "internal error: "),
}


def status_of(failure: CallFailure) -> tuple[grpc.StatusCode, str]:
    """A failed call as gRPC ends it: its code and a one-line detail."""
    code, lead = GRPC_CODES[failure.kind]
    return code, " ".join(f"{lead}{failure.detail}".split())[:1000]


# -- the server -------------------------------------------------------------------------------------------------------
class GrpcServer:
    """The gRPC server of one process, over the backend that the REST app serves."""

    def __init__(
        self,
        program: str,
        backend: Backend,
        *,
        threads: int,
        max_body_bytes: int,
        token: str | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self.program = program
        self.backend = backend
        self.service = proto.service_name(program)
        self.threads = threads
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.token = calls.configured_token(token)
        self._apis: weakref.WeakKeyDictionary[PipelineServer, VersionApi | Exception] = weakref.WeakKeyDictionary()
        self._apis_lock = threading.Lock()
        self._calls = ThreadPoolExecutor(threads, thread_name_prefix="dspyreg-grpc-call")
        self._health = _Health(self)
        self._stop = threading.Event()
        self._server: Any = None

    # -- versions ----------------------------------------------------------------------------------------------------
    def prepare(self, server: PipelineServer) -> None:
        """Compile `server`'s messages before it is swapped in; raises when its .proto does not fit (not swapped)."""
        self.api(server)

    def api(self, server: PipelineServer) -> VersionApi:
        """`server`'s messages, compiled once (a failure too is kept: readiness polls must not recompile)."""
        with self._apis_lock:
            found = self._apis.get(server)
            if found is None:
                try:
                    found = version_api(server)
                except Exception as err:
                    found = err
                self._apis[server] = found
        if isinstance(found, Exception):
            raise found
        return found

    def ready(self) -> bool:
        server = self.backend.current()
        if server is None:
            return False
        try:
            self.api(server)
        except Exception:
            return False
        return True

    def current_pool(self) -> descriptor_pool.DescriptorPool | None:
        server = self.backend.current()
        if server is None:
            return None
        try:
            return self.api(server).pool
        except Exception:
            return None

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on host:port (with SO_REUSEPORT when several worker processes share it); the bound port."""
        server = grpc.server(
            ThreadPoolExecutor(self.threads + 4, thread_name_prefix="dspyreg-grpc"),
            handlers=[_Service(self)],
            interceptors=[_Auth(self)],
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.max_receive_message_length", self.max_body_bytes),
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = (self.service, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server, pool=_ServedPool(self))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as err:
            raise RegistryError(f"cannot serve gRPC on {address}: {err} (is the port in use?)") from None
        if bound == 0:
            raise RegistryError(f"cannot serve gRPC on {address}: the port is in use or the address is not local")
        server.start()
        self._server = server
        threading.Thread(target=self._watch_readiness, name="dspyreg-grpc-health", daemon=True).start()
        return int(bound)

    def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        self._health.enter_graceful_shutdown()
        if self._server is not None:
            self._server.stop(grace).wait()
        self._calls.shutdown(wait=False, cancel_futures=True)

    def _watch_readiness(self) -> None:
        """Health Watch streams learn of readiness changes from here (Check asks the backend itself)."""
        last = None
        while not self._stop.is_set():
            status = (
                health_pb2.HealthCheckResponse.SERVING if self.ready() else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            if status != last:
                for name in ("", self.service):
                    self._health.set(name, status)
                last = status
            self._stop.wait(HEALTH_POLL_SECONDS)

    # -- calls -------------------------------------------------------------------------------------------------------
    def predict(self, request: bytes, context: Any) -> bytes:
        def handle(server: PipelineServer, api: VersionApi, deadline: float | None) -> bytes:
            message = parse(api.request, request)
            inputs = self._inputs(server, api, message, "")
            outputs, usage = self._wait(self._submit(server, inputs, deadline), deadline)
            reply = api.response()
            encode(reply, api.signature.outputs, outputs, api.signature)
            context.set_trailing_metadata((("x-dspyreg-usage", json.dumps(usage.to_json())),))
            return bytes(reply.SerializeToString())

        return self._call("Predict", context, handle)

    def predict_batch(self, request: bytes, context: Any) -> bytes:
        def handle(server: PipelineServer, api: VersionApi, deadline: float | None) -> bytes:
            message = parse(api.batch_request, request)
            calls.check_batch(len(message.inputs), self.max_batch)
            batch = [self._inputs(server, api, item, f"inputs[{i}].") for i, item in enumerate(message.inputs)]
            futures = [self._submit(server, inputs, deadline) for inputs in batch]
            reply = api.batch_response()
            usages = []
            for future in futures:
                result = reply.results.add()
                try:
                    outputs, usage = self._wait(future, deadline)
                except CallFailure as failure:
                    if failure.kind == calls.DEADLINE_EXCEEDED:
                        raise
                    telemetry.input_failed(server, telemetry.GRPC, failure.kind)
                    code, detail = status_of(failure)
                    result.error.code, result.error.message = code.name, detail
                    continue
                result.response.SetInParent()
                encode(result.response, api.signature.outputs, outputs, api.signature)
                usages.append(usage)
            context.set_trailing_metadata((("x-dspyreg-usage", json.dumps(_total(usages).to_json())),))
            return bytes(reply.SerializeToString())

        return self._call("PredictBatch", context, handle)

    def _call(
        self, method: str, context: Any, handle: Callable[[PipelineServer, VersionApi, float | None], bytes]
    ) -> bytes:
        """One call: the version current on arrival serves it all; a CallFailure becomes its status, anything else
        INTERNAL without a traceback; one access-log line either way."""
        started = time.perf_counter()
        key_of = dict(context.invocation_metadata() or ()).get  # gRPC metadata keys are lowercase
        server = calls.serving(self.backend, lambda header: key_of(header.lower()))
        code, detail = grpc.StatusCode.OK, ""
        kind: str | None = None
        try:
            if server is None:
                raise calls.not_ready(self.backend.status())
            try:
                api = self.api(server)
            except Exception as err:
                raise CallFailure(calls.NOT_READY, f"not ready: {err}") from None
            context.send_initial_metadata(
                (
                    ("x-dspyreg-program", server.name),
                    ("x-dspyreg-version", server.version),
                    ("x-dspyreg-commit", server.commit),
                )
            )
            remaining = context.time_remaining()  # without a deadline, grpc says "in about 300 million years"
            deadline = None if remaining is None or remaining > NO_DEADLINE else time.monotonic() + remaining
            return handle(server, api, deadline)
        except CallFailure as failure:
            code, detail = status_of(failure)
            kind = failure.kind
        except Exception as err:  # never a traceback to the client
            code, detail = status_of(CallFailure.internal(err))
            kind = calls.INTERNAL
        finally:
            calls.log_call("GRPC", f"/{self.service}/{method}", {"grpc_status": code.name}, started, server)
            telemetry.call_ended(self.program, server, telemetry.GRPC, kind, started)
        context.abort(code, detail)
        raise AssertionError("context.abort returns only by raising")  # pragma: no cover - grpc raises above

    def _inputs(self, server: PipelineServer, api: VersionApi, message: Any, at: str) -> dict[str, Any]:
        """The message as the program's inputs, validated as REST validates them."""
        data = decode(message, api.signature.inputs, api.signature, at)
        try:
            check_value(data, what=at.rstrip(".") or "the request")  # NaN and infinite doubles, as REST refuses them
        except JsonRefused as err:
            raise CallFailure(calls.INVALID_JSON, str(err)) from None
        return calls.validated(server, data, at.rstrip("."))

    def _submit(
        self, server: PipelineServer, inputs: dict[str, Any], deadline: float | None
    ) -> Future[tuple[dict[str, Any], Usage]]:
        return self._calls.submit(_run, server, inputs, deadline)

    @staticmethod
    def _wait(future: Future[tuple[dict[str, Any], Usage]], deadline: float | None) -> tuple[dict[str, Any], Usage]:
        try:
            return future.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            future.cancel()
            raise CallFailure(calls.DEADLINE_EXCEEDED, "the deadline passed before the program answered") from None


def _run(server: PipelineServer, inputs: dict[str, Any], deadline: float | None) -> tuple[dict[str, Any], Usage]:
    """Run the program (in the call pool); its outputs as the REST API answers them."""
    if deadline is not None and time.monotonic() >= deadline:
        raise CallFailure(calls.DEADLINE_EXCEEDED, "the deadline passed before the program started")
    answer = calls.run(server, inputs, door=telemetry.GRPC)
    return {name: answer.body.get(name) for name in server.outputs}, answer.usage


def _total(usages: Sequence[Usage]) -> Usage:
    """The usage of a batch: the sums, and a cost only when every call's cost is known."""
    costs = [u.cost for u in usages]
    return Usage(
        sum(u.prompt_tokens for u in usages),
        sum(u.completion_tokens for u in usages),
        sum(u.total_tokens for u in usages),
        sum(c for c in costs if c is not None) if costs and None not in costs else None,
        sum(u.lm_calls for u in usages),
    )


# -- grpc plumbing ---------------------------------------------------------------------------------------------------
class _Service(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Predict and PredictBatch on raw bytes: each call is parsed by the version that serves it."""

    def __init__(self, owner: GrpcServer) -> None:
        self._methods = {
            f"/{owner.service}/Predict": grpc.unary_unary_rpc_method_handler(owner.predict),
            f"/{owner.service}/PredictBatch": grpc.unary_unary_rpc_method_handler(owner.predict_batch),
        }

    def service(self, handler_call_details: Any) -> Any:
        return self._methods.get(handler_call_details.method)


class _Auth(grpc.ServerInterceptor):  # type: ignore[misc]
    """With DSPYREG_API_TOKEN set, every call but health needs `authorization: Bearer <token>` metadata."""

    def __init__(self, owner: GrpcServer) -> None:
        self._owner = owner
        self._open = (f"/{health.SERVICE_NAME}/",)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        token = self._owner.token
        handler = continuation(details)
        if not token or handler is None or details.method.startswith(self._open):
            return handler
        header = dict(details.invocation_metadata or ()).get("authorization", "")
        if calls.authorized(str(header), token):
            return handler
        code, detail = status_of(CallFailure(calls.UNAUTHORIZED, UNAUTHENTICATED))
        calls.log_call("GRPC", details.method, {"grpc_status": code.name}, time.perf_counter(), None)
        if details.method.startswith(f"/{self._owner.service}/"):
            server = self._owner.backend.current()
            telemetry.call_ended(self._owner.program, server, telemetry.GRPC, calls.UNAUTHORIZED, time.perf_counter())
        return _denied(handler, code, detail)


def _denied(handler: Any, code: grpc.StatusCode, detail: str) -> Any:
    def deny(request: Any, context: Any) -> Any:
        context.abort(code, detail)

    def deny_stream(request: Any, context: Any) -> Any:
        context.abort(code, detail)
        yield  # pragma: no cover - a generator, as a streaming handler must be

    if handler.response_streaming:
        make = (
            grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler
        )
        return make(deny_stream)
    make = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler
    return make(deny)


class _Health(health.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 for "" and the program's service: SERVING exactly while a version is loaded."""

    def __init__(self, owner: GrpcServer) -> None:
        super().__init__()
        self._owner = owner

    def Check(self, request: Any, context: Any) -> Any:
        if request.service not in ("", self._owner.service):
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        ready = self._owner.ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


class _ServedPool:
    """What reflection reads: the descriptors of the version being served, then the default pool (health,
    reflection itself). Passed as a pool, so reflection follows hot swaps."""

    def __init__(self, owner: GrpcServer) -> None:
        self._owner = owner

    def _find(self, method: str, *args: Any) -> Any:
        pools = [self._owner.current_pool(), descriptor_pool.Default()]
        for pool in pools:
            if pool is None:
                continue
            try:
                return getattr(pool, method)(*args)
            except KeyError:
                continue
        raise KeyError(args[0] if args else method)

    def FindFileByName(self, name: str) -> Any:
        return self._find("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:
        return self._find("FindFileContainingSymbol", symbol)

    def FindMessageTypeByName(self, name: str) -> Any:
        return self._find("FindMessageTypeByName", name)

    def FindExtensionByNumber(self, message: Any, number: int) -> Any:
        return self._find("FindExtensionByNumber", message, number)

    def FindAllExtensions(self, message: Any) -> Any:
        return self._find("FindAllExtensions", message)
