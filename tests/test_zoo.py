"""Every DSPy module kind of tests/zoo/programs.py taken through publish, load, export and serve, byte-exact.

Each kind is optimized offline (demos set as BootstrapFewShot leaves them), published into a real registry (once per
run, for the tests that only read it), then:
served by `dspyreg serve --grpc-port` and by the exported `api.py`, answering 200 (REST) and OK (gRPC) from the fake
LM server; and loaded with `dspy_registry.load`, rendering for every predictor exactly the messages the original
in-memory program renders, with ChatAdapter and JSONAdapter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dspy
import pytest
from google.protobuf import json_format
from typer.testing import CliRunner

import dspy_registry
from dspy_registry import proto
from dspy_registry.bundle import import_program
from dspy_registry.cli import app
from dspy_registry.errors import BadState
from dspy_registry.registry import Registry
from dspy_registry.state import read_state_file

from .conftest import ROOT, publish_args, ref_snapshot
from .grpc_clients import client_modules, grpc_serve, proto_of, wait_serving
from .serving import Server, free_port
from .shared_setup import copy_registry, made_once
from .zoo.programs import KINDS, optimize

ZOO = ROOT / "tests" / "zoo" / "programs.py"
runner = CliRunner()


def spec_of(kind: str) -> str:
    return f"{ZOO}:{KINDS[kind].attr}"


def optimized_state(kind: str, folder: Path) -> tuple[dspy.Module, Path]:
    """The kind's program with its demos, and the state file that program.save() wrote for it."""
    program = optimize(kind, import_program(spec_of(kind)).program)
    path = folder / f"{kind}.json"
    program.save(str(path))
    return program, path


def program_name(kind: str) -> str:
    """The kind's name in the registry: prefixed, since gRPC client modules are per program name per session and
    tests/test_grpc.py publishes programs of its own (`typed`)."""
    return f"zoo_{kind}"


def publish_kind(reg: Registry, kind: str, folder: Path) -> dspy.Module:
    program, path = optimized_state(kind, folder)
    reg.publish(import_program(spec_of(kind)), read_state_file(path), name=program_name(kind), version="v1.0")
    return program


def grpc_request(message: Any, values: dict[str, Any]) -> Any:
    """The gRPC request carrying the same values as a REST body: enums by name, JSON text where the .proto says so."""

    def convert(descriptor: Any, data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in data.items():
            f = descriptor.fields_by_name[name]
            if value is None:
                continue
            if f.enum_type is not None:
                out[name] = proto.enum_value_name(name, value)
            elif f.message_type is not None:
                out[name] = convert(f.message_type, value)
            elif f.type == f.TYPE_STRING and not isinstance(value, (str, list)):
                out[name] = json.dumps(value)
            else:
                out[name] = value
        return out

    return json_format.ParseDict(convert(message.DESCRIPTOR, values), message())


@pytest.fixture(scope="session")
def zoo_published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a registry with every kind optimized and published (zoo_<kind> v1.0), once per run, and
    each kind's state file as published (<kind>.json)."""

    def publish_all(folder: Path) -> None:
        with Registry.init(folder / "registry") as reg:
            for kind in sorted(KINDS):
                publish_kind(reg, kind, folder)

    return made_once(tmp_path_factory, "zoo", publish_all)


@pytest.fixture(scope="module")
def zoo_copy(tmp_path_factory: pytest.TempPathFactory, zoo_published: Path) -> Path:
    """This module's copy of the zoo registry (per xdist worker): its tests only read it."""
    return copy_registry(zoo_published / "registry", tmp_path_factory.mktemp("zoo") / "registry")


@pytest.fixture
def zoo(zoo_copy: Path) -> Iterator[Registry]:
    with Registry.open(zoo_copy) as reg:
        yield reg


@contextmanager
def exported_api(bundle: Path, log: Path) -> Iterator[Server]:
    """The exported bundle's `api.py`, started on a free port."""
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "api.py", "--port", str(port)], cwd=bundle, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield Server(proc, f"http://127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


# -- 1. every kind publishes, loads, exports and serves ---------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_serves_over_rest_grpc_and_export(kind: str, zoo: Registry, fake_lm: Any, tmp_path: Path) -> None:
    spec, name = KINDS[kind], program_name(kind)
    bundle = tmp_path / "export"
    zoo.export(zoo.resolve(f"{name}/v1.0"), bundle)
    with (
        grpc_serve(zoo.location, tmp_path, f"{name}/v1.0") as (srv, channel, _),
        exported_api(bundle, tmp_path / "api.log") as exported,
    ):  # both start up while the published interface and the loaded program are checked
        interface = json.loads(zoo.store.read_blob(zoo.resolve(f"{name}/v1.0").commit, f"{name}/interface.json"))
        assert [f["name"] for f in interface["inputs"] if f["required"]] == [
            n for n in spec.inputs if n != "limit"
        ]  # what callers pass, never a module's internal field (ReAct's trajectory)
        outputs = {f["name"]: f["type"] for f in interface["outputs"]}
        assert set(spec.outputs) <= set(outputs)
        if "trajectory" in outputs:
            assert outputs["trajectory"].startswith("dict")  # what the program returns, not ReAct's input field

        loaded = dspy_registry.load(name, "v1.0", registry=zoo.location)
        with dspy.context(lm=dspy.LM("openai/fake-model", api_base=fake_lm.base_url, api_key="k", cache=False)):
            assert set(spec.outputs) <= set(loaded(**spec.inputs).keys())

        pb2, stubs = client_modules(proto_of(zoo, f"{name}/v1.0"), name, tmp_path)
        service = next(iter(pb2.DESCRIPTOR.services_by_name))
        request_type = getattr(pb2, pb2.DESCRIPTOR.services_by_name[service].methods_by_name["Predict"].input_type.name)
        srv.wait_ready()
        wait_serving(channel)
        status, rest, _ = srv.post("/predict", spec.inputs)
        assert status == 200, rest
        assert set(spec.outputs) <= {k for k, v in rest.items() if v is not None or k == "note"}
        reply = getattr(stubs, f"{service}Stub")(channel).Predict(grpc_request(request_type, spec.inputs), timeout=60)
        for field in spec.outputs:  # REST and gRPC: two doors to one call path
            if isinstance(rest[field], str) and interface_type(interface, field) == "str":
                assert getattr(reply, field) == rest[field]

        exported.wait_ready()
        status, body, _ = exported.post("/predict", spec.inputs)
        assert status == 200, body
        assert set(spec.outputs) <= set(body)


def interface_type(interface: dict[str, Any], name: str) -> str:
    return str(next(f["type"] for f in interface["outputs"] if f["name"] == name))


# -- 2. the loaded program renders the optimized prompts, byte for byte -----------------------------------------------
@pytest.mark.parametrize("adapter", [dspy.ChatAdapter, dspy.JSONAdapter], ids=["chat", "json"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_loaded_program_renders_the_same_messages(kind: str, adapter: type[dspy.Adapter], zoo: Registry) -> None:
    original = optimize(kind, import_program(spec_of(kind)).program)  # the program zoo_published published
    loaded = dspy_registry.load(program_name(kind), "v1.0", registry=zoo.location)
    loaded_predictors = dict(loaded.named_predictors())
    assert list(loaded_predictors) == [name for name, _ in original.named_predictors()]
    for name, predictor in original.named_predictors():
        inputs = {field: f"sample {field}" for field in predictor.signature.input_fields}
        before = adapter().format(predictor.signature, predictor.demos, inputs)
        other = loaded_predictors[name]
        after = adapter().format(other.signature, other.demos, inputs)
        assert predictor.demos, f"{kind} {name} has no demos to compare"
        assert [m["content"] for m in after] == [m["content"] for m in before], f"{kind} {name}"


def test_program_json_keeps_the_order_of_demo_values(zoo: Registry, zoo_published: Path) -> None:
    path = zoo_published / "typed.json"  # the state file that was published
    commit = zoo.resolve("zoo_typed/v1.0").commit
    stored = json.loads(zoo.store.read_blob(commit, "zoo_typed/program.json"))
    demo = stored["demos"][0]
    assert list(demo["details"]) == ["zeta", "alpha"] and list(demo["details"]["alpha"]) == ["y", "b"]
    assert list(demo["verdict"]) == ["score", "label"]
    assert stored == read_state_file(path) | {"metadata": stored["metadata"]}
    prompt = zoo.store.read_blob(commit, "zoo_typed/prompts/self.md").decode()
    assert '"verdict": {"score": 0.75, "label": "yes"}' in prompt or '{"score": 0.75, "label": "yes"}' in prompt


# -- 3. demos that DSPy would not render are refused, or published with a loud warning --------------------------------
def renamed_state(tmp_path: Path) -> Path:
    """The cot kind's state with its demos' `question` renamed to `query`, as after renaming a signature field."""
    _, path = optimized_state("cot", tmp_path)
    state = json.loads(path.read_text())
    state["predict"]["demos"] = [
        {("query" if k == "question" else k): v for k, v in d.items()} for d in state["predict"]["demos"]
    ]
    path.write_text(json.dumps(state))
    return path


def test_demos_with_renamed_fields_are_refused(registry: Registry, tmp_path: Path) -> None:
    path = renamed_state(tmp_path)
    before = ref_snapshot(Path(registry.location))
    result = runner.invoke(
        app, [*publish_args(spec_of("cot"), path, "v1.0", name="cot"), "--registry", registry.location]
    )
    assert result.exit_code == 1, result.output
    line = result.stderr.strip()
    assert "\n" not in line and "'predict'" in line and "query" in line and "question" in line
    assert "--allow-unrendered-demos" in line
    assert ref_snapshot(Path(registry.location)) == before
    with pytest.raises(BadState, match="predict"):
        registry.publish(import_program(spec_of("cot")), read_state_file(path), name="cot", version="v1.0")


def test_unrendered_demos_publish_with_a_warning_when_allowed(registry: Registry, tmp_path: Path) -> None:
    path = renamed_state(tmp_path)
    args = [*publish_args(spec_of("cot"), path, "v1.0", name="cot"), "--allow-unrendered-demos"]
    result = runner.invoke(app, [*args, "--registry", registry.location])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "not be rendered" in result.stderr
    commit = registry.resolve("cot/v1.0").commit
    header = registry.store.read_blob(commit, "cot/prompts/predict.md").decode().splitlines()[2]
    assert "with 0 demos" in header  # what DSPy renders, not what the state holds

    program = optimize("mcc", import_program(spec_of("mcc")).program)
    program.attempt.predict.demos = [dspy.Example(query="q", reasoning="r", answer="a")]
    with pytest.raises(BadState, match=r"'attempt\.predict'.*query"):
        dspy_registry.publish(program, name="mcc", version="v1.0", registry=registry.location)
    result_api = dspy_registry.publish(
        program, name="mcc", version="v1.0", registry=registry.location, allow_unrendered_demos=True
    )
    assert any("not be rendered" in w for w in result_api.warnings)
