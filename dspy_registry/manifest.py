"""manifest.toml and registry.toml <-> frozen dataclasses (tomlkit). TOML has no null: absent keys mean None."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from .errors import RegistryError
from .refs import DEFAULT_ENVIRONMENTS, ROLLBACK_ENV, check_environment
from .signing import SigningConfig

SCHEMA_VERSION = 1
REGISTRY_SCHEMA_VERSION = 1


class BadManifest(RegistryError):
    """A manifest.toml or registry.toml that does not follow its schema."""


@dataclass(frozen=True)
class ProgramInfo:
    name: str
    version: str
    entrypoint: str
    created: str
    author: str = ""
    notes: str = ""


@dataclass(frozen=True)
class Optimization:
    optimizer: str | None = None
    trainset_size: int | None = None
    dev_score: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    program: ProgramInfo
    optimization: Optimization
    runtime: Mapping[str, str]
    lm: Mapping[str, Any]
    files: Mapping[str, str]
    schema_version: int = SCHEMA_VERSION
    # `metadata.dependency_versions` of the published state: the DSPy and Python that saved it (the optimizer's
    # machine), beside [runtime], the publisher's. Additive: a schema_version 1 manifest without it reads as empty.
    saved_with: Mapping[str, str] = field(default_factory=dict)

    def dumps(self) -> str:
        doc = tomlkit.document()
        doc.add(tomlkit.comment("dspyreg bundle manifest: what this version is and the sha256 of every file"))
        doc["schema_version"] = self.schema_version
        doc["program"] = _table(vars(self.program))
        opt = {k: v for k, v in vars(self.optimization).items() if k != "metrics"}
        opt_table = _table(opt)
        if self.optimization.metrics:
            opt_table["metrics"] = _table(dict(self.optimization.metrics))
        doc["optimization"] = opt_table
        doc["runtime"] = _table(dict(self.runtime))
        if self.saved_with:
            doc["saved_with"] = _table(dict(self.saved_with))
        doc["lm"] = _table(dict(self.lm))
        doc["files"] = _table(dict(sorted(self.files.items())))
        return tomlkit.dumps(doc)

    @classmethod
    def loads(cls, text: str, *, where: str = "manifest.toml") -> Manifest:
        try:
            data = tomlkit.parse(text).unwrap()
            version = data.get("schema_version")
            if version != SCHEMA_VERSION:
                raise BadManifest(
                    f"{where}: unsupported schema_version {version!r} (this dspyreg reads {SCHEMA_VERSION})"
                )
            program = data["program"]
            opt = dict(data.get("optimization", {}))
            metrics = opt.pop("metrics", {})
            return cls(
                program=ProgramInfo(**program),
                optimization=Optimization(**opt, metrics=metrics),
                runtime=dict(data.get("runtime", {})),
                lm=dict(data.get("lm", {})),
                files=dict(data.get("files", {})),
                schema_version=version,
                saved_with=_strings(data.get("saved_with", {}), f"{where}: [saved_with]"),
            )
        except BadManifest:
            raise
        except (TOMLKitError, KeyError, TypeError) as err:
            raise BadManifest(f"{where} is not a valid dspyreg manifest: {err}") from None


def _strings(table: Any, where: str) -> dict[str, str]:
    """A table of version strings, as read from git: anything else is a forged or broken manifest."""
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise BadManifest(f"{where} must be a table of version strings")
    return dict(table)


def _table(values: Mapping[str, Any]) -> tomlkit.items.Table:
    table = tomlkit.table()
    for key, value in values.items():
        if value is not None:
            table[key] = value
    return table


@dataclass(frozen=True)
class RegistryConfig:
    """registry.toml at the root of `main`: schema version, environment order, promotion gates, signing."""

    environments: tuple[str, ...] = DEFAULT_ENVIRONMENTS
    gates: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    signing: SigningConfig = field(default_factory=SigningConfig)
    schema_version: int = REGISTRY_SCHEMA_VERSION

    @classmethod
    def loads(cls, text: str) -> RegistryConfig:
        try:
            data = tomlkit.parse(text).unwrap()
        except TOMLKitError as err:
            raise BadManifest(f"registry.toml is not valid TOML: {err}") from None
        version = data.get("schema_version")
        if version != REGISTRY_SCHEMA_VERSION:
            raise BadManifest(f"registry.toml: unsupported schema_version {version!r}")
        envs = tuple(data.get("environments", {}).get("order", DEFAULT_ENVIRONMENTS))
        for env in envs:
            check_environment(env)
        if ROLLBACK_ENV in envs or len(set(envs)) != len(envs) or not envs:
            raise BadManifest("registry.toml: [environments] order must be unique names, without `rollback`")
        try:
            signing = SigningConfig.from_toml(data.get("signing"), envs)
        except ValueError as err:
            raise BadManifest(f"registry.toml: {err}") from None
        return cls(environments=envs, gates=dict(data.get("gates", {})), signing=signing, schema_version=version)
