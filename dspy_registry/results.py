"""What the registry's reads and writes return: frozen dataclasses, each with the JSON the CLI prints for it.

A leaf: it imports only manifest.py (for VersionDetail's type), so render.py, export.py and the CLI can name a result
without importing the registry.
"""

from __future__ import annotations

import json
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
    yanked: str | None = None  # why it was yanked (`dspyreg yank`), None while it is not

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
            "yanked": self.yanked,
        }


# -- quality records -------------------------------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class ExampleScore:
    """One dev example's score in an evaluation: its stable id (leakage.example_id), the score as a fraction, and
    its inputs (the labels are not kept), so `diff --examples` can show them without the dev set at hand."""

    id: str
    score: float
    inputs: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "inputs": dict(self.inputs)}


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
    """One `dspyreg eval` of a version: the metric, the score as a fraction, and what it ran on; since per-example
    records, each example's score (None for an older record) and the dev examples found among the version's demos
    (leakage: their count; leaked_ids: their ids)."""

    metric: str
    score: float
    n: int
    devset: str | None = None
    devset_sha256: str | None = None
    leakage: int | None = None
    leaked_ids: tuple[str, ...] | None = None
    examples: tuple[ExampleScore, ...] | None = None

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> EvalRecord:
        """A record whose shape records.py has checked; keys dspyreg does not write are left out."""
        examples = record.get("examples")
        leaked = record.get("leaked_ids")
        return cls(
            metric=record["metric"],
            score=float(record["score"]),
            n=record["n"],
            leakage=record.get("leakage"),
            leaked_ids=tuple(leaked) if leaked is not None else None,
            examples=tuple(ExampleScore(e["id"], float(e["score"]), e["inputs"]) for e in examples)
            if examples is not None
            else None,
            **cls.common(record, "devset", "devset_sha256"),
        )

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.examples is not None:
            out["examples"] = [e.to_json() for e in self.examples]
        if self.leaked_ids is not None:
            out["leaked_ids"] = list(self.leaked_ids)
        return out


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
            "tokens": m.tokens.to_json() if m.tokens else None,
        }
        base = self.info.to_json()
        return {
            **{k: base[k] for k in ("name", "version", "commit", "created", "environments", "yanked")},
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


# -- lifecycle -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Yank:
    """A version withdrawn from use: still resolvable by its exact ref, hidden from `list`, refused by promote."""

    version: str
    reason: str
    actor: str
    time: str

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True, kw_only=True)
class Approval:
    """Someone's approval of a version for an environment; `signature` is an SSH signature over the approval's
    canonical JSON (without it), when signing is configured."""

    version: str
    env: str
    actor: str
    time: str
    reason: str = ""
    signature: str | None = None

    def payload(self) -> bytes:
        """The bytes a signature covers: every field but the signature, as canonical JSON."""
        body = {k: v for k, v in vars(self).items() if k != "signature"}
        return (json.dumps(body, sort_keys=True, ensure_ascii=False) + "\n").encode()

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}
