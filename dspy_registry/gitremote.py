"""The remote half of GitStore: the cache clone of a remote registry, `git ls-remote`, sync (fetch with git's
fsck, moved tags included, deleted refs dropped) and atomic pushes with a lease per ref.

`GitRemote` is mixed into `GitStore` (gitstore.py), which gives it the local plumbing it calls: running git, the
environment of its commands, and local ref transactions. A registry addressed by URL, or a clone of one, is a
GitStore with a `remote`: its `transaction` pushes, and every command syncs the refs it reads.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from .errors import ConflictError, GitError, LockedRef, RegistryError, RemoteUnreachable
from .locks import FRESH_LOCK_PATIENCE, is_lock_error, lock_errors, present_locks, stale_lock_message
from .refs import ZERO_SHA, RefUpdate

_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://")
_USERINFO_RE = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@")
_SCP_RE = re.compile(r"^[\w.-]+@[\w.-]+:")
_LOCKED_REF_RE = re.compile(r"cannot lock ref '([^']+)'")
_VANISHED_RE = re.compile(r"couldn't find remote ref (\S+)")
# A repository's own settings for reaching its remotes (the auth header actions/checkout writes, credential helpers,
# URL rewrites, the ssh command), carried to the cache that stands for its origin.
_NETWORK_CONFIG_RE = r"^(http\..*|credential\..*|url\..*\.(push)?insteadof|core\.sshcommand)$"
SYNC_TRIES = 4  # listings of the remote per sync when refs it listed are deleted before the fetch
# Fetched objects go through git's fsck, with the names that escape a folder or reach into .git made errors
# (git's defaults only warn about them).
_FETCH_FSCK_ERRORS = ("hasDot", "hasDotdot", "hasDotgit", "emptyName", "fullPathname", "gitmodulesSymlink")
_FETCH_FSCK = [
    "-c",
    "fetch.fsckObjects=true",
    *(a for m in _FETCH_FSCK_ERRORS for a in ("-c", f"fetch.fsck.{m}=error")),
]


def is_url(location: str) -> bool:
    """A git URL (ssh://, https://, git://, file://, or scp-like user@host:path) rather than a local path."""
    return bool(_URL_RE.match(location) or _SCP_RE.match(location))


_Store = TypeVar("_Store", bound="GitRemote")


class GitRemote:
    """What a GitStore does with its `remote` (a git URL or a path): see the module docstring."""

    git_dir: Path
    remote: str | None
    settings: tuple[tuple[str, str], ...]

    if TYPE_CHECKING:  # given by GitStore, the local plumbing

        def __init__(self, git_dir: Path, remote: str | None = None) -> None: ...
        def run(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> str: ...
        def close(self) -> None: ...
        def for_each_ref(self, fields: list[str], *patterns: str) -> list[list[str]]: ...
        def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]: ...
        def _local_transaction(
            self, updates: list[RefUpdate], *, lock_retries: int = 8, check_old: bool = True
        ) -> None: ...
        def _delete_local_refs(self, refs: list[str]) -> None: ...
        def _wait_on_locks(self, err: GitError, refs: list[str], deadline: float, attempt: int) -> None: ...

    # -- the cache clone -------------------------------------------------------------------------------------------
    @classmethod
    def cache_of(cls: type[_Store], url: str, cache_root: Path, settings: tuple[tuple[str, str], ...] = ()) -> _Store:
        """The one cache clone of `url` under `cache_root` (a bare repository made on first use, never re-cloned).
        `settings` (see `network_settings`) apply to its git commands and are never written into it."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", hide_userinfo(url).split("://")[-1]).strip("_")[-60:]
        import hashlib

        path = cache_root / "remotes" / f"{slug}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
        if not (path / "HEAD").exists():
            probe = cls(cache_root, url)
            probe.settings = settings
            probe.remote_refs("HEAD")  # unreachable: say so before leaving anything on disk
            tmp = Path(tempfile.mkdtemp(dir=_mkdirs(cache_root / "remotes"), prefix=".clone-"))
            subprocess.run(["git", "init", "-q", "--bare", str(tmp)], check=True, capture_output=True)
            subprocess.run(["git", f"--git-dir={tmp}", "remote", "add", "origin", url], check=True, capture_output=True)
            try:
                tmp.rename(path)
            except OSError:  # another process made it first
                shutil.rmtree(tmp, ignore_errors=True)
        store = cls(path.resolve(), url)
        store.settings = settings
        return store

    def network_settings(self) -> tuple[tuple[str, str], ...]:
        """This repository's own (local) settings for reaching its remotes, for a cache that stands for its origin."""
        try:
            out = self.run("config", "--local", "-z", "--get-regexp", _NETWORK_CONFIG_RE)
        except GitError:
            return ()  # none set
        return tuple((key, value) for key, _, value in (item.partition("\n") for item in out.split("\0") if item))

    # -- listing, fetching, pushing --------------------------------------------------------------------------------
    def remote_refs(self, *patterns: str) -> dict[str, str]:
        """The remote's refs (all, or those named), as `git ls-remote` reports them: one round trip."""
        assert self.remote is not None
        out = self._remote_call(["ls-remote", "--refs", self.remote, *patterns])
        refs = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            refs[ref] = sha
        return refs

    def sync(self) -> None:
        """Make the local refs equal the remote's: fetch what changed (forced: a moved tag is updated), drop what
        was deleted. Fetches only objects not already here; a cache is never cloned again. A ref deleted on the
        remote between the listing and the fetch makes the fetch fail as a whole: list again and fetch again."""
        if self.remote is None:
            return
        for attempt in range(SYNC_TRIES):
            remote = {r: s for r, s in self.remote_refs().items() if r.startswith(("refs/heads/", "refs/tags/"))}
            local = {
                ref: sha
                for ref, sha in (
                    row for row in self.for_each_ref(["%(refname)", "%(objectname)"], "refs/heads", "refs/tags")
                )
            }
            changed = sorted(ref for ref, sha in remote.items() if local.get(ref) != sha)
            vanished = self._fetch(changed) if changed else None
            if vanished is None:
                break
            if attempt == SYNC_TRIES - 1:
                raise ConflictError(
                    f"the registry {self.remote} kept changing while dspyreg fetched it ({vanished} was deleted "
                    f"after being listed, {SYNC_TRIES} times); nothing was changed: re-run the command"
                )
        gone = [ref for ref in local if ref not in remote]
        if gone:
            self._delete_local_refs(gone)
        self.close()  # the next read starts a fresh cat-file that sees the new refs

    def _fetch(self, refs: list[str]) -> str | None:
        """Fetch `refs` into the same names; None when done, or the ref the remote no longer has."""
        assert self.remote is not None
        refspecs = "".join(f"+{ref}:{ref}\n" for ref in refs)
        fetch = [*_FETCH_FSCK, "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--stdin", self.remote]
        deadline = time.monotonic() + FRESH_LOCK_PATIENCE
        attempt = 0
        while True:
            try:
                self.run(*fetch, input=refspecs.encode())
                return None
            except GitError as err:
                refused = _fsck_refusal(err.stderr)
                if refused is not None:  # a forged object: fetch nothing rather than keep it in the cache
                    raise RegistryError(
                        f"git's fsck refuses an object of the registry {self.remote} ({refused}), e.g. a tree "
                        "entry that would be written outside its folder; nothing was fetched: remove it there"
                    ) from None
                vanished = _VANISHED_RE.search(err.stderr)
                if vanished:
                    return vanished.group(1)
                # Another dspyreg process updating the same cache holds a ref lock, or moved the ref between
                # fetch's read and its lock: wait, then fetch again; a lock left by a crash is named at once.
                if not is_lock_error(err.stderr) and "cannot lock ref" not in err.stderr:
                    raise RemoteUnreachable(
                        f"cannot fetch from the registry {self.remote}: {_last_line(err)}", _last_line(err)
                    ) from None
                self._wait_on_locks(err, refs, deadline, attempt)
                attempt += 1

    def _remote_call(self, args: list[str], input: bytes | None = None) -> str:
        try:
            return self.run(*args, input=input)
        except GitError as err:
            detail = err.stderr.splitlines()[-1] if err.stderr else str(err)
            raise RemoteUnreachable(f"cannot reach the registry {self.remote}: {detail}", detail) from None

    def _push(self, updates: list[RefUpdate]) -> None:
        """All updates in one `git push --atomic`, each leased on its expected old value; then the same locally.

        A refused push is a conflict only when the remote no longer holds an expected old value; a ref the server
        keeps locked is retried for a while, then named (a lock is not another writer's move)."""
        # By URL, not by remote name: no remote-tracking refs to update (and race on) in a shared cache.
        assert self.remote is not None
        args = ["push", "--atomic", "--porcelain", "-q", self.remote]
        for u in updates:
            args.append(f"--force-with-lease={u.ref}:{'' if u.old == ZERO_SHA else u.old}")
        for u in updates:
            args.append(f":{u.ref}" if u.new == ZERO_SHA else f"{u.new}:{u.ref}")
        deadline = time.monotonic() + FRESH_LOCK_PATIENCE
        for attempt in itertools.count():
            proc = subprocess.run(
                ["git", f"--git-dir={self.git_dir}", *args],
                capture_output=True,
                env=self._env(),
                start_new_session=True,  # a Ctrl-C at the terminal is dspyreg's to handle (interrupts.py)
            )
            if proc.returncode == 0:
                break
            text = (proc.stdout + proc.stderr).decode(errors="replace")
            now = self.remote_refs(*(u.ref for u in updates))
            changed = [u.ref for u in updates if now.get(u.ref, ZERO_SHA) != u.old]
            if changed:
                raise ConflictError(
                    f"another writer changed {changed[0]} on the registry {self.remote} first; nothing was changed: "
                    "re-run the command"
                )
            if is_lock_error(text) or "failed to lock" in text:
                if time.monotonic() < deadline and not self._server_lock_is_stale(text):
                    time.sleep(min(0.05 * (attempt + 1), 0.3))
                    continue
                raise LockedRef(self._server_lock_message(text))
            reasons = [ln.strip() for ln in text.splitlines() if ln.startswith("!") or "error:" in ln or "fatal:" in ln]
            raise RegistryError(
                f"cannot push to the registry {self.remote}: {' '.join(reasons)[-400:] or 'git push failed'}"
            )
        self._local_transaction(updates, check_old=False)  # the push moved them: the cache follows

    def _server_git_dir(self) -> Path | None:
        """The remote's git dir when it is a folder on this machine (a path or file:// URL), else None."""
        assert self.remote is not None
        if is_url(self.remote) and not self.remote.startswith("file://"):
            return None
        path = Path(self.remote.removeprefix("file://"))
        return path if (path / "HEAD").is_file() else path / ".git"

    def _server_lock_is_stale(self, text: str) -> bool:
        server = self._server_git_dir()
        return server is not None and any(lock.stale for lock in present_locks(server, [], lock_errors(text)))

    def _server_lock_message(self, text: str) -> str:
        server = self._server_git_dir()
        where = f"the registry {self.remote}"
        if server is not None:
            stale = [lock for lock in present_locks(server, [], lock_errors(text)) if lock.stale]
            if stale:
                return stale_lock_message(stale[0], where)
        ref = _LOCKED_REF_RE.search(text)
        paths = lock_errors(text)
        return (
            f"{where} holds a lock on {ref.group(1) if ref else 'a ref'}"
            + (f" ({paths[0]})" if paths else "")
            + ": another push is running there, or a crashed git left it; nothing was changed: re-run the command, "
            "and if this persists, remove that lock file on the server"
        )


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fsck_refusal(stderr: str) -> str | None:
    """Git's complaint when a fetch failed because fsck refused an object (e.g. a `..` tree entry), else None."""
    match = re.search(r"object ([0-9a-f]{7,64}): (\w+): (.*)", stderr)
    return f"object {match.group(1)[:12]}: {match.group(2)}: {match.group(3).strip()}" if match else None


def _last_line(err: GitError) -> str:
    lines = [ln for ln in err.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else str(err)


def hide_userinfo(text: str) -> str:
    """`https://x-access-token:TOKEN@host/...` -> `https://***@host/...` wherever a URL appears in `text`: a token in a
    registry URL is never printed nor written into a folder name."""
    return _USERINFO_RE.sub(r"\1***@", text)
