"""Latency of the commands against their targets: `list`, `show`, `log`, `diff`, `promote`, `rollback` at 0.1 s
median or less, `verify` of one version under 0.3 s, `publish` under 1 s, each a fresh `dspyreg` process.

Usage::

    python benchmarks/commands.py [--sizes 10,1000,10000] [--repeats 7] [--workdir DIR] [--no-docs]

Registries are built as benchmarks/registry_scale.py builds them (fast-import history in exactly the format
`dspyreg publish` writes, the newest version by a real publish, then `git gc`). Each command gets one untimed
warm-up run (it also writes the bytecode cache) and `--repeats` timed runs; the median is compared with the target.
`publish` is timed last, as a real `dspyreg publish` of the example state as a new version each run (so a registry
of N versions ends with N + repeats + 1, 2 more when publish is profiled; the other commands saw exactly N,
unless the registry was kept from an earlier run with --workdir). For a MISSED target the top entries of
`python -X importtime` (cumulative) and a cProfile of the same command at the largest size it missed say where the
time goes. Figures on a shared machine are noisy: the load average is kept beside them.

Results: markdown tables on stdout (progress on stderr) and the generated block `commands` of the
`## Command latency` section of docs/performance.md (text outside the block is kept); `--no-docs` leaves it alone.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness import (
    Why,
    dspyreg,
    facts_table,
    figure,
    git,
    loadavg,
    log,
    machine,
    markdown_table,
    publish_example,
    why,
    why_tables,
    write_generated_block,
)
from registry_scale import (
    PROGRAM,
    Plan,
    Tool,
    build_dspyreg,
    dspyreg_tool,
    measure_plan,
    moving_versions,
    real_bundle,
    version_of,
)

TARGETS = {"verify": 0.3, "publish": 1.0}
TARGET = 0.1
SECTION = "## Command latency"
RUN_LIMIT = 60.0  # seconds: a run past this is killed and ends its cell


def target_of(command: str) -> float:
    return TARGETS.get(command.split()[0], TARGET)


def new_versions(path: Path, count: int) -> list[str]:
    """`count` versions after every `qa/v*` tag of the registry at `path`, in the order `version_of` numbers them."""
    tags = git(path, "for-each-ref", "--format=%(refname)", f"refs/tags/{PROGRAM}/v*").split()
    return [version_of(len(tags) + k) for k in range(count)]


def plans(path: Path, n: int, state: Path, repeats: int) -> list[Plan]:
    """Each command on a registry of `n` versions: registry_scale.py's (show, list, list --json, promote, rollback),
    then log, diff, verify and publish last, since it adds versions."""
    a, b, c = moving_versions(n)
    reg = ("--registry", path)
    versions = new_versions(path, repeats + 1)
    # measure_plan runs timed argv (k + 1) % len at round k: rotated, the rounds publish the versions in order.
    publishes = [publish_example(path, state, v) for v in versions[-1:] + versions[:-1]]
    return [
        *dspyreg_tool(path, n).plans,
        Plan("log", "dspyreg log", [dspyreg("log", *reg)]),
        Plan("diff", "dspyreg diff qa/<older> qa/<newer>", [dspyreg("diff", f"{PROGRAM}/{c}", f"{PROGRAM}/{b}", *reg)]),
        Plan("verify", "dspyreg verify qa/<version>", [dspyreg("verify", f"{PROGRAM}/{a}", *reg)]),
        Plan("publish", "dspyreg publish ... --version <new>", publishes),
    ]


@dataclass(frozen=True)
class Miss:
    """A command over its target, at the largest size it was over, and why."""

    command: str
    size: int
    median: float
    why: Why


def explain(plan: Plan, path: Path, state: Path) -> Why:
    """Profile one more run of `plan`'s command: a publish of two new versions; an alternating promote after the
    other one (promoting where the environment already points does nothing)."""
    if plan.command == "publish":
        first, second = (publish_example(path, state, v) for v in new_versions(path, 2))
        return why(first, again=second)
    return why(plan.timed[0], setup=plan.setup or (plan.timed[1] if len(plan.timed) > 1 else None))


@dataclass(frozen=True)
class Report:
    medians: dict[tuple[str, int], float | None]  # (command, size) -> median seconds; None: a run was killed
    commands: list[str]
    sizes: list[int]
    repeats: int
    machine_facts: dict[str, str]
    loadavg_after: str
    command_line: str
    misses: list[Miss]

    def verdict(self, command: str) -> bool:
        medians = [self.medians[command, n] for n in self.sizes]
        return all(m is not None and m <= target_of(command) for m in medians)

    def markdown(self) -> str:
        facts = {
            **self.machine_facts,
            "load average after": self.loadavg_after,
            "timed runs per cell": f"{self.repeats}, after 1 warm-up",
            "reproduce": f"`{self.command_line}`",
        }
        rows = [
            [
                f"`{command}`",
                *("killed" if (m := self.medians[command, n]) is None else f"{m:.3f}" for n in self.sizes),
                f"{target_of(command):g}",
                "**MET**" if self.verdict(command) else "**MISSED**",
            ]
            for command in self.commands
        ]
        headers = ["command", *(f"N = {n:,}" for n in self.sizes), "target s", "verdict"]
        medians = markdown_table(headers, rows, numeric=range(1, 2 + len(self.sizes)))
        return "\n\n".join(
            [
                facts_table(facts),
                medians,
                *(why_tables(m.why, f"`{m.command}` at N = {m.size:,} ({m.median:.3f} s)") for m in self.misses),
            ]
        )


def machine_facts() -> dict[str, str]:
    m = machine()
    return {
        "measured": m.measured,
        "machine": f"{m.nproc} cores ({m.cpu}), {m.os}",
        "software": f"Python {m.python}, git {m.git}",
        "dspyreg": m.dspyreg_source,
        "load average before": m.loadavg,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="keep registries here (reused when they exist)")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    args = parser.parse_args(argv)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed dspyreg has its bytecode cached: time that
    sizes = sorted({int(s) for s in args.sizes.split(",")})
    facts = machine_facts()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dspyreg-commands-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = real_bundle(work)
    medians: dict[tuple[str, int], float | None] = {}
    over: dict[str, tuple[int, float, Plan, Path]] = {}  # command -> its largest size over the target
    commands: list[str] = []
    for n in sizes:
        path = work / f"registry-{n}"
        if not path.exists():
            log(f"building a registry of {n} versions")
            build_dspyreg(path, n, bundle)
        for plan in plans(path, n, bundle.state, args.repeats):
            cell = measure_plan(Tool("dspyreg", [plan]), plan, n, args.repeats, float("inf"), RUN_LIMIT)
            medians[plan.command, n] = median = cell.median
            commands += [plan.command] if plan.command not in commands else []
            target = target_of(plan.command)
            log(f"  {plan.command:12} N={n:<6} median {figure(median)} s (target {target:g} s)  load {loadavg()}")
            if median is not None and median > target:
                over[plan.command] = (n, median, plan, path)
    misses = []
    for command, (n, median, plan, path) in over.items():
        log(f"MISSED {command} at N={n:,}: profiling it")
        misses.append(Miss(command, n, median, explain(plan, path, bundle.state)))
    command_line = " ".join(["python benchmarks/commands.py", *(sys.argv[1:] if argv is None else argv)])
    report = Report(medians, commands, sizes, args.repeats, facts, loadavg(), command_line, misses)
    print(report.markdown())
    if not args.no_docs:
        write_generated_block("commands", "commands.py", SECTION, report.markdown())
        log(f"updated the {SECTION} section of docs/performance.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
