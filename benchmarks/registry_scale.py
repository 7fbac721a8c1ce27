"""How `dspyreg` read and ref-moving commands scale with the number of published versions, beside GTO.

Usage::

    python benchmarks/registry_scale.py [--sizes 10,1000,10000] [--repeats 7] [--no-gto] [--quick]

For every size N this builds

* a dspyreg registry: `dspyreg init`, N-1 versions written in bulk with `git fast-import` in exactly the format
  `dspyreg publish` writes (the bundle of examples/qa_program.py as one real publish made it; then one commit per
  version on `main` rewriting `qa/manifest.toml`, and one annotated tag `qa/<version>`, both with that publish's
  message, its version and time replaced), then the newest version by a real `dspyreg publish`; then `git gc`
  (packed refs and packed objects, as a long-lived registry that was cloned or garbage-collected looks;
  `--loose-refs` skips it);
* a GTO repository with the same N versions: a normal repository with `artifacts.yaml`, one commit per version
  and one annotated tag `qa@<version>` per version with GTO's own message, also written with fast-import and gc'd;

checks both (dspyreg list and show see every version, GTO sees N tags, `git fsck --strict` is clean), then times
each command as a fresh subprocess (cold start of the real CLI, warm OS file cache) and reports the median; any
failing command stops the benchmark, and the dspyreg registry is checked again after the promotes and rollbacks.

`promote` alternates between two versions so every timed call moves the tag; `rollback` is timed after an untimed
promote so that it always has somewhere to go back to. GTO has no rollback: its row is `gto assign` of the previous
version. GTO is installed in its own venv (benchmarks/.venv-gto) so its pins never touch ours.

Results: markdown tables on stdout (progress goes to stderr), benchmarks/results/registry_scale.json, and the
generated block of the `## Registry scale` section of docs/performance.md (text outside the block is kept).
--quick (sizes 10 and 100, 3 runs, no GTO) writes registry_scale-quick.json and leaves the docs alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from harness import (
    GIT_ENV,
    RESULTS,
    ROOT,
    Machine,
    TimedOut,
    dspyreg,
    example_states,
    facts_table,
    fresh_registry,
    git,
    git_bytes,
    loadavg,
    log,
    machine,
    markdown_table,
    publish_example,
    require,
    run,
    targets_table,
    timed,
    write_generated_block,
)

RESULTS_JSON = RESULTS / "registry_scale.json"
GTO_VENV = ROOT / "benchmarks" / ".venv-gto"
PROGRAM = "qa"
TARGET_SECONDS = 0.3
TARGET_COMMANDS = ("show", "promote", "rollback")
SECTION = "## Registry scale"


# -- generated history ----------------------------------------------------------------------------------------------
def version_of(i: int) -> str:
    """The i-th version of a registry, oldest first: v1.0.0, v1.1.0 ... v1.99.0, v2.0.0 ... v100.99.0."""
    return f"v{1 + i // 100}.{i % 100}.0"


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def data(payload: bytes) -> bytes:
    """A fast-import `data` command with exact byte count."""
    return b"data %d\n" % len(payload) + payload + b"\n"


def fast_import(repo: Path, stream: Iterator[bytes]) -> None:
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            ["git", "-C", str(repo), "fast-import", "--quiet", "--done"],
            stdin=subprocess.PIPE,
            stderr=errors,
            env={**os.environ, **GIT_ENV},
        )
        assert proc.stdin is not None
        for chunk in stream:
            proc.stdin.write(chunk)
        proc.stdin.write(b"done\n")
        proc.stdin.close()
        if proc.wait() != 0:
            errors.seek(0)
            raise RuntimeError(f"git fast-import failed:\n{errors.read().decode(errors='replace')}")


def compact(repo: Path) -> None:
    """What a long-lived registry looks like after git's housekeeping: packed refs, objects in one pack."""
    git(repo, "gc", "--quiet", "--prune=now")


@dataclass(frozen=True)
class Identity:
    name: str
    email: str

    def line(self, ts: int) -> bytes:
        return f"{self.name} <{self.email}> {ts} +0000".encode()


def history_start(n: int) -> int:
    """Unix time of generated version 0: generated versions are one second apart and all in the past."""
    return int(time.time()) - n - 60


# -- building a dspyreg registry --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Bundle:
    """What one real `dspyreg publish` of examples/qa_program.py wrote: files of `qa/`, its message, author, state.

    Generated versions copy this publish's commit and tag message with only the version and time replaced, so
    they carry whatever payload `dspyreg publish` writes today (no copy of its format here).
    """

    files: dict[str, bytes]  # path under qa/ -> content
    message: str
    version: str
    created: str
    who: Identity
    state: Path


SAMPLE_VERSION = "v0.0.1"


def real_bundle(workdir: Path) -> Bundle:
    """Optimize examples/ offline (deterministic DummyLM), publish it once to a scratch registry, read it back."""
    state = example_states(workdir / "states") / "qa-v1.0.json"
    scratch = workdir / "scratch-registry"
    shutil.rmtree(scratch, ignore_errors=True)
    fresh_registry(scratch, [(SAMPLE_VERSION, state)])
    paths = [p for p in git(scratch, "ls-tree", "-r", "-z", "--name-only", "main", f"{PROGRAM}/").split("\0") if p]
    files = {p.removeprefix(f"{PROGRAM}/"): git_bytes(scratch, "cat-file", "blob", f"main:{p}") for p in paths}
    name, email = git(scratch, "log", "-1", "--format=%an%x00%ae", "main").strip().split("\0")
    message = git_bytes(scratch, "cat-file", "commit", "main").decode().split("\n\n", 1)[1]
    tag_message = git_bytes(scratch, "cat-file", "tag", f"{PROGRAM}/{SAMPLE_VERSION}").decode().split("\n\n", 1)[1]
    require(message == tag_message, "a publish writes one message on its commit and its tag")
    created = re.search(r'^created = "(.*)"$', files["manifest.toml"].decode(), flags=re.M)
    require(created is not None and created[1] in message, "the publish message records the manifest's created")
    assert created is not None
    return Bundle(files, message, SAMPLE_VERSION, created[1], Identity(name, email), state)


def build_dspyreg(path: Path, n: int, bundle: Bundle, *, gc: bool = True) -> None:
    """`dspyreg init`, N-1 versions written by fast-import, then the newest one by a real `dspyreg publish`."""
    run(dspyreg("init", path))
    if n > 1:
        fast_import(path, dspyreg_stream(n - 1, bundle, git(path, "rev-parse", "main").strip(), history_start(n)))
    run(publish_example(path, bundle.state, version_of(n - 1)))
    if gc:
        compact(path)


def dspyreg_stream(count: int, bundle: Bundle, parent: str, start: int) -> Iterator[bytes]:
    """Versions 0..count-1 as `dspyreg publish` writes them: a commit on main and an annotated tag, same messages.

    The first commit adds the whole bundle; each later one rewrites only qa/manifest.toml (version, created).
    """
    manifest = bundle.files["manifest.toml"].decode()
    who = bundle.who
    for i in range(count):
        version, ts = version_of(i), start + i
        text = re.sub(r'^version = ".*"$', f'version = "{version}"', manifest, count=1, flags=re.M)
        text = re.sub(r'^created = ".*"$', f'created = "{iso(ts)}"', text, count=1, flags=re.M)
        message = (
            bundle.message.replace(f"{PROGRAM} {bundle.version}", f"{PROGRAM} {version}", 1)
            .replace(bundle.created, iso(ts))
            .encode()
        )
        yield b"commit refs/heads/main\nmark :%d\n" % (i + 1)
        yield b"author " + who.line(ts) + b"\ncommitter " + who.line(ts) + b"\n" + data(message)
        if i == 0:
            yield f"from {parent}\n".encode()
            for rel, content in sorted(bundle.files.items()):
                if rel != "manifest.toml":
                    yield f"M 100644 inline {PROGRAM}/{rel}\n".encode() + data(content)
        yield f"M 100644 inline {PROGRAM}/manifest.toml\n".encode() + data(text.encode())
        yield (f"tag {PROGRAM}/{version}\nfrom :{i + 1}\n".encode() + b"tagger " + who.line(ts) + b"\n" + data(message))


def check_dspyreg(path: Path, n: int) -> None:
    listed = json.loads(run(dspyreg("list", "--registry", path, "--json")))
    require(len(listed) == n, f"dspyreg list shows {len(listed)} versions, expected {n}")
    require([v["version"] for v in listed] == [version_of(i) for i in range(n)], "dspyreg list order")
    for version in {version_of(0), version_of(n // 2), version_of(n - 1)}:
        shown = json.loads(run(dspyreg("show", f"{PROGRAM}/{version}", "--registry", path, "--json")))
        require(shown["version"] == version == shown["manifest"]["program"]["version"], f"dspyreg show {version}")
    git(path, "fsck", "--strict", "--no-progress")


def check_after_moves(path: Path, n: int) -> None:
    """After the timed promotes and rollbacks: prod and the journal are readable and the repository is sound."""
    prod = json.loads(run(dspyreg("show", "prod", "--registry", path, "--json")))
    require(prod["version"] in moving_versions(n) and "prod" in prod["environments"], "dspyreg show prod")
    require(bool(json.loads(run(dspyreg("log", "--registry", path, "--json")))), "journal empty after promotes")
    git(path, "fsck", "--strict", "--no-progress")


# -- building a GTO repository ----------------------------------------------------------------------------------------
ARTIFACTS_YAML = f"{PROGRAM}:\n  type: model\n  path: {PROGRAM}/program.json\n  description: DocsQA\n"


def build_gto(path: Path, n: int, who: Identity, *, gc: bool = True) -> None:
    run(["git", "init", "--quiet", "-b", "main", path])
    git(path, "config", "user.name", who.name)
    git(path, "config", "user.email", who.email)
    fast_import(path, gto_stream(n, who, history_start(n)))
    git(path, "reset", "--quiet", "--hard", "main")
    if gc:
        compact(path)


def gto_stream(n: int, who: Identity, start: int) -> Iterator[bytes]:
    """One commit per version and the annotated tag `gto register` writes (`qa@vX`, GTO's message, no newline)."""
    for i in range(n):
        version, ts = version_of(i), start + i
        yield b"commit refs/heads/main\nmark :%d\n" % (i + 1)
        yield b"author " + who.line(ts) + b"\ncommitter " + who.line(ts) + b"\n"
        yield data(f"Publish {PROGRAM} {version}\n".encode())
        if i == 0:
            yield b"M 100644 inline artifacts.yaml\n" + data(ARTIFACTS_YAML.encode())
        yield f"M 100644 inline {PROGRAM}/version.txt\n".encode() + data(f"{version}\n".encode())
        yield (
            f"tag {PROGRAM}@{version}\nfrom :{i + 1}\n".encode()
            + b"tagger "
            + who.line(ts)
            + b"\n"
            + data(f"Registering artifact {PROGRAM} version {version}".encode())
        )


def gto(*args: str) -> list[str | Path]:
    return [GTO_VENV / "bin" / "gto", *args]


GTO_CHECK_MAX = 1000  # `gto show` is quadratic in the number of tags: past this, check with git only


def check_gto(path: Path, n: int) -> None:
    tags = git(path, "for-each-ref", "--format=%(objecttype) %(refname:lstrip=2)", f"refs/tags/{PROGRAM}@*").split("\n")
    require(sorted(filter(None, tags)) == sorted(f"tag {PROGRAM}@{version_of(i)}" for i in range(n)), "GTO tags")
    git(path, "fsck", "--strict", "--no-progress")
    if n <= GTO_CHECK_MAX:
        shown = json.loads(run(gto("show", PROGRAM, "--json"), cwd=path))
        versions = shown if isinstance(shown, list) else shown.get(PROGRAM, shown)
        require(len(versions) == n, f"gto show {PROGRAM} lists {len(versions)} versions, expected {n}")


def install_gto() -> str | None:
    """GTO in its own venv; returns why it is unavailable, or None when it works."""
    try:
        if not (GTO_VENV / "bin" / "gto").exists():
            run([sys.executable, "-m", "venv", GTO_VENV])
            run([GTO_VENV / "bin" / "pip", "install", "--quiet", "gto"])
        run(gto("--version"))
    except (RuntimeError, OSError) as err:
        return str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    return None


# -- timing -----------------------------------------------------------------------------------------------------------
@dataclass
class Cell:
    tool: str
    command: str
    size: int
    label: str  # the command as a person types it, e.g. `dspyreg show qa/<version>`
    seconds: list[float] = field(default_factory=list)
    timed_out_after: float | None = None  # set when a run was killed at this limit (seconds)

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


Argv = list[str | Path]


@dataclass(frozen=True)
class Plan:
    """One benchmarked command: `timed` argvs are used in turn; `setup` (untimed) runs before each of them."""

    command: str
    label: str
    timed: list[Argv]
    setup: Argv | None = None
    writes: bool = False


@dataclass
class Tool:
    name: str
    plans: list[Plan]
    cwd: Path | None = None
    # GTO orders assignments by their tag's timestamp (1 s resolution): two assigns in the same second are
    # ambiguous to it, so writes are spaced to the next whole second (outside the timed region).
    one_write_per_second: bool = False
    last_write: float = 0.0


def moving_versions(n: int) -> tuple[str, str, str]:
    """Three distinct versions that promote/rollback move between: middle, newest, second newest."""
    return version_of(n // 2), version_of(n - 1), version_of(n - 2)


def dspyreg_tool(path: Path, n: int) -> Tool:
    a, b, c = moving_versions(n)
    reg = ("--registry", path)
    return Tool(
        "dspyreg",
        [
            Plan("show", "dspyreg show qa/<version>", [dspyreg("show", f"{PROGRAM}/{a}", *reg)]),
            Plan("list", "dspyreg list", [dspyreg("list", *reg)]),
            Plan("list --json", "dspyreg list --json", [dspyreg("list", "--json", *reg)]),
            # Alternating targets: every call really moves qa/prod (and qa/rollback) and appends to the journal.
            Plan(
                "promote",
                "dspyreg promote <version> --to prod",
                [dspyreg("promote", v, "--to", "prod", *reg) for v in (b, a)],
                writes=True,
            ),
            # Each rollback follows an untimed promote, so there is always a previous prod version to go back to.
            Plan(
                "rollback",
                "dspyreg rollback",
                [dspyreg("rollback", *reg)],
                setup=dspyreg("promote", c, "--to", "prod", *reg),
                writes=True,
            ),
        ],
    )


def gto_tool(path: Path, n: int) -> Tool:
    a, b, c = moving_versions(n)

    def assign(version: str) -> Argv:
        # GTO refuses to assign a version that was *ever* in the stage unless --force is given; re-promoting and
        # rolling back are exactly that, so every benchmarked assign passes it (the check is skipped, nothing else).
        return gto("assign", PROGRAM, "--version", version, "--stage", "prod", "--force")

    return Tool(
        "gto",
        [
            Plan("show", "gto show qa@<version>", [gto("show", f"{PROGRAM}@{a}")]),
            Plan("list", "gto show qa", [gto("show", PROGRAM)]),
            Plan(
                "promote", "gto assign qa --version <version> --stage prod --force", [assign(b), assign(a)], writes=True
            ),
            # GTO has no rollback: after an untimed assign of c, assign the previous prod version (b) again. The
            # warm-up round leaves prod at b, so from the first timed round on, b is the previous version.
            Plan(
                "rollback",
                "gto assign qa --version <previous> --stage prod --force",
                [assign(b)],
                setup=assign(c),
                writes=True,
            ),
        ],
        cwd=path,
        one_write_per_second=True,
    )


def wait_for_next_second(since: float) -> None:
    """Sleep until the wall clock has entered a later whole second than `since`."""
    remaining = int(since) + 1 - time.time()
    if remaining > 0:
        time.sleep(remaining + 0.01)


def measure(tool: Tool, n: int, repeats: int, budget: float, limit: float) -> list[Cell]:
    """Timings of each plan of `tool` on a registry of `n` versions."""
    cells = [measure_plan(tool, plan, n, repeats, budget, limit) for plan in tool.plans]
    for cell in cells:
        shown = f"> {cell.timed_out_after:g} s (killed)" if cell.median is None else f"{cell.median:7.3f} s"
        log(f"  {tool.name:8} {cell.command:9} N={n:<6} median {shown} over {len(cell.seconds)} runs")
    return cells


def measure_plan(tool: Tool, plan: Plan, n: int, repeats: int, budget: float, limit: float) -> Cell:
    """One untimed warm-up round, then up to `repeats` timed rounds.

    Repeating stops once the timed runs add up to `budget` seconds (after at least one). A run (warm-up, setup or
    timed) that passes `limit` seconds is killed and ends the cell, so a peer that needs minutes per command at
    10,000 versions cannot blow up the total run time; both facts are kept with the figures.
    """
    cell = Cell(tool.name, plan.command, n, plan.label)
    for k in range(repeats + 1):  # k == 0 is the warm-up
        steps = [(plan.setup, False), (plan.timed[(k + 1) % len(plan.timed)], True)]
        for argv, is_timed in steps:
            if argv is None:
                continue
            if plan.writes and tool.one_write_per_second:
                wait_for_next_second(tool.last_write)
            try:
                elapsed = timed(argv, cwd=tool.cwd, limit=limit)
            except TimedOut:
                cell.timed_out_after = limit
                return cell
            finally:
                if plan.writes:
                    tool.last_write = time.time()
            if is_timed and k > 0:
                cell.seconds.append(elapsed)
        if cell.seconds and sum(cell.seconds) >= budget:
            break
    return cell


# -- reporting --------------------------------------------------------------------------------------------------------
def cell_text(cell: Cell | None, planned: int) -> str:
    if cell is None:
        return "n/a"
    if cell.median is None:
        return f"> {cell.timed_out_after:g} (killed)"
    runs = f" ({len(cell.seconds)} runs)" if len(cell.seconds) < planned else ""
    return f"{cell.median:.3f}{runs}"


def table(cells: list[Cell], sizes: list[int], planned: dict[tuple[str, int], int]) -> str:
    """One row per command and tool, one column per size; median seconds."""
    by = {(c.tool, c.command, c.size): c for c in cells}
    labels = {(c.command, c.tool): c.label for c in cells}  # first seen first: command order, then tool
    order = {"show": 0, "list": 1, "list --json": 2, "promote": 3, "rollback": 4}
    rows = [
        [command, f"`{label}`", *(cell_text(by.get((tool, command, n)), planned.get((tool, n), 0)) for n in sizes)]
        for (command, tool), label in sorted(labels.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1]))
    ]
    headers = ["operation", "command", *(f"N = {n:,}" for n in sizes)]
    return markdown_table(headers, rows, numeric=range(2, 2 + len(sizes)))


def targets(cells: list[Cell], sizes: list[int]) -> list[tuple[str, str, bool]]:
    """Per target command: the slowest dspyreg median over all sizes against TARGET_SECONDS."""
    out = []
    for command in TARGET_COMMANDS:
        mine = [c for c in cells if c.tool == "dspyreg" and c.command == command]
        medians = [c.median for c in mine]
        worst = None if not medians or None in medians else max(m for m in medians if m is not None)
        measured = "killed" if worst is None else f"{worst:.3f} s (slowest of N = {', '.join(f'{n:,}' for n in sizes)})"
        out.append(
            (
                f"dspyreg {command} median < {TARGET_SECONDS} s at every size",
                measured,
                worst is not None and worst < TARGET_SECONDS,
            )
        )
    return out


@dataclass(frozen=True)
class Report:
    cells: list[Cell]
    sizes: list[int]
    planned: dict[tuple[str, int], int]
    machine: Machine
    loadavg_after: str
    gto: str
    settings: dict[str, object]
    build_seconds: dict[str, float]
    wall: float
    command: str

    def markdown(self) -> str:
        m, st = self.machine, self.settings
        facts = {
            "measured": m.measured,
            "machine": f"{m.nproc} cores ({m.cpu}), {m.os}",
            "software": f"Python {m.python}, git {m.git}, GTO {self.gto}",
            "dspyreg": m.dspyreg_source,
            "load average before / after": f"{m.loadavg} / {self.loadavg_after}",
            "timed runs per cell": f"{st['repeats']} (GTO at N >= 10,000: {st['gto_large_repeats']}), after 1 warm-up",
            "a cell stops after": f"{st['budget']:g} s of runs; a run is killed after {st['timeout']:g} s",
            "refs": "loose (`--loose-refs`)" if st["loose_refs"] else "packed (`git gc` after building)",
            "whole run": f"{self.wall / 60:.1f} min",
            "reproduce": f"`{self.command}`",
        }
        return "\n\n".join(
            [
                facts_table(facts),
                "Median wall seconds of one fresh CLI process:",
                table(self.cells, self.sizes, self.planned),
                targets_table(targets(self.cells, self.sizes)),
            ]
        )

    def to_json(self) -> dict[str, object]:
        return {
            "machine": asdict(self.machine),
            "loadavg_after": self.loadavg_after,
            "gto": self.gto,
            "settings": self.settings,
            "sizes": self.sizes,
            "build_seconds": self.build_seconds,
            "total_seconds": round(self.wall, 1),
            "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in targets(self.cells, self.sizes)],
            "command": self.command,
            "cells": [{**asdict(c), "median": c.median} for c in self.cells],
        }


# -- main -------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--sizes", default="10,1000,10000", help="comma-separated version counts [10,1000,10000]")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per command and size [7]")
    p.add_argument("--gto-large-repeats", type=int, default=3, help="GTO timed runs at N >= 10,000 [3]")
    p.add_argument("--budget", type=float, default=60.0, help="stop repeating a command after this many seconds [60]")
    p.add_argument("--timeout", type=float, default=60.0, help="kill any single run after this many seconds [60]")
    p.add_argument("--no-gto", action="store_true", help="skip GTO")
    p.add_argument(
        "--loose-refs",
        action="store_true",
        help="skip `git gc`: one loose ref file per tag, as a registry only ever written by dspyreg has",
    )
    p.add_argument("--workdir", type=Path, help="where registries are built [a temporary folder, removed after]")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    p.add_argument("--out", type=Path, help="JSON results [benchmarks/results/registry_scale.json; -quick.json]")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: --sizes 10,100 --repeats 3 --no-gto, docs untouched"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.no_gto, args.no_docs = "10,100", 3, True, True
    if args.out is None:
        args.out = RESULTS_JSON.with_name("registry_scale-quick.json") if args.quick else RESULTS_JSON
    args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if any(n < 4 for n in args.sizes):
        p.error("every size must be at least 4 (promote and rollback move between three versions)")
    return args


def gto_setup(skip: bool) -> tuple[str | None, str]:
    """(GTO version or None, what the report says of GTO)."""
    if skip:
        return None, "skipped (--no-gto)"
    problem = install_gto()
    if problem:
        return None, f"could not be installed or run: {problem}"
    version = run(gto("--version")).split(":")[-1].strip()
    return version, version


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    gto_version, gto_status = gto_setup(args.no_gto)
    info = machine()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="registry-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    planned: dict[tuple[str, int], int] = {}
    build_seconds: dict[str, float] = {}
    try:
        bundle = real_bundle(workdir)
        for n in args.sizes:
            reg, t0 = workdir / f"dspyreg-{n}", time.perf_counter()
            shutil.rmtree(reg, ignore_errors=True)
            build_dspyreg(reg, n, bundle, gc=not args.loose_refs)
            check_dspyreg(reg, n)
            build_seconds[f"dspyreg-{n}"] = round(time.perf_counter() - t0, 2)
            log(f"built and checked a dspyreg registry of {n:,} versions in {build_seconds[f'dspyreg-{n}']} s")
            planned["dspyreg", n] = args.repeats
            cells += measure(dspyreg_tool(reg, n), n, args.repeats, args.budget, args.timeout)
            check_after_moves(reg, n)
            if gto_version is None:
                continue
            repo, t0 = workdir / f"gto-{n}", time.perf_counter()
            shutil.rmtree(repo, ignore_errors=True)
            build_gto(repo, n, bundle.who, gc=not args.loose_refs)
            check_gto(repo, n)
            build_seconds[f"gto-{n}"] = round(time.perf_counter() - t0, 2)
            log(f"built and checked a GTO repository of {n:,} versions in {build_seconds[f'gto-{n}']} s")
            planned["gto", n] = args.repeats if n < 10_000 else min(args.repeats, args.gto_large_repeats)
            cells += measure(gto_tool(repo, n), n, planned["gto", n], args.budget, args.timeout)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - started
    command = " ".join(["python benchmarks/registry_scale.py", *(sys.argv[1:] if argv is None else argv)])
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "no_docs", "out")}
    report = Report(cells, args.sizes, planned, info, loadavg(), gto_status, settings, build_seconds, wall, command)
    print(report.markdown())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    log(f"results: {args.out}")
    if not args.no_docs:
        write_generated_block("registry_scale", "registry_scale.py", SECTION, report.markdown())
        log(f"updated the {SECTION} section of docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
