"""gRPC beside REST: the generated .proto (types, stable field numbers) and `dspyreg serve --grpc-port` for real.
What REST and gRPC share (failures, the token, readiness, hot swap, workers) is tested once for both in test_doors.py.

Servers run as `dspyreg serve` subprocesses on 127.0.0.1 with the fake LM server; clients are real grpc channels
using message classes compiled by grpc_tools.protoc from the .proto that `dspyreg proto` prints, into tmp_path.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from dspy_registry import grpc_codec, proto
from dspy_registry.cli import app
from dspy_registry.errors import RegistryError
from dspy_registry.registry import Registry
from dspy_registry.runtime.signature import field_schema

from .grpc_clients import (
    SERVING,
    client_modules,
    code_of,
    descriptors,
    dynamic,
    grpc_serve,
    health,
    metadata,
    numbers,
    proto_of,
    publish_source,
    runner,
    wait_serving,
)
from .serving import free_port

QUESTION = {"question": "How do I roll back?"}


# -- the .proto, without a server -------------------------------------------------------------------------------------
def _interface(inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "inputs": [{"name": n, "type": t, "description": f"The {n}.", "required": True} for n, t in inputs],
        "outputs": [{"name": n, "type": t, "description": ""} for n, t in outputs],
    }


def _with_schemas(interface: dict[str, Any], types: dict[str, Any]) -> dict[str, Any]:
    """`interface` with the JSON Schemas that publish records for the fields typed in `types`."""
    for spec in (*interface["inputs"], *interface["outputs"]):
        if spec["name"] in types:
            spec["schema"] = field_schema(types[spec["name"]])
    return interface


def test_types_map_from_the_signature(tmp_path: Path) -> None:
    sig = proto.signature(
        "demo",
        _interface(
            [("question", "str"), ("k", "int"), ("tags", "list[str]"), ("tone", "Literal['formal', 'very casual']")],
            [
                ("score", "float"),
                ("ok", "Optional[bool]"),
                ("meta", "dict[str, Any]"),
                ("grid", "list[list[int]]"),
                ("either", "int | str"),
                ("odd", "Literal['a', 'A']"),
                ("level", "Literal[1, 2, 3]"),
                ("maybe", "list[str | None]"),
                ("thing", "some_module.Thing"),  # only its code knows it: JSON text without a schema
            ],
        ),
    )
    kinds = {f.name: f.shape.key for f in (*sig.inputs, *sig.outputs)}
    assert kinds == {
        "question": "string",
        "k": "int64",
        "tags": "repeated string",
        "tone": "enum",
        "score": "double",
        "ok": "bool",
        "meta": "json",
        "grid": "json",
        "either": "json",
        "odd": "string",  # the values make the same enum name: strings instead
        "level": "int64",
        "maybe": "json",
        "thing": "json",
    }
    text = proto.render("demo", [sig])
    assert "  optional string question = 1;" in text and "  repeated string tags = 3;" in text
    assert "    TONE_UNSPECIFIED = 0;" in text and '    TONE_VERY_CASUAL = 2;  // "very casual"' in text
    assert "  // The question.\n  // DSPy type: str, required.\n" in text
    assert "  // DSPy type: dict[str, Any], as JSON text.\n  optional string meta = 3;" in text
    assert "  // DSPy type: Thing, as JSON text." in text  # module names are no part of a signature
    pool = descriptors(text, "demo", tmp_path)
    request = pool.FindMessageTypeByName("dspyreg.demo.DemoRequest")
    assert request.fields_by_name["tone"].enum_type.values_by_name["TONE_FORMAL"].number == 1
    assert request.fields_by_name["k"].has_presence and request.fields_by_name["tags"].is_repeated


def test_nested_models_become_messages(tmp_path: Path) -> None:
    from typing import Literal

    import pydantic

    class Item(pydantic.BaseModel):
        """A part of the verdict.

        Items nest."""

        name: str = pydantic.Field(description="What it is called.")
        size: Literal["s", "m"] = "s"
        parts: list[Item] = []

    class Verdict(pydantic.BaseModel):
        label: Literal["yes", "no"]
        items: list[Item]
        extra: dict[str, int] | None = None

    interface = _interface([("item", "Item")], [("verdict", "mod_1234.Verdict")])
    sig = proto.signature("demo", _with_schemas(interface, {"item": Item, "verdict": Verdict}))
    assert list(sig.messages) == ["Item", "Verdict"]
    assert [(f.name, f.shape.key, f.required) for f in sig.messages["Item"]] == [
        ("name", "string", True),
        ("size", "enum", False),
        ("parts", "repeated message Item", False),
    ]
    assert [f.shape.key for f in sig.messages["Verdict"]] == ["enum", "repeated message Item", "json"]
    text = proto.render("demo", [sig])
    assert "// A part of the verdict.\n// Items nest.\nmessage Item {" in text
    assert "  Item item = 1;" in text and "  Verdict verdict = 1;" in text and "  repeated Item parts = 3;" in text
    pool = descriptors(text, "demo", tmp_path)
    label = pool.FindMessageTypeByName("dspyreg.demo.Verdict").fields_by_name["label"]
    assert [v.name for v in label.enum_type.values] == ["LABEL_UNSPECIFIED", "LABEL_YES", "LABEL_NO"]


def test_messages_round_trip_and_must_match_the_signature(tmp_path: Path) -> None:
    from typing import Literal

    import pydantic

    class Node(pydantic.BaseModel):
        name: str
        kind: Literal["leaf", "branch"] = "leaf"
        children: list[Node] = []

    interface = _interface([("tree", "Node"), ("meta", "dict[str, Any]")], [("tree", "Node")])
    sig = proto.signature("demo", _with_schemas(interface, {"tree": Node}))
    pool = grpc_codec.compile_proto(proto.render("demo", [sig]), "demo.proto")
    request = dynamic(pool, "dspyreg.demo.DemoRequest")
    grpc_codec.check_messages(request.DESCRIPTOR, sig.inputs, sig, "demo.proto")  # a model that contains itself
    values = {"tree": {"name": "a", "kind": "branch", "children": [{"name": "b", "kind": "leaf", "children": []}]}}
    message = request()
    grpc_codec.encode(message, sig.inputs, {**values, "meta": {"k": [1]}}, sig)
    decoded = grpc_codec.decode(request.FromString(message.SerializeToString()), sig.inputs, sig)
    assert decoded == {**values, "meta": {"k": [1]}}
    other = proto.signature("demo", _interface([("tree", "str"), ("meta", "dict[str, Any]")], []))
    with pytest.raises(RegistryError, match=r"does not match the loaded program: field DemoRequest\.tree"):
        grpc_codec.check_messages(request.DESCRIPTOR, other.inputs, other, "demo.proto")
    with pytest.raises(RegistryError, match=r"demo\.proto does not compile: .*nope"):
        grpc_codec.compile_proto('syntax = "proto3";\nmessage A { nope x = 1; }\n', "demo.proto")


def test_field_numbers_are_kept_reserved_and_never_reused(tmp_path: Path) -> None:
    v1 = proto.signature(
        "demo", _interface([("q", "str")], [("a", "str"), ("score", "float"), ("tone", "Literal['x', 'y']")])
    )
    v2 = proto.signature(
        "demo", _interface([("q", "str"), ("ctx", "list[str]")], [("a", "str"), ("tone", "Literal['y', 'z']")])
    )
    v3 = proto.signature("demo", _interface([("ctx", "list[str]"), ("q", "str")], [("a", "str"), ("score", "int")]))
    v4 = proto.signature("demo", _interface([("q", "str")], [("a", "str"), ("score", "float")]))
    texts = [proto.render("demo", [v1, v2, v3, v4][:n]) for n in range(1, 5)]
    pools = [descriptors(text, "demo", tmp_path / f"v{n}") for n, text in enumerate(texts, 1)]
    requests = [numbers(pool, "dspyreg.demo.DemoRequest") for pool in pools]
    responses = [numbers(pool, "dspyreg.demo.DemoResponse") for pool in pools]
    assert requests == [{"q": 1}, {"q": 1, "ctx": 2}, {"ctx": 2, "q": 1}, {"q": 1}]
    assert responses == [
        {"a": 1, "score": 2, "tone": 3},
        {"a": 1, "tone": 3},  # score removed: 2 reserved
        {"a": 1, "score": 4},  # score back as an int: a new number, the float's 2 stays reserved
        {"a": 1, "score": 2},  # back as a float: its own number again
    ]
    assert '  reserved 2;\n  reserved "score";' in texts[1]
    assert '  reserved 2, 3;\n  reserved "tone";' in texts[2]
    assert '  reserved 3, 4;\n  reserved "tone";' in texts[3]
    tone = pools[1].FindMessageTypeByName("dspyreg.demo.DemoResponse").fields_by_name["tone"].enum_type
    assert {v.name: v.number for v in tone.values} == {"TONE_UNSPECIFIED": 0, "TONE_Y": 2, "TONE_Z": 3}
    assert '    reserved 1;\n    reserved "TONE_X";' in texts[1]
    assert texts[0] == proto.render("demo", [v1, v1])  # the same signature twice: the same .proto


def test_names_fit_proto() -> None:
    assert proto.service_name("qa") == "dspyreg.qa.Qa"
    assert proto.service_name("2fa-check_v2") == "dspyreg.p2fa_check_v2.P2faCheckV2"
    assert proto.plain_type("list[dspyreg_user_qa_1a2b.Answer]") == "list[Answer]"
    assert proto.plain_type("Literal['a.b', \"c.d\"]") == "Literal['a.b', \"c.d\"]"


# -- the .proto of published versions ---------------------------------------------------------------------------------
GROW_V1 = '''
import dspy


class Ask(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField(desc="The question.")
    answer: str = dspy.OutputField(desc="The answer.")
    score: float = dspy.OutputField(desc="How sure, from 0 to 1.")


class Grow(dspy.Module):
    def __init__(self):
        super().__init__()
        self.ask = dspy.Predict(Ask)

    def forward(self, question: str):
        return self.ask(question=question)
'''

GROW_V2 = '''
import dspy


class Ask(dspy.Signature):
    """Answer the question from the context."""

    question: str = dspy.InputField(desc="The question.")
    context: list[str] = dspy.InputField(desc="Passages to answer from.")
    answer: str = dspy.OutputField(desc="The answer.")
    sources: list[int] = dspy.OutputField(desc="Which passages were used.")


class Grow(dspy.Module):
    def __init__(self):
        super().__init__()
        self.ask = dspy.Predict(Ask)

    def forward(self, question: str, context: list[str]):
        return self.ask(question=question, context=context)
'''


def test_same_signature_same_proto_and_export_writes_it(prod_v11: Registry, tmp_path: Path) -> None:
    text = proto_of(prod_v11, "v1.1")
    assert text == proto_of(prod_v11, "v1.0")
    assert text == proto_of(prod_v11, "qa/prod")
    result = runner.invoke(app, ["export", "prod", str(tmp_path / "deploy"), "--registry", prod_v11.location])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "deploy" / "qa.proto").read_text() == text
    assert "qa.proto" in (tmp_path / "deploy" / "README.md").read_text()
    response = descriptors(text, "qa", tmp_path / "c").FindMessageTypeByName("dspyreg.qa.QaResponse")
    assert [(f.name, f.number, f.type, f.is_repeated) for f in response.fields] == [
        ("answer", 1, response.fields[0].TYPE_STRING, False),
        ("confidence", 2, response.fields[0].TYPE_DOUBLE, False),
        ("supported", 3, response.fields[0].TYPE_BOOL, False),
        ("passages", 4, response.fields[0].TYPE_STRING, True),
    ]
    assert "// Retrieved documentation passages, most relevant first." in text


def test_a_version_that_adds_fields_keeps_the_old_numbers(registry: Registry, tmp_path: Path) -> None:
    publish_source(registry, tmp_path, GROW_V1, "Grow", "grow", "v1.0")
    publish_source(registry, tmp_path, GROW_V2, "Grow", "grow", "v2.0")
    old, new = proto_of(registry, "grow/v1.0"), proto_of(registry, "grow/v2.0")
    pools = descriptors(old, "grow", tmp_path / "old"), descriptors(new, "grow", tmp_path / "new")
    assert numbers(pools[0], "dspyreg.grow.GrowRequest") == {"question": 1}
    assert numbers(pools[1], "dspyreg.grow.GrowRequest") == {"question": 1, "context": 2}
    assert numbers(pools[0], "dspyreg.grow.GrowResponse") == {"answer": 1, "score": 2}
    assert numbers(pools[1], "dspyreg.grow.GrowResponse") == {"answer": 1, "sources": 3}
    response = pools[1].FindMessageTypeByName("dspyreg.grow.GrowResponse")
    assert '  reserved 2;\n  reserved "score";' in new and response.fields_by_name["sources"].is_repeated
    assert proto_of(registry, "grow/v1.0") == old  # a later version never changes an earlier one's .proto


def test_proto_command_errors_are_one_line(published: Registry) -> None:
    result = runner.invoke(app, ["proto", "v9.9", "--registry", published.location])
    assert result.exit_code == 1 and "not published" in result.stderr and len(result.stderr.splitlines()) == 1


def test_serve_refuses_a_grpc_port_it_cannot_use(published: Registry) -> None:
    for port in ("8000", "0", "70000"):
        result = runner.invoke(app, ["serve", "--port", "8000", "--grpc-port", port, "--registry", published.location])
        assert result.exit_code == 1 and "--grpc-port" in result.stderr and len(result.stderr.splitlines()) == 1


def test_proto_command_stays_light(published: Registry) -> None:
    probe = (
        "import sys\nfrom dspy_registry.cli import app\napp(sys.argv[1:], standalone_mode=False)\n"
        "print('HEAVY=' + ','.join(m for m in ('dspy', 'litellm', 'fastapi', 'grpc') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, "proto", "v1.1", "--registry", published.location],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rsplit("HEAVY=", 1)[1].strip() == "" and "service Qa {" in proc.stdout


# -- serving ----------------------------------------------------------------------------------------------------------
def test_predict_answers_like_rest_and_fails_in_codes_only_grpc_has(
    prod_v11: Registry, fake_lm: Any, tmp_path: Path
) -> None:
    """One server: the answers (as REST gives them, with metadata, batch and reflection), then the status codes that
    only gRPC has (a message that does not parse, one too large, a deadline)."""
    fake_lm.overrides["answer"] = "Run dspyreg rollback."
    pb2, stubs = client_modules(proto_of(prod_v11, "prod"), "qa", tmp_path)
    with grpc_serve(prod_v11.location, tmp_path) as (srv, channel, _):
        srv.wait_ready()
        wait_serving(channel)
        assert health(channel, "dspyreg.qa.Qa") == SERVING
        stub = stubs.QaStub(channel)
        reply, call = stub.Predict.with_call(pb2.QaRequest(question=QUESTION["question"]), timeout=30)
        status, rest, _ = srv.post("/predict", QUESTION)
        assert status == 200
        assert reply.answer == rest["answer"] == "Run dspyreg rollback."
        assert reply.confidence == rest["confidence"] and reply.supported == rest["supported"]
        assert list(reply.passages) == rest["passages"] and len(rest["passages"]) == 3
        meta = metadata(call)
        assert meta["x-dspyreg-version"] == "v1.1" and meta["x-dspyreg-program"] == "qa"
        assert meta["x-dspyreg-commit"] == prod_v11.resolve("v1.1").commit
        usage = json.loads(meta["x-dspyreg-usage"])
        assert usage["lm_calls"] == 3 and usage["total_tokens"] > 0
        batch = stub.PredictBatch(
            pb2.QaBatchRequest(inputs=[pb2.QaRequest(question="a"), pb2.QaRequest(question="b")]), timeout=30
        )
        assert [r.WhichOneof("outcome") for r in batch.results] == ["response", "response"]
        assert [r.response.answer for r in batch.results] == ["Run dspyreg rollback."] * 2
        # reflection, as grpcurl uses it: the served version's descriptors
        database = ProtoReflectionDescriptorDatabase(channel)
        assert set(database.get_services()) >= {"dspyreg.qa.Qa", "grpc.health.v1.Health"}
        reflected = descriptor_pool.DescriptorPool(database).FindMessageTypeByName("dspyreg.qa.QaResponse")
        assert [f.name for f in reflected.fields] == ["answer", "confidence", "supported", "passages"]

        # the status codes only gRPC has
        raw = channel.unary_unary("/dspyreg.qa.Qa/Predict")
        code, detail = code_of(lambda: raw(b"\x0a\xff\xff\xff", timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "is not a QaRequest" in detail
        big = pb2.QaRequest(question="x" * (2 << 20))
        code, detail = code_of(lambda: stub.Predict(big, timeout=30))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in detail
        fake_lm.latency_ms = 1500
        started = time.monotonic()
        code, _ = code_of(lambda: stub.Predict(pb2.QaRequest(question="x"), timeout=0.5))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - started < 1.2
        fake_lm.latency_ms = 0
        assert stub.Predict(pb2.QaRequest(question="x"), timeout=30).answer  # recovered
    calls = [line for line in srv.log_lines() if line.get("method") == "GRPC"]
    assert [c["grpc_status"] for c in calls[:2]] == ["OK", "OK"] and calls[0]["version"] == "v1.1"
    assert calls[0]["path"] == "/dspyreg.qa.Qa/Predict"
    statuses = Counter(line["grpc_status"] for line in calls)
    assert statuses["INVALID_ARGUMENT"] == 1 and statuses["DEADLINE_EXCEEDED"] == 1
    assert "Traceback" not in srv.log.read_text()


TYPED = '''
from typing import Any, Literal, Optional

import dspy
import pydantic


class Filter(pydantic.BaseModel):
    tags: list[str] = pydantic.Field(description="Only passages with one of these tags.")
    min_year: Optional[int] = None


class Verdict(pydantic.BaseModel):
    label: Literal["yes", "no", "unsure"]
    score: float = pydantic.Field(description="Between 0 and 1.")
    reasons: list[str] = []


class Judge(dspy.Signature):
    """Judge the claim."""

    claim: str = dspy.InputField(desc="The claim to judge.")
    tone: Literal["formal", "casual"] = dspy.InputField(desc="How to answer.")
    filter: Filter = dspy.InputField(desc="Which passages count.")
    extra: dict[str, Any] = dspy.InputField(desc="Anything else.")
    verdict: Verdict = dspy.OutputField(desc="The verdict.")
    mood: Literal["calm", "upset"] = dspy.OutputField(desc="How it feels.")
    count: int = dspy.OutputField(desc="How many passages.")
    notes: dict[str, Any] = dspy.OutputField(desc="Free notes.")


class Typed(dspy.Module):
    def __init__(self):
        super().__init__()
        self.judge = dspy.Predict(Judge)

    def forward(self, claim: str, tone: Literal["formal", "casual"], filter: Filter, extra: Optional[dict] = None):
        return self.judge(claim=claim, tone=tone, filter=filter, extra=extra or {})
'''


def test_literals_models_and_json_travel_like_rest(registry: Registry, fake_lm: Any, tmp_path: Path) -> None:
    publish_source(registry, tmp_path, TYPED, "Typed", "typed", "v1.0")
    text = proto_of(registry, "typed/v1.0")
    assert "message Filter {" in text and "message Verdict {" in text and "  Verdict verdict = 1;" in text
    pb2, stubs = client_modules(text, "typed", tmp_path)
    verdict = '{"label": "no", "score": 0.25, "reasons": ["r1", "r2"]}'
    fake_lm.overrides.update({"verdict": verdict, "mood": "upset", "notes": '{"k": [1, 2]}', "count": "3"})
    body = {"claim": "c", "tone": "casual", "filter": {"tags": ["a", "b"], "min_year": 2020}, "extra": {"k": 1}}
    request = pb2.TypedRequest(
        claim="c",
        tone=pb2.TypedRequest.Tone.TONE_CASUAL,
        filter=pb2.Filter(tags=["a", "b"], min_year=2020),
        extra='{"k": 1}',
    )
    with grpc_serve(registry.location, tmp_path, "typed/v1.0") as (srv, channel, _):
        wait_serving(channel)
        stub = stubs.TypedStub(channel)
        status, rest, _ = srv.post("/predict", body)
        reply = stub.Predict(request, timeout=30)
        assert status == 200, rest
        sent = [json.dumps(r["messages"]) for r in fake_lm.requests[-2:]]
        assert sent[0] == sent[1]  # the LM saw the same inputs from both sides
        assert pb2.Verdict.Label.Name(reply.verdict.label) == "LABEL_" + rest["verdict"]["label"].upper()
        assert reply.verdict.score == rest["verdict"]["score"] == 0.25
        assert list(reply.verdict.reasons) == rest["verdict"]["reasons"] == ["r1", "r2"]
        assert pb2.TypedResponse.Mood.Name(reply.mood) == "MOOD_UPSET" and rest["mood"] == "upset"
        assert reply.count == rest["count"] == 3 and json.loads(reply.notes) == rest["notes"] == {"k": [1, 2]}
        unset = pb2.TypedRequest(claim="c", filter=pb2.Filter(tags=["a"]))
        code, detail = code_of(lambda: stub.Predict(unset, timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "tone: Field required" in detail
        bad_json = pb2.TypedRequest(claim="c", tone=1, filter=pb2.Filter(), extra="{nope")
        code, detail = code_of(lambda: stub.Predict(bad_json, timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and detail.startswith("extra: not JSON text")
        no_enum = pb2.TypedRequest(claim="c", tone=0, filter=pb2.Filter())
        code, detail = code_of(lambda: stub.Predict(no_enum, timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "TONE_FORMAL, TONE_CASUAL" in detail


def test_a_swap_changes_the_messages_and_reflection(registry: Registry, fake_lm: Any, tmp_path: Path) -> None:
    """Each call is parsed with the messages of the version serving it; reflection shows that version's."""
    publish_source(registry, tmp_path, GROW_V1, "Grow", "grow", "v1.0")
    publish_source(registry, tmp_path, GROW_V2, "Grow", "grow", "v2.0")
    registry.promote("v1.0", "prod", name="grow")
    old = descriptors(proto_of(registry, "grow/v1.0"), "grow", tmp_path / "old")
    new = descriptors(proto_of(registry, "grow/v2.0"), "grow", tmp_path / "new")

    def predict(channel: grpc.Channel, pool: descriptor_pool.DescriptorPool, **fields: Any) -> tuple[Any, str]:
        request, response = dynamic(pool, "dspyreg.grow.GrowRequest"), dynamic(pool, "dspyreg.grow.GrowResponse")
        call = channel.unary_unary(
            "/dspyreg.grow.Grow/Predict",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        reply, info = call.with_call(request(**fields), timeout=30)
        return reply, metadata(info)["x-dspyreg-version"]

    with grpc_serve(registry.location, tmp_path, "grow/prod", "--poll-seconds", "0.3") as (_, channel, _):
        wait_serving(channel)
        reply, version = predict(channel, old, question="q")
        assert version == "v1.0" and reply.HasField("score")
        registry.promote("v2.0", "prod", name="grow")
        deadline = time.time() + 30
        while predict(channel, old, question="q")[1] != "v2.0" and time.time() < deadline:
            time.sleep(0.1)
        reply, version = predict(channel, new, question="q", context=["the passage"])
        assert version == "v2.0" and list(reply.sources) == [] and "the passage" in fake_lm.all_text()
        reflected = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        request = reflected.FindMessageTypeByName("dspyreg.grow.GrowRequest")
        assert [(f.name, f.number) for f in request.fields] == [("question", 1), ("context", 2)]


def test_a_taken_grpc_port_is_one_line(prod_v11: Registry, fake_lm: Any, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for workers in ("1", "2"):
            proc = subprocess.run(
                [sys.executable, "-m", "dspy_registry.cli", "serve", "--registry", prod_v11.location,
                 "--port", str(free_port()), "--grpc-port", str(port), "--workers", workers],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert proc.returncode == 1, proc.stderr
            error = proc.stderr.strip().splitlines()[-1]
            assert error.startswith("error: cannot serve gRPC on 127.0.0.1:") and "Traceback" not in proc.stderr
