"""`dspyreg serve ENV --canary OTHER_ENV=PERCENT`: the split (random, and sticky per key), the version named in
every answer and access-log line, each side following its own environment, and the same over gRPC."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.canary import SEED_ENV
from dspy_registry.cli import app
from dspy_registry.registry import Registry

from .conftest import publish_example, ref_snapshot
from .grpc_clients import client_modules, grpc_serve, metadata, proto_of, publish_source, wait_serving
from .serving import Server, dspyreg_serve, seconds_until
from .shared_setup import copy_registry, made_once

QUESTION = {"question": "How do I roll back?"}
KEY = "X-Dspyreg-Key"


@pytest.fixture(scope="session")
def split_once(tmp_path_factory: pytest.TempPathFactory, published_once: Path, states: dict[str, Path]) -> Path:
    """qa v1.0 in prod, v1.1 in staging, and v1.2 published but in no environment: made once per run."""

    def make(folder: Path) -> None:
        with Registry.open(copy_registry(published_once, folder / "registry")) as reg:
            publish_example(reg, states["v1.0"], "v1.2")
            reg.promote("v1.0", "prod")
            reg.promote("v1.1", "staging")

    return made_once(tmp_path_factory, "canary-split", make) / "registry"


@pytest.fixture
def split(split_once: Path, tmp_path: Path) -> Iterator[Registry]:
    """A copy of `split_once` for one test, which may change it."""
    with Registry.open(copy_registry(split_once, tmp_path / "registry")) as reg:
        yield reg


def canary_of(srv: Server) -> dict[str, Any]:
    status, body, _ = srv.get("/version")
    assert status == 200, body
    return body["canary"]  # type: ignore[no-any-return]


def answered(srv: Server, key: str | None = None) -> str:
    """The version that answered one /predict (as the body and the header both name it)."""
    status, body, headers = srv.post("/predict", QUESTION, headers={KEY: key} if key else None)
    assert status == 200, body
    assert body["program"] == headers["x-dspyreg-program"] == "qa"
    assert body["version"] == headers["x-dspyreg-version"]
    return str(body["version"])


def sides(ask: Callable[[str], str], keys: list[str]) -> dict[str, str]:
    return {key: ask(key) for key in keys}


def test_rest_splits_sticky_per_key_names_the_version_and_each_side_swaps(
    split: Registry, fake_lm: Any, tmp_path: Path
) -> None:
    args = ("prod", "--canary", "staging=30", "--poll-seconds", "0.3")
    with dspyreg_serve(split.location, tmp_path, *args, env={SEED_ENV: "15"}) as srv:
        srv.wait_ready()
        seconds_until(lambda: str(canary_of(srv)["version"]), "v1.1", 60, "the canary side")
        version = srv.get("/version")[1]
        assert (version["version"], version["environment"]) == ("v1.0", "prod")
        canary = version["canary"]
        assert canary["environment"] == "staging" and canary["percent"] == 30 and canary["active"] is True
        assert srv.get("/ready")[1]["canary"]["version"] == "v1.1"

        with ThreadPoolExecutor(8) as pool:  # without a key: a random side per request
            keyless = Counter(pool.map(lambda _: answered(srv), range(200)))
        assert set(keyless) == {"v1.0", "v1.1"}
        assert 36 <= keyless["v1.1"] <= 84, keyless  # 30% of 200 = 60, +-12% (3.7 binomial sd)

        # with a key: the same caller, the same side, every time; different callers spread over both
        assert {answered(srv, "caller-7") for _ in range(20)} == {answered(srv, "caller-7")}
        by_key = sides(lambda key: answered(srv, key), [f"caller-{i}" for i in range(40)])
        assert set(by_key.values()) == {"v1.0", "v1.1"}
        assert by_key == sides(lambda key: answered(srv, key), list(by_key))
        on_canary = [k for k, v in by_key.items() if v == "v1.1"]
        on_main = [k for k, v in by_key.items() if v == "v1.0"]

        # a batch is one request: all of it on one side
        status, body, headers = srv.post(
            "/predict/batch", {"inputs": [QUESTION, QUESTION]}, headers={KEY: on_canary[0]}
        )
        assert status == 200 and body["version"] == headers["x-dspyreg-version"] == "v1.1"
        assert [r["version"] for r in body["results"]] == ["v1.1", "v1.1"]

        # promote to staging: the canary side swaps, prod stays
        split.promote("v1.2", "staging")
        seconds_until(lambda: answered(srv, on_canary[0]), "v1.2", 60, "a canary caller")
        assert {answered(srv, key) for key in on_canary} == {"v1.2"}
        assert {answered(srv, key) for key in on_main} == {"v1.0"}
        assert srv.get("/version")[1]["version"] == "v1.0" and canary_of(srv)["version"] == "v1.2"

        # promote to prod: the main side swaps, the canary stays
        split.promote("v1.1", "prod")
        seconds_until(lambda: answered(srv, on_main[0]), "v1.1", 60, "a main caller")
        assert {answered(srv, key) for key in on_main} == {"v1.1"}
        assert {answered(srv, key) for key in on_canary} == {"v1.2"}

    lines = srv.log_lines()
    calls = [line for line in lines if line.get("path") == "/predict"]
    assert all(line["program"] == "qa" and line["version"] in {"v1.0", "v1.1", "v1.2"} for line in calls)
    logged = Counter(line["version"] for line in calls[:200])  # the keyless round came first
    assert logged == keyless
    swaps = [(e["environment"], e["version"]) for e in lines if e.get("event") == "swapped"]
    assert set(swaps[:2]) == {("prod", "v1.0"), ("staging", "v1.1")}  # the two sides load side by side
    assert swaps[2:] == [("staging", "v1.2"), ("prod", "v1.1")]


def test_a_canary_environment_without_a_version_waits_for_one(
    published: Registry, fake_lm: Any, tmp_path: Path
) -> None:
    published.promote("v1.0", "prod")
    args = ("--canary", "staging=50", "--poll-seconds", "0.3")
    with dspyreg_serve(published.location, tmp_path, *args) as srv:
        srv.wait_ready()
        canary = canary_of(srv)
        assert canary["version"] is None and canary["active"] is False and "staging" in canary["paused"]
        assert {answered(srv, f"caller-{i}") for i in range(12)} | {answered(srv) for _ in range(8)} == {"v1.0"}
        waiting = [e for e in srv.log_lines() if e.get("event") == "canary_waiting"]
        assert len(waiting) == 1 and waiting[0]["environment"] == "staging"

        published.promote("v1.1", "staging")
        seconds_until(lambda: str(canary_of(srv)["active"]), "True", 60, "the split")
        assert {answered(srv, f"caller-{i}") for i in range(12)} == {"v1.0", "v1.1"}


def test_grpc_splits_by_key_metadata_and_names_the_version(split: Registry, fake_lm: Any, tmp_path: Path) -> None:
    pb2, stubs = client_modules(proto_of(split, "prod"), "qa", tmp_path)
    args = ("--canary", "staging=30", "--poll-seconds", "0.3")
    with grpc_serve(split.location, tmp_path, *args, env={SEED_ENV: "3"}) as (srv, channel, _):
        wait_serving(channel)
        seconds_until(lambda: str(canary_of(srv)["version"]), "v1.1", 60, "the canary side")
        stub = stubs.QaStub(channel)

        def ask(key: str | None) -> str:
            reply, call = stub.Predict.with_call(
                pb2.QaRequest(question="q"), metadata=(("x-dspyreg-key", key),) if key else None, timeout=30
            )
            meta = metadata(call)
            assert meta["x-dspyreg-program"] == "qa" and reply.answer
            assert json.loads(meta["x-dspyreg-usage"])["lm_calls"] > 0
            return meta["x-dspyreg-version"]

        assert {ask("caller-7") for _ in range(20)} == {ask("caller-7")}
        by_key = sides(ask, [f"caller-{i}" for i in range(40)])
        assert set(by_key.values()) == {"v1.0", "v1.1"}
        assert by_key == sides(ask, list(by_key))  # the key decides, as over REST
        assert by_key == sides(lambda key: answered(srv, key), list(by_key))
        assert {ask(None) for _ in range(40)} == {"v1.0", "v1.1"}
        batch, call = stub.PredictBatch.with_call(
            pb2.QaBatchRequest(inputs=[pb2.QaRequest(question="a")] * 2),
            metadata=(("x-dspyreg-key", next(k for k, v in by_key.items() if v == "v1.1")),),
            timeout=30,
        )
        assert metadata(call)["x-dspyreg-version"] == "v1.1" and len(batch.results) == 2

        split.promote("v1.2", "staging")
        on_canary = [k for k, v in by_key.items() if v == "v1.1"]
        seconds_until(lambda: ask(on_canary[0]), "v1.2", 60, "a canary caller over gRPC")
        assert sides(ask, list(by_key)) == {k: "v1.2" if v == "v1.1" else "v1.0" for k, v in by_key.items()}
    grpc_lines = [line for line in srv.log_lines() if line.get("method") == "GRPC"]
    assert grpc_lines and all(line["program"] == "qa" and line["grpc_status"] == "OK" for line in grpc_lines)
    assert {line["version"] for line in grpc_lines} == {"v1.0", "v1.1", "v1.2"}


SHAPE = '''
import dspy


class Ask(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField(desc="The question.")
    answer: str = dspy.OutputField(desc="The answer.")
{extra}

class Shape(dspy.Module):
    def __init__(self):
        super().__init__()
        self.ask = dspy.Predict(Ask)

    def forward(self, question: str):
        return self.ask(question=question)
'''


def test_a_canary_with_another_interface_is_paused(registry: Registry, fake_lm: Any, tmp_path: Path) -> None:
    """Clients built for the main side's request (or .proto) never meet another shape: the canary waits."""
    publish_source(registry, tmp_path, SHAPE.format(extra=""), "Shape", "shape", "v1.0")
    score = '    score: float = dspy.OutputField(desc="How sure, from 0 to 1.")\n'
    publish_source(registry, tmp_path, SHAPE.format(extra=score), "Shape", "shape", "v2.0")
    registry.promote("v1.0", "prod", name="shape")
    registry.promote("v2.0", "staging", name="shape")
    args = ("shape/prod", "--canary", "staging=100", "--poll-seconds", "0.3")
    with grpc_serve(registry.location, tmp_path, *args) as (srv, channel, _):
        srv.wait_ready()
        seconds_until(lambda: str(canary_of(srv)["version"]), "v2.0", 60, "the canary side")
        canary = canary_of(srv)
        assert canary["active"] is False and "another interface" in canary["paused"]
        for key in ("a", "b", None):
            status, body, headers = srv.post("/predict", QUESTION, headers={KEY: key} if key else None)
            assert status == 200 and body["version"] == headers["x-dspyreg-version"] == "v1.0"
        ask = channel.unary_unary("/dspyreg.shape.Shape/Predict")
        request = b"\x0a\x01q"  # ShapeRequest(question="q") on the wire
        _, call = ask.with_call(request, metadata=(("x-dspyreg-key", "a"),), timeout=30)
        assert metadata(call)["x-dspyreg-version"] == "v1.0"
    paused = [e for e in srv.log_lines() if e.get("event") == "canary_paused"]
    assert paused and paused[0]["canary"] == "v2.0" and paused[0]["main"] == "v1.0"


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("staging", "expected ENV=PERCENT"),
        ("=10", "expected ENV=PERCENT"),
        ("nope=10", "'nope' is not one of this registry's environments"),
        ("prod=10", "'prod' is the environment being served"),
        ("staging=0", "PERCENT must be a number above 0 and at most 100"),
        ("staging=100.5", "PERCENT must be a number above 0 and at most 100"),
        ("staging=ten", "PERCENT must be a number above 0 and at most 100"),
        ("staging=nan", "PERCENT must be a number above 0 and at most 100"),
    ],
)
def test_bad_canary_values_are_one_line(split: Registry, value: str, says: str) -> None:
    before = ref_snapshot(Path(split.location))
    result = CliRunner().invoke(app, ["serve", "prod", "--canary", value, "--registry", split.location])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--canary" in lines[0], result.stderr
    assert ref_snapshot(Path(split.location)) == before


def test_a_bad_key_header_is_one_line(split: Registry) -> None:
    args = ["serve", "--canary", "staging=10", "--canary-header", "x key", "--registry", split.location]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "--canary-header 'x key'" in result.stderr


def test_worker_processes_get_the_canary_and_the_limits_they_were_given() -> None:
    # `--workers N` hands each worker the config through the environment as JSON: nested records must come back whole.
    from dspy_registry.canary import CanarySpec
    from dspy_registry.serve import Limits, ServeConfig

    config = ServeConfig(
        registry="/r", ref="prod", limits=Limits(max_batch=3, body_timeout=2.5), canary=CanarySpec("staging", 10, "X-K")
    )
    assert ServeConfig.from_json(config.to_json()) == config
    assert ServeConfig.from_json(ServeConfig(registry="/r", ref="prod").to_json()).canary is None
