"""Running a version on data, and what registry.toml's gates decide from the results.

`dspyreg eval` (dspy.Evaluate with a metric) and `dspyreg bench` (latency, tokens, cost) run a materialized bundle
and append an EvalRecord or BenchRecord to the version's records (records.py). Both read JSON lines; a line's keys
that are parameters of the program's forward() are its inputs, the others are labels for the metric (bench ignores
them). The LM is created with DSPy's cache off, so every query reaches it. Errors carry the line number. Imports dspy
(inside the functions). `gate_refusals` is pure: the registry hands it the scores it read.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidName, RegistryError
from .leakage import demo_inputs, example_id, leaked_ids
from .results import BenchRecord, EvalRecord

if TYPE_CHECKING:
    from .example_compare import ExampleComparison
    from .gitstore import GitStore
    from .results import Resolved

Progress = Callable[[int], Callable[[], None]]  # told the total, returns what to call after each query


class BadData(RegistryError):
    """A dev set or inputs file that cannot be used, or a metric that does not import or fails."""


@dataclass(frozen=True)
class Rows:
    path: Path
    sha256: str
    lines: tuple[tuple[int, dict[str, Any]], ...]  # (line number, object)


def read_jsonl(path: Path, *, inputs: list[str], required: list[str]) -> Rows:
    """The JSON objects of `path`, each checked to carry the required inputs; errors name the line."""
    if not path.is_file():
        raise BadData(f"{path} does not exist")
    data = path.read_bytes()
    rows = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise BadData(f"{path}:{number}: not JSON ({err.msg})") from None
        except RecursionError:
            raise BadData(f"{path}:{number}: JSON nested too deeply") from None
        if not isinstance(value, dict):
            wanted = f" with the inputs {', '.join(inputs)}" if inputs else ""
            raise BadData(f"{path}:{number}: expected a JSON object{wanted}")
        missing = [name for name in required if name not in value]
        if missing:
            raise BadData(f"{path}:{number}: lacks the input field {', '.join(missing)}")
        rows.append((number, value))
    if not rows:
        raise BadData(f"{path} holds no examples")
    return Rows(path, hashlib.sha256(data).hexdigest(), tuple(rows))


def import_metric(spec: str) -> Callable[..., Any]:
    """`path/to/file.py:function` or `package.module:function`."""
    from .bundle import import_target

    module, name, _ = import_target(spec, "metric", BadData)
    metric = getattr(module, name, None)
    if not callable(metric):
        raise BadData(f"metric {spec!r}: {name} is not a function of {spec.rpartition(':')[0]}")
    return metric  # type: ignore[no-any-return]


def evaluate(
    program: Any,
    lm: Any,
    rows: Rows,
    inputs: list[str],
    metric: Callable[..., Any],
    metric_name: str,
    *,
    threads: int,
    advance: Callable[[], None] = lambda: None,
) -> tuple[float, int, tuple[float, ...]]:
    """(score as a fraction in [0, 1], n, each example's score in dev-set order) of `program` on `rows` with
    dspy.Evaluate. Any failure raises BadData."""
    import dspy

    examples = [dspy.Example(**row).with_inputs(*(k for k in inputs if k in row)) for _, row in rows.lines]
    line_of = {id(example): number for example, (number, _) in zip(examples, rows.lines)}
    failures: list[str] = []
    lock = threading.Lock()

    def scored(example: Any, prediction: Any, trace: Any = None) -> Any:
        try:
            return metric(example, prediction) if trace is None else metric(example, prediction, trace)
        except Exception as err:
            with lock:
                failures.append(
                    f"metric {metric_name} raised on line {line_of.get(id(example), '?')}: {type(err).__name__}: {err}"
                )
            raise
        finally:
            advance()

    evaluator = dspy.Evaluate(
        devset=examples,
        metric=scored,
        num_threads=threads,
        display_progress=False,
        max_errors=len(examples) + 1,
        provide_traceback=False,
    )
    with dspy.context(lm=lm) if lm is not None else dspy.context():
        result = evaluator(program)
    if failures:
        raise BadData(failures[0])
    errors = [r for r in getattr(result, "results", []) if isinstance(r[1], dspy.Prediction) and not r[1].keys()]
    if errors:
        raise BadData(f"the program failed on {len(errors)} of {len(examples)} examples (is the LM reachable?)")
    # DSPy reports a percentage rounded to two places; the fraction comes from the per-example scores themselves,
    # kept in dev-set order (matched by identity: the examples Evaluate hands back are the ones it was given).
    by_example = {id(example): float(s) for example, _, s in result.results}
    scores = tuple(round(by_example[id(example)], 6) for example in examples)
    for example, value in zip(examples, scores):
        if not 0 <= value <= 1:
            raise BadData(
                f"metric {metric_name} scored line {line_of[id(example)]} {value}: a score must be in [0, 1] "
                "(true/false, or a fraction)"
            )
    return round(sum(scores) / len(examples), 6), len(examples), scores


@dataclass(frozen=True)
class BenchResult:
    n: int
    concurrency: int
    latencies_ms: tuple[float, ...]
    tokens: tuple[int, ...]
    costs: tuple[float | None, ...]

    def record(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        known = [c for c in self.costs if c is not None]
        return {
            "n": self.n,
            "concurrency": self.concurrency,
            "p50_ms": round(_percentile(lat, 50), 2),
            "p95_ms": round(_percentile(lat, 95), 2),
            "max_ms": round(lat[-1], 2),
            "mean_ms": round(statistics.fmean(lat), 2),
            "tokens_per_query": round(statistics.fmean(self.tokens), 1),
            "cost_per_query": round(statistics.fmean(known), 8) if len(known) == len(self.costs) else None,
        }


def _percentile(ordered: list[float], pct: float) -> float:
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def bench(
    run: Callable[[dict[str, Any]], Any],
    rows: Rows,
    inputs: list[str],
    *,
    n: int,
    concurrency: int,
    advance: Callable[[], None] = lambda: None,
) -> BenchResult:
    """Call `run` (a PipelineServer's) `n` times over the rows' inputs, `concurrency` at a time."""
    queries = [{k: v for k, v in rows.lines[i % len(rows.lines)][1].items() if k in inputs} for i in range(n)]

    def one(query: Mapping[str, Any]) -> tuple[float, int, float | None]:
        started = time.perf_counter()
        try:
            result = run(dict(query))
        except Exception as err:
            raise BadData(f"the program failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}") from None
        elapsed = (time.perf_counter() - started) * 1000
        advance()
        return elapsed, result.usage.total_tokens, result.usage.cost

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        outcomes = list(pool.map(one, queries))
    return BenchResult(
        n,
        concurrency,
        tuple(o[0] for o in outcomes),
        tuple(o[1] for o in outcomes),
        tuple(o[2] for o in outcomes),
    )


# -- recording -------------------------------------------------------------------------------------------------------
def record_evaluation(
    store: GitStore,
    resolved: Resolved,
    materialize: Callable[[], Path],
    devset: Path,
    metric_spec: str,
    *,
    threads: int,
    progress: Progress,
) -> EvalRecord:
    """Run `resolved`'s bundle (`materialize` writes it, once the metric imports) on a dev set with dspy.Evaluate
    and record the score."""
    from . import records
    from .runtime.inference import PipelineServer

    metric = import_metric(metric_spec)
    server = PipelineServer(materialize())
    rows = read_jsonl(devset, inputs=server.inputs, required=server.required)
    if server.lm is None:
        raise RegistryError(
            "no LM to evaluate with: set DSPYREG_LM_MODEL (and DSPYREG_LM_API_KEY or DSPYREG_LM_API_BASE)"
        )
    score, n, scores = evaluate(
        server.program,
        server.lm,
        rows,
        server.inputs,
        metric,
        metric_spec,
        threads=threads,
        advance=progress(len(rows.lines)),
    )
    inputs = [{k: v for k, v in row.items() if k in server.inputs} for _, row in rows.lines]
    leaked = leaked_ids(inputs, version_demos(store, resolved))
    record = {
        "metric": metric_spec,
        "score": score,
        "n": n,
        "devset": devset.name,
        "devset_sha256": rows.sha256,
        "dspy_version": _dspy_version(),
        "lm": server.lm.model,
        "commit": resolved.commit,
        "leakage": len(leaked),
        "leaked_ids": leaked,
        "examples": [{"id": example_id(i), "score": s, "inputs": i} for i, s in zip(inputs, scores)],
    }
    return EvalRecord.from_json(records.append(store, resolved.program, resolved.version, "evaluations", record))


def version_demos(store: GitStore, resolved: Resolved) -> list[dict[str, str]]:
    """The normalized inputs of every demo of `resolved`, read from its prompts.json and program.json in git (the
    version's code is not imported for this)."""
    files = []
    for name in ("prompts.json", "program.json"):
        data = store.read_blob(resolved.commit, f"{resolved.program}/{name}")
        try:
            files.append(json.loads(data) if data is not None else None)
        except (ValueError, RecursionError):
            files.append(None)
    return demo_inputs(*files)


def record_benchmark(
    store: GitStore,
    resolved: Resolved,
    bundle: Path,
    inputs: Path,
    *,
    n: int | None,
    concurrency: int,
    progress: Progress,
) -> BenchRecord:
    """Call the materialized `bundle` of `resolved` `n` times on the inputs and record latency, tokens and cost."""
    from . import records
    from .runtime.inference import PipelineServer

    server = PipelineServer(bundle)
    rows = read_jsonl(inputs, inputs=server.inputs, required=server.required)
    if server.lm is None:
        raise RegistryError("no LM to benchmark: set DSPYREG_LM_MODEL (and DSPYREG_LM_API_KEY or DSPYREG_LM_API_BASE)")
    count = n or len(rows.lines)
    if count < 1 or concurrency < 1:
        raise InvalidName("-n and --concurrency must be at least 1")
    result = bench(server.run, rows, server.inputs, n=count, concurrency=concurrency, advance=progress(count))
    record = {
        **result.record(),
        "inputs": inputs.name,
        "inputs_sha256": rows.sha256,
        "dspy_version": _dspy_version(),
        "lm": server.lm.model,
        "commit": resolved.commit,
    }
    return BenchRecord.from_json(records.append(store, resolved.program, resolved.version, "benchmarks", record))


def _dspy_version() -> str:
    from importlib.metadata import version

    return version("dspy")


# -- gates -----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Incumbent:
    """The version an environment points at now, and its score (latest evaluation, else dev score)."""

    version: str
    score: float | None


def gate_refusals(
    gates: Mapping[str, Any],
    env: str,
    name: str,
    score: float | None,
    *,
    evaluated: bool,
    incumbent: Incumbent | None,
    leakage: int | None = None,
    comparison: ExampleComparison | str | None = None,
) -> list[str]:
    """What `gates` ([gates.<env>] of registry.toml) say against moving `env` to the candidate `name` scoring `score`
    (its latest evaluation, else its dev score); empty when they allow it. `incumbent` is `env`'s current version,
    when it is another one. `leakage`: the dev examples the latest evaluation found among the demos (None: no such
    check recorded). `comparison`: the candidate against `env`'s current version example by example, or why they
    do not compare (None: no other version to compare with, or the gate is not set)."""
    refusals = []
    if gates.get("require_eval") and not evaluated:
        refusals.append(f"{name} has no evaluation record (require_eval): run `dspyreg eval`")
    minimum = gates.get("min_dev_score")
    if minimum is not None and (score is None or score < float(minimum)):
        refusals.append(f"{name} scores {_fmt(score)}, below min_dev_score {float(minimum):.3f}")
    if gates.get("no_regression") and incumbent is not None:
        theirs = incumbent.score
        if theirs is not None and (score is None or score < theirs):
            refusals.append(
                f"{name} scores {_fmt(score)}, below {env}'s {incumbent.version} at {theirs:.3f} (no_regression)"
            )
    most = gates.get("max_leakage")
    if most is not None:
        if leakage is None:
            refusals.append(f"{name} has no leakage check (max_leakage {most}): run `dspyreg eval` on it")
        elif leakage > most:
            refusals.append(
                f"{name}'s latest evaluation found {leakage} dev examples among its demos, above max_leakage {most}"
            )
    low = gates.get("min_delta_ci_low")
    if low is not None and comparison is not None:
        if isinstance(comparison, str):
            refusals.append(f"min_delta_ci_low {low} cannot be checked: {comparison}")
        elif not comparison.ci_low > low:
            refusals.append(
                f"{name} changes the score on {comparison.a} by {comparison.delta:+.3f}, 95% interval "
                f"[{comparison.ci_low:+.3f}, {comparison.ci_high:+.3f}]: its low end is not above "
                f"min_delta_ci_low {low}"
            )
    return refusals


def _fmt(score: float | None) -> str:
    return "nothing (no evaluation, no dev score)" if score is None else f"{score:.3f}"
