"""One call path behind both doors: REST (api.py) and gRPC (dspy_registry/grpc_api.py).

A call is: the bearer check (`authorized`, constant time), the inputs validated by the version's request model
(`validated`), the program run and its outputs checked by the response model (`run`), and one access-log line
(`log_call`). Whatever goes wrong is one CallFailure with a kind from KINDS; each door turns a kind into its own
status in ONE table (api.REST_ERRORS, grpc_api.GRPC_CODES), so both doors refuse the same things for the same reasons.

Copied verbatim into every exported bundle as `calls.py` (beside api.py, inference.py, server_limits.py and
signature.py) and imports nothing of dspyreg, so an exported api.py answers as `dspyreg serve` does.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

try:  # inside the dspyreg package
    from . import telemetry
    from .inference import InputError, LMFailure, PipelineServer, ProgramFailure, Usage
    from .signature import field_types
except ImportError:  # in an exported bundle, beside inference.py, signature.py and telemetry.py
    import telemetry  # type: ignore[no-redef]
    from inference import InputError, LMFailure, PipelineServer, ProgramFailure, Usage  # type: ignore[no-redef]
    from signature import field_types  # type: ignore[no-redef]

ENV_TOKEN = "DSPYREG_API_TOKEN"
access_log = logging.getLogger("dspyreg.access")

# What can go wrong with a call. Each door maps every kind to its status in one table.
UNAUTHORIZED = "unauthorized"  # no bearer token, or another one
INVALID_JSON = "invalid_json"  # bytes that are not JSON a server accepts (server_limits.strict_json)
INVALID_INPUT = "invalid_input"  # values that do not fit the version's signature
TOO_LARGE = "too_large"  # a body above --max-body-bytes
BODY_TIMEOUT = "body_timeout"  # a body that did not arrive within --body-timeout
BATCH_TOO_LARGE = "batch_too_large"  # more inputs than --max-batch, refused before any runs
LM_FAILURE = "lm_failure"  # the LM failed or answered something unparseable
PROGRAM_FAILURE = "program_failure"  # the program raised, or its outputs do not fit its signature
NOT_READY = "not_ready"  # no version loaded (or the loaded one cannot be served)
DEADLINE_EXCEEDED = "deadline_exceeded"  # the client's deadline passed
INTERNAL = "internal"  # anything else: a bug of ours, answered without a traceback
KINDS = (
    UNAUTHORIZED,
    INVALID_JSON,
    INVALID_INPUT,
    TOO_LARGE,
    BODY_TIMEOUT,
    BATCH_TOO_LARGE,
    LM_FAILURE,
    PROGRAM_FAILURE,
    NOT_READY,
    DEADLINE_EXCEEDED,
    INTERNAL,
)


class CallFailure(Exception):
    """A call that ends without an answer: `kind` (one of KINDS) and `detail`, one line. `structured` is the same
    detail as JSON where there is more to say (the validation errors per field, the readiness status)."""

    def __init__(self, kind: str, detail: str, structured: Any = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.structured = structured

    @classmethod
    def internal(cls, err: BaseException) -> CallFailure:
        return cls(INTERNAL, type(err).__name__)  # never a traceback, nor a message that may hold secrets

    @property
    def body_detail(self) -> Any:
        return self.structured if self.structured is not None else self.detail


@dataclass(frozen=True)
class Answer:
    """One input's answer: the response body (outputs, program, version, usage) as JSON values, and its usage."""

    body: dict[str, Any]
    usage: Usage


# -- the bearer token --------------------------------------------------------------------------------------------------
def configured_token(token: str | None) -> str | None:
    """The token calls must bring: the one given, else DSPYREG_API_TOKEN; None when calls need none."""
    return token if token is not None else (os.environ.get(ENV_TOKEN) or None)


def authorized(header: str, token: str) -> bool:
    """`header` (an HTTP Authorization header or gRPC authorization metadata) carries `token`, compared in constant
    time so its bytes cannot be guessed one at a time."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


# -- models from the program's signature -------------------------------------------------------------------------------
def models(server: PipelineServer) -> tuple[type[Any], type[Any]]:
    """(request, response) pydantic models of `server`'s version, built once per loaded version."""
    cached = getattr(server, "_api_models", None)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    found = field_types(server.program, server.interface)  # the one reader: interface.json's schemas come from it
    types, output_types = dict(found.inputs), dict(found.outputs)
    title = "".join(part.capitalize() for part in server.name.replace("-", "_").split("_"))

    def field(spec: dict[str, Any], required: bool, types: dict[str, Any] = types) -> tuple[Any, Any]:
        annotation = types.get(spec["name"], Any)
        description = spec.get("description") or None
        if required:
            return annotation, Field(..., description=description)
        return annotation | None, Field(None, description=description)

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    request = create_model(  # type: ignore[call-overload]
        f"{title}Request",
        __base__=Strict,
        **{f["name"]: field(f, f.get("required", True)) for f in server.interface["inputs"]},
    )
    usage = create_model(
        "Usage",
        prompt_tokens=(int, 0),
        completion_tokens=(int, 0),
        total_tokens=(int, 0),
        cost=(float | None, Field(None, description="USD, when DSPy knows the model's price")),
        lm_calls=(int, 0),
    )
    response = create_model(  # type: ignore[call-overload]
        f"{title}Response",
        program=(str, ...),
        version=(str, ...),
        usage=(usage, ...),
        **{f["name"]: field(f, False, output_types) for f in server.interface["outputs"]},
    )
    server._api_models = (request, response)  # type: ignore[attr-defined]
    return request, response


# -- a call ------------------------------------------------------------------------------------------------------------
def validated(server: PipelineServer, data: Any, where: str = "") -> dict[str, Any]:
    """`data` as the program's inputs (the fields given, parsed by the request model); `where` names the input in a
    batch (`inputs[1]`)."""
    request_model, _ = models(server)
    try:
        parsed = request_model.model_validate(data)
    except ValidationError as err:
        errors = json.loads(err.json(include_url=False, include_context=False))
        structured = {"at": where, "errors": errors} if where else errors
        raise CallFailure(INVALID_INPUT, one_line(err, f"{where}." if where else ""), structured) from None
    return {k: v for k, v in parsed.model_dump().items() if k in parsed.model_fields_set}


def check_batch(count: int, max_batch: int) -> None:
    """Refuse a batch above --max-batch before any of its inputs reaches the LM."""
    if count > max_batch:
        raise CallFailure(BATCH_TOO_LARGE, f"at most {max_batch} inputs per batch (--max-batch); got {count}")


def run(server: PipelineServer, inputs: dict[str, Any], *, door: str = telemetry.REST) -> Answer:
    """Run the program on validated inputs (blocking: each door calls it in its pool of threads); its LM usage is
    counted (telemetry.py), and traced as a span from `door` when tracing is on."""
    try:
        with telemetry.run_span(server, door):
            result = server.run(inputs)
    except InputError as err:
        raise CallFailure(INVALID_INPUT, str(err)) from None
    except LMFailure as err:
        raise CallFailure(LM_FAILURE, str(err)) from None
    except ProgramFailure as err:
        raise CallFailure(PROGRAM_FAILURE, str(err)) from None
    telemetry.lm_used(server, result.usage)
    _, response_model = models(server)
    body = {**result.outputs, "program": server.name, "version": server.version, "usage": result.usage.to_json()}
    try:
        checked = response_model.model_validate(body).model_dump(mode="json")
    except ValidationError as err:
        raise CallFailure(PROGRAM_FAILURE, f"the outputs do not fit the signature: {one_line(err)}") from None
    return Answer(checked, result.usage)


def serving(backend: Any, header: Callable[[str], Any]) -> PipelineServer | None:
    """The version that answers a call: the backend's current one or, for a backend that splits the calls between
    two versions (dspyreg's canary.py, with `pick` and `key_header`), the side it picks for the caller's key, read
    with `header` (a door's lookup of an HTTP header or gRPC metadata by name)."""
    pick = getattr(backend, "pick", None)
    if pick is None:
        return backend.current()  # type: ignore[no-any-return]
    key = header(backend.key_header)
    return pick(key if isinstance(key, str) else None)  # type: ignore[no-any-return]


def not_ready(status: Mapping[str, Any]) -> CallFailure:
    """No version to answer with; the readiness status says why."""
    problem = status.get("not_swapped_in")
    why = str(problem["error"]) if problem else "no version is loaded yet"
    return CallFailure(NOT_READY, f"not ready: {why}", dict(status))


def one_line(err: ValidationError, at: str = "") -> str:
    """A validation error as one line, each problem at its field (`inputs[1].question: Field required`)."""
    return "; ".join(f"{at}{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in err.errors())


def log_call(method: str, path: str, outcome: Mapping[str, Any], started: float, server: PipelineServer | None) -> None:
    """One JSON line per call, `outcome` being the door's status ({"status": 200} or {"grpc_status": "OK"}); never a
    header, metadata or body: keys and tokens stay out of logs."""
    access_log.info(
        json.dumps(
            {
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "method": method,
                "path": path,
                **outcome,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                "program": server.name if server is not None else None,
                "version": server.version if server is not None else None,
            }
        )
    )
