"""What a server accepts: strict JSON, and the limits every server of ours enforces by default.

Copied verbatim into every exported bundle as `server_limits.py` (beside api.py and inference.py) and imports
nothing of dspyreg, so `dspyreg serve`, its gRPC side and an exported api.py refuse the same bodies with the same words.

`strict_json` is Python's json with what it lets through taken out: NaN and Infinity (and numbers that overflow to
infinity, such as 1e999999), integers longer than MAX_INT_DIGITS (Python itself raises ValueError above 4300
digits), nesting deeper than MAX_DEPTH (Python raises RecursionError near its recursion limit), invalid UTF-8, and
lone surrogates such as "\\ud800" (valid JSON escapes that no UTF-8 encoder can write back). Each becomes one
JsonRefused with a one-line reason, so a server answers 422 / INVALID_ARGUMENT and never 500.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 64
MAX_INT_DIGITS = 1000
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_CONNECTIONS = 512  # per process; well under the usual 1024 file descriptors
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a request's line and headers to arrive
DEFAULT_BODY_TIMEOUT = 30.0  # seconds for a request's body to arrive
DEFAULT_KEEP_ALIVE = 5.0  # seconds an idle keep-alive connection stays open (uvicorn's default, said aloud)
MAX_HEAD_BYTES = 16 * 1024  # request line and headers: larger heads get 400 (h11's limit, said aloud)

ENV_MAX_BATCH = "DSPYREG_MAX_BATCH"
ENV_MAX_CONNECTIONS = "DSPYREG_MAX_CONNECTIONS"
ENV_HEADER_TIMEOUT = "DSPYREG_HEADER_TIMEOUT"
ENV_BODY_TIMEOUT = "DSPYREG_BODY_TIMEOUT"


class JsonRefused(ValueError):
    """The bytes are not JSON a server accepts; the message says why, on one line."""


@dataclass(frozen=True)
class ConnectionLimits:
    """Per-process connection limits, enforced by the HTTP protocol (see api.LimitedH11Protocol).

    uvicorn imports the protocol by name in each worker, so the limits travel through the environment."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def export_to_env(self) -> None:
        os.environ[ENV_MAX_CONNECTIONS] = str(self.max_connections)
        os.environ[ENV_HEADER_TIMEOUT] = str(self.header_timeout)

    @classmethod
    def from_env(cls) -> ConnectionLimits:
        return cls(
            int(os.environ.get(ENV_MAX_CONNECTIONS) or DEFAULT_MAX_CONNECTIONS),
            float(os.environ.get(ENV_HEADER_TIMEOUT) or DEFAULT_HEADER_TIMEOUT),
        )


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number: send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"the number {text[:40]} is out of range for a 64-bit float")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise JsonRefused(f"an integer has {digits} digits: at most {MAX_INT_DIGITS} are accepted")
    return int(text)


def strict_json(
    data: bytes | str, *, max_depth: int = MAX_DEPTH, allow_non_finite: bool = False, what: str = "the body"
) -> Any:
    """The JSON value in `data` (UTF-8), or JsonRefused. `allow_non_finite` keeps NaN and Infinity (saved DSPy
    state may hold them, as Python's json writes them)."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonRefused(f"{what} is not UTF-8 (byte {err.start})") from None
    else:
        text = data
    try:
        value = json.loads(
            text,
            parse_int=_bounded_int,
            parse_float=float if allow_non_finite else _finite_float,
            parse_constant=None if allow_non_finite else _refuse_constant,
        )
    except JsonRefused as err:
        raise JsonRefused(f"{what}: {err}") from None
    except RecursionError:
        raise JsonRefused(f"{what} is nested more than {max_depth} levels deep") from None
    except json.JSONDecodeError as err:
        raise JsonRefused(f"{what} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except ValueError as err:  # e.g. Python's own limit on integer digits, should a parse_int miss one
        raise JsonRefused(f"{what} is not JSON a server accepts: {' '.join(str(err).split())[:200]}") from None
    check_value(value, max_depth=max_depth, allow_non_finite=allow_non_finite, what=what)
    return value


def check_value(
    value: Any, *, max_depth: int = MAX_DEPTH, allow_non_finite: bool = False, what: str = "the body"
) -> None:
    """Refuse nesting deeper than `max_depth`, strings that are not valid Unicode (lone surrogates) and, unless
    allowed, NaN and infinities; without recursion, so no depth can raise RecursionError here. For values that did
    not come through strict_json (e.g. gRPC's decoded messages)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, what)
        elif isinstance(item, float) and not allow_non_finite and not math.isfinite(item):
            raise JsonRefused(f"{what} holds {item}: send a finite number")
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                raise JsonRefused(f"{what} is nested more than {max_depth} levels deep")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key, what)
                    stack.append((child, depth + 1))
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_text(text: str, what: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise JsonRefused(
            f"{what} holds a lone surrogate (\\u{ord(text[err.start]):04x}): strings must be valid Unicode"
        ) from None


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on host:port ("Address already in use"...), or None: checked before a
    server says where it listens, so a busy port is one clear error and not a "serving" line then a crash."""
    import socket  # only servers ask: a read imports this module for strict_json

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: a closing socket is no owner
            probe.bind((host, port))
    except OSError as err:
        return err.strerror or str(err)
    return None
