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

Then, against the smallest and the largest size, what must not grow with history (issue 17, items 4-5), each
printed MET or MISSED with its figures, a MISSED one with the top of `-X importtime` and a cProfile of the command
(tables in the report and its generated block):
`log` (people and `--json --limit 20`) at 10 and `--moves` journal moves (a copy of the smallest registry, moves
added by fast-import), human `list` at `--programs` (e.g. 100x100, fast-import, one evaluation record per version),
`proto`, `export` and `dspyreg serve prod` cold start to the first 200 from /predict (python -m
dspy_registry.fake_lm), `verify --all` time and peak RSS of its process tree, and disk per version after
`--disk-versions` real publishes and promotes (as written, after one more `git gc --auto`, after `git gc`; the
target is judged on the growth in packs, the loose objects that `git gc --auto` has not packed yet being a pool
bounded by gc.auto at any size, reported beside it).

Results: markdown tables on stdout (progress goes to stderr), benchmarks/results/registry_scale.json, and the
generated block of the `## Registry scale` section of docs/performance.md (text outside the block is kept).
--quick (sizes 10 and 200, 3 runs, no GTO, 200 moves, 10x10 programs, 150 publishes: on average enough for git to
pack once) writes registry_scale-quick.json and leaves the docs alone.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
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
    BASE_ENV,
    GIT_ENV,
    RESULTS,
    ROOT,
    Machine,
    TimedOut,
    Why,
    dspyreg,
    example_states,
    facts_table,
    figure,
    free_port,
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
    why,
    why_tables,
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


def dspyreg_stream(count: int, bundle: Bundle, parent: str, start: int, program: str = PROGRAM) -> Iterator[bytes]:
    """Versions 0..count-1 of `program` as `dspyreg publish` writes them: a commit on main and an annotated tag, same
    messages.

    The first commit adds the whole bundle; each later one rewrites only <program>/manifest.toml (version, created).
    """
    manifest = re.sub(
        r'^name = ".*"$', f'name = "{program}"', bundle.files["manifest.toml"].decode(), count=1, flags=re.M
    )
    who = bundle.who
    for i in range(count):
        version, ts = version_of(i), start + i
        text = re.sub(r'^version = ".*"$', f'version = "{version}"', manifest, count=1, flags=re.M)
        text = re.sub(r'^created = ".*"$', f'created = "{iso(ts)}"', text, count=1, flags=re.M)
        message = (
            bundle.message.replace(f"{PROGRAM} {bundle.version}", f"{program} {version}", 1)
            .replace(bundle.created, iso(ts))
            .encode()
        )
        yield b"commit refs/heads/main\nmark :%d\n" % (i + 1)
        yield b"author " + who.line(ts) + b"\ncommitter " + who.line(ts) + b"\n" + data(message)
        if i == 0:
            yield f"from {parent}\n".encode()
            for rel, content in sorted(bundle.files.items()):
                if rel != "manifest.toml":
                    yield f"M 100644 inline {program}/{rel}\n".encode() + data(content)
        yield f"M 100644 inline {program}/manifest.toml\n".encode() + data(text.encode())
        yield (f"tag {program}/{version}\nfrom :{i + 1}\n".encode() + b"tagger " + who.line(ts) + b"\n" + data(message))


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


# -- what must not grow with history (issue 17, items 4-5) -----------------------------------------------------------
JOURNAL_REF = "refs/heads/dspyreg/journal"
RECORDS_REF = "refs/heads/dspyreg/records"
LOG_TARGET = LIST_TARGET = 0.1  # seconds, median of a fresh process
FLAT_SLACK = 0.1  # seconds: "no growth with history" = the large history within this of the small one
MEMORY_SLACK_MIB = 50.0  # verify --all streams: its peak RSS at the largest size within this of the smallest
DISK_TARGET_KIB = 10.0  # growth per version in packs, against 41 KiB unpacked (the measurement)


def build_journal(src: Path, dst: Path, moves: int) -> None:
    """A copy of registry `src` whose journal holds `moves` moves: one real `dspyreg promote`, then that commit's
    move repeated by fast-import (same message and tree, one second apart), then `git gc`."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    run(dspyreg("promote", version_of(0), "--to", "staging", "--registry", dst))
    message = git_bytes(dst, "log", "-1", "--format=%B", JOURNAL_REF)
    tip = git(dst, "rev-parse", JOURNAL_REF).strip()
    start = history_start(moves)

    def stream() -> Iterator[bytes]:
        for i in range(moves - 1):
            yield f"commit {JOURNAL_REF}\n".encode() + b"committer A <a@example.com> %d +0000\n" % (start + i)
            yield data(message) + (f"from {tip}\n".encode() if i == 0 else b"")

    if moves > 1:
        fast_import(dst, stream())
    compact(dst)
    count = int(git(dst, "rev-list", "--count", JOURNAL_REF))
    require(count >= moves, f"the journal holds {count} commits, expected at least {moves}")


def build_programs(path: Path, programs: int, versions: int, bundle: Bundle) -> None:
    """`dspyreg init`, then `programs` programs of `versions` versions each by fast-import, one evaluation record
    (20 examples) per version on the records branch, then `git gc`; checked with `dspyreg list --json`."""
    from dspy_registry.leakage import example_id

    shutil.rmtree(path, ignore_errors=True)
    run(dspyreg("init", path))
    start = history_start(versions)
    names = [f"p{k:03d}" for k in range(programs)]
    for name in names:
        fast_import(path, dspyreg_stream(versions, bundle, git(path, "rev-parse", "main").strip(), start, name))

    def records() -> Iterator[bytes]:
        yield f"commit {RECORDS_REF}\n".encode() + b"committer A <a@example.com> %d +0000\n" % start
        yield data(b"records")
        questions = [f"q{j}" for j in range(20)]
        examples = [{"inputs": {"question": q}, "score": 1.0, "id": example_id({"question": q})} for q in questions]
        for name in names:
            for i in range(versions):
                record = {"time": iso(start), "metric": "m", "score": 0.5, "n": 20, "examples": examples, "id": "x"}
                rel = f"{name}/{version_of(i)}/evaluations/{iso(start).replace('-', '').replace(':', '')}-x.json"
                yield f"M 100644 inline {rel}\n".encode() + data(json.dumps(record).encode())

    fast_import(path, records())
    compact(path)
    listed = json.loads(run(dspyreg("list", "--json", "--registry", path)))
    require(len(listed) == programs * versions, f"dspyreg list shows {len(listed)} versions of {programs * versions}")


@dataclass(frozen=True)
class Peak:
    """One run of a command: wall seconds, the peak summed RSS of its process tree (sampled every 20 ms) and the
    largest RSS of any one process of it (the kernel's ru_maxrss, exact)."""

    seconds: float
    tree_mib: float
    process_mib: float


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current]
        found += kids
        frontier += kids
    return found


def peak_run(argv: Argv) -> Peak:
    """Run `argv` to the end, sampling its process tree's RSS; raise if it fails."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [str(a) for a in argv], env={**os.environ, **BASE_ENV}, stdout=subprocess.DEVNULL, stderr=errors
        )
        peak = 0
        while True:
            # wait4 gives this child's own rusage: ru_maxrss is the largest RSS of it and its waited-for children.
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, sum(rss_kib(p) for p in tree(proc.pid)))
            time.sleep(0.02)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{errors.read().decode()}")
    return Peak(round(elapsed, 3), round(peak / 1024, 1), round(usage.ru_maxrss / 1024, 1))


def cold_start(registry: Path, lm_env: dict[str, str], limit: float = 120.0) -> float:
    """Seconds from starting `dspyreg serve prod` to its first 200 from POST /predict (the fake LM answers)."""
    port = free_port()
    argv = dspyreg("serve", "prod", "--port", str(port), "--registry", registry)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(a) for a in argv],
        env={**os.environ, **BASE_ENV, **lm_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        while time.perf_counter() - start < limit:
            if proc.poll() is not None:
                raise RuntimeError(f"dspyreg serve exited ({proc.returncode}):\n{proc.stderr.read().decode()}")  # type: ignore[union-attr]
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("POST", "/predict", json.dumps({"question": "What is dspyreg?"}), JSON_HEADERS)
                status = conn.getresponse().status
                conn.close()
            except (ConnectionError, http.client.HTTPException, OSError):
                time.sleep(0.01)
                continue
            if status == 200:
                return time.perf_counter() - start
            if status != 503:  # not ready yet is 503; anything else is a failure
                raise RuntimeError(f"POST /predict answered {status}")
            time.sleep(0.01)
        raise TimedOut(" ".join(map(str, argv)))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


JSON_HEADERS = {"Content-Type": "application/json"}


class FakeLM:
    """`python -m dspy_registry.fake_lm` on a free port, for `dspyreg serve`'s cold start."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dspy_registry.fake_lm", "--port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **BASE_ENV},
        )
        assert self.proc.stdout is not None
        require("fake LM on" in self.proc.stdout.readline().decode(), "the fake LM prints its banner")
        self.env = {
            "DSPYREG_LM_MODEL": "openai/fake-model",
            "DSPYREG_LM_API_BASE": f"http://127.0.0.1:{self.port}/v1",
            "DSPYREG_LM_API_KEY": "x",
            "DSPYREG_LM_NUM_RETRIES": "0",
        }

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


DISK_CHILD = """
import sys, time
from pathlib import Path
from dspy_registry.registry import Registry
from dspy_registry.bundle import import_program
from dspy_registry.state import read_state_file
root, n, spec, state_path = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
Registry.init(root).close()
state = read_state_file(state_path)
with Registry.open(root) as reg:
    for i in range(n):
        version = f"v{1 + i // 100}.{i % 100}.0"
        reg.publish(import_program(spec), state, name="qa", version=version, dev_score=0.75, trainset_size=8)
        reg.promote(version, "staging")
"""


@dataclass(frozen=True)
class Disk:
    """Disk of a registry written by N real publishes and promotes (the library, in one process).

    As written, the folder holds packs that grow with N and a pool of loose objects that does not: `git gc --auto`
    (run by dspyreg after each write) packs them once its estimate passes gc.auto. That estimate counts one of the
    256 fan-out directories (objects/17) and packs when it holds more than ceil(gc.auto / 256) objects, so the pool
    is about 256 times that on average, at any N, each object a 4 KiB block plus up to 256 directories.
    """

    versions: int
    written_kib: float  # per version, as dspyreg left it: its `git gc --auto` after each write had its chance
    auto_kib: float  # per version, after one more `git gc --auto` (what the next write would run)
    gc_kib: float  # per version, after a full `git gc`: the floor
    loose_objects: int  # after the writes
    packed_kib: float | None  # size-pack / the versions in packs (N x in-pack / all objects); None: nothing packed
    loose_pool_kib: int  # after the writes: du of the fan-out directories (loose objects and the directories)
    gc_auto: int  # the registry's gc.auto
    loose_expected: int  # objects git's estimate lets gather on average: 256 * (ceil(gc.auto / 256) + 1)


def du_kib(path: Path) -> int:
    return int(run(["du", "-sk", path]).split()[0])


def wait_for_gc(repo: Path, limit: float = 120.0) -> None:
    """A detached `git gc --auto` holds gc.pid while it runs: wait for it to finish."""
    end = time.time() + limit
    while (repo / "gc.pid").exists() and time.time() < end:
        time.sleep(0.2)


def count_objects(repo: Path) -> dict[str, int]:
    """`git count-objects -v`: count and size (loose), in-pack, packs, size-pack (KiB) ..."""
    return {k: int(v) for k, v in (line.split(": ") for line in git(repo, "count-objects", "-v").splitlines())}


def loose_pool_kib(repo: Path) -> int:
    """KiB on disk of the loose objects and their fan-out directories (objects/00 ... objects/ff)."""
    fanout = [d for d in (repo / "objects").iterdir() if re.fullmatch(r"[0-9a-f]{2}", d.name)]
    return int(run(["du", "-sck", *fanout]).splitlines()[-1].split()[0]) if fanout else 0


def packed_per_version(objects: dict[str, int], n: int) -> float | None:
    """KiB per version in packs: size-pack over the versions whose objects are packed (each version writes about
    as many objects as the next), or None while every object is still loose."""
    if not objects["in-pack"]:
        return None
    packed_versions = n * objects["in-pack"] / (objects["in-pack"] + objects["count"])
    return round(objects["size-pack"] / packed_versions, 1)


def measure_disk(path: Path, n: int, bundle: Bundle) -> Disk:
    shutil.rmtree(path, ignore_errors=True)
    spec = f"{ROOT / 'examples' / 'qa_program.py'}:DocsQA"
    run([sys.executable, "-c", DISK_CHILD, path, str(n), spec, bundle.state])
    wait_for_gc(path)
    written, objects, pool = du_kib(path), count_objects(path), loose_pool_kib(path)
    gc_auto = int(git(path, "config", "--get", "gc.auto").strip() or 6700)
    git(path, "gc", "--auto", "--quiet")
    wait_for_gc(path)
    auto = du_kib(path)
    git(path, "gc", "--quiet", "--prune=now")
    return Disk(
        versions=n,
        written_kib=round(written / n, 1),
        auto_kib=round(auto / n, 1),
        gc_kib=round(du_kib(path) / n, 1),
        loose_objects=objects["count"],
        packed_kib=packed_per_version(objects, n),
        loose_pool_kib=pool,
        gc_auto=gc_auto,
        loose_expected=256 * (-(-gc_auto // 256) + 1),
    )


@dataclass(frozen=True)
class Growth:
    """One measurement at a small and a large history, against its target (issue 17, items 4-5)."""

    what: str
    small: str  # the small history, e.g. "10 moves"
    large: str
    small_value: float | None
    large_value: float | None
    unit: str
    target: str
    met: bool
    why: Why | None = None  # for a missed target: the profile's top entries


def flat(small: float | None, large: float | None, limit: float | None, slack: float = FLAT_SLACK) -> bool:
    """MET: the large history within `slack` of the small one, and (when `limit` is given) both at most `limit`."""
    if small is None or large is None or large > small + slack:
        return False
    return limit is None or max(small, large) <= limit


def timed_median(argvs: list[Argv], repeats: int, limit: float, setup: Argv | None = None) -> float | None:
    """Median of `repeats` fresh runs after one warm-up (argvs used in turn); None when a run passed `limit`."""
    plan = Plan("x", "x", argvs, setup)
    median = measure_plan(Tool("dspyreg", [plan]), plan, 0, repeats, float("inf"), limit).median
    return None if median is None else round(median, 3)


def growth_figures(
    work: Path, bundle: Bundle, small: Path, large: Path, sizes: tuple[int, int], args: argparse.Namespace
) -> tuple[list[Growth], Disk | None, dict[str, Peak]]:
    """Every measurement of what must not grow with history; `small` and `large` are built registries of
    `sizes` versions with prod set (the promote/rollback timings leave it)."""
    figures: list[Growth] = []
    r, limit = args.repeats, args.timeout

    def judge(
        what: str,
        labels: tuple[str, str],
        values: tuple[float | None, float | None],
        unit: str,
        target: str,
        met: bool,
        argv: Argv | None,
    ) -> None:
        reason = None
        if not met and argv is not None:
            log(f"  MISSED {what}: profiling `{' '.join(map(str, argv[1:]))}`")
            reason = why(argv)
        figures.append(Growth(what, *labels, *values, unit, target, met, reason))
        log(f"  {what}: {values[0]} / {values[1]} {unit} -> {'MET' if met else 'MISSED'}")

    # log at few and many moves
    few, many = work / "journal-10", work / f"journal-{args.moves}"
    build_journal(small, few, 10)
    build_journal(small, many, args.moves)
    for label, extra in (("dspyreg log", ()), ("dspyreg log --json --limit 20", ("--json", "--limit", "20"))):
        argvs = [dspyreg("log", *extra, "--registry", reg) for reg in (few, many)]
        values = (timed_median([argvs[0]], r, limit), timed_median([argvs[1]], r, limit))
        ok = flat(*values, LOG_TARGET)
        judge(
            label,
            ("10 moves", f"{args.moves:,} moves"),
            values,
            "s",
            f"<= {LOG_TARGET:g} s and flat (within {FLAT_SLACK:g} s)",
            ok,
            argvs[1],
        )

    # list of many programs
    programs, versions = args.programs
    multi = work / f"programs-{programs}x{versions}"
    t0 = time.perf_counter()
    build_programs(multi, programs, versions, bundle)
    log(f"built {programs} programs x {versions} versions in {time.perf_counter() - t0:.1f} s")
    argv = dspyreg("list", "--registry", multi)
    value = timed_median([argv], r, limit)
    judge(
        "dspyreg list (people)",
        ("-", f"{programs} x {versions} versions"),
        (None, value),
        "s",
        f"<= {LIST_TARGET:g} s",
        value is not None and value <= LIST_TARGET,
        argv,
    )

    # proto, export and serve's cold start: no growth with history
    n_small, n_large = sizes
    labels = (f"{n_small:,} versions", f"{n_large:,} versions")
    newest = f"{PROGRAM}/{version_of(n_large - 1)}"
    for name in ("proto", "export"):
        values_list: list[float | None] = []
        for reg, n in ((small, n_small), (large, n_large)):
            ref = f"{PROGRAM}/{version_of(n - 1)}"
            if name == "proto":
                argvs = [dspyreg("proto", ref, "--registry", reg)]
            else:
                dests = [work / f"export-{n}-{k}" for k in range(r + 1)]
                for dest in dests:  # each timed export writes a new folder, as a first export does
                    shutil.rmtree(dest, ignore_errors=True)
                argvs = [dspyreg("export", ref, dest, "--registry", reg) for dest in dests]
            values_list.append(timed_median(argvs, r, limit))
        values = (values_list[0], values_list[1])
        last = (
            dspyreg("proto", newest, "--registry", large)
            if name == "proto"
            else dspyreg("export", newest, work / "export-why", "--force", "--registry", large)
        )
        judge(f"dspyreg {name}", labels, values, "s", f"flat (within {FLAT_SLACK:g} s)", flat(*values, None), last)

    lm = FakeLM()
    try:
        starts = [
            statistics.median(cold_start(reg, lm.env) for _ in range(args.serve_repeats)) for reg in (small, large)
        ]
    finally:
        lm.stop()
    values = (round(starts[0], 3), round(starts[1], 3))
    # serve is not profiled (it does not exit); export of the same version runs the same load, verify and .proto.
    export = dspyreg("export", newest, work / "export-why", "--force", "--registry", large)
    judge(
        "dspyreg serve cold start to first 200",
        labels,
        values,
        "s",
        f"flat (within {FLAT_SLACK:g} s)",
        flat(*values, None),
        export,
    )

    # verify --all: time and peak memory
    peaks = {}
    for reg, n in ((small, n_small), (large, n_large)):
        log(f"  verify --all at {n:,} versions")
        peaks[f"{n}"] = peak_run(dspyreg("verify", "--all", "--registry", reg))
    p_small, p_large = peaks[f"{n_small}"], peaks[f"{n_large}"]
    figures.append(
        Growth(
            "dspyreg verify --all (seconds)",
            *labels,
            p_small.seconds,
            p_large.seconds,
            "s",
            "(reported; no target)",
            True,
        )
    )
    mem_ok = p_large.tree_mib <= p_small.tree_mib + MEMORY_SLACK_MIB
    judge(
        "dspyreg verify --all (peak RSS of the process tree)",
        labels,
        (p_small.tree_mib, p_large.tree_mib),
        "MiB",
        f"bounded (within {MEMORY_SLACK_MIB:g} MiB)",
        mem_ok,
        dspyreg("verify", "--all", "--registry", small),
    )

    # disk per version of a registry written by dspyreg
    disk = None
    if args.disk_versions:
        log(f"publishing {args.disk_versions} versions for disk per version")
        disk = measure_disk(work / "disk", args.disk_versions, bundle)
        figures += disk_rows(disk)
    return figures, disk, peaks


def disk_rows(disk: Disk) -> list[Growth]:
    """As written / N (reported), the packed growth per version (judged) and the loose pool (reported, bounded)."""
    at = ("-", f"{disk.versions:,} versions", None)
    return [
        Growth(
            "disk per version as written (du / N)",
            *at,
            disk.written_kib,
            "KiB",
            f"(reported: includes the loose pool; after one more gc --auto: {disk.auto_kib:g}; "
            f"after git gc: {disk.gc_kib:g})",
            True,
        ),
        Growth(
            "disk growth per version in packs (size-pack / versions in packs)",
            *at,
            disk.packed_kib,
            "KiB",
            f"packed growth <= {DISK_TARGET_KIB:g} KiB per version; loose objects bounded by gc.auto",
            disk.packed_kib is not None and disk.packed_kib <= DISK_TARGET_KIB,
        ),
        Growth(
            f"loose objects pool ({disk.loose_objects:,} objects; not per version)",
            *at,
            disk.loose_pool_kib,
            "KiB",
            f"(reported) bounded: gc --auto packs when objects/17 holds > {-(-disk.gc_auto // 256)} "
            f"(gc.auto {disk.gc_auto}), ~{disk.loose_expected:,} objects on average at any N",
            True,
        ),
    ]


def growth_table(figures: list[Growth]) -> str:
    rows = [
        [
            g.what,
            g.small,
            figure(g.small_value, "{:g}"),
            g.large,
            figure(g.large_value, "{:g}"),
            g.unit,
            g.target,
            "**met**" if g.met else "**missed**",
        ]
        for g in figures
    ]
    headers = ["measurement", "small history", "value", "large history", "value", "unit", "target", "verdict"]
    return markdown_table(headers, rows, numeric=(2, 4))


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


def why_title(growth: Growth, found: Why) -> str:
    """The command profiled, and the measurement it explains when that is not the command itself."""
    return f"`{found.command}`" + ("" if growth.what == found.command else f" (for: {growth.what})")


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
    growth: list[Growth] = field(default_factory=list)
    disk: Disk | None = None
    verify_all: dict[str, Peak] = field(default_factory=dict)

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
                *(
                    [
                        "What must not grow with history (median wall seconds of fresh processes; verify --all: one "
                        "run, peak RSS of its process tree sampled every 20 ms):",
                        growth_table(self.growth),
                    ]
                    if self.growth
                    else []
                ),
                *(why_tables(g.why, why_title(g, g.why)) for g in self.growth if not g.met and g.why is not None),
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
            "growth": [asdict(g) for g in self.growth],
            "disk": asdict(self.disk) if self.disk else None,
            "verify_all": {n: asdict(p) for n, p in self.verify_all.items()},
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
    p.add_argument("--moves", type=int, default=5000, help="journal moves for `log` [5000]")
    p.add_argument("--programs", default="100x100", help="programs x versions for human `list` [100x100]")
    p.add_argument("--serve-repeats", type=int, default=3, help="cold starts of `serve` per size [3]")
    p.add_argument("--disk-versions", type=int, default=600, help="real publishes for disk per version [600; 0: skip]")
    p.add_argument("--no-growth", action="store_true", help="skip log/list/proto/export/serve/verify --all/disk")
    p.add_argument(
        "--loose-refs",
        action="store_true",
        help="skip `git gc`: one loose ref file per tag, as a registry only ever written by dspyreg has",
    )
    p.add_argument("--workdir", type=Path, help="where registries are built [a temporary folder, removed after]")
    p.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    p.add_argument("--out", type=Path, help="JSON results [benchmarks/results/registry_scale.json; -quick.json]")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: --sizes 10,200 --repeats 3 --no-gto ..., docs untouched"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.no_gto, args.no_docs = "10,200", 3, True, True
        args.moves, args.programs, args.serve_repeats, args.disk_versions = 200, "10x10", 1, 150
    if args.out is None:
        args.out = RESULTS_JSON.with_name("registry_scale-quick.json") if args.quick else RESULTS_JSON
    args.sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    programs, _, versions = args.programs.partition("x")
    args.programs = (int(programs), int(versions))
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
    growth: list[Growth] = []
    disk: Disk | None = None
    verify_all: dict[str, Peak] = {}
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
        if not args.no_growth:
            small, large = min(args.sizes), max(args.sizes)
            log(f"what must not grow with history: {small:,} against {large:,} versions")
            growth, disk, verify_all = growth_figures(
                workdir, bundle, workdir / f"dspyreg-{small}", workdir / f"dspyreg-{large}", (small, large), args
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    wall = time.perf_counter() - started
    command = " ".join(["python benchmarks/registry_scale.py", *(sys.argv[1:] if argv is None else argv)])
    settings = {k: v for k, v in vars(args).items() if k not in ("workdir", "no_docs", "out")}
    report = Report(
        cells,
        args.sizes,
        planned,
        info,
        loadavg(),
        gto_status,
        settings,
        build_seconds,
        wall,
        command,
        growth,
        disk,
        verify_all,
    )
    print(report.markdown())  # a missed target's why is in it
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    log(f"results: {args.out}")
    if not args.no_docs:
        write_generated_block("registry_scale", "registry_scale.py", SECTION, report.markdown())
        log(f"updated the {SECTION} section of docs/performance.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
