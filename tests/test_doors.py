"""REST and gRPC are two doors to one call path (runtime/calls.py): each behaviour they share is one test, run through
each door. A Door sends the same call over HTTP or gRPC and reads back the same Outcome: the version that answered, or
the failure in the door's own terms (`422 invalid_input`, `INVALID_ARGUMENT`). Both runs of a behaviour's test call one
`dspyreg serve --grpc-port` (SERVERS), which serves both doors."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dspy_registry import grpc_api
from dspy_registry.fake_lm import FakeLM
from dspy_registry.registry import Registry
from dspy_registry.runtime import api, calls

from .conftest import point_prod_at_unloadable
from .grpc_clients import NOT_SERVING, client_modules, code_of, grpc_serve, health, metadata, proto_of, wait_serving
from .serving import Server, seconds_until
from .shared_setup import copy_registry, isolated

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
LOAD_CLIENTS = 6


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


@dataclass
class Served:
    """A `dspyreg serve --grpc-port` process: both doors call it."""

    server: Server
    channel: grpc.Channel
    address: str
    registry: Path  # its own registry: a copy of `published` with prod moved to v1.0, then v1.1
    proto: str  # qa's .proto


# The server of each behaviour (its serve arguments and environment), shared by the behaviour's test through each door.
SERVERS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "failures": ((), {}),
    "token": ((), {"DSPYREG_API_TOKEN": "s3cret"}),
    "not_ready": (("--no-verify",), {}),  # prod points at a version that cannot load
    "hot_swap": (("--poll-seconds", "0.5"), {}),
    "workers": (("--workers", "2", "--poll-seconds", "0.5"), {}),
}


@pytest.fixture(scope="module")
def shared_lm() -> Iterator[FakeLM]:
    """The fake LM server of this module's servers (see `lm`)."""
    with FakeLM() as fake:
        yield fake


@pytest.fixture
def lm(shared_lm: FakeLM) -> Iterator[FakeLM]:
    """The module's fake LM; whatever a test makes it do (an outage, garbage, latency) ends with the test."""
    yield shared_lm
    shared_lm.fail_with, shared_lm.garbage, shared_lm.latency_ms = None, False, 0.0


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, published_once: Path, shared_lm: FakeLM
) -> Iterator[Callable[[str], Served]]:
    """`served(behaviour)`: the server of SERVERS[behaviour], started on first use. A behaviour's tests run one after
    the other, so asking for another behaviour stops the one before (a test run out of order starts it again)."""
    current: dict[str, tuple[Served, ExitStack]] = {}

    def start(behaviour: str) -> Served:
        if behaviour in current:
            return current[behaviour][0]
        for _, running in current.values():
            running.close()
        current.clear()
        args, env = SERVERS[behaviour]
        folder = tmp_path_factory.mktemp(behaviour)
        stack = ExitStack()
        with isolated(folder / "home", shared_lm):
            path = copy_registry(published_once, folder / "registry")
            with Registry.open(path) as reg:
                reg.promote("v1.0", "prod")
                reg.promote("v1.1", "prod")
                proto = proto_of(reg, "v1.1")
            if behaviour == "not_ready":
                point_prod_at_unloadable(path, folder)
            srv, channel, address = stack.enter_context(grpc_serve(str(path), folder, *args, env=env))
        current[behaviour] = Served(srv, channel, address, path, proto), stack
        return current[behaviour][0]

    yield start
    for _, running in current.values():
        running.close()


def _door(kind: str, served: Served, tmp_path: Path) -> Door:
    """A client of `served` that calls through `kind`."""
    srv = served.server
    if kind == "rest":
        return _rest(srv)
    pb2, stubs = client_modules(served.proto, "qa", tmp_path)
    stub = stubs.QaStub(served.channel)

    def failed(err: grpc.RpcError) -> Outcome:
        return Outcome(failure=err.code().name, detail=err.details() or "")

    def predict(inputs: dict[str, Any], token: str | None = None, fresh: bool = False) -> Outcome:
        auth = (("authorization", f"Bearer {token}"),) if token else None
        if fresh:
            with grpc.insecure_channel(served.address) as new:
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

    return Door("grpc", srv, predict, batch, served.channel)


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
def test_failures_are_one_call_through_each_door(
    kind: str, served: Callable[[str], Served], lm: FakeLM, tmp_path: Path
) -> None:
    door = _door(kind, served("failures"), tmp_path)
    _ready(door)
    before = len(door.logged())  # the server's calls through this door before this test
    missing = door.predict({})
    assert missing.failure == door.expect("invalid_input") and "Field required" in missing.detail
    bad_item = door.batch([{"question": "a"}, {}])
    assert bad_item.failure == door.expect("invalid_input") and "inputs[1]" in bad_item.detail
    lm.fail_with = 500  # the LM is down
    down = door.predict({"question": "x"})
    assert down.failure == door.expect("lm_failure") and "fake outage" in down.detail
    one_down = door.batch([{"question": "x"}])  # one failed input does not fail the batch
    assert one_down.version == "v1.1" and one_down.items[0].failure == door.expect("lm_failure")
    assert "fake outage" in one_down.items[0].detail
    lm.fail_with, lm.garbage = None, True  # an answer no adapter parses
    assert door.predict({"question": "x"}).failure == door.expect("lm_failure")
    lm.garbage = False
    assert door.predict({"question": "x"}) == Outcome(version="v1.1")  # recovered
    assert [i.version for i in door.batch([QUESTION, QUESTION]).items] == ["v1.1", "v1.1"]
    invalid, failed = (door.expect(k).split()[0] for k in ("invalid_input", "lm_failure"))
    ok = ANSWERED[kind]
    # one access-log line per call, written before the answer went out
    assert door.logged()[before:] == [invalid, invalid, failed, ok, failed, ok, ok]
    assert "Traceback" not in door.server.log.read_text()


@pytest.mark.parametrize("kind", DOORS)
def test_token(kind: str, served: Callable[[str], Served], lm: FakeLM, tmp_path: Path) -> None:
    door = _door(kind, served("token"), tmp_path)
    door.server.wait_listening()
    assert door.server.get("/health")[0] == 200  # liveness stays open
    _ready(door)  # readiness, and gRPC health, stay open
    before = len(door.logged())
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
    assert door.logged()[before:].count(door.expect("unauthorized").split()[0]) >= 3
    assert "s3cret" not in door.server.log.read_text()


@pytest.mark.parametrize("kind", DOORS)
def test_not_ready_says_why(kind: str, served: Callable[[str], Served], lm: FakeLM, tmp_path: Path) -> None:
    """A target that cannot load (served with --no-verify) never becomes ready, and every call says why."""
    door = _door(kind, served("not_ready"), tmp_path)
    door.server.wait_listening()
    seconds_until(lambda: str("not_swapped_in" in door.server.get("/ready")[1]), "True", 30, "/ready")
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
def test_hot_swap_under_load(kind: str, served: Callable[[str], Served], lm: FakeLM, tmp_path: Path) -> None:
    shared = served("hot_swap")
    door = _door(kind, shared, tmp_path)
    lm.latency_ms = 50  # calls are in flight while the tag moves
    poll = 0.5
    _ready(door)

    def served_now() -> str:
        return str(door.predict({"question": "which?"}).version)

    stop, seen, failures = threading.Event(), Counter[str](), list[Any]()
    clients = [threading.Thread(target=_load, args=(door, stop, seen, failures)) for _ in range(LOAD_CLIENTS)]

    def load_answers(version: str, more: int) -> None:
        """Wait until the load has had `more` answers from `version` (the clients keep calling through swaps)."""
        wanted = seen[version] + more
        seconds_until(lambda: str(seen[version] >= wanted), "True", 30, f"{more} answers of {version} under load")

    assert served_now() == "v1.1"  # prod, as the previous test on this server left it
    with Registry.open(shared.registry) as reg:
        for client in clients:
            client.start()
        try:
            load_answers("v1.1", LOAD_CLIENTS)
            reg.promote("v1.0", "prod", reason="load test")
            took = seconds_until(served_now, "v1.0", poll + 2, f"{kind} answers")
            load_answers("v1.0", LOAD_CLIENTS)
            reg.rollback(reason="load test")
            took_back = seconds_until(served_now, "v1.1", poll + 2, f"{kind} answers")
            load_answers("v1.1", LOAD_CLIENTS)
        finally:
            stop.set()
            for client in clients:
                client.join()
    assert failures == [], failures[:5]
    assert seen["v1.0"] > 0 and seen["v1.1"] > 0, seen
    assert took <= poll + 2 and took_back <= poll + 2


@pytest.mark.slow
@pytest.mark.parametrize("kind", DOORS)
def test_two_workers_both_follow_the_tag(
    kind: str, served: Callable[[str], Served], lm: FakeLM, tmp_path: Path
) -> None:
    """Each worker follows the tag by itself; with gRPC, both serve the one port (SO_REUSEPORT)."""
    shared = served("workers")
    door = _door(kind, shared, tmp_path)
    _ready(door)

    def swaps() -> list[str]:
        return [str(e["version"]) for e in door.server.log_lines() if e.get("event") == "swapped"]

    seconds_until(lambda: str(len(swaps()) >= 2), "True", 30, "both workers' first version")
    with Registry.open(shared.registry) as reg:
        now = reg.resolve("qa/prod").version
        before = len(swaps())
        assert before % 2 == 0 and swaps()[-2:] == [now, now]  # both workers serve prod
        target = "v1.0" if now == "v1.1" else "v1.1"  # the first test moves prod to v1.0, the second back
        reg.promote(target, "prod")
    seconds_until(lambda: str(len(swaps())), str(before + 2), 30, f"both workers' swap to {target}")
    # New connections each time: the kernel spreads them over the workers.
    versions = Counter(door.predict(QUESTION, fresh=True).version for _ in range(12))
    assert versions == Counter({target: 12})
    assert swaps()[before:] == [target, target]  # one per worker
    assert "cannot serve gRPC" not in door.server.log.read_text()
