"""Quality records attached to published versions afterwards: evaluations and benchmarks, append-only.

Versions are immutable, so records never touch a version's commit. They live on dspyreg's own branch
`dspyreg/records` (a branch, so every git host stores, serves and clones it): each record is one JSON file
`<program>/<version>/<kind>/<time>-<id>.json`, added by one commit. Appending moves the branch with an expected old
value (pushed atomically with a lease to a remote registry) and rebuilds on a moved tip, so concurrent appends all
land and none is lost.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .errors import ConflictError, CorruptRecord
from .gitstore import utc_now
from .gittree import TreeEntry
from .leakage import example_id, is_example_id
from .refs import ZERO_SHA, RefUpdate
from .results import BenchRecord, EvalRecord, Records
from .state import canonical_json

if TYPE_CHECKING:
    from .gitstore import GitStore

RECORDS_REF = "refs/heads/dspyreg/records"
KINDS = ("evaluations", "benchmarks")
APPEND_RETRIES = 5


def precise_now() -> datetime:
    """The time to the microsecond (utc_now, for git, drops the microseconds): what record names sort by."""
    return datetime.now(timezone.utc)


def append(store: GitStore, program: str, version: str, kind: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """Add `record` to `program` `version`'s `kind` records; returns it with its `id` and `time`."""
    assert kind in KINDS
    now = utc_now()
    full = {**record, "id": uuid.uuid4().hex[:16], "time": now.isoformat().replace("+00:00", "Z")}
    # Named by time to the microsecond, so records sort in the order they were written even within one second (the
    # id alone would order two evaluations of one second at random, and "latest" with them).
    name = f"{precise_now().strftime('%Y%m%dT%H%M%S%fZ')}-{full['id']}.json"
    blob = store.write_blobs({"r": canonical_json(full)})["r"]
    who = store.identity()
    message = f"Record {kind[:-1]} of {program} {version}\n\n{json.dumps(full, sort_keys=True)}\n"
    for _ in range(APPEND_RETRIES):
        old = store.ref_value(RECORDS_REF)
        tree = store.write_tree(old, {f"{program}/{version}/{kind}/{name}": TreeEntry("100644", "blob", blob)})
        commit = store.write_commit(tree, [old] if old else [], message, who, now)
        try:
            store.transaction([RefUpdate(RECORDS_REF, commit, old or ZERO_SHA)])
            return full
        except ConflictError:
            store.sync()  # another record landed first: append on top of it
            store.close()
    raise ConflictError(f"the records branch kept moving ({APPEND_RETRIES} tries); nothing was recorded: re-run")


def read(store: GitStore, program: str, version: str) -> Records:
    found: dict[str, list[Mapping[str, Any]]] = {kind: [] for kind in KINDS}
    if store.ref_value(RECORDS_REF) is None:
        return Records()
    for kind in KINDS:
        for name in sorted(store.list_tree(f"{RECORDS_REF}:{program}/{version}/{kind}")):
            data = store.read_blob(RECORDS_REF, f"{program}/{version}/{kind}/{name}")
            if data is not None:
                found[kind].append(_checked(data, f"{program}/{version}/{kind}/{name}", kind))
    return Records(
        tuple(EvalRecord.from_json(r) for r in found["evaluations"]),
        tuple(BenchRecord.from_json(r) for r in found["benchmarks"]),
    )


def latest_scores(
    store: GitStore, wanted: Collection[tuple[str, str]] | None = None, program: str | None = None
) -> dict[tuple[str, str], float]:
    """(program, version) -> the score of its latest evaluation, for every version that has one (of `program` only,
    and only those in `wanted`, when given): one listing and one `cat-file` pass for all the records read."""
    if store.ref_value(RECORDS_REF) is None:
        return {}
    latest: dict[tuple[str, str], str] = {}
    for path in sorted(store.list_files(RECORDS_REF, program or ".")):
        parts = path.split("/")
        if len(parts) == 4 and parts[2] == "evaluations" and (wanted is None or (parts[0], parts[1]) in wanted):
            latest[(parts[0], parts[1])] = path
    found = store.read_many([f"{RECORDS_REF}:{path}" for path in latest.values()])
    out = {}
    for (key, path), obj in zip(latest.items(), found):
        if obj is not None and obj.type == "blob":
            out[key] = float(_checked(obj.data, path, "evaluations")["score"])
    return out


def latest_benchmarks(store: GitStore, program: str) -> dict[str, BenchRecord]:
    """version -> its latest benchmark, for every version of `program` that has one (one listing, one read each):
    what the ui's charts draw for a thousand versions without reading each version's records apart."""
    if store.ref_value(RECORDS_REF) is None:
        return {}
    latest: dict[str, str] = {}
    for path in sorted(store.list_files(RECORDS_REF, program)):
        parts = path.split("/")
        if len(parts) == 4 and parts[2] == "benchmarks":
            latest[parts[1]] = path
    out = {}
    for version, path in latest.items():
        data = store.read_blob(RECORDS_REF, path)
        if data is not None:
            out[version] = BenchRecord.from_json(_checked(data, path, "benchmarks"))
    return out


_NUMBER = (int, float)
# What every reader of a record relies on, by kind (records are read back from a branch anyone may push to).
_SHAPES: dict[str, dict[str, tuple[type, ...]]] = {
    "evaluations": {"time": (str,), "metric": (str,), "score": _NUMBER, "n": (int,)},
    "benchmarks": {
        "time": (str,),
        "n": (int,),
        "concurrency": (int,),
        "p50_ms": _NUMBER,
        "p95_ms": _NUMBER,
        "max_ms": _NUMBER,
        "tokens_per_query": _NUMBER,
        "cost_per_query": (*_NUMBER, type(None)),
    },
}


def _checked(data: bytes, path: str, kind: str) -> Mapping[str, Any]:
    """A record as dspyreg writes it, or CorruptRecord naming its file."""
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):
        record = None
    if not isinstance(record, dict):
        raise _corrupt(path, "not a JSON object")
    wrong = [
        key
        for key, types in _SHAPES[kind].items()
        if isinstance(record.get(key), bool) or not isinstance(record.get(key), types)
    ]
    if kind == "evaluations" and "score" not in wrong and not 0 <= record["score"] <= 1:
        wrong.append("score")
    if kind == "evaluations" and not wrong:
        wrong += _per_example_problems(record)
    if wrong:
        raise _corrupt(path, f"bad or missing {', '.join(wrong)}")
    return record


def _is_fraction(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool) and 0 <= value <= 1


def _per_example_problems(record: Mapping[str, Any]) -> list[str]:
    """The per-example keys of an evaluation (absent from records older than them) that are not as dspyreg writes
    them: one entry per example of the dev set, each id the hash of its inputs; the leak count matching its ids."""
    wrong = []
    examples = record.get("examples")
    if examples is not None and not (
        isinstance(examples, list)
        and len(examples) == record["n"]
        and all(
            isinstance(e, dict)
            and isinstance(e.get("inputs"), dict)
            and _is_fraction(e.get("score"))
            and is_example_id(e.get("id"))
            and e["id"] == example_id(e["inputs"])
            for e in examples
        )
    ):
        wrong.append("examples")
    leakage, leaked = record.get("leakage"), record.get("leaked_ids")
    if leakage is not None or leaked is not None:
        if isinstance(leakage, bool) or not isinstance(leakage, int) or not 0 <= leakage <= record["n"]:
            wrong.append("leakage")
        elif not (isinstance(leaked, list) and len(leaked) == leakage and all(is_example_id(i) for i in leaked)):
            wrong.append("leaked_ids")
    return wrong


def _corrupt(path: str, problem: str) -> CorruptRecord:
    return CorruptRecord(
        f"record {path} on {RECORDS_REF} is corrupt ({problem}): remove it with a commit on that branch"
    )
