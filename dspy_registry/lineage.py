"""The manifest's [lineage]: what produced a version (data, optimizer, code, host), as frozen records.

A leaf, like manifest.py which reads it: pure values, their TOML and JSON forms, and the check of a [lineage] table
read back from git (written by anyone: every value by type, naming the key). What is recorded at publish is gathered
by provenance.py. TOML has no null: an absent key means unknown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_SHA256 = re.compile(r"[0-9a-f]{64}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class DatasetDigest:
    """A trainset or devset: sha256 of the canonical JSON of its examples, in order, and how many there are."""

    sha256: str
    size: int


@dataclass(frozen=True)
class OptimizerLineage:
    """The optimizer object's class and its plain constructor arguments (secrets, metrics and LMs never stored)."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CodeLineage:
    """The commit of the git work tree the program's source lives in, and whether that source differs from it."""

    commit: str
    dirty: bool


@dataclass(frozen=True)
class Lineage:
    trainset: DatasetDigest | None = None
    devset: DatasetDigest | None = None
    optimizer: OptimizerLineage | None = None
    code: CodeLineage | None = None
    host: Mapping[str, str] = field(default_factory=dict)  # the publishing host's python, dspy, litellm

    @property
    def is_empty(self) -> bool:
        return self == Lineage()

    def to_toml(self) -> dict[str, Any]:
        """Nested tables, in the order they print: [lineage.trainset], .devset, .optimizer(.args), .code, .host."""
        table: dict[str, Any] = {}
        for key, data in (("trainset", self.trainset), ("devset", self.devset)):
            if data is not None:
                table[key] = {"sha256": data.sha256, "size": data.size}
        if self.optimizer is not None:
            table["optimizer"] = {"class": self.optimizer.name}
            if self.optimizer.args:
                table["optimizer"]["args"] = dict(self.optimizer.args)
        if self.code is not None:
            table["code"] = {"commit": self.code.commit, "dirty": self.code.dirty}
        if self.host:
            table["host"] = dict(self.host)
        return table

    def to_json(self) -> dict[str, Any]:
        """`show --json`'s manifest.lineage: every part present, null when unknown."""
        table = self.to_toml()
        return {key: table.get(key) for key in ("trainset", "devset", "optimizer", "code", "host")}

    def flat(self) -> dict[str, Any]:
        """diff metadata keys: a dataset or the code as one value (it changes as a whole), each optimizer argument
        and host version on its own."""
        table = self.to_toml()
        flat: dict[str, Any] = {f"lineage.{key}": table[key] for key in ("trainset", "devset", "code") if key in table}
        if self.optimizer is not None:
            flat["lineage.optimizer"] = self.optimizer.name
            flat |= {f"lineage.optimizer.args.{k}": v for k, v in self.optimizer.args.items()}
        flat |= {f"lineage.host.{k}": v for k, v in self.host.items()}
        return flat

    @classmethod
    def from_toml(cls, data: Any, where: str) -> Lineage:
        """A [lineage] table read back from git; ValueError names the table and key at fault. Unknown keys are left
        out (a newer dspyreg may record more), never shown."""
        lineage = _table(data, where, "lineage")
        sets = {key: _dataset(lineage, key, where) for key in ("trainset", "devset")}
        optimizer = None
        if "optimizer" in lineage:
            table = _table(lineage["optimizer"], where, "lineage.optimizer")
            args = _table(table.get("args", {}), where, "lineage.optimizer.args")
            for key, value in args.items():
                plain = isinstance(value, _SCALARS) or (
                    isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value)
                )
                if not plain:
                    raise ValueError(f"{where}: [lineage.optimizer.args] {key} has the wrong type: {value!r}")
            optimizer = OptimizerLineage(_text(table, "class", where, "lineage.optimizer"), dict(args))
        code = None
        if "code" in lineage:
            table = _table(lineage["code"], where, "lineage.code")
            commit = _text(table, "commit", where, "lineage.code")
            if not _COMMIT.fullmatch(commit):
                raise ValueError(f"{where}: [lineage.code] commit is not a git commit id: {commit!r}")
            dirty = table.get("dirty")
            if not isinstance(dirty, bool):
                raise ValueError(f"{where}: [lineage.code] dirty has the wrong type: {dirty!r}")
            code = CodeLineage(commit, dirty)
        host = _table(lineage.get("host", {}), where, "lineage.host")
        for key, value in host.items():
            if not isinstance(value, str):
                raise ValueError(f"{where}: [lineage.host] {key} has the wrong type: {value!r}")
        return cls(sets["trainset"], sets["devset"], optimizer, code, dict(host))


def _table(value: Any, where: str, name: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: [{name}] must be a table, got {value!r}")
    return value


def _text(table: Mapping[str, Any], key: str, where: str, name: str) -> str:
    value = table.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{where}: [{name}] {key} has the wrong type: {value!r}")
    return value


def _dataset(lineage: Mapping[str, Any], key: str, where: str) -> DatasetDigest | None:
    if key not in lineage:
        return None
    table = _table(lineage[key], where, f"lineage.{key}")
    digest = _text(table, "sha256", where, f"lineage.{key}")
    if not _SHA256.fullmatch(digest):
        raise ValueError(f"{where}: [lineage.{key}] sha256 is not a sha256 hex digest: {digest!r}")
    size = table.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{where}: [lineage.{key}] size has the wrong type: {size!r}")
    return DatasetDigest(digest, size)


def describe(key: str, value: Any) -> str | None:
    """A lineage value of diff metadata or show as a person reads it (`240 examples (sha256 3c4d5e6f7a8b)`,
    `def4567890ab (dirty)`); None for any other value."""
    if not isinstance(value, Mapping):
        return None
    if key in ("lineage.trainset", "lineage.devset") and {"size", "sha256"} <= value.keys():
        return f"{value['size']} examples (sha256 {str(value['sha256'])[:12]})"
    if key == "lineage.code" and "commit" in value:
        return f"{str(value['commit'])[:12]}{' (dirty)' if value.get('dirty') else ''}"
    return None
