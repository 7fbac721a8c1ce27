"""Git's lock files (`<ref>.lock`, `packed-refs.lock`): which ones block a ref update, and how to say so.

A git that crashes mid-transaction leaves its lock files behind, and every later update of those refs fails until
someone removes them. Git's lock files record no owner, so their age tells a lock a running git holds right now
(milliseconds to seconds) from one left by a crash: older than `STALE_LOCK_SECONDS`, it is reported at once with
the command that clears it; younger, the caller retries for a while (`FRESH_LOCK_PATIENCE`).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

STALE_LOCK_SECONDS = 30.0
FRESH_LOCK_PATIENCE = 5.0  # seconds a writer waits on a lock another git holds before giving up
# git: "Unable to create '/repo/./refs/tags/qa/prod.lock': File exists."
_LOCK_FILE_RE = re.compile(r"Unable to create '([^']+\.lock)': File exists")


@dataclass(frozen=True)
class LockFile:
    path: Path
    what: str  # the ref it blocks, e.g. refs/tags/qa/prod, or "the packed refs"
    age: float  # seconds since it was last written

    @property
    def stale(self) -> bool:
        return self.age >= STALE_LOCK_SECONDS

    def describe(self) -> str:
        return f"{self.path} is {_age(self.age)} old"

    def remove_command(self) -> str:
        return "rm '" + str(self.path).replace("'", "'\"'\"'") + "'"


def lock_errors(stderr: str) -> list[str]:
    """The lock files git says it could not create (paths as git printed them, normalized)."""
    return [os.path.normpath(m) for m in _LOCK_FILE_RE.findall(stderr)]


def is_lock_error(stderr: str) -> bool:
    return bool(_LOCK_FILE_RE.search(stderr))


def present_locks(git_dir: Path, refs: Iterable[str], named: Iterable[str] = ()) -> list[LockFile]:
    """The lock files that exist now, among those of `refs` (and packed-refs.lock) under `git_dir` and those git
    named in its error (`named`); the ones under `git_dir` only."""
    root = git_dir.resolve()
    candidates = [root / f"{ref}.lock" for ref in refs] + [root / "packed-refs.lock"]
    candidates += [Path(p) for p in named]
    found: dict[Path, LockFile] = {}
    now = time.time()
    for path in candidates:
        try:
            relative = path.relative_to(root)
            mtime = path.stat().st_mtime
        except (ValueError, OSError):  # elsewhere, or gone meanwhile (a running git released it)
            continue
        name = relative.as_posix()[: -len(".lock")]
        what = "the packed refs" if name == "packed-refs" else name
        found.setdefault(path, LockFile(path, what, max(0.0, now - mtime)))
    return list(found.values())


def stale_lock_message(lock: LockFile, where: str = "this registry") -> str:
    return (
        f"a stale lock blocks {lock.what}: {lock.describe()} (left by a crashed git?); "
        f"if no dspyreg or git runs on {where}, remove it: {lock.remove_command()}"
    )


def held_lock_message(lock: LockFile, where: str = "this registry") -> str:
    return (
        f"{lock.what} stays locked by another git or dspyreg ({lock.describe()}); nothing was changed: re-run when "
        f"it is done; if no dspyreg or git runs on {where}, remove it: {lock.remove_command()}"
    )


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
