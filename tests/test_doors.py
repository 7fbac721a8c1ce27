"""REST and gRPC are two doors to one call path (runtime/calls.py): each behaviour they share is one test, run through
each door. A Door sends the same call over HTTP or gRPC and reads back the same Outcome: the version that answered, or
the failure in the door's own terms (`422 invalid_input`, `INVALID_ARGUMENT`)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dspy_registry import grpc_api
from dspy_registry.registry import Registry
from dspy_registry.runtime import api, calls

from .conftest import point_prod_at_unloadable
from .grpc_clients import NOT_SERVING, client_modules, code_of, grpc_serve, health, metadata, proto_of, wait_serving
from .serving import Server, dspyreg_serve, seconds_until

QUESTION = {"question": "How do I roll back?"}
DOORS = ("rest", "grpc")
# What each door answers for a failure kind: the contract, written out (not read from the code's tables).
EXPECTED = {
    "unauthorized": {"rest": "401 unauthorized", "grpc": "UNAUTHENTICATED"},
    "invalid_input": {"rest": "422 invalid_input", "grpc": "INVALID_ARGUMENT"},
    "lm_failure": {"rest": "502 lm_error", "grpc": "UNAVAILABLE"},
    "not_ready": {"rest": "503 not_ready", "grpc": "UNAVAILABLE"},
}
ANSWERED = {"rest": "200", "grpc": "OK"}


@dataclass(frozen=True)
class Outcome:
    version: str | None = None  # the version that answered
    failure: str | None = None  # the door's words for what went wrong
    detail: str = ""
    items: tuple[Outcome, ...] = ()  # a batch's answers, in order


@dataclass
class Door:
    kind: str
    server: Server
    predict: Callable[..., Outcome]  # (inputs, token=None, fresh=False): fresh calls over a new connection
    batch: Callable[[list[dict[str, Any]]], Outcome]
    channel: grpc.Channel | None = None

    def expect(self, kind: str) -> str:
        return EXPECTED[kind][self.kind]

    def logged(self) -> list[str]:
        """The status of each predict call through this door, per the access log, oldest first."""
        lines = self.server.log_lines()
        if self.kind == "rest":
            return [str(e["status"]) for e in lines if str(e.get("path", "")).startswith("/predict")]
        return [e["grpc_status"] for e in lines if e.get("method") == "GRPC"]


def _rest(srv: Server) -> Door:
    def outcome(status: int, body: Any, headers: dict[str, str] | None = None) -> Outcome:
        if status == 200:
            return Outcome(version=body["version"])
        return Outcome(failure=f"{status} {body['error']}", detail=json.dumps(body["detail"]))

    def predict(inputs: dict[str, Any], token: str | None = None, fresh: bool = False) -> Outcome:
        headers = {"Authorization": f"Bearer {token}"} if token else None  # urllib: a new connection each call
        return outcome(*srv.post("/predict", inputs, headers=headers, timeout=30)[:2])

    def batch(inputs: list[dict[str, Any]]) -> Outcome:
        status, body, _ = srv.post("/predict/batch", {"inputs": inputs}, timeout=30)
        if status != 200:
            return outcome(status, body)
        items = tuple(outcome(r.get("status", 200), r.get("error") or body) for r in body["results"])
        return Outcome(version=body["version"], items=items)

    return Door("rest", srv, predict, batch)


@contextmanager
def open_door(
    kind: str, registry: Registry, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Door]:
    """`dspyreg serve` (with --grpc-port for the gRPC door) and a client that calls through `kind`."""
    if kind == "rest":
        with dspyreg_serve(registry.location, tmp_path, *args, env=env) as srv:
            yield _rest(srv)
        return
    pb2, stubs = client_modules(proto_of(registry, "v1.1"), "qa", tmp_path)
    with grpc_serve(registry.location, tmp_path, *args, env=env) as (srv, channel, address):
        stub = stubs.QaStub(channel)

        def failed(err: grpc.RpcError) -> Outcome:
            return Outcome(failure=err.code().name, detail=err.details() or "")

        def predict(inputs: dict[str, Any], token: str | None = None, fresh: bool = False) -> Outcome:
            auth = (("authorization", f"Bearer {token}"),) if token else None
            if fresh:
                with grpc.insecure_channel(address) as new:
                    wait_serving(new)
                    _, call = stubs.QaStub(new).Predict.with_call(pb2.QaRequest(**inputs), timeout=30, metadata=auth)
                    return Outcome(version=metadata(call)["x-dspyreg-version"])
            try:
                _, call = stub.Predict.with_call(pb2.QaRequest(**inputs), timeout=30, metadata=auth)
            except grpc.RpcError as err:
                return failed(err)
            return Outcome(version=metadata(call)["x-dspyreg-version"])

        def batch(inputs: list[dict[str, Any]]) -> Outcome:
            request = pb2.QaBatchRequest(inputs=[pb2.QaRequest(**i) for i in inputs])
            try:
                reply, call = stub.PredictBatch.with_call(request, timeout=30)
            except grpc.RpcError as err:
                return failed(err)
            version = metadata(call)["x-dspyreg-version"]
            items = tuple(
                Outcome(failure=r.error.code, detail=r.error.message)
                if r.WhichOneof("outcome") == "error"
                else Outcome(version=version)
                for r in reply.results
            )
            return Outcome(version=version, items=items)

        yield Door("grpc", srv, predict, batch, channel)


def _ready(door: Door) -> None:
    door.server.wait_ready()
    if door.channel is not None:
        wait_serving(door.channel)


# -- without a server --------------------------------------------------------------------------------------------------
def test_every_failure_kind_has_one_status_per_door() -> None:
    assert set(api.REST_ERRORS) == set(calls.KINDS) == set(grpc_api.GRPC_CODES)
    for kind, doors in EXPECTED.items():
        status, error = api.REST_ERRORS[kind]
        assert f"{status} {error}" == doors["rest"] and grpc_api.GRPC_CODES[kind][0].name == doors["grpc"]


def test_the_bearer_check() -> None:
    assert calls.authorized("Bearer s3cret", "s3cret") and calls.authorized("bearer  s3cret ", "s3cret")
    for header in ("", "s3cret", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "Bearer S3CRET"):
        assert not calls.authorized(header, "s3cret"), header


# -- through each door ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", DOORS)
def test_failures_are_one_call_through_each_door(kind: str, prod_v11: Registry, fake_lm: Any, tmp_path: Path) -> None:
    with open_door(kind, prod_v11, tmp_path) as door:
        _ready(door)
        missing = door.predict({})
        assert missing.failure == door.expect("invalid_input") and "Field required" in missing.detail
        bad_item = door.batch([{"question": "a"}, {}])
        assert bad_item.failure == door.expect("invalid_input") and "inputs[1]" in bad_item.detail
        fake_lm.fail_with = 500  # the LM is down
        down = door.predict({"question": "x"})
        assert down.failure == door.expect("lm_failure") and "fake outage" in down.detail
        one_down = door.batch([{"question": "x"}])  # one failed input does not fail the batch
        assert one_down.version == "v1.1" and one_down.items[0].failure == door.expect("lm_failure")
        assert "fake outage" in one_down.items[0].detail
        fake_lm.fail_with, fake_lm.garbage = None, True  # an answer no adapter parses
        assert door.predict({"question": "x"}).failure == door.expect("lm_failure")
        fake_lm.garbage = False
        assert door.predict({"question": "x"}) == Outcome(version="v1.1")  # recovered
        assert [i.version for i in door.batch([QUESTION, QUESTION]).items] == ["v1.1", "v1.1"]
    invalid, lm = (door.expect(k).split()[0] for k in ("invalid_input", "lm_failure"))
    ok = ANSWERED[kind]
    assert door.logged() == [invalid, invalid, lm, ok, lm, ok, ok]  # one access-log line per call
    assert "Traceback" not in door.server.log.read_text()


@pytest.mark.parametrize("kind", DOORS)
def test_token(kind: str, prod_v11: Registry, fake_lm: Any, tmp_path: Path) -> None:
    with open_door(kind, prod_v11, tmp_path, env={"DSPYREG_API_TOKEN": "s3cret"}) as door:
        door.server.wait_listening()
        assert door.server.get("/health")[0] == 200  # liveness stays open
        _ready(door)  # readiness, and gRPC health, stay open
        for token in (None, "wrong", "s3cre"):
            refused = door.predict(QUESTION, token=token)
            assert refused.failure == door.expect("unauthorized") and "uthorization: Bearer" in refused.detail
        assert door.predict(QUESTION, token="s3cret") == Outcome(version="v1.1")
        if door.channel is None:
            headers = door.server.post("/predict", QUESTION)[2]
            assert headers["www-authenticate"] == "Bearer" and door.server.get("/version")[0] == 401
        else:  # reflection is closed too
            reflect = reflection_pb2_grpc.ServerReflectionStub(door.channel)
            listing = reflection_pb2.ServerReflectionRequest(list_services="")
            code, _ = code_of(lambda: list(reflect.ServerReflectionInfo(iter([listing]), timeout=30)))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            good = (("authorization", "Bearer s3cret"),)
            answers = list(reflect.ServerReflectionInfo(iter([listing]), timeout=30, metadata=good))
            assert "dspyreg.qa.Qa" in [s.name for s in answers[0].list_services_response.service]
    assert door.logged().count(door.expect("unauthorized").split()[0]) >= 3
    assert "s3cret" not in door.server.log.read_text()


@pytest.mark.parametrize("kind", DOORS)
def test_not_ready_says_why(kind: str, prod_v11: Registry, fake_lm: Any, tmp_path: Path) -> None:
    """A target that cannot load (served with --no-verify) never becomes ready, and every call says why."""
    point_prod_at_unloadable(Path(prod_v11.location), tmp_path)
    with open_door(kind, prod_v11, tmp_path, "--no-verify") as door:
        door.server.wait_listening()
        deadline = time.time() + 30
        while "not_swapped_in" not in door.server.get("/ready")[1] and time.time() < deadline:
            time.sleep(0.2)
        status, ready, _ = door.server.get("/ready")
        assert status == 503 and ready["ready"] is False and "lacks ['check']" in ready["not_swapped_in"]["error"]
        refused = door.predict(QUESTION)
        assert refused.failure == door.expect("not_ready") and "lacks ['check']" in refused.detail
        if door.channel is None:
            assert door.server.get("/version")[0] == 503
        else:
            channel = door.channel
            assert health(channel) == NOT_SERVING and health(channel, "dspyreg.qa.Qa") == NOT_SERVING
            assert code_of(lambda: health(channel, "nope"))[0] == grpc.StatusCode.NOT_FOUND


def _load(door: Door, stop: threading.Event, seen: Counter[str], failures: list[Any]) -> None:
    while not stop.is_set():
        try:
            outcome = door.predict(QUESTION)
        except OSError as err:
            failures.append(repr(err))
            continue
        if outcome.version is not None:
            seen[outcome.version] += 1
        else:
            failures.append(outcome)


@pytest.mark.slow
@pytest.mark.parametrize("kind", DOORS)
def test_hot_swap_under_load(kind: str, prod_v11: Registry, fake_lm: Any, tmp_path: Path) -> None:
    fake_lm.latency_ms = 50  # calls are in flight while the tag moves
    poll = 0.5
    with open_door(kind, prod_v11, tmp_path, "--poll-seconds", str(poll)) as door:
        _ready(door)

        def served() -> str:
            return str(door.predict({"question": "which?"}).version)

        stop, seen, failures = threading.Event(), Counter[str](), list[Any]()
        clients = [threading.Thread(target=_load, args=(door, stop, seen, failures)) for _ in range(6)]
        for client in clients:
            client.start()
        try:
            time.sleep(1)
            prod_v11.promote("v1.0", "prod", reason="load test")
            took = seconds_until(served, "v1.0", poll + 2, f"{kind} answers")
            time.sleep(1)
            prod_v11.rollback(reason="load test")
            took_back = seconds_until(served, "v1.1", poll + 2, f"{kind} answers")
            time.sleep(1)
        finally:
            stop.set()
            for client in clients:
                client.join()
    assert failures == [], failures[:5]
    assert seen["v1.0"] > 0 and seen["v1.1"] > 0, seen
    assert took <= poll + 2 and took_back <= poll + 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", DOORS)
def test_two_workers_both_follow_the_tag(kind: str, prod_v11: Registry, fake_lm: Any, tmp_path: Path) -> None:
    """Each worker follows the tag by itself; with gRPC, both serve the one port (SO_REUSEPORT)."""
    with open_door(kind, prod_v11, tmp_path, "--workers", "2", "--poll-seconds", "0.5") as door:
        _ready(door)
        prod_v11.promote("v1.0", "prod")

        def swapped() -> str:
            return str(len([e for e in door.server.log_lines() if e.get("event") == "swapped"]))

        seconds_until(swapped, "4", 30, "both workers' swap to v1.0")  # each loaded v1.1, then v1.0
        # New connections each time: the kernel spreads them over the workers.
        versions = Counter(door.predict(QUESTION, fresh=True).version for _ in range(12))
        assert versions == Counter({"v1.0": 12})
    swaps = [e for e in door.server.log_lines() if e.get("event") == "swapped" and e["version"] == "v1.0"]
    assert len(swaps) == 2  # one per worker
    assert "cannot serve gRPC" not in door.server.log.read_text()
