"""The commands that measure a version and record the result on it (append-only): eval and bench."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional, TypeVar

import typer

from .cli_common import (
    JsonOpt,
    NameOpt,
    NoVerifyOpt,
    RegistryOpt,
    TracebackOpt,
    console_out,
    funnel,
    open_registry,
    print_json,
    warn_unverified,
)
from .registry import Registry
from .results import BenchRecord, EvalRecord

Record = TypeVar("Record", EvalRecord, BenchRecord)


def eval_(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version to evaluate: v1.1, staging, qa/prod...")],
    devset: Annotated[Path, typer.Option("--devset", help="JSON lines: the program's inputs plus labels.")],
    metric: Annotated[str, typer.Option("--metric", help="path/to/metric.py:function or package.module:function.")],
    threads: Annotated[int, typer.Option("--threads", min=1, help="Examples evaluated in parallel.")] = 8,
    no_verify: NoVerifyOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Evaluate a version on a dev set (dspy.Evaluate) and record the score on it (append-only)."""
    _record(
        "evaluating",
        lambda reg, start: reg.evaluate(
            ref, devset, metric, name=name, threads=threads, verify=not no_verify, progress=start
        ),
        lambda record: _eval_summary(record, ref),
        ref=ref,
        no_verify=no_verify,
        registry=registry,
        json_out=json_out,
        traceback=traceback,
    )


def bench(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version to benchmark.")],
    inputs: Annotated[Path, typer.Option("--inputs", help="JSON lines of the program's inputs (other keys ignored).")],
    n: Annotated[Optional[int], typer.Option("-n", min=1, help="Queries to send [default: one per line].")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Queries in flight at once.")] = 1,
    no_verify: NoVerifyOpt = False,
    name: NameOpt = None,
    registry: RegistryOpt = None,
    json_out: JsonOpt = False,
    traceback: TracebackOpt = False,
) -> None:
    """Benchmark a version's latency, tokens and cost per query (LM cache off) and record it (append-only)."""
    _record(
        "benchmarking",
        lambda reg, start: reg.bench(
            ref, inputs, name=name, n=n, concurrency=concurrency, verify=not no_verify, progress=start
        ),
        _bench_summary,
        ref=ref,
        no_verify=no_verify,
        registry=registry,
        json_out=json_out,
        traceback=traceback,
    )


def _eval_summary(record: EvalRecord, ref: str) -> str:
    line = f"Recorded {record.metric} = {record.score:.3f} on {record.n} examples ({record.lm}) for {ref}"
    if record.leakage:  # the score is inflated by examples the program was shown as demos: say which
        line += (
            f"\n[yellow]warning:[/yellow] {record.leakage} of {record.n} dev examples appear among {ref}'s demos "
            f"(leakage): {', '.join(record.leaked_ids or ())}"
        )
    return line


def _bench_summary(record: BenchRecord) -> str:
    # litellm knows no price for some models: say the cost is unknown rather than "$unknown per query".
    cost = "unknown" if record.cost_per_query is None else f"${record.cost_per_query:.6f}"
    return (
        f"Recorded over {record.n} queries: p50 {record.p50_ms} ms, p95 {record.p95_ms} ms, "
        f"max {record.max_ms} ms; per query {record.tokens_per_query} tokens, cost {cost}"
    )


def _record(
    doing: str,
    measure: Callable[[Registry, Any], Record],
    summary: Callable[[Record], str],
    *,
    ref: str,
    no_verify: bool,
    registry: str | None,
    json_out: bool,
    traceback: bool,
) -> None:
    """The one path of eval and bench: open the registry, run `measure(reg, start)` under a progress bar labelled
    `doing`, print the record it returns (JSON, or the line `summary` makes of it)."""
    from .render import progress

    with funnel(traceback), open_registry(registry) as reg, progress(doing) as start:
        warn_unverified(no_verify, ref)
        record = measure(reg, start)
        if json_out:
            print_json(record.to_json())
        else:
            console_out().print(summary(record))
