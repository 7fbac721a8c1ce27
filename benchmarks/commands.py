"""Latency of the read and move commands against their targets: `list`, `show`, `log`, `diff`, `promote`,
`rollback` at 0.1 s median or less, `verify` of one version under 0.3 s, each a fresh `dspyreg` process.

Usage::

    python benchmarks/commands.py [--sizes 10,1000,10000] [--repeats 7]

Registries are built as benchmarks/registry_scale.py builds them (fast-import history in exactly the format
`dspyreg publish` writes, the newest version by a real publish, then `git gc`). Each command gets one untimed
warm-up run (it also writes the bytecode cache) and `--repeats` timed runs; the median is compared with the target.
For a MISSED target the top entries of `python -X importtime` (cumulative) and a cProfile of the same command say
where the time goes. Figures on a shared machine are noisy: the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from harness import dspyreg, loadavg, log, markdown_table, timed, why
from registry_scale import PROGRAM, build_dspyreg, moving_versions, real_bundle, version_of

TARGETS = {"verify": 0.3}
TARGET = 0.1


def plans(path: Path, n: int) -> list[tuple[str, list[list[str | Path]], list[str | Path] | None]]:
    """(command, argv to time in turn, untimed setup) per command, on a registry of `n` versions."""
    a, b, c = moving_versions(n)
    reg = ("--registry", path)
    return [
        ("list", [dspyreg("list", *reg)], None),
        ("list --json", [dspyreg("list", "--json", *reg)], None),
        ("show", [dspyreg("show", f"{PROGRAM}/{a}", *reg)], None),
        ("log", [dspyreg("log", *reg)], None),
        ("diff", [dspyreg("diff", f"{PROGRAM}/{c}", f"{PROGRAM}/{b}", *reg)], None),
        ("promote", [dspyreg("promote", v, "--to", "prod", *reg) for v in (b, a)], None),
        ("rollback", [dspyreg("rollback", *reg)], dspyreg("promote", c, "--to", "prod", *reg)),
        ("verify", [dspyreg("verify", f"{PROGRAM}/{a}", *reg)], None),
    ]


def median_of(timed_argvs: list[list[str | Path]], setup: list[str | Path] | None, repeats: int) -> float:
    seconds = []
    for k in range(repeats + 1):  # k == 0 is the warm-up
        if setup is not None:
            timed(setup)
        elapsed = timed(timed_argvs[k % len(timed_argvs)])
        if k:
            seconds.append(elapsed)
    return statistics.median(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workdir", type=Path, help="keep registries here (reused when they exist)")
    args = parser.parse_args(argv)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed dspyreg has its bytecode cached: time that
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="dspyreg-commands-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = real_bundle(work)
    results: dict[tuple[str, int], float] = {}
    missed: list[tuple[str, int, list[str | Path]]] = []
    for n in sizes:
        path = work / f"registry-{n}"
        if not path.exists():
            log(f"building a registry of {n} versions")
            build_dspyreg(path, n, bundle)
        for command, argvs, setup in plans(path, n):
            results[command, n] = median = median_of(argvs, setup, args.repeats)
            target = TARGETS.get(command.split()[0], TARGET)
            log(f"  {command:12} N={n:<6} median {median:.3f} s (target {target} s)  load {loadavg()}")
            if median > target:
                missed.append((command, n, argvs[0]))
    commands = [c for c, _, _ in plans(work, sizes[0])]
    rows = []
    for command in commands:
        target = TARGETS.get(command.split()[0], TARGET)
        worst = max(results[command, n] for n in sizes)
        verdict = "MET" if worst <= target else "MISSED"
        rows.append([command, *(f"{results[command, n]:.3f}" for n in sizes), f"{target:g}", verdict])
    print(f"Median seconds of {args.repeats} fresh runs (load average {loadavg()}; version {version_of(0)} first)\n")
    print(markdown_table(["command", *(f"N={n:,}" for n in sizes), "target s", "verdict"], rows))
    for command, n, missed_argv in missed:
        print(f"\nMISSED: {command} at N={n:,} ({results[command, n]:.3f} s); why:\n{why(missed_argv)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
