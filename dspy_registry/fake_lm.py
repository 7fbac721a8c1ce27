"""A fake OpenAI-compatible chat server for tests, benchmarks and offline trials of a deployment.

It answers `POST /v1/chat/completions` the way DSPy's ChatAdapter expects: it reads the output fields the request
asks for (`[[ ## name ## ]]` markers and their declared types) and fills each with a typed placeholder, optionally
after a fixed latency. Every request is kept, so tests can check which instructions and demos reached the LM.

    python -m dspy_registry.fake_lm --port 8001 --latency-ms 100
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_OUTPUTS_BLOCK = re.compile(r"Your output fields are:\n(.*?)(?:\n[A-Z]|\Z)", re.S)
_FIELD_LINE = re.compile(r"^\d+\. `(\w+)` \(([^)]*)\)", re.M)


def placeholder(name: str, type_name: str) -> str:
    """A value of the declared type, as the model would write it."""
    t = type_name.lower()
    if t.startswith("literal"):
        m = re.search(r"['\"]([^'\"]+)['\"]", type_name)
        return m.group(1) if m else name
    if t.startswith("bool"):
        return "True"
    if t.startswith(("float", "int")):
        return "1" if t.startswith("int") else "0.5"
    if t.startswith(("list", "dict")) or "[" in t:
        return "[]" if t.startswith("list") else "{}"
    return f"fake {name}"


def from_schema(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A value that fits a JSON schema (the first choice of every union or enum; empty lists and free objects)."""
    defs = schema.get("$defs", {}) if defs is None else defs
    if "$ref" in schema:
        return from_schema(defs.get(schema["$ref"].rpartition("/")[2], {}), defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        choices = [c for c in schema.get(key, []) if c.get("type") != "null"]
        if choices:
            return from_schema(choices[0], defs)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object":
        return {k: from_schema(v, defs) for k, v in schema.get("properties", {}).items()}
    samples = {"array": [], "string": "fake", "integer": 1, "number": 0.5, "boolean": True, "null": None}
    return samples.get(str(kind), "fake")


def answer_text(name: str, type_name: str, schema: dict[str, Any] | None = None) -> str:
    """What the model writes for one output field: from its JSON schema when the adapter gives one."""
    if schema is None:
        return placeholder(name, type_name)
    value = from_schema(schema)
    return value if isinstance(value, str) else json.dumps(value)


def _schemas(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The JSON schema ChatAdapter states for each structured output field (`# note: ... JSON schema: {...}`)."""
    system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "")
    found = {}
    for name, text in _SCHEMA_NOTE.findall(system):
        try:
            found[name] = json.loads(text)
        except json.JSONDecodeError:
            continue
    return found


_SCHEMA_NOTE = re.compile(r"^\{(\w+)\}\s+# note: the value you produce must adhere to the JSON schema: (.*)$", re.M)


def requested_fields(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    system = next((str(m.get("content", "")) for m in messages if m.get("role") == "system"), "")
    block = _OUTPUTS_BLOCK.search(system)
    return _FIELD_LINE.findall(block.group(1)) if block else [("answer", "str")]


def chat_reply(messages: list[dict[str, Any]], overrides: dict[str, str]) -> str:
    schemas = _schemas(messages)
    parts = [
        f"[[ ## {name} ## ]]\n{overrides[name]}"
        if name in overrides
        else f"[[ ## {name} ## ]]\n{answer_text(name, type_name, schemas.get(name))}"
        for name, type_name in requested_fields(messages)
    ]
    return "\n\n".join([*parts, "[[ ## completed ## ]]"])


@dataclass
class FakeLM:
    """A running fake LM server on 127.0.0.1; `base_url` goes into DSPYREG_LM_API_BASE."""

    latency_ms: float = 0.0
    overrides: dict[str, str] = field(default_factory=dict)  # field name -> the text to answer with
    # Answers for some requests: the first rule whose every `when` text is in the request's system message or its
    # last message answers with its `fields` (field name -> text); other fields and requests as above.
    rules: list[dict[str, Any]] = field(default_factory=list)
    fail_with: int | None = None  # answer every request with this HTTP status (an outage)
    garbage: bool = False  # answer with text that no adapter can parse
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeLM:
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # A short poll: stop() waits up to one poll interval for the serving thread (the default 0.5 s, per stop).
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)

    def answers(self, messages: list[dict[str, Any]]) -> dict[str, str]:
        """The overrides for one request: `overrides`, then the fields of the first rule it matches."""
        asked = [str(m.get("content", "")) for m in messages if m.get("role") == "system"] + [
            str(messages[-1].get("content", "")) if messages else ""
        ]
        text = "\n".join(asked)
        rule = next((r for r in self.rules if all(w in text for w in r["when"])), None)
        return {**self.overrides, **(rule["fields"] if rule else {})}

    def all_text(self) -> str:
        """Every message content the LM received, joined: for asserting what reached it."""
        with self._lock:
            return "\n".join(str(m.get("content", "")) for r in self.requests for m in r.get("messages", []))


def _handler(fake: FakeLM) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # keep-alive replies go out at once, not after the client's delayed ACK

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                return self._send(400, {"error": {"message": "bad json"}})
            fake.record(body)
            if fake.latency_ms:
                time.sleep(fake.latency_ms / 1000)
            if fake.fail_with is not None:
                return self._send(fake.fail_with, {"error": {"message": "fake outage", "type": "server_error"}})
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            messages = body.get("messages", [])
            content = "I am not following the format." if fake.garbage else chat_reply(messages, fake.answers(messages))
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
            completion_tokens = len(content.split())
            self._send(
                200,
                {
                    "id": f"chatcmpl-fake-{len(fake.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                },
            )

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible LM server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--answers",
        type=Path,
        help='JSON list of {"when": [texts], "fields": {field: answer}}: a request whose system message or last '
        "message holds every text gets those answers (first rule that matches).",
    )
    args = parser.parse_args()
    rules = json.loads(args.answers.read_text()) if args.answers else []
    if not isinstance(rules, list) or not all(
        isinstance(r, dict) and isinstance(r.get("when"), list) and isinstance(r.get("fields"), dict) for r in rules
    ):
        parser.error('--answers must hold a JSON list of {"when": [texts], "fields": {field: answer}}')
    fake = FakeLM(latency_ms=args.latency_ms, port=args.port, rules=rules).start()
    print(f"fake LM on {fake.base_url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
