"""A version's gRPC field numbers are fixed when it is published (field-numbers.json in its bundle), so a version
published later (a hotfix of an older line) never changes an earlier version's .proto, and `dspyreg proto` reads the
version's own files only. Versions published before the table existed keep their history-numbered .proto."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dspy_registry.registry import Registry

from .grpc_clients import publish_source

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
