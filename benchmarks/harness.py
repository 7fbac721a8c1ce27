"""What every benchmark here shares: running and timing the real CLI, fresh registries, the machine, report tables.

The benchmarks are scripts (`python benchmarks/<name>.py`), so this module is imported as `harness` from beside
them. Reports are markdown tables of measured figures; what the figures mean is written by hand in
docs/performance.md, outside the generated blocks.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "performance.md"
EXAMPLE_PROGRAM = f"{ROOT / 'examples' / 'qa_program.py'}:DocsQA"
GIT_ENV = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
# Every process a benchmark starts: git in plain English and never prompting, litellm without fetching its price list.
BASE_ENV = {**GIT_ENV, "LITELLM_LOCAL_MODEL_COST_MAP": "true"}
Argv = Sequence[str | Path]


# -- running --------------------------------------------------------------------------------------------------------
def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(argv: Argv, *, cwd: Path | None = None, env: Mapping[str, str] | None = None, stderr: bool = False) -> str:
    """Run a command, return its stdout (its stderr with `stderr=True`); raise with its stderr on failure."""
    proc = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, env={**os.environ, **BASE_ENV, **(env or {})}
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stderr.decode()}")
    return (proc.stderr if stderr else proc.stdout).decode()


def git(repo: Path, *args: str) -> str:
    return run(["git", "-C", repo, *args])


def git_bytes(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout


def dspyreg(*args: str | Path) -> list[str | Path]:
    """The `dspyreg` console script installed beside this Python (what a user runs), else the one on PATH."""
    beside = Path(sys.executable).parent / "dspyreg"
    found = str(beside) if beside.exists() else shutil.which("dspyreg")
    if not found:
        raise SystemExit("dspyreg is not installed beside this python nor on PATH")
    return [found, *args]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require(condition: bool, message: str) -> None:
    """A check of what a benchmark built (not an assert: it must hold under `python -O` too)."""
    if not condition:
        raise RuntimeError(f"check failed: {message}")


# -- timing ---------------------------------------------------------------------------------------------------------
class TimedOut(Exception):
    """A benchmarked process ran past its time limit and was killed."""


def timed(
    argv: Argv, *, cwd: Path | None = None, env: Mapping[str, str] | None = None, limit: float | None = None
) -> float:
    """Wall time of one fresh process, stdout discarded (piped, as in CI); raises if it fails or runs past `limit`.

    The process gets its own process group so that a timed-out run is killed together with its git children.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(a) for a in argv],
        cwd=cwd,
        env={**os.environ, **BASE_ENV, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise TimedOut(" ".join(map(str, argv))) from None
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{stderr.decode()}")
    return elapsed


def seconds_of(call: Callable[[], object], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls of `call`, in order."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(call: Callable[[], object], repeats: int) -> float:
    return statistics.median(seconds_of(call, repeats))


# -- long-running processes (servers, the fake LM) -----------------------------------------------------------------
class Proc:
    """A subprocess in its own session, its output in `logdir`; `stop` kills its whole process group (workers too)."""

    def __init__(self, name: str, argv: Argv, env: Mapping[str, str], logdir: Path) -> None:
        self.name = name
        self.out_path, self.err_path = logdir / f"{name}.out", logdir / f"{name}.err"
        self._out, self._err = self.out_path.open("wb"), self.err_path.open("wb")
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            [str(a) for a in argv], env=dict(env), stdout=self._out, stderr=self._err, start_new_session=True
        )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stderr_text(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            if self.popen.poll() is not None:
                break
            try:
                os.killpg(self.pid, sig)
                self.popen.wait(wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers of the group (uvicorn workers)
            os.killpg(self.pid, signal.SIGKILL)
        self._out.close()
        self._err.close()


def wait_until(check: Callable[[], bool], proc: Proc, what: str, timeout: float = 90.0, every: float = 0.1) -> float:
    """Poll `check` (an OSError counts as "not yet") until true; seconds since `proc` started. Raises if `proc`
    exits or `timeout` passes."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited while waiting for {what}:\n{proc.stderr_text()[-3000:]}")
        with contextlib.suppress(OSError):
            if check():
                return time.perf_counter() - proc.started
        time.sleep(every)
    raise RuntimeError(f"{proc.name}: no {what} after {timeout:.0f} s:\n{proc.stderr_text()[-3000:]}")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def process_tree(pid: int) -> list[int]:
    """`pid` and every descendant of it (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        fields = _stat_fields(int(entry)) if entry.isdigit() else None
        if fields:
            parents[int(entry)] = int(fields[1])
    found, frontier = [pid], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent == frontier[-1]]
        frontier.pop()
        found += kids
        frontier += kids
    return found


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float:
    """utime + stime (+ those of reaped children) of one process, from /proc/<pid>/stat."""
    fields = _stat_fields(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK if fields else 0.0


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


# -- why a target was missed ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportTime:
    """One line of `python -X importtime`: a module, its own and cumulative microseconds, its nesting depth."""

    module: str
    self_us: int
    cumulative_us: int
    depth: int  # 0: imported by the program itself; 1: by a module of depth 0 ...


IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_times(stderr: str) -> list[ImportTime]:
    """The import lines of a `-X importtime` (or PYTHONPROFILEIMPORTTIME=1) stderr, in the order printed."""
    found = []
    for line in stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            found.append(ImportTime(m[4], int(m[1]), int(m[2]), (len(m[3]) - 1) // 2))
    return found


@dataclass(frozen=True)
class ProfileEntry:
    """One function of a cProfile run."""

    function: str  # file:line(name), or the name alone for a built-in
    calls: int
    own_ms: float
    cumulative_ms: float


@dataclass(frozen=True)
class Why:
    """Where one run of a command spends its time: its slowest imports (cumulative) and its top cProfile entries."""

    command: str  # as a person types it, e.g. `dspyreg list` (no registry path)
    imports: tuple[ImportTime, ...]  # slowest first, by cumulative time
    profile: tuple[ProfileEntry, ...]  # by cumulative time


# Frames every run has at the top of its cumulative profile (running the module, importing): the import table
# says what the imports cost, so these are left out and the entries show the command's own work.
WRAPPER_FILES = re.compile(r"^<(frozen |string>)")
WRAPPER_FUNCTIONS = ("<built-in method builtins.exec>", "<built-in method builtins.__import__>", "<module>")
PASS_THROUGH = 0.9  # a function that spends this share of its time in one callee only passes the call on


def profile_entries(path: str, top: int) -> tuple[ProfileEntry, ...]:
    """The `top` entries by cumulative time of the cProfile output at `path`, leaving out the wrapper frames and the
    functions that pass the call on (the CLI's dispatch: click's `main`, `invoke` ...), so that each entry left is
    where the time splits or is spent."""
    stats = pstats.Stats(path).stats  # type: ignore[attr-defined]
    passes_on = {
        caller
        for (_, _, _, _, callers) in stats.values()
        for caller, (_, _, _, edge_cumulative) in callers.items()
        if edge_cumulative >= PASS_THROUGH * stats[caller][3] > 0
    }
    entries = [
        ProfileEntry(
            name if file == "~" else f"{Path(file).name}:{line}({name})",
            calls,
            round(own * 1000, 1),
            round(cumulative * 1000, 1),
        )
        for (file, line, name), (_, calls, own, cumulative, _) in stats.items()
        if not WRAPPER_FILES.match(file) and name not in WRAPPER_FUNCTIONS and (file, line, name) not in passes_on
    ]
    return tuple(sorted(entries, key=lambda e: e.cumulative_ms, reverse=True)[:top])


def why(argv: Argv, *, top: int = 8, setup: Argv | None = None, again: Argv | None = None) -> Why:
    """Import times and a cProfile of `argv` (a `dspyreg ...` argv, run as `python -m dspy_registry.cli`): one run
    under `-X importtime`, then one under cProfile (of `again` when given: a publish needs a new version each time).
    `setup` runs untimed before each (a rollback needs a promote before it). Raises if a run fails."""

    def cli(args: Argv) -> list[str]:
        return ["-m", "dspy_registry.cli", *(str(a) for a in args[1:])]

    if setup is not None:
        run(setup)
    imported = run([sys.executable, "-X", "importtime", *cli(argv)], stderr=True)
    if setup is not None:
        run(setup)
    with tempfile.NamedTemporaryFile(suffix=".prof") as out:
        run([sys.executable, "-m", "cProfile", "-o", out.name, *cli(again or argv)])
        profile = profile_entries(out.name, top)
    slowest = sorted(import_times(imported), key=lambda i: i.cumulative_us, reverse=True)[:top]
    return Why(typed(argv), tuple(slowest), profile)


def typed(argv: Argv) -> str:
    """A `dspyreg` argv as a person types it: the program name, no `--registry` path and no absolute paths."""
    words, skip = ["dspyreg"], False
    for word in map(str, argv[1:]):
        if skip or word == "--registry":
            skip = not skip
            continue
        words.append(Path(word).name if os.path.isabs(word) else word)
    return " ".join(words)


def why_tables(found: Why, title: str | None = None) -> str:
    """Two small markdown tables: the slowest imports (cumulative ms) and the top cProfile entries (cumulative);
    their first header names the command (`title`, else the command as typed)."""
    title = title or f"`{found.command}`"
    imports = markdown_table(
        [f"{title}: slowest imports", "cumulative ms", "own ms"],
        [(f"`{i.module}`", f"{i.cumulative_us / 1000:.1f}", f"{i.self_us / 1000:.1f}") for i in found.imports],
        numeric=(1, 2),
    )
    profile = markdown_table(
        [f"{title}: cProfile by cumulative time (no imports, no pass-through)", "calls", "own ms", "cumulative ms"],
        [(f"`{e.function}`", e.calls, f"{e.own_ms:.1f}", f"{e.cumulative_ms:.1f}") for e in found.profile],
        numeric=(1, 2, 3),
    )
    return f"{imports}\n\n{profile}"


# -- fresh registries -----------------------------------------------------------------------------------------------
def example_states(folder: Path) -> Path:
    """Optimize examples/ offline (deterministic DummyLM) once: qa-v1.0.json, qa-v1.1.json ... in `folder`."""
    if not (folder / "qa-v1.0.json").is_file():
        run([sys.executable, ROOT / "examples" / "optimize.py", folder])
    return folder


def publish_example(registry: str | Path, state: Path, version: str) -> list[str | Path]:
    """The argv of `dspyreg publish` of examples/qa_program.py as `qa` (run it, or time it)."""
    return dspyreg(
        "publish",
        EXAMPLE_PROGRAM,
        "--state",
        state,
        "--name",
        "qa",
        "--version",
        version,
        "--optimizer",
        "BootstrapFewShot",
        "--dev-score",
        "0.75",
        "--trainset-size",
        "8",
        "--registry",
        registry,
    )


def fresh_registry(
    registry: str | Path, publishes: Sequence[tuple[str, Path]] = (), *, env: Mapping[str, str] | None = None
) -> None:
    """`dspyreg init`, then a real `dspyreg publish` of examples/qa_program.py for each (version, state)."""
    run(dspyreg("init", registry), env=env)
    for version, state in publishes:
        run(publish_example(registry, state, version), env=env)


# -- the machine ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Machine:
    measured: str  # UTC
    nproc: int
    cpu: str
    os: str
    python: str
    git: str
    dspyreg_source: str  # commit of this checkout, and whether dspy_registry/ had uncommitted changes
    loadavg: str


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "n/a"


def machine() -> Machine:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")), platform.processor())
    head = git(ROOT, "rev-parse", "--short", "HEAD").strip()
    dirty = bool(git(ROOT, "status", "--porcelain", "--", "dspy_registry").strip())
    return Machine(
        measured=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        nproc=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        cpu=cpu or "unknown",
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
        git=run(["git", "--version"]).strip().removeprefix("git version "),
        dspyreg_source=head + (" + uncommitted changes in dspy_registry/" if dirty else ""),
        loadavg=loadavg(),
    )


# -- report tables --------------------------------------------------------------------------------------------------
def figure(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, numeric: Sequence[int] = ()) -> str:
    """A markdown table; the columns at indexes `numeric` are right-aligned."""
    align = ["---:" if i in numeric else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def facts_table(facts: Mapping[str, object]) -> str:
    """Two columns: what was measured where and how (machine, settings)."""
    return markdown_table(["", "value"], [(key, value) for key, value in facts.items()])


def targets_table(targets: Sequence[tuple[str, str, bool]]) -> str:
    """(target, measured, met) rows."""
    return markdown_table(
        ["target", "measured", "met"], [(t, m, "**MET**" if ok else "**MISSED**") for t, m, ok in targets]
    )


def write_generated_block(name: str, script: str, section: str, block: str, path: Path = DOCS) -> None:
    """Replace the block `name` that benchmarks/`script` generates in docs/performance.md (made under `section`
    if missing). Text outside the block is written by hand and kept."""
    begin = f"<!-- {name}:begin (generated by benchmarks/{script}; edits inside are overwritten) -->"
    end = f"<!-- {name}:end -->"
    generated = f"{begin}\n{block}\n{end}"
    text = path.read_text() if path.exists() else "# Performance\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + generated + rest.split(end, 1)[1]
    elif f"\n{section}\n" in f"\n{text}":
        text = text.replace(section, f"{section}\n\n{generated}", 1)
    else:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{generated}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
