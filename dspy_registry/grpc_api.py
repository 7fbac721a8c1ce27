"""gRPC beside REST: `dspyreg serve --grpc-port` serves the same backend, so one process has one loaded version and
one hot swap for both.

The service `dspyreg.<program>.<Program>` (see proto.py) has `Predict` and `PredictBatch`. Its messages come from the
`<program>.proto` of the bundle being served, compiled with grpc_tools into a private descriptor pool per version
before that version is swapped in; a call reads its request bytes with the message classes of the version that
serves it, so a swap never mixes two signatures. Inputs go through the REST API's request model (the same validation,
the same values reach the program), outputs through its response model.

Beside it: the standard health service (grpc.health.v1: SERVING once a version is loaded, NOT_SERVING before) and
server reflection (v1alpha, of the version being served). Status codes mirror REST: INVALID_ARGUMENT (422),
UNAVAILABLE (503 not ready, 502 LM failure), RESOURCE_EXHAUSTED (413, above --max-body-bytes, or a PredictBatch of more
than --max-batch inputs, refused before any input runs), UNAUTHENTICATED (401,
without `authorization: Bearer <DSPYREG_API_TOKEN>` metadata; health stays open), INTERNAL (500, never a traceback),
DEADLINE_EXCEEDED at the client's deadline. Answers carry x-dspyreg-program, x-dspyreg-version and x-dspyreg-commit
metadata, and x-dspyreg-usage (JSON) in the trailers.
"""

from __future__ import annotations

import hmac
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from . import proto
from .errors import RegistryError
from .runtime.api import ENV_TOKEN, Backend, access_log, models
from .runtime.inference import InputError, LMFailure, PipelineServer, ProgramFailure, Usage
from .runtime.server_limits import DEFAULT_MAX_BATCH, JsonRefused, check_value, strict_json

HEALTH_POLL_SECONDS = 0.1
NO_DEADLINE = 365 * 24 * 3600.0  # a deadline further away than this is no deadline
UNAUTHENTICATED = "send `authorization: Bearer <DSPYREG_API_TOKEN>` metadata"


class Failure(Exception):
    """End a call with this status code and one-line detail."""

    def __init__(self, code: grpc.StatusCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = " ".join(detail.split())[:1000]


# -- a version's messages -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionApi:
    """One loaded version in gRPC terms: its compiled descriptors, message classes and signature."""

    pool: descriptor_pool.DescriptorPool
    request: Any
    response: Any
    batch_request: Any
    batch_response: Any
    signature: proto.Signature


def compile_proto(text: str, name: str) -> descriptor_pool.DescriptorPool:
    """The descriptors of one .proto text, in a pool of their own (protoc runs aside, so its errors are captured)."""
    with tempfile.TemporaryDirectory(prefix="dspyreg-proto-") as tmp:
        (Path(tmp) / name).write_text(text, encoding="utf-8")
        out = Path(tmp) / "descriptors.pb"
        proc = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp}", f"--descriptor_set_out={out}", name],
            capture_output=True,
            text=True,
            cwd=tmp,
        )
        if proc.returncode != 0:
            raise RegistryError(f"{name} does not compile: {' '.join(proc.stderr.split()) or 'protoc failed'}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


def version_api(server: PipelineServer) -> VersionApi:
    """Compile the bundle's .proto and check it against the loaded program's signature."""
    path = server.bundle_dir / proto.file_name(server.name)
    if not path.is_file():
        raise RegistryError(
            f"{server.name} {server.version}: the bundle has no {path.name} (exported by an older dspyreg): "
            f"delete {server.bundle_dir} to have it rebuilt"
        )
    pool = compile_proto(path.read_text(encoding="utf-8"), path.name)
    names = proto.Names.of(server.name)
    package = proto.package(server.name)

    def message(name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{name}"))

    sig = proto.signature(server.name, server.interface)  # interface.json alone, as the .proto was written
    api = VersionApi(
        pool,
        message(names.request),
        message(names.response),
        message(names.batch_request),
        message(names.batch_response),
        sig,
    )
    for cls, fields in ((api.request, sig.inputs), (api.response, sig.outputs)):
        check_messages(cls.DESCRIPTOR, fields, sig, path.name)
    return api


_WIRE = {
    "string": FieldDescriptor.TYPE_STRING,
    "json": FieldDescriptor.TYPE_STRING,
    "int64": FieldDescriptor.TYPE_INT64,
    "double": FieldDescriptor.TYPE_DOUBLE,
    "bool": FieldDescriptor.TYPE_BOOL,
    "enum": FieldDescriptor.TYPE_ENUM,
    "message": FieldDescriptor.TYPE_MESSAGE,
}


def check_messages(
    descriptor: Any, fields: Sequence[proto.FieldShape], sig: proto.Signature, where: str, seen: set[str] | None = None
) -> None:
    """The compiled messages must be the ones the signature describes (the .proto was written for this version)."""
    seen = set() if seen is None else seen
    seen.add(descriptor.name)
    for f in fields:
        fd = descriptor.fields_by_name.get(f.name)
        if fd is None or fd.type != _WIRE[f.shape.kind] or fd.is_repeated != f.shape.repeated:
            raise RegistryError(f"{where} does not match the loaded program: field {descriptor.name}.{f.name}")
        if f.shape.kind == "message" and f.shape.message not in seen:
            check_messages(fd.message_type, sig.messages[f.shape.message], sig, where, seen)


# -- messages <-> Python values ----------------------------------------------------------------------------------------
def decode(message: Any, fields: Sequence[proto.FieldShape], sig: proto.Signature, at: str = "") -> dict[str, Any]:
    """A request message as the JSON-like values the REST API would have parsed (unset fields left out)."""
    out: dict[str, Any] = {}
    for f in fields:
        fd = message.DESCRIPTOR.fields_by_name[f.name]
        if fd.is_repeated:
            items = getattr(message, f.name)
            out[f.name] = [_decode_value(fd, f, item, sig, f"{at}{f.name}[{i}]") for i, item in enumerate(items)]
        elif message.HasField(f.name):
            out[f.name] = _decode_value(fd, f, getattr(message, f.name), sig, f"{at}{f.name}")
    return out


def _decode_value(fd: Any, f: proto.FieldShape, value: Any, sig: proto.Signature, where: str) -> Any:
    kind = f.shape.kind
    if kind == "json":
        try:
            return strict_json(value, what="the text")  # the same JSON the REST API accepts
        except JsonRefused as err:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: not JSON text: {err}") from None
    if kind == "enum":
        by_name = {proto.enum_value_name(f.name, v): v for v in f.shape.values}
        number = fd.enum_type.values_by_number.get(value)
        if number is None or number.name not in by_name:
            allowed = ", ".join(by_name)
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: enum value {value} is not one of {allowed}")
        return by_name[number.name]
    if kind == "message":
        return decode(value, sig.messages[f.shape.message], sig, f"{where}.")
    return value


def encode(message: Any, fields: Sequence[proto.FieldShape], values: Mapping[str, Any], sig: proto.Signature) -> None:
    """Fill `message` from JSON values (what the REST API answers); None leaves a field unset."""
    for f in fields:
        value = values.get(f.name)
        if value is None:
            continue
        fd = message.DESCRIPTOR.fields_by_name[f.name]
        if fd.is_repeated:
            target = getattr(message, f.name)
            for item in value:
                if f.shape.kind == "message":
                    encode(target.add(), sig.messages[f.shape.message], item, sig)
                else:
                    target.append(_encode_value(fd, f, item))
        elif f.shape.kind == "message":
            child = getattr(message, f.name)
            child.SetInParent()
            encode(child, sig.messages[f.shape.message], value, sig)
        else:
            setattr(message, f.name, _encode_value(fd, f, value))


def _encode_value(fd: Any, f: proto.FieldShape, value: Any) -> Any:
    if f.shape.kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if f.shape.kind == "enum":
        found = fd.enum_type.values_by_name.get(proto.enum_value_name(f.name, str(value)))
        if found is None:
            raise ValueError(f"{f.name}: {value!r} is not one of its Literal values")
        return found.number
    return value


def _one_line(err: ValidationError, at: str = "") -> str:
    """A validation error as one line, each problem at its field (`inputs[1].question: Field required`)."""
    return "; ".join(f"{at}{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors())


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
        self.token = token if token is not None else (os.environ.get(ENV_TOKEN) or None)
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
            message = _parse(api.request, request)
            inputs = self._inputs(server, api, message, "")
            outputs, usage = self._wait(self._submit(server, inputs, deadline), deadline)
            reply = api.response()
            encode(reply, api.signature.outputs, outputs, api.signature)
            context.set_trailing_metadata((("x-dspyreg-usage", json.dumps(usage.to_json())),))
            return bytes(reply.SerializeToString())

        return self._call("Predict", context, handle)

    def predict_batch(self, request: bytes, context: Any) -> bytes:
        def handle(server: PipelineServer, api: VersionApi, deadline: float | None) -> bytes:
            message = _parse(api.batch_request, request)
            if len(message.inputs) > self.max_batch:  # before any input reaches the LM, like REST's 413
                raise Failure(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"at most {self.max_batch} inputs per batch (--max-batch); got {len(message.inputs)}",
                )
            batch = [self._inputs(server, api, item, f"inputs[{i}].") for i, item in enumerate(message.inputs)]
            futures = [self._submit(server, inputs, deadline) for inputs in batch]
            reply = api.batch_response()
            usages = []
            for future in futures:
                result = reply.results.add()
                try:
                    outputs, usage = self._wait(future, deadline)
                except Failure as failure:
                    if failure.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise
                    result.error.code, result.error.message = failure.code.name, failure.detail
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
        """One call: the version current on arrival serves it all; a Failure becomes its status, anything else
        INTERNAL without a traceback; one access-log line either way."""
        started = time.perf_counter()
        server = self.backend.current()
        code, detail = grpc.StatusCode.OK, ""
        try:
            if server is None:
                raise Failure(grpc.StatusCode.UNAVAILABLE, f"not ready: {_why_not_ready(self.backend.status())}")
            try:
                api = self.api(server)
            except Exception as err:
                raise Failure(grpc.StatusCode.UNAVAILABLE, f"not ready: {err}") from None
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
        except Failure as failure:
            code, detail = failure.code, failure.detail
        except Exception as err:  # never a traceback to the client
            code, detail = grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}"
        finally:
            _log(f"/{self.service}/{method}", code, started, server)
        context.abort(code, detail)
        raise AssertionError("context.abort returns only by raising")  # pragma: no cover - grpc raises above

    def _inputs(self, server: PipelineServer, api: VersionApi, message: Any, at: str) -> dict[str, Any]:
        """The message as the program's inputs, validated by the REST API's request model."""
        data = decode(message, api.signature.inputs, api.signature, at)
        try:
            check_value(data, what=at.rstrip(".") or "the request")  # NaN and infinite doubles, as REST refuses them
        except JsonRefused as err:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
        request_model, _ = models(server)
        try:
            parsed = request_model.model_validate(data)
        except ValidationError as err:
            raise Failure(grpc.StatusCode.INVALID_ARGUMENT, _one_line(err, at)) from None
        return {k: v for k, v in parsed.model_dump().items() if k in parsed.model_fields_set}

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
            raise Failure(
                grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the program answered"
            ) from None


def _run(server: PipelineServer, inputs: dict[str, Any], deadline: float | None) -> tuple[dict[str, Any], Usage]:
    """Run the program (in the call pool); its outputs as the REST API answers them."""
    if deadline is not None and time.monotonic() >= deadline:
        raise Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed before the program started")
    try:
        result = server.run(inputs)
    except InputError as err:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
    except LMFailure as err:
        raise Failure(grpc.StatusCode.UNAVAILABLE, f"the LM failed: {err}") from None
    except ProgramFailure as err:
        raise Failure(grpc.StatusCode.INTERNAL, f"the program failed: {err}") from None
    _, response_model = models(server)
    body = {**result.outputs, "program": server.name, "version": server.version, "usage": result.usage.to_json()}
    try:
        checked = response_model.model_validate(body).model_dump(mode="json")
    except ValidationError as err:
        raise Failure(grpc.StatusCode.INTERNAL, f"the outputs do not fit the signature: {_one_line(err)}") from None
    return {name: checked.get(name) for name in server.outputs}, result.usage


def _parse(cls: Any, data: bytes) -> Message:
    try:
        message: Message = cls.FromString(data)
        return message
    except DecodeError as err:
        raise Failure(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a {cls.DESCRIPTOR.name}: {err}") from None


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


def _why_not_ready(status: Mapping[str, Any]) -> str:
    problem = status.get("not_swapped_in")
    return str(problem["error"]) if problem else "no version is loaded yet"


def _log(path: str, code: grpc.StatusCode, started: float, server: PipelineServer | None) -> None:
    """One JSON line per call, like the REST access log (never metadata: tokens stay out of logs)."""
    access_log.info(
        json.dumps(
            {
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "method": "GRPC",
                "path": path,
                "grpc_status": code.name,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "version": server.version if server is not None else None,
            }
        )
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
        scheme, _, given = str(header).partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return handler
        _log(details.method, grpc.StatusCode.UNAUTHENTICATED, time.perf_counter(), None)
        return _denied(handler)


def _denied(handler: Any) -> Any:
    def deny(request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)

    def deny_stream(request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)
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
