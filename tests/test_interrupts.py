"""Ctrl-C tells the truth: SIGINT sent at many moments of publish, promote and rollback; what the command printed
must agree with what the registry holds afterwards, and no traceback is ever printed."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dspy_registry.registry import Registry

from .conftest import EXAMPLE_SPEC, git, publish_args

TRIALS = 50
DSPYREG = [sys.executable, "-c", "from dspy_registry.entry import main; main()"]


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_interrupted(args: list[str], delay: float) -> Outcome:
    proc = subprocess.Popen([*DSPYREG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return Outcome(proc.returncode, out, err)


def env_version(registry: Path, env: str) -> str | None:
    with Registry.open(registry) as reg:
        return reg.environments_of("qa").get(env)


def startup() -> float:
    """How long the interpreter takes to start and reach dspyreg's Ctrl-C handler (entry.py): before that moment an
    interrupt is Python's own (it dies by the signal, printing nothing), so the delays below start after it."""
    times = []
    for _ in range(3):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import dspy_registry.entry"], check=True)
        times.append(time.monotonic() - started)
    return min(times)


def disagreements(
    trials: int, seed: int, longest: float, attempt: Callable[[int, float], tuple[Outcome, bool, str]]
) -> list[str]:
    """Run `attempt(i, delay)` -> (outcome, landed, what landed) for delays spread over the command's run time."""
    rng = random.Random(seed)
    earliest = max(0.15, 3 * startup())  # a loaded machine starts processes unevenly: stay clear of it
    wrong = []
    codes: dict[int, int] = {}
    for i in range(trials):
        outcome, landed, what = attempt(i, rng.uniform(earliest, max(longest, 2 * earliest)))
        codes[outcome.code] = codes.get(outcome.code, 0) + 1
        said_landed = outcome.code == 0 and what in outcome.out
        said_nothing = outcome.code == 130 and "nothing was changed" in outcome.err
        # Killed by the signal before it started (a loaded machine can start slowly): it said nothing, and nothing
        # landed, which agrees too.
        died_silently = outcome.code == -signal.SIGINT and not outcome.out and not outcome.err
        if "Traceback" in outcome.err or not (said_landed if landed else said_nothing or died_silently):
            wrong.append(f"trial {i}: landed={landed} exit={outcome.code} out={outcome.out!r} err={outcome.err!r}")
    # The delays must have hit both sides of the commit point, or the test proves nothing.
    assert codes.get(0) and codes.get(130), codes
    return wrong


def duration(args: list[str]) -> float:
    started = time.monotonic()
    subprocess.run([*DSPYREG, *args], check=True, capture_output=True)
    return time.monotonic() - started


@pytest.mark.slow
def test_interrupted_publish_says_what_landed(registry_path: Path, states: dict[str, Path]) -> None:
    reg = ["--registry", str(registry_path)]
    longest = duration([*publish_args(EXAMPLE_SPEC, states["v1.0"], "v0.1"), *reg]) * 1.1

    def attempt(i: int, delay: float) -> tuple[Outcome, bool, str]:
        version = f"v1.{i}"
        outcome = run_interrupted([*publish_args(EXAMPLE_SPEC, states["v1.0"], version), *reg], delay)
        landed = bool(git(registry_path, "tag", "-l", f"qa/{version}").strip())
        return outcome, landed, f"Published qa {version}"

    assert disagreements(TRIALS, 1, longest, attempt) == []


@pytest.mark.slow
def test_interrupted_promote_says_what_landed(published: Registry, registry_path: Path) -> None:
    reg = ["--registry", str(registry_path)]
    longest = duration(["promote", "v1.0", *reg]) * 1.1

    def attempt(i: int, delay: float) -> tuple[Outcome, bool, str]:
        before = env_version(registry_path, "staging")
        target = "v1.1" if before == "v1.0" else "v1.0"
        outcome = run_interrupted(["promote", target, *reg], delay)
        landed = env_version(registry_path, "staging") == target
        return outcome, landed, f"qa/staging: {before or 'unset'} -> {target}"

    assert disagreements(TRIALS, 2, longest, attempt) == []


@pytest.mark.slow
def test_interrupted_rollback_says_what_landed(published: Registry, registry_path: Path) -> None:
    reg = ["--registry", str(registry_path)]
    published.promote("v1.0", "prod", name="qa")
    published.promote("v1.1", "prod", name="qa")
    longest = duration(["rollback", *reg]) * 1.1

    def attempt(i: int, delay: float) -> tuple[Outcome, bool, str]:
        with Registry.open(registry_path) as fresh:  # give prod something to roll back to
            fresh.promote("v1.1" if fresh.environments_of("qa").get("prod") == "v1.0" else "v1.0", "prod", name="qa")
        before = env_version(registry_path, "prod")
        outcome = run_interrupted(["rollback", *reg], delay)
        after = env_version(registry_path, "prod")
        return outcome, after != before, f"qa/prod: {before} -> {after}"

    assert disagreements(TRIALS, 3, longest, attempt) == []


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
