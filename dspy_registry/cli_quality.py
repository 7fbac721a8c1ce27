"""The commands that measure a version and record the result on it (append-only): eval and bench.

Both take the same common options (--no-verify, --name, --registry, --json, --traceback); `_measuring` adds them to
each command's own signature, so each command declares only what it measures with.
"""

from __future__ import annotations

import functools
import inspect
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
Measure = Callable[[Registry, Any], Record]

_COMMON = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)
    for name, annotation, default in (
        ("no_verify", NoVerifyOpt, False),
        ("name", NameOpt, None),
        ("registry", RegistryOpt, None),
        ("json_out", JsonOpt, False),
        ("traceback", TracebackOpt, False),
    )
]


def _measuring(
    doing: str, summary: Callable[[Record, str], str]
) -> Callable[[Callable[..., Measure[Record]]], Callable[..., None]]:
    """Make a command of `plan(ref, ..., name=, verify=)`, which returns how to measure: the command takes the plan's
    own options plus the common ones, runs the measure under a progress bar labelled `doing` and prints the record
    (JSON, or the line `summary` makes of it)."""

    def decorate(plan: Callable[..., Measure[Record]]) -> Callable[..., None]:
        own = [
            p for p in inspect.signature(plan, eval_str=True).parameters.values() if p.name not in ("name", "verify")
        ]

        @functools.wraps(plan)
        def command(
            *, no_verify: bool, name: str | None, registry: str | None, json_out: bool, traceback: bool, **kw: Any
        ) -> None:
            from .render import progress

            with funnel(traceback), open_registry(registry) as reg, progress(doing) as start:
                warn_unverified(no_verify, kw["ref"])
                record = plan(**kw, name=name, verify=not no_verify)(reg, start)
                if json_out:
                    print_json(record.to_json())
                else:
                    console_out().print(summary(record, kw["ref"]))

        command.__signature__ = inspect.Signature(own + _COMMON)  # type: ignore[attr-defined]
        del command.__wrapped__  # typer must read the signature above, not the plan's
        return command

    return decorate


def _eval_summary(record: EvalRecord, ref: str) -> str:
    line = f"Recorded {record.metric} = {record.score:.3f} on {record.n} examples ({record.lm}) for {ref}"
    if record.leakage:  # the score is inflated by examples the program was shown as demos: say which
        line += (
            f"\n[yellow]warning:[/yellow] {record.leakage} of {record.n} dev examples appear among {ref}'s demos "
            f"(leakage): {', '.join(record.leaked_ids or ())}"
        )
    return line


@_measuring("evaluating", _eval_summary)
def eval_(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version to evaluate: v1.1, staging, qa/prod...")],
    devset: Annotated[Path, typer.Option("--devset", help="JSON lines: the program's inputs plus labels.")],
    metric: Annotated[str, typer.Option("--metric", help="path/to/metric.py:function or package.module:function.")],
    threads: Annotated[int, typer.Option("--threads", min=1, help="Examples evaluated in parallel.")] = 8,
    *,
    name: str | None,
    verify: bool,
) -> Measure[EvalRecord]:
    """Evaluate a version on a dev set (dspy.Evaluate) and record the score on it (append-only)."""
    return lambda reg, start: reg.evaluate(
        ref, devset, metric, name=name, threads=threads, verify=verify, progress=start
    )


def _bench_summary(record: BenchRecord, ref: str) -> str:
    # litellm knows no price for some models: say the cost is unknown rather than "$unknown per query".
    cost = "unknown" if record.cost_per_query is None else f"${record.cost_per_query:.6f}"
    return (
        f"Recorded over {record.n} queries for {ref}: p50 {record.p50_ms} ms, p95 {record.p95_ms} ms, "
        f"max {record.max_ms} ms; per query {record.tokens_per_query} tokens, cost {cost}"
    )


@_measuring("benchmarking", _bench_summary)
def bench(
    ref: Annotated[str, typer.Argument(metavar="REF", help="The version to benchmark.")],
    inputs: Annotated[Path, typer.Option("--inputs", help="JSON lines of the program's inputs (other keys ignored).")],
    n: Annotated[Optional[int], typer.Option("-n", min=1, help="Queries to send [default: one per line].")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Queries in flight at once.")] = 1,
    *,
    name: str | None,
    verify: bool,
) -> Measure[BenchRecord]:
    """Benchmark a version's latency, tokens and cost per query (LM cache off) and record it (append-only)."""
    return lambda reg, start: reg.bench(
        ref, inputs, name=name, n=n, concurrency=concurrency, verify=verify, progress=start
    )
