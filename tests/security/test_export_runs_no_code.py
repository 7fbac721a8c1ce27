"""`dspyreg export` and `dspyreg proto` never run registry code: the .proto is built from interface.json (the JSON
Schema of every field, recorded at publish), for the version and for the earlier versions that number its fields.

Registry code runs only when the user asks to load or serve it (load, serve, eval, bench, verify --load)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.registry import Registry

from ..grpc_clients import descriptors, publish_source
from .forge import forge_version, plumb
from .test_verify_static import PAYLOAD, marker  # noqa: F401 - `marker` is a fixture

runner = CliRunner()
ZOO = Path(__file__).resolve().parents[1] / "zoo" / "programs.py"


def cli(registry: Registry, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, [*args, "--registry", registry.location])
    return result.exit_code, result.output


def forge_named_type(registry: Registry, version: str, base: str, *, payload: bool) -> str:
    """qa `version`: `base`'s bundle with an output typed by a name only its code defines (`Verdict`, so reading
    the type from code would import it), and the payload appended to its code when `payload`."""
    repo = Path(registry.location)
    base_commit = plumb(repo, "rev-parse", f"{base}^{{commit}}")
    interface = json.loads(plumb(repo, "cat-file", "blob", f"{base_commit}:qa/interface.json"))
    interface["outputs"][0]["type"] = "Verdict"
    interface["outputs"][0].pop("schema", None)  # as a version published before schemas were recorded
    code = plumb(repo, "cat-file", "blob", f"{base_commit}:qa/code/qa_program.py").split(PAYLOAD)[0]
    extra = {
        ("interface.json",): ("100644", json.dumps(interface).encode()),
        ("code", "qa_program.py"): ("100644", (code.rstrip("\n") + "\n" + (PAYLOAD if payload else "")).encode()),
    }
    return forge_version(repo, extra, version=version, base=base)


@pytest.mark.parametrize("payload_in", ["the version", "an earlier version"])
def test_export_and_proto_never_import_bundled_code(
    published: Registry,
    tmp_path: Path,
    marker: Path,  # noqa: F811 - the fixture imported above
    payload_in: str,
) -> None:
    forge_named_type(published, "v9.0", "qa/v1.1", payload=True)
    target = "qa/v9.0"
    if payload_in == "an earlier version":  # the field numbers of v9.1 come from v9.0's interface too
        forge_named_type(published, "v9.1", "qa/v9.0", payload=False)
        target = "qa/v9.1"
    code, out = cli(published, "proto", target)
    assert code == 0, out
    assert not marker.exists(), "proto ran the bundled code"
    assert "// DSPy type: Verdict, as JSON text." in out  # a named type without a schema travels as JSON text
    code, out = cli(published, "export", target, str(tmp_path / "bundle"))
    assert code == 0, out
    assert (tmp_path / "bundle" / "qa.proto").is_file()
    assert not marker.exists(), "export ran the bundled code"


PROBE = """
import json, os, sys
from dspy_registry.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
except SystemExit:
    pass
cache = os.path.realpath(os.environ["DSPYREG_CACHE"])
from_registry = [
    name for name, module in list(sys.modules.items())
    if os.path.realpath(getattr(module, "__file__", None) or "/").startswith(cache)
]
print("IMPORTED=" + json.dumps({"dspy": "dspy" in sys.modules, "from_registry": from_registry}))
"""


def test_typed_proto_comes_from_interface_json(
    registry: Registry,
    tmp_path: Path,
    marker: Path,  # noqa: F811 - the fixture imported above
) -> None:
    source = ZOO.read_text()
    publish_source(registry, tmp_path, source + PAYLOAD, "make_typed", "typed", "v1.0")
    publish_source(registry, tmp_path, source, "make_typed", "typed", "v1.1")
    marker.unlink()  # publish imports the code: the user asked for it
    interface = json.loads(registry.store.read_blob(registry.resolve("typed/v1.1").commit, "typed/interface.json"))
    schemas = {f["name"]: f["schema"] for f in (*interface["inputs"], *interface["outputs"])}
    assert schemas["stance"] == {"enum": ["true", "false", "unsure"], "type": "string"}
    assert schemas["limit"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert schemas["verdict"]["properties"]["label"] == {"enum": ["yes", "no"], "title": "Label", "type": "string"}
    assert {f["name"]: f["type"] for f in interface["outputs"]}["verdict"] == "Verdict"  # the type text is kept

    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "proto", "typed/v1.1", "--registry", registry.location],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    text, imported = proc.stdout.rsplit("IMPORTED=", 1)
    assert json.loads(imported) == {"dspy": False, "from_registry": []}
    assert not marker.exists()

    pool = descriptors(text, "typed", tmp_path / "proto")
    request = pool.FindMessageTypeByName("dspyreg.typed.TypedRequest")
    response = pool.FindMessageTypeByName("dspyreg.typed.TypedResponse")
    f = request.fields_by_name
    assert (f["claim"].type, f["claim"].has_presence) == (f["claim"].TYPE_STRING, True)
    assert (f["tags"].type, f["tags"].is_repeated) == (f["tags"].TYPE_STRING, True)
    assert (f["limit"].type, f["limit"].has_presence) == (f["limit"].TYPE_INT64, True)  # Optional[int]
    f = response.fields_by_name
    assert [v.name for v in f["stance"].enum_type.values] == [
        "STANCE_UNSPECIFIED",
        "STANCE_TRUE",
        "STANCE_FALSE",
        "STANCE_UNSURE",
    ]
    assert f["count"].type == f["count"].TYPE_INT64 and f["confidence"].type == f["confidence"].TYPE_DOUBLE
    assert f["supported"].type == f["supported"].TYPE_BOOL
    assert (f["keywords"].type, f["keywords"].is_repeated) == (f["keywords"].TYPE_STRING, True)
    assert f["details"].type == f["details"].TYPE_STRING and "dict[str, Any], as JSON text" in text
    assert (f["note"].type, f["note"].has_presence) == (f["note"].TYPE_STRING, True)  # Optional[str]
    verdict = f["verdict"].message_type
    assert verdict.full_name == "dspyreg.typed.Verdict"
    assert [(v.name, v.number) for v in verdict.fields] == [("score", 1), ("label", 2)]  # the model's order
    assert verdict.fields_by_name["score"].type == verdict.fields_by_name["score"].TYPE_DOUBLE
    assert [v.name for v in verdict.fields_by_name["label"].enum_type.values] == [
        "LABEL_UNSPECIFIED",
        "LABEL_YES",
        "LABEL_NO",
    ]
