"""A version's gRPC field numbers are fixed when it is published (field-numbers.json in its bundle), so a version
published later (a hotfix of an older line) never changes an earlier version's .proto, and `dspyreg proto` reads the
version's own files only. Versions published before the table existed keep their history-numbered .proto."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry import bundle as bundle_module
from dspy_registry import field_numbers, proto
from dspy_registry.cli import app
from dspy_registry.refs import version_key
from dspy_registry.registry import Registry

from .grpc_clients import publish_source
from .security.forge import forge_version

runner = CliRunner()


def program(inputs: list[str], outputs: list[str]) -> str:
    """The source of a one-predictor program `Grow` with these str inputs and outputs."""
    fields = [f'    {n}: str = dspy.InputField(desc="The {n}.")' for n in inputs]
    fields += [f'    {n}: str = dspy.OutputField(desc="The {n}.")' for n in outputs]
    args = ", ".join(f"{n}: str" for n in inputs)
    call = ", ".join(f"{n}={n}" for n in inputs)
    return "\n".join(
        [
            "import dspy",
            "",
            "",
            "class Ask(dspy.Signature):",
            '    """Answer."""',
            "",
            *fields,
            "",
            "",
            "class Grow(dspy.Module):",
            "    def __init__(self):",
            "        super().__init__()",
            "        self.ask = dspy.Predict(Ask)",
            "",
            f"    def forward(self, {args}):",
            f"        return self.ask({call})",
            "",
        ]
    )


def publish(reg: Registry, tmp_path: Path, version: str, inputs: list[str], outputs: list[str]) -> str:
    return publish_source(reg, tmp_path, program(inputs, outputs), "Grow", "grow", version)


def proto_of(reg: Registry, version: str) -> str:
    return reg.proto(reg.resolve(version, "grow"))


def test_a_hotfix_of_an_older_line_never_changes_a_later_versions_proto(registry: Registry, tmp_path: Path) -> None:
    """v2.0 adds the output `sources`; a hotfix v1.0.1 published after it adds `note`: v2.0's numbers stay."""
    publish(registry, tmp_path, "v1.0", ["question"], ["answer"])
    publish(registry, tmp_path, "v2.0", ["question"], ["answer", "sources"])
    before = proto_of(registry, "v2.0")
    assert "optional string sources = 2;" in before
    publish(registry, tmp_path, "v1.0.1", ["question"], ["answer", "note"])
    assert proto_of(registry, "v2.0") == before
    assert "optional string note = 2;" in proto_of(registry, "v1.0.1")  # numbered on top of v1.0, its own line


def history_proto(reg: Registry, version: str) -> str:
    """What `proto` printed before tables were stored: the version numbered by the interface.json of every published
    version up to it, in semantic-version order (proto.program_proto, unchanged)."""
    target = reg.resolve(version, "grow")
    commits = [c for v, c in reg.version_commits("grow") if version_key(v) <= version_key(target.version)]
    return proto.program_proto("grow", [reg.store.read_blob(c, "grow/interface.json") for c in commits])


SHAPES = [  # (version, inputs, outputs), published in increasing order
    ("v1.0", ["question"], ["answer"]),
    ("v1.1", ["question", "context"], ["answer"]),
    ("v1.2", ["question", "context"], ["answer", "sources"]),
    ("v2.0", ["question"], ["sources", "verdict"]),
]


def test_tables_print_what_history_numbering_printed(registry: Registry, tmp_path: Path) -> None:
    """Versions published in increasing order: each one's .proto from its table is byte for byte the one numbered by
    its whole history, and the table is a bundle file like any other (in [files] with its sha256, verified)."""
    for version, inputs, outputs in SHAPES:
        publish(registry, tmp_path, version, inputs, outputs)
    for version, _, _ in SHAPES:
        assert proto_of(registry, version) == history_proto(registry, version), version
        resolved = registry.resolve(version, "grow")
        stored = registry.store.read_blob(resolved.commit, "grow/field-numbers.json")
        assert stored is not None
        manifest = registry.manifest(resolved)
        assert manifest.files["field-numbers.json"] == hashlib.sha256(stored).hexdigest()
        assert registry.verify(f"grow/{version}") == []
    table = json.loads(registry.store.read_blob(registry.resolve("v2.0", "grow").commit, "grow/field-numbers.json"))
    assert table == {
        "format": 1,
        "numbers": {
            "GrowRequest": {"context string": 2, "question string": 1},
            "GrowResponse": {"answer string": 1, "sources string": 2, "verdict string": 3},
        },
    }
    assert '  reserved 2;\n  reserved "context";' in proto_of(registry, "v2.0")


def test_proto_reads_the_versions_own_files_only(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No tag listing and no earlier version read: the cost of `proto` does not grow with history."""
    for version, inputs, outputs in SHAPES:
        publish(registry, tmp_path, version, inputs, outputs)
    trace = tmp_path / "trace2.json"
    monkeypatch.setenv("GIT_TRACE2_EVENT", str(trace))
    result = runner.invoke(app, ["proto", "grow/v1.2", "--registry", registry.location])
    monkeypatch.delenv("GIT_TRACE2_EVENT")
    assert result.exit_code == 0, result.output
    commands = git_commands(trace)
    assert not [c for c in commands if "for-each-ref" in c], commands
    earlier = {registry.resolve(v, "grow").commit for v in ("v1.0", "v1.1")}
    assert not [c for c in commands if earlier & set(" ".join(c).split())], commands


def git_commands(trace: Path) -> list[list[str]]:
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    return [e["argv"][1:] for e in events if e.get("event") == "start"]


def without_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish as dspyreg did before field-numbers.json: build_bundle is handed nothing to number with."""
    built = bundle_module.build_bundle

    def before_tables(*args: Any, **kwargs: Any) -> Any:
        return built(*args, **{**kwargs, "field_numbers": None})

    monkeypatch.setattr(bundle_module, "build_bundle", before_tables)


def test_versions_published_before_tables_print_what_they_printed(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Old-format versions keep their history-numbered .proto (the same bytes as before), a new version on top of
    them is numbered by that history once, and an old version published between new ones is numbered by them."""
    without_table(monkeypatch)
    for version, inputs, outputs in SHAPES[:2]:
        publish(registry, tmp_path, version, inputs, outputs)
    monkeypatch.undo()
    before = {v: history_proto(registry, v) for v in ("v1.0", "v1.1")}
    assert {v: proto_of(registry, v) for v in before} == before
    assert registry.store.read_blob(registry.resolve("v1.1", "grow").commit, "grow/field-numbers.json") is None

    publish(registry, tmp_path, *SHAPES[2])  # v1.2: the first table, numbered by v1.0 and v1.1
    assert proto_of(registry, "v1.2") == history_proto(registry, "v1.2")
    without_table(monkeypatch)
    publish(registry, tmp_path, "v1.3", ["question"], ["answer", "note"])  # an older dspyreg publishes again
    monkeypatch.undo()
    publish(registry, tmp_path, *SHAPES[3])  # v2.0: v1.2's table, then v1.3's interface, then its own
    for version in ("v1.0", "v1.1", "v1.2", "v1.3", "v2.0"):
        assert proto_of(registry, version) == history_proto(registry, version), version
    reserved = [line for line in proto_of(registry, "v2.0").splitlines() if line.lstrip().startswith("reserved")]
    assert any('"note"' in line for line in reserved), reserved
    assert {v: proto_of(registry, v) for v in before} == before  # later versions change no earlier .proto


def test_a_table_that_does_not_number_its_own_interface_is_not_used(registry: Registry, tmp_path: Path) -> None:
    """A bundle assembled by hand whose table misses one of its fields: the version is numbered by its history, as
    a version without a table is (never a field without a number)."""
    publish(registry, tmp_path, "v1.0", ["question"], ["answer"])
    publish(registry, tmp_path, "v1.1", ["question"], ["answer", "sources"])
    repo = Path(registry.location)
    partial = {"format": 1, "numbers": {"GrowRequest": {"question string": 1}, "GrowResponse": {"answer string": 1}}}
    forge_version(
        repo,
        {("field-numbers.json",): ("100644", json.dumps(partial).encode())},
        version="v1.2",
        base="grow/v1.1",
        program="grow",
    )
    registry.store.close()
    assert proto_of(registry, "v1.2") == history_proto(registry, "v1.2")
    assert "optional string sources = 2;" in proto_of(registry, "v1.2")
    publish(registry, tmp_path, "v1.3", ["question"], ["answer", "sources", "note"])  # on v1.1's table, past v1.2
    assert proto_of(registry, "v1.3") == history_proto(registry, "v1.3")


def test_encode_is_sorted_and_versioned() -> None:
    data = field_numbers.encode({"B": {"y string": 2, "x string": 1}, "A": {"q string": 1}})
    assert data.decode() == (
        '{\n  "format": 1,\n  "numbers": {\n    "A": {\n      "q string": 1\n    },\n    "B": {\n'
        '      "x string": 1,\n      "y string": 2\n    }\n  }\n}\n'
    )
    assert field_numbers.decode(data, "t v1") == {"A": {"q string": 1}, "B": {"x string": 1, "y string": 2}}
