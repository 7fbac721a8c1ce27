"""What the registry's reads and writes return: frozen dataclasses, each with the JSON the CLI prints for it.

A leaf: it imports only manifest.py (for VersionDetail's type), so render.py, export.py and the CLI can name a result
without importing the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .manifest import Manifest


@dataclass(frozen=True)
class Resolved:
    """A ref resolved: the published version it names and that version's commit."""

    program: str
    version: str
    commit: str
    environment: str | None = None


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    commit: str
    created: str
    environments: tuple[str, ...]
    dev_score: float | None
    optimizer: str | None = None
    trainset_size: int | None = None
    notes: str = ""
    eval_score: float | None = None  # the latest `dspyreg eval` record, beside the publish-time dev_score

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "commit": self.commit,
            "created": self.created,
            "environments": list(self.environments),
            "dev_score": self.dev_score,
            "eval_score": self.eval_score,
            "optimizer": self.optimizer,
            "trainset_size": self.trainset_size,
            "notes": self.notes,
        }


# -- quality records -------------------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """What every quality record says of where it was taken: DSPy's version, the LM, the registry commit measured,
    the record's id and time. EvalRecord and BenchRecord add what they measured."""

    dspy_version: str | None = None
    lm: str | None = None
    commit: str | None = None
    id: str | None = None
    time: str = ""

    ALWAYS: ClassVar[frozenset[str]] = frozenset()  # fields written even when None (None says "unknown")

    @classmethod
    def common(cls, record: Mapping[str, Any], *text: str) -> dict[str, Any]:
        """The keyword arguments every record takes from its checked JSON, plus the optional `text` fields."""
        return {
            "time": record["time"],
            **{f: _text(record.get(f)) for f in (*text, "dspy_version", "lm", "commit", "id")},
        }

    def to_json(self) -> dict[str, Any]:
        # What was measured first, then where (the key order of records written before this class existed).
        ordered = sorted(fields(self), key=lambda f: f.name in _MEASUREMENT_FIELDS)
        return {f.name: v for f in ordered if (v := getattr(self, f.name)) is not None or f.name in self.ALWAYS}


_MEASUREMENT_FIELDS = frozenset(f.name for f in fields(Measurement))


@dataclass(frozen=True, kw_only=True)
class EvalRecord(Measurement):
    """One `dspyreg eval` of a version: the metric, the score as a fraction, and what it ran on."""

    metric: str
    score: float
    n: int
    devset: str | None = None
    devset_sha256: str | None = None

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> EvalRecord:
        """A record whose shape records.py has checked; keys dspyreg does not write are left out."""
        return cls(
            metric=record["metric"],
            score=float(record["score"]),
            n=record["n"],
            **cls.common(record, "devset", "devset_sha256"),
        )


@dataclass(frozen=True, kw_only=True)
class BenchRecord(Measurement):
    """One `dspyreg bench` of a version: latency percentiles in ms, tokens and cost per query (None: unknown)."""

    n: int
    concurrency: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    mean_ms: float | None = None
    tokens_per_query: float
    cost_per_query: float | None
    inputs: str | None = None
    inputs_sha256: str | None = None

    ALWAYS: ClassVar[frozenset[str]] = frozenset({"cost_per_query"})  # None there means the cost is unknown

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> BenchRecord:
        """A record whose shape records.py has checked; keys dspyreg does not write are left out."""
        mean = record.get("mean_ms")
        return cls(
            n=record["n"],
            concurrency=record["concurrency"],
            p50_ms=record["p50_ms"],
            p95_ms=record["p95_ms"],
            max_ms=record["max_ms"],
            tokens_per_query=record["tokens_per_query"],
            cost_per_query=record["cost_per_query"],
            mean_ms=mean if isinstance(mean, (int, float)) and not isinstance(mean, bool) else None,
            **cls.common(record, "inputs", "inputs_sha256"),
        )


@dataclass(frozen=True)
class Records:
    """One version's records, oldest first."""

    evaluations: tuple[EvalRecord, ...] = ()
    benchmarks: tuple[BenchRecord, ...] = ()

    @property
    def latest_evaluation(self) -> EvalRecord | None:
        return self.evaluations[-1] if self.evaluations else None

    @property
    def latest_benchmark(self) -> BenchRecord | None:
        return self.benchmarks[-1] if self.benchmarks else None

    @property
    def latest_score(self) -> float | None:
        latest = self.latest_evaluation
        return latest.score if latest is not None else None


@dataclass(frozen=True)
class VersionDetail:
    info: VersionInfo
    manifest: Manifest
    predictors: Mapping[str, Any]
    records: Records

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        manifest = {
            "schema_version": m.schema_version,
            "program": vars(m.program),
            "optimization": {
                **{k: v for k, v in vars(m.optimization).items() if k != "metrics"},
                "metrics": dict(m.optimization.metrics),
            },
            "runtime": dict(m.runtime),
            "saved_with": dict(m.saved_with),
            "lm": dict(m.lm),
            "lineage": m.lineage.to_json(),
            "files": dict(m.files),
        }
        base = self.info.to_json()
        return {
            **{k: base[k] for k in ("name", "version", "commit", "created", "environments")},
            "manifest": manifest,
            "predictors": dict(self.predictors),
            "evaluations": [r.to_json() for r in self.records.evaluations],
            "benchmarks": [r.to_json() for r in self.records.benchmarks],
        }


# -- environment moves -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JournalEntry:
    program: str
    env: str
    from_version: str | None
    to_version: str | None
    action: str  # "promote", "rollback", or "managed" for the rollback tag that follows prod
    actor: str
    time: str
    reason: str = ""
    move: str = ""  # unique per transaction: two identical moves in the same second are still two writes
    override: str = ""  # the gates a forced promote overrode, with their numbers

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class MoveResult:
    entries: tuple[JournalEntry, ...]

    @property
    def changed(self) -> bool:
        return bool(self.entries)


@dataclass(frozen=True)
class PublishResult:
    name: str
    version: str
    commit: str
    files: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())
