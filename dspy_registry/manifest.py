"""manifest.toml and registry.toml <-> frozen dataclasses (tomlkit). TOML has no null: absent keys mean None."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import RegistryError
from .lineage import Lineage
from .refs import DEFAULT_ENVIRONMENTS, ROLLBACK_ENV, check_environment
from .runtime.drift import PACKAGES, POLICIES
from .signing import SigningConfig
from .tokens import TokenFigures

if TYPE_CHECKING:
    import tomlkit.items


class _TomlError(Exception):
    """TOML that does not parse, with tomlkit's message (the one dspyreg has always shown)."""


def _parse_toml(text: str) -> dict[str, Any]:
    """A TOML document as plain Python values.

    Reads take the standard library's parser where there is one (3.11+): importing tomlkit costs a read command a
    tenth of its 0.1 s budget. A document it refuses is parsed again by tomlkit, so the error message is tomlkit's as
    before; writes (to_toml) keep tomlkit, which preserves comments and layout."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pass
    else:
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            pass
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        return tomlkit.parse(text).unwrap()
    except TOMLKitError as err:
        raise _TomlError(str(err)) from None


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
    # Prompt tokens and list-price cost measured at publish (tokens.py). Additive: None for older versions.
    tokens: TokenFigures | None = None
    # What produced the version (lineage.py). Additive like saved_with: absent reads as empty.
    lineage: Lineage = field(default_factory=Lineage)

    def dumps(self) -> str:
        import tomlkit

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
        if not self.lineage.is_empty:
            doc["lineage"] = self.lineage.to_toml()
        doc["files"] = _table(dict(sorted(self.files.items())))
        if self.tokens is not None:
            figures = self.tokens.to_table()
            predictors = tomlkit.table()
            for name, counts in figures.pop("predictors").items():
                predictors[name] = tomlkit.inline_table()  # one line per predictor: `qa = {tokens = 9, calls = 1}`
                predictors[name].update(counts)
            doc["tokens"] = _table(figures)
            doc["tokens"]["predictors"] = predictors
        return tomlkit.dumps(doc)

    @classmethod
    def loads(cls, text: str | bytes, *, where: str = "manifest.toml") -> Manifest:
        try:
            if isinstance(text, bytes):
                text = text.decode("utf-8")
            data = _parse_toml(text)
            version = data.get("schema_version")
            if version != SCHEMA_VERSION:
                raise BadManifest(
                    f"{where}: unsupported schema_version {version!r} (this dspyreg reads {SCHEMA_VERSION})"
                )
            _check_manifest_types(data, where)
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
                tokens=_tokens(data.get("tokens"), where),
                lineage=_lineage(data.get("lineage", {}), where),
            )
        except BadManifest:
            raise
        except (_TomlError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise BadManifest(f"{where} is not a valid dspyreg manifest: {err}") from None


# The values every reader of a manifest formats or compares (a bundle committed by hand may hold anything).
_TEXT = (str,)
_NUMBER = (int, float)
_MANIFEST_TYPES: dict[str, dict[str, tuple[type, ...]]] = {
    # entrypoint is left to verify, which names what is wrong with it (not a string, outside code/...)
    "program": {k: _TEXT for k in ("name", "version", "created", "author", "notes")},
    "optimization": {"optimizer": _TEXT, "trainset_size": (int,), "dev_score": _NUMBER, "metrics": (dict,)},
}


def _check_manifest_types(data: Mapping[str, Any], where: str) -> None:
    for table in ("program", "optimization", "runtime", "lm", "files"):
        if not isinstance(data.get(table, {}), dict):
            raise BadManifest(f"{where}: [{table}] must be a table")
    for table, types in _MANIFEST_TYPES.items():
        for key, value in data.get(table, {}).items():
            if key in types and (isinstance(value, bool) or not isinstance(value, types[key])):
                raise BadManifest(f"{where}: [{table}] {key} has the wrong type: {value!r}")
    metrics = data.get("optimization", {}).get("metrics", {})
    for table, values, kinds in (
        ("optimization.metrics", metrics, _NUMBER),
        ("runtime", data.get("runtime", {}), _TEXT),
        ("files", data.get("files", {}), _TEXT),
    ):
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise BadManifest(f"{where}: [{table}] {key} has the wrong type: {value!r}")


def _tokens(table: Any, where: str) -> TokenFigures | None:
    if table is None:
        return None
    try:
        return TokenFigures.from_table(table, where)
    except ValueError as err:
        raise BadManifest(str(err)) from None


def _lineage(table: Any, where: str) -> Lineage:
    try:
        return Lineage.from_toml(table, where)
    except ValueError as err:
        raise BadManifest(str(err)) from None


def _strings(table: Any, where: str) -> dict[str, str]:
    """A table of version strings, as read from git: anything else is a forged or broken manifest."""
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise BadManifest(f"{where} must be a table of version strings")
    return dict(table)


def _table(values: Mapping[str, Any]) -> tomlkit.items.Table:
    import tomlkit

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
    runtime: Mapping[str, str] = field(default_factory=dict)  # drift policy per package (runtime/drift.py)

    @classmethod
    def loads(cls, text: str | bytes) -> RegistryConfig:
        """Parse and validate every value by type; a BadManifest names the table and key at fault."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as err:
                raise BadManifest(f"registry.toml is not UTF-8 text (byte {err.start})") from None
        try:
            data = _parse_toml(text)
        except _TomlError as err:
            raise BadManifest(f"registry.toml is not valid TOML: {err}") from None
        version = data.get("schema_version")
        # `true == 1` in Python: the type is checked too.
        if type(version) is not int or version != REGISTRY_SCHEMA_VERSION:
            raise BadManifest(
                f"registry.toml: unsupported schema_version {version!r} (this dspyreg reads {REGISTRY_SCHEMA_VERSION})"
            )
        # An unknown table is refused, not ignored: `[gate.prod]` for `[gates.prod]` would silently drop a gate,
        # and a dspyreg that ignored a newer policy table would not enforce it.
        _no_unknown_keys(data, {"schema_version", *REGISTRY_TABLES}, "registry.toml: unknown table or key")
        environments = _sub_table(data, "environments", "registry.toml: environments")
        _no_unknown_keys(environments, {"order"}, "registry.toml: [environments] has unknown key")
        order = environments.get("order", list(DEFAULT_ENVIRONMENTS))
        if not isinstance(order, list) or not all(isinstance(env, str) for env in order):
            raise BadManifest(f"registry.toml: [environments] order must be a list of names, got {order!r}")
        envs = tuple(order)
        for env in envs:
            try:
                check_environment(env)
            except RegistryError as err:
                raise BadManifest(f"registry.toml: [environments] order: {err}") from None
        if ROLLBACK_ENV in envs or len(set(envs)) != len(envs) or not envs:
            raise BadManifest("registry.toml: [environments] order must be unique names, without `rollback`")
        gates = _sub_table(data, "gates", "registry.toml: gates")
        for env in gates:
            if env not in envs:
                raise BadManifest(
                    f"registry.toml: [gates.{env}] names no environment of [environments] order ({', '.join(envs)})"
                )
            values = _sub_table(gates, env, f"registry.toml: gates.{env}")
            _no_unknown_keys(values, set(GATE_CHECKS), f"registry.toml: [gates.{env}] has unknown key")
            for key, value in values.items():
                GATE_CHECKS[key](f"registry.toml: [gates.{env}] {key}", value)
        try:
            signing = SigningConfig.from_toml(data.get("signing"), envs)
        except ValueError as err:
            raise BadManifest(f"registry.toml: {err}") from None
        runtime = _sub_table(data, "runtime", "registry.toml: runtime")
        _no_unknown_keys(runtime, set(PACKAGES), "registry.toml: [runtime] has unknown key")
        for key, value in runtime.items():
            if value not in POLICIES:
                raise BadManifest(f"registry.toml: [runtime] {key} must be one of {', '.join(POLICIES)}, got {value!r}")
        return cls(environments=envs, gates=dict(gates), signing=signing, schema_version=version, runtime=dict(runtime))


# The tables registry.toml may hold besides schema_version; a module that adds a table adds its name here.
REGISTRY_TABLES = {"environments", "gates", "signing", "runtime"}


def _fraction(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadManifest(f"{where} must be a number in [0, 1], got {value!r}")


def _boolean(where: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise BadManifest(f"{where} must be true or false, got {value!r}")


def _count(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadManifest(f"{where} must be a whole number (0 or more), got {value!r}")


def _delta(where: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
        raise BadManifest(f"{where} must be a score difference in [-1, 1], got {value!r}")


# Every key a [gates.<env>] table may hold, with its check; a new gate adds its key here.
GATE_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "min_dev_score": _fraction,
    "no_regression": _boolean,
    "require_eval": _boolean,
    "max_leakage": _count,  # dev examples found among the demos (a count: 0 means none may leak)
    "min_delta_ci_low": _delta,  # low end of the paired bootstrap 95% interval against the current version
    "approvals": _count,  # approvals from people other than the publisher (`dspyreg approve`)
}


def _sub_table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise BadManifest(f"{where} must be a table, got {value!r}")
    return value


def _no_unknown_keys(table: Mapping[str, Any], known: set[str], message: str) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise BadManifest(f"{message} {', '.join(unknown)} (known: {', '.join(sorted(known))})")
