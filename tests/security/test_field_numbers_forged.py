"""A version's field-numbers.json is read from git, where anyone with push access may write one (with a manifest
whose sha256 matches, as forge_version writes it): a table dspyreg would not have written is a problem `verify`
reports, and one line naming the version and the file for `proto` and `export` (verified or not) and for a publish
numbered on top of it; never a crash or a wrong .proto."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.errors import BadFieldNumbers
from dspy_registry.field_numbers import MAX_BYTES, MAX_NUMBERS
from dspy_registry.registry import Registry

from ..conftest import publish_example
from .forge import forge_version, plumb

runner = CliRunner()


def stored_numbers(registry: Registry) -> dict[str, dict[str, int]]:
    """The table qa v1.1 was published with (the real one, to tamper with)."""
    table = json.loads(plumb(Path(registry.location), "cat-file", "blob", "qa/v1.1:qa/field-numbers.json"))
    numbers: dict[str, dict[str, int]] = table["numbers"]
    return numbers


def with_numbers(numbers: dict[str, Any]) -> bytes:
    return json.dumps({"format": 1, "numbers": numbers}).encode()


def first_key(numbers: dict[str, dict[str, int]]) -> tuple[str, str]:
    scope = sorted(numbers)[0]
    return scope, sorted(numbers[scope])[0]


def tampered(kind: str, numbers: dict[str, dict[str, int]]) -> bytes:
    scope, key = first_key(numbers)
    changed = {s: dict(keys) for s, keys in numbers.items()}
    if kind == "not JSON":
        return b"{not json"
    if kind == "nested too deep":
        return b"[" * 100_000 + b"]" * 100_000
    if kind == "another format":
        return json.dumps({"format": 2, "numbers": numbers}).encode()
    if kind == "a list":
        return b"[1, 2]"
    if kind == "numbers not objects":
        return with_numbers({scope: [1, 2]})
    if kind == "too large":
        return with_numbers(numbers) + b" " * MAX_BYTES
    if kind == "too many numbers":
        return with_numbers({scope: {f"f{i} string": i + 1 for i in range(MAX_NUMBERS + 1)}})
    changed[scope][key] = {
        "zero": 0,
        "negative": -1,
        "past protobuf's largest": 2**29,
        "reserved by protobuf": 19_500,
        "a boolean": True,
        "a string": "1",
        "a float": 1.0,
        "a duplicate": max(changed[scope].values()) + 1,
    }[kind]
    if kind == "a duplicate":
        changed[scope]["another string"] = changed[scope][key]
    return with_numbers(changed)


KINDS = [
    "not JSON",
    "nested too deep",
    "another format",
    "a list",
    "numbers not objects",
    "too large",
    "too many numbers",
    "zero",
    "negative",
    "past protobuf's largest",
    "reserved by protobuf",
    "a boolean",
    "a string",
    "a float",
    "a duplicate",
]


@pytest.mark.parametrize("kind", KINDS)
def test_a_forged_table_is_one_line_naming_the_version(
    published: Registry, states: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    data = tampered(kind, stored_numbers(published))
    forge_version(Path(published.location), {("field-numbers.json",): ("100644", data)}, version="v9.0")
    for args in (["proto", "qa/v9.0"], ["export", "qa/v9.0", str(tmp_path / "out")]):
        result = runner.invoke(app, [*args, "--registry", published.location])  # verified first: refused
        assert result.exit_code == 1, (args, result.output)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "qa/v9.0 fails verification: qa/v9.0:field-numbers.json" in lines[0], lines
        result = runner.invoke(app, [*args, "--no-verify", "--registry", published.location])  # read all the same
        assert result.exit_code == 1, (args, result.output)
        errors = [line for line in result.stderr.splitlines() if not line.startswith("warning: not verifying")]
        assert len(errors) == 1 and "error: qa v9.0: field-numbers.json" in errors[0], (args, result.stderr)
    result = runner.invoke(app, ["verify", "qa/v9.0", "--registry", published.location])
    assert result.exit_code == 1 and "qa/v9.0:field-numbers.json" in result.output, result.output
    assert not (tmp_path / "out").exists()
    with pytest.raises(BadFieldNumbers, match=re.escape("qa v9.0: field-numbers.json")):
        publish_example(published, states["v1.1"], "v9.1")  # numbered on top of v9.0: refused, nothing written
    assert plumb(Path(published.location), "tag", "--list", "qa/v9.1") == ""


def test_a_valid_forged_table_numbers_only_what_it_says(published: Registry) -> None:
    """Valid numbers moved by hand (manifest matching) are what that version's .proto says: the table is the
    version's contract, as its interface.json is; signing, not the table's shape, says who wrote it."""
    numbers = stored_numbers(published)
    scope, key = first_key(numbers)
    numbers[scope][key] = 18_999
    forge_version(
        Path(published.location), {("field-numbers.json",): ("100644", with_numbers(numbers))}, version="v9.0"
    )
    text = published.proto(published.resolve("qa/v9.0"))
    assert f" {key.split(' ')[0]} = 18999;" in text
    assert published.proto(published.resolve("qa/v1.1")) != text
