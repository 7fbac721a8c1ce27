"""Server limits for real: `dspyreg serve` and an exported api.py on 127.0.0.1, raw sockets for slow clients, the
fake LM counting what reaches it; and the CLI refusing state files it must not read whole.

The tests that only send requests share two servers per module: one with the default limits, one with every limit
set (short header and body timeouts, so a slow client is cut off in a second or two)."""

from __future__ import annotations

import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.registry import Registry

from ..conftest import EXAMPLE_SPEC, publish_args, ref_snapshot
from ..grpc_clients import client_modules, code_of, grpc_serve, proto_of, publish_source, wait_serving
from ..serving import Server, free_port, raw_post
from ..shared_server import Shared, shared_fixture, shared_serve
from ..test_grpc import TYPED

QUESTION = {"question": "How do I roll back?"}
# Each is a body that Python's json either refuses with an error nobody caught (a 500) or lets through as a value
# that breaks later (NaN and inf cannot be written back as JSON; a lone surrogate cannot be encoded as UTF-8).
BAD_BODIES = {
    "NaN": b'{"question": NaN}',
    "Infinity": b'{"question": Infinity}',
    "-Infinity": b'{"question": -Infinity}',
    "1e999999": b'{"question": 1e999999}',
    "5000-digit integer": b'{"question": ' + b"7" * 5000 + b"}",
    "10,000-deep nesting": b'{"question": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
    "lone surrogate": b'{"question": "\\ud800"}',
    "invalid UTF-8": b'{"question": "caf\xe9 \xff"}',
    "batch with NaN": b'{"inputs": [{"question": NaN}]}',
    "batch 10,000 deep": b'{"inputs": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
}


def assert_bad_json_refused(server: Server, fake_lm: Any) -> None:
    calls = len(fake_lm.requests)
    for what, body in BAD_BODIES.items():
        path = "/predict/batch" if what.startswith("batch") else "/predict"
        status, answer, _ = server.post(path, raw=body)
        assert status == 422 and answer["error"] == "invalid_json", (what, status, answer)
        assert "Traceback" not in json.dumps(answer)
    assert len(fake_lm.requests) == calls  # none of them reached the LM
    assert server.post("/predict", QUESTION)[0] == 200  # and the server still answers


shared = shared_fixture()


@pytest.fixture(scope="module")
def default(shared: Shared) -> Iterator[Server]:
    """`dspyreg serve` with the default limits."""
    with shared_serve(shared) as srv:
        yield srv
    assert "Traceback" not in srv.log.read_text()


HEADER_TIMEOUT, BODY_TIMEOUT = 2, 1


@pytest.fixture(scope="module")
def limited(shared: Shared) -> Iterator[Server]:
    """`dspyreg serve` with every limit set."""
    args = ["--max-batch", "2", "--max-connections", "8"]
    args += ["--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)]
    with shared_serve(shared, *args) as srv:
        yield srv


# -- batch size -------------------------------------------------------------------------------------------------------
def test_a_batch_over_the_default_cap_is_refused_before_any_lm_call(default: Server, shared: Shared) -> None:
    calls = len(shared.fake_lm.requests)
    status, body, _ = default.post("/predict/batch", {"inputs": [QUESTION] * 65})
    assert status == 413 and body["error"] == "batch_too_large", body
    assert "at most 64 inputs" in body["detail"] and "got 65" in body["detail"]
    assert len(shared.fake_lm.requests) == calls


def test_max_batch_is_configurable(limited: Server, shared: Shared) -> None:
    calls = len(shared.fake_lm.requests)
    status, body, _ = limited.post("/predict/batch", {"inputs": [QUESTION] * 3})
    assert status == 413 and "at most 2 inputs" in body["detail"] and len(shared.fake_lm.requests) == calls
    status, body, _ = limited.post("/predict/batch", {"inputs": [QUESTION] * 2})
    assert status == 200 and len(body["results"]) == 2


# -- slow and numerous clients ----------------------------------------------------------------------------------------
def _host_port(server: Server) -> tuple[str, int]:
    host, port = server.base.removeprefix("http://").split(":")
    return host, int(port)


def _until_closed(sock: socket.socket, seconds: float = 30) -> bytes:
    """Everything the server sends until it closes the connection (a socket timeout fails the test)."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_a_slow_request_head_is_disconnected(limited: Server) -> None:
    # A head that stops half-way, and one sent a byte every 0.2 s (arriving data does not extend the deadline): both
    # closed without an answer. They wait out the header timeout side by side.
    stop = threading.Event()
    with (
        socket.create_connection(_host_port(limited)) as silent,
        socket.create_connection(_host_port(limited)) as dribble,
    ):
        silent.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")  # and never the rest

        def trickle() -> None:
            for byte in b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 1000:
                if stop.wait(0.2):
                    return
                try:
                    dribble.sendall(bytes([byte]))
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            assert _until_closed(silent) == b""
            assert _until_closed(dribble) == b""
        finally:
            stop.set()
            sender.join()
    assert limited.post("/predict", QUESTION)[0] == 200


def test_a_slow_body_gets_408(limited: Server) -> None:
    with socket.create_connection(_host_port(limited)) as slow:
        slow.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
            b'{"question": '
        )
        reply = _until_closed(slow)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and json.loads(body)["error"] == "body_timeout", reply


def test_connections_over_the_cap_get_503_and_are_closed(limited: Server) -> None:
    sockets = [socket.create_connection(_host_port(limited)) for _ in range(20)]
    got: dict[socket.socket, bytes] = {s: b"" for s in sockets}
    closed: set[socket.socket] = set()
    selector = selectors.DefaultSelector()
    for s in sockets:
        selector.register(s, selectors.EVENT_READ)
    checked_while_full = False
    deadline = time.monotonic() + 60
    try:
        while len(closed) < len(sockets):
            assert time.monotonic() < deadline, f"{len(sockets) - len(closed)} idle connections were never closed"
            for key, _ in selector.select(timeout=1):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                got[s] += chunk
                if not chunk:
                    closed.add(s)
                    selector.unregister(s)
            refused = [s for s in closed if got[s]]
            if len(refused) >= 12 and not checked_while_full:
                # The admitted connections are still held: a new one is refused too, unless one was let go meanwhile.
                status, body, _ = limited.get("/health")
                held = all(got[s] for s in closed)
                assert (status == 503 and body["error"] == "too_many_connections") or not held, (status, body)
                checked_while_full = True
    finally:
        selector.close()
        for s in sockets:
            s.close()
    # At most 8 admitted (fewer if a connection of wait_ready's was still being closed), closed by the header timeout
    # having been sent nothing; every other one answered 503 at once and closed.
    admitted = [reply for reply in got.values() if not reply]
    assert 1 <= len(admitted) <= 8
    for reply in (reply for reply in got.values() if reply):
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and json.loads(body)["error"] == "too_many_connections", reply
    assert checked_while_full
    assert limited.post("/predict", QUESTION)[0] == 200  # and the server recovered by itself


# -- strict JSON ------------------------------------------------------------------------------------------------------
def test_bad_json_is_422_in_serve(default: Server, shared: Shared) -> None:
    assert_bad_json_refused(default, shared.fake_lm)
    chunked = raw_post(default.base, "/predict", {"Transfer-Encoding": "chunked"}, [b"3\r\nNaN\r\n", b"0\r\n\r\n"])
    assert chunked[0] == 422 and chunked[1]["error"] == "invalid_json"
    assert "Traceback" not in default.log.read_text()  # and again once the server has stopped (the fixture)


@pytest.fixture(scope="module")
def bundle(shared: Shared) -> Path:
    """prod's deployment bundle, exported once for the module."""
    folder = shared.folder / "deploy"
    result = CliRunner().invoke(app, ["export", "prod", str(folder), "--registry", shared.location])
    assert result.exit_code == 0, result.output
    return folder


@contextmanager
def exported_api(bundle: Path, shared: Shared, tmp_path: Path, *args: str) -> Iterator[Server]:
    """The exported bundle's api.py, run by this interpreter from the bundle folder (as its Dockerfile runs it)."""
    port = free_port()
    log = tmp_path / f"api-{port}.log"
    command = [sys.executable, "api.py", "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=bundle, stdout=out, stderr=subprocess.STDOUT, env=shared.env())
    server = Server(proc, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_listening()
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_bad_json_is_422_and_batches_are_capped_in_the_exported_api(
    bundle: Path, shared: Shared, tmp_path: Path
) -> None:
    fake_lm = shared.fake_lm
    with exported_api(bundle, shared, tmp_path, "--max-batch", "3") as api:
        assert_bad_json_refused(api, fake_lm)
        calls = len(fake_lm.requests)
        status, body, _ = api.post("/predict/batch", {"inputs": [QUESTION] * 4})
        assert status == 413 and "at most 3 inputs" in body["detail"] and len(fake_lm.requests) == calls
    assert "Traceback" not in api.log.read_text()


def test_the_exported_api_reads_its_limits_from_the_environment(
    bundle: Path, shared: Shared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPYREG_MAX_BATCH", "1")
    monkeypatch.setenv("DSPYREG_HEADER_TIMEOUT", "2")
    with exported_api(bundle, shared, tmp_path) as api:
        status, body, _ = api.post("/predict/batch", {"inputs": [QUESTION] * 2})
        assert status == 413 and "at most 1 inputs" in body["detail"]
        with socket.create_connection(_host_port(api)) as silent:
            assert _until_closed(silent) == b""


# -- gRPC --------------------------------------------------------------------------------------------------------------
def test_grpc_batch_cap_and_strict_json_fields(registry: Registry, fake_lm: Any, tmp_path: Path) -> None:
    publish_source(registry, tmp_path, TYPED, "Typed", "typed", "v1.0")
    pb2, stubs = client_modules(proto_of(registry, "typed/v1.0"), "typed", tmp_path)

    def request(extra: str) -> Any:
        return pb2.TypedRequest(claim="c", tone=1, filter=pb2.Filter(tags=["a"]), extra=extra)

    with grpc_serve(registry.location, tmp_path, "typed/v1.0", "--max-batch", "2") as (srv, channel, _):
        wait_serving(channel)
        stub = stubs.TypedStub(channel)
        calls = len(fake_lm.requests)
        batch = pb2.TypedBatchRequest(inputs=[request("{}")] * 3)
        code, detail = code_of(lambda: stub.PredictBatch(batch, timeout=30))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 2 inputs" in detail and "got 3" in detail
        for text in ('{"k": NaN}', '{"k": 1e999999}', "[" * 10_000 + "]" * 10_000, '{"k": "\\ud800"}', "1" * 5000):
            code, detail = code_of(lambda: stub.Predict(request(text), timeout=30))  # noqa: B023 - called at once
            assert code == grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("extra: not JSON text"), detail
        assert len(fake_lm.requests) == calls
    assert "Traceback" not in srv.log.read_text()


# -- state files -------------------------------------------------------------------------------------------------------
def _limit_memory() -> None:
    """A child that reads /dev/zero whole fails with MemoryError rather than taking the machine down."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _dspyreg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dspy_registry.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limit_memory,
    )


def test_state_files_that_must_not_be_read_whole(registry_path: Path, states: dict[str, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "state.fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as out:
        out.truncate(70 << 20)  # sparse: 70 MiB without writing them
    deep = tmp_path / "deep.json"
    deep.write_text('{"qa.predict": ' + "[" * 10_000 + "]" * 10_000 + "}")
    cases = {
        "/dev/zero": "not a regular file",
        str(fifo): "not a regular file",
        str(huge): "DSPYREG_MAX_STATE_BYTES",
        str(deep): "nested more than",
    }
    before = ref_snapshot(registry_path)
    for state, expected in cases.items():
        publish = _dspyreg(*publish_args(EXAMPLE_SPEC, state, "v9.0"), "--registry", str(registry_path))
        diff = _dspyreg("diff", state, str(states["v1.0"]))
        for proc in (publish, diff):
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 1 and len(lines) == 1 and expected in lines[0], (state, proc.stderr)
    assert ref_snapshot(registry_path) == before


def test_the_state_size_limit_can_be_raised(
    registry_path: Path, states: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPYREG_MAX_STATE_BYTES", "100")
    proc = _dspyreg("diff", str(states["v1.0"]), str(states["v1.1"]))
    assert proc.returncode == 1 and "over the 100-byte limit" in proc.stderr
    monkeypatch.setenv("DSPYREG_MAX_STATE_BYTES", str(64 << 20))
    assert _dspyreg("diff", str(states["v1.0"]), str(states["v1.1"])).returncode == 0
