"""Ctrl-C tells the truth: SIGINT sent at many moments of publish, promote and rollback; what the command printed
must agree with what the registry holds afterwards, and no traceback is ever printed."""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from dspy_registry.registry import Registry

from .conftest import EXAMPLE_SPEC, git, publish_args

TRIALS = 30  # stratified: one delay in each thirtieth of the run (a promote or a rollback takes ~0.2 s)
PUBLISH_TRIALS = 24  # a publish takes ~1.2 s of CPU (DSPy's import); a promote or a rollback ~0.2 s
DSPYREG = [sys.executable, "-c", "from dspy_registry.entry import main; main()"]


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_interrupted(args: list[str], delay: float) -> Outcome:
    """Start the command, wait until it has started working (its first git process), then SIGINT it after `delay`.

    Before its first git process the interpreter may still be starting up, where an interrupt is Python's own: no
    program can answer it, so that window is left out by construction."""
    proc = subprocess.Popen([*DSPYREG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if children.read_text().strip():
                break
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return Outcome(proc.returncode, out, err)


def env_version(registry: Path, env: str) -> str | None:
    with Registry.open(registry) as reg:
        return reg.environments_of("qa").get(env)


Attempt = Callable[[int, float, Path], tuple[Outcome, bool, str]]


def disagreements(trials: int, seed: int, longest: float, lanes: list[Path], attempt: Attempt) -> list[str]:
    """Run `attempt(i, delay, registry)` -> (outcome, landed, what landed) for delays spread over the command's run
    time; the trials are shared by `lanes` (copies of one registry) that run side by side."""
    rng = random.Random(seed)
    # One delay in each of `trials` equal slices of the run time (stratified, not uniform): every part of the run, the
    # commit point included, is hit, and no two trials bunch up, so fewer trials cover the run as well.
    delays = [(i + rng.random()) * longest / trials for i in range(trials)]
    rng.shuffle(delays)  # the lanes share the slices, early and late alike

    def lane(k: int) -> list[tuple[int, Outcome, bool, str]]:
        return [(i, *attempt(i, delays[i], lanes[k])) for i in range(k, trials, len(lanes))]

    with ThreadPoolExecutor(len(lanes)) as pool:
        results = sorted(r for rs in pool.map(lane, range(len(lanes))) for r in rs)
    wrong = []
    codes = Counter(outcome.code for _, outcome, _, _ in results)
    for i, outcome, landed, what in results:
        said_landed = outcome.code == 0 and what in outcome.out
        said_nothing = outcome.code == 130 and "nothing was changed" in outcome.err
        if "Traceback" in outcome.err or not (said_landed if landed else said_nothing):
            wrong.append(f"trial {i}: landed={landed} exit={outcome.code} out={outcome.out!r} err={outcome.err!r}")
    # The delays must have hit both sides of the commit point, or the test proves nothing.
    assert codes[0] and codes[130], codes
    return wrong


def lanes_of(registry: Path) -> list[Path]:
    """The registry and a copy of it: two lanes of trials, one per core."""
    copy = registry.with_name(registry.name + "-lane")
    shutil.copytree(registry, copy, symlinks=True)
    return [registry, copy]


def duration(args: list[str]) -> float:
    started = time.monotonic()
    subprocess.run([*DSPYREG, *args], check=True, capture_output=True)
    return time.monotonic() - started


@pytest.mark.slow
def test_interrupted_publish_says_what_landed(registry_path: Path, states: dict[str, Path]) -> None:
    longest = duration([*publish_args(EXAMPLE_SPEC, states["v1.0"], "v0.1"), "--registry", str(registry_path)]) * 1.1

    def attempt(i: int, delay: float, registry: Path) -> tuple[Outcome, bool, str]:
        version = f"v1.{i}"
        args = [*publish_args(EXAMPLE_SPEC, states["v1.0"], version), "--registry", str(registry)]
        outcome = run_interrupted(args, delay)
        landed = bool(git(registry, "tag", "-l", f"qa/{version}").strip())
        return outcome, landed, f"Published qa {version}"

    assert disagreements(PUBLISH_TRIALS, 1, longest, lanes_of(registry_path), attempt) == []


@pytest.mark.slow
def test_interrupted_promote_says_what_landed(published: Registry, registry_path: Path) -> None:
    longest = duration(["promote", "v1.0", "--registry", str(registry_path)]) * 1.1

    def attempt(i: int, delay: float, registry: Path) -> tuple[Outcome, bool, str]:
        before = env_version(registry, "staging")
        target = "v1.1" if before == "v1.0" else "v1.0"
        outcome = run_interrupted(["promote", target, "--registry", str(registry)], delay)
        landed = env_version(registry, "staging") == target
        return outcome, landed, f"qa/staging: {before or 'unset'} -> {target}"

    assert disagreements(TRIALS, 2, longest, lanes_of(registry_path), attempt) == []


@pytest.mark.slow
def test_interrupted_rollback_says_what_landed(published: Registry, registry_path: Path) -> None:
    published.promote("v1.0", "prod", name="qa")
    published.promote("v1.1", "prod", name="qa")
    longest = duration(["rollback", "--registry", str(registry_path)]) * 1.1

    def attempt(i: int, delay: float, registry: Path) -> tuple[Outcome, bool, str]:
        with Registry.open(registry) as fresh:  # give prod something to roll back to
            fresh.promote("v1.1" if fresh.environments_of("qa").get("prod") == "v1.0" else "v1.0", "prod", name="qa")
        before = env_version(registry, "prod")
        outcome = run_interrupted(["rollback", "--registry", str(registry)], delay)
        after = env_version(registry, "prod")
        return outcome, after != before, f"qa/prod: {before} -> {after}"

    assert disagreements(TRIALS, 3, longest, lanes_of(registry_path), attempt) == []


def test_ctrl_c_while_importing_the_program_exits_130(
    registry_path: Path, tmp_path: Path, states: dict[str, Path]
) -> None:
    slow = tmp_path / "slow_program.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    outcome = run_interrupted(
        [*publish_args(f"{slow}:Program", states["v1.0"], "v1.0"), "--registry", str(registry_path)], 1.5
    )
    assert outcome.code == 130 and "Traceback" not in outcome.err and "nothing was changed" in outcome.err
    assert not git(registry_path, "tag", "-l").strip()


# An interrupt does not always reach the funnel as KeyboardInterrupt: Python drops one raised inside `__del__` (it
# only prints "Exception ignored"), and a library may catch it and raise its own error (pydantic's class creation
# turns it into RuntimeError). Both must still end "nothing was changed", exit 130, with no ref moved.
SWALLOWED = """
import signal, sys
import typer
from dspy_registry import cli_common
from dspy_registry.registry import Registry

class Finalized:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # the handler raises inside __del__: Python ignores it

from dspy_registry import interrupts
interrupts.install()  # as the console script does, before anything else
{starting}
try:
    with cli_common.funnel(False):
        with Registry.open(sys.argv[1]) as reg:
            {how}
            reg.promote("v1.0", "staging", name="qa")
except typer.Exit as done:
    sys.exit(done.exit_code)
"""


@pytest.mark.parametrize(
    ("starting", "how"),
    [
        ("", "Finalized(); import gc; gc.collect()"),
        (
            "",
            "try:\n                signal.raise_signal(signal.SIGINT)\n"
            "            except KeyboardInterrupt as err:\n"
            "                raise RuntimeError('wrapped by a library') from err",
        ),
        ("Finalized(); import gc; gc.collect()  # while starting up, before the command's funnel", "pass"),
    ],
    ids=["raised-in-del", "wrapped-by-a-library", "starting-up-raised-in-del"],
)
def test_an_interrupt_swallowed_on_its_way_up_still_cancels(
    published: Registry, registry_path: Path, starting: str, how: str
) -> None:
    before = git(registry_path, "for-each-ref")
    done = subprocess.run(
        [sys.executable, "-c", SWALLOWED.format(starting=starting, how=how), str(registry_path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 130, done.stderr
    assert "nothing was changed" in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert git(registry_path, "for-each-ref") == before
