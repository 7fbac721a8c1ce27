"""Per-example comparison of two evaluations on one dev set: the examples that flipped, and the score delta with a
paired bootstrap 95% interval, so "v1.1 is better" comes with how sure.

Pure and light (no dspy, no numpy): `diff --examples` and the `min_delta_ci_low` gate hand it the EvalRecords they
read. Two evaluations compare only when they ran the same metric on the same dev set (same devset_sha256) and both
kept their per-example scores; `compare` says in one line why not otherwise.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RegistryError

if TYPE_CHECKING:
    from .results import EvalRecord, ExampleScore

RESAMPLES = 10_000
SEED = 20240314  # fixed: the same two records give the same interval on every machine and every run
CONFIDENCE = 0.95


class NotComparable(RegistryError):
    """Two versions' evaluations that cannot be compared example by example (the message says why)."""


@dataclass(frozen=True)
class Flip:
    """One dev example whose score changed between the two sides."""

    id: str
    inputs: dict[str, Any]
    before: float
    after: float

    @property
    def change(self) -> str:
        """pass -> fail, fail -> pass (a full score against none), or score change (partial credit moved)."""
        kinds = {1.0: "pass", 0.0: "fail"}
        if self.before in kinds and self.after in kinds:
            return f"{kinds[self.before]} -> {kinds[self.after]}"
        return "score change"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "change": self.change, "before": self.before, "after": self.after, "inputs": self.inputs}


@dataclass(frozen=True)
class ExampleComparison:
    a: str
    b: str
    metric: str
    devset: str | None
    devset_sha256: str
    n: int
    score_a: float
    score_b: float
    delta: float  # mean of the paired differences b - a
    ci_low: float
    ci_high: float
    flips: tuple[Flip, ...]
    leakage_a: int | None = None
    leakage_b: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "metric": self.metric,
            "devset": self.devset,
            "devset_sha256": self.devset_sha256,
            "n": self.n,
            "score_a": self.score_a,
            "score_b": self.score_b,
            "delta": self.delta,
            "ci95": [self.ci_low, self.ci_high],
            "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "confidence": CONFIDENCE, "paired": True},
            "flipped": [f.to_json() for f in self.flips],
            "leakage": {"a": self.leakage_a, "b": self.leakage_b},
        }


def paired_bootstrap(
    differences: Sequence[float], *, resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """The percentile 95% interval of the mean of `differences` (one per example, b - a), resampling examples
    with replacement: pairing keeps each example's own difficulty out of the interval."""
    n = len(differences)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(differences, k=n)) / n for _ in range(resamples))
    tail = (1 - CONFIDENCE) / 2
    low = means[int(tail * (resamples - 1))]
    high = means[int((1 - tail) * (resamples - 1) + 0.5)]
    return round(low, 6), round(high, 6)


def _paired(a: EvalRecord, b: EvalRecord) -> list[tuple[ExampleScore, ExampleScore]]:
    """The two records' examples matched by id (and, for an id a dev set holds twice, by occurrence)."""

    def keyed(record: EvalRecord) -> dict[tuple[str, int], ExampleScore]:
        seen: dict[str, int] = {}
        out = {}
        for example in record.examples or ():
            seen[example.id] = seen.get(example.id, 0) + 1
            out[(example.id, seen[example.id])] = example
        return out

    left, right = keyed(a), keyed(b)
    if left.keys() != right.keys():
        raise NotComparable("the two evaluations of the same dev set list different examples (a record was edited)")
    return [(left[key], right[key]) for key in left]


def why_not_comparable(a_name: str, b_name: str, a: Sequence[EvalRecord], b: Sequence[EvalRecord]) -> str:
    """One line saying why no evaluation of `a` pairs with one of `b`."""
    for name, records in ((a_name, a), (b_name, b)):
        if not records:
            return f"{name} has no evaluation: run `dspyreg eval {name} --devset ... --metric ...` on the same dev set"
    devsets_a = {r.devset_sha256 for r in a}
    shared = [r for r in b if r.devset_sha256 in devsets_a and r.devset_sha256 is not None]
    if not shared:
        la, lb = a[-1], b[-1]
        return (
            f"{a_name} and {b_name} were evaluated on different dev sets ({_devset(la)} vs {_devset(lb)}): "
            "evaluate both on the same one"
        )
    metrics_a = {(r.devset_sha256, r.metric) for r in a}
    if not any((r.devset_sha256, r.metric) in metrics_a for r in shared):
        return f"{a_name} and {b_name} were evaluated on the same dev set with different metrics: use the same metric"
    return (
        f"the evaluations of {a_name} and {b_name} on the same dev set predate per-example scores: evaluate both again"
    )


def _devset(record: EvalRecord) -> str:
    sha = (record.devset_sha256 or "?")[:12]
    return f"{record.devset or 'a dev set'} {sha}"


def pick(a: Sequence[EvalRecord], b: Sequence[EvalRecord]) -> tuple[EvalRecord, EvalRecord] | None:
    """The newest evaluation of b with per-example scores and, for it, the newest of a with the same dev set and
    metric; None when there is no such pair."""
    for right in reversed(b):
        if right.examples is None or right.devset_sha256 is None:
            continue
        for left in reversed(a):
            if left.examples is not None and (left.devset_sha256, left.metric) == (right.devset_sha256, right.metric):
                return left, right
    return None


def compare(a_name: str, b_name: str, a: Sequence[EvalRecord], b: Sequence[EvalRecord]) -> ExampleComparison:
    """Compare the newest comparable evaluations of two versions (oldest-first records of each); NotComparable
    says why there are none."""
    pair = pick(a, b)
    if pair is None:
        raise NotComparable(f"cannot compare examples: {why_not_comparable(a_name, b_name, a, b)}")
    left, right = pair
    paired = _paired(left, right)
    if not paired:
        raise NotComparable("cannot compare examples: the evaluations hold no examples")
    differences = [after.score - before.score for before, after in paired]
    low, high = paired_bootstrap(differences)
    n = len(paired)
    flips = tuple(
        Flip(after.id, dict(after.inputs), before.score, after.score)
        for before, after in paired
        if before.score != after.score
    )
    return ExampleComparison(
        a=a_name,
        b=b_name,
        metric=right.metric,
        devset=right.devset,
        devset_sha256=right.devset_sha256 or "",
        n=n,
        score_a=round(sum(p[0].score for p in paired) / n, 6),
        score_b=round(sum(p[1].score for p in paired) / n, 6),
        delta=round(sum(differences) / n, 6),
        ci_low=low,
        ci_high=high,
        flips=flips,
        leakage_a=left.leakage,
        leakage_b=right.leakage,
    )
