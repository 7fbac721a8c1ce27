"""Helpers to run real servers on 127.0.0.1 in tests: a `dspyreg serve` process and an HTTP client for it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def seconds_until(seen: Callable[[], str], version: str, seconds: float, what: str) -> float:
    """Poll `seen()` until it names `version`; how long that took (fails after `seconds`)."""
    started = time.time()
    while time.time() - started < seconds:
        if seen() == version:
            return time.time() - started
        time.sleep(0.05)
    raise AssertionError(f"{what} did not show {version} within {seconds} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
    timeout: float = 30,
) -> tuple[int, Any, dict[str, str]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as err:
        text = err.read()
        try:
            return err.code, json.loads(text), {k.lower(): v for k, v in err.headers.items()}
        except json.JSONDecodeError:
            return err.code, text.decode(errors="replace"), {k.lower(): v for k, v in err.headers.items()}


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
        self.proc, self.base, self.log = proc, base, log

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        return http("GET", self.base + path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        return http("POST", self.base + path, body, **kwargs)

    def log_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if self.get("/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not ready in {seconds} s: {self.log.read_text()[-3000:]}")

    def wait_listening(self, seconds: float = 60) -> None:
        deadline = time.time() + seconds
        while time.time() < deadline:
            try:
                self.get("/health", timeout=2)
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"not listening in {seconds} s: {self.log.read_text()[-3000:]}")


@contextmanager
def dspyreg_serve(registry: str, log_dir: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Server]:
    port = free_port()
    log = log_dir / f"serve-{port}.log"
    command = [
        sys.executable,
        "-m",
        "dspy_registry.cli",
        "serve",
        *args,
        "--registry",
        registry,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def raw_post(base: str, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, Any]:
    """POST over a plain socket, sending as much of the body as the server will take, then read the answer.

    A server may answer 413 before the body is sent (from Content-Length) and close: urllib would see a broken pipe.
    """
    host, port = base.removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server stopped reading: its answer is what counts
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
    status_line, _, rest = data.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    if b"transfer-encoding: chunked" in rest.lower().partition(b"\r\n\r\n")[0]:
        body = body.split(b"\r\n", 1)[1].rsplit(b"\r\n0\r\n", 1)[0]
    return int(status_line.split()[1]), json.loads(body)
