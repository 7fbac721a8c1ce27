"""GitStore, the one object that talks to git; this module is its local plumbing, gitremote.py its remote half.

Reads go through one long-lived `git cat-file --batch`; what a tree holds is parsed in gittree.py (`list_bundle`
checks every name of a bundle's tree).
Objects are written with plumbing (hash-object, mktree, commit-tree, mktag) and become visible only when
`transaction` moves refs with `git update-ref --stdin` and expected old values, so a crash at any point leaves the
repository as it was. A transaction is a list of `RefUpdate`s: for a registry with a remote the same list is pushed
with `git push --atomic --force-with-lease=<ref>:<old>` (gitremote.py). Locks other gits hold are read in locks.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from . import interrupts
from .errors import ConflictError, GitError, LockedRef, NotARegistry
from .gitremote import GitRemote
from .gitremote import is_url as is_url  # re-exported: registry and serve ask here
from .gittree import BundleEntry, GitObject, TreeEntry, list_bundle, tree_entries
from .locks import (
    FRESH_LOCK_PATIENCE,
    held_lock_message,
    is_lock_error,
    lock_errors,
    present_locks,
    stale_lock_message,
)
from .refs import ZERO_SHA, RefUpdate

_GIT_ENV = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
_HEX_HEAD = re.compile(rb"[0-9a-f]{40}|[0-9a-f]{64}")
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
PACK_AFTER_LOOSE_OBJECTS = 500
# The long-lived reader (`read`) keeps the delta bases it unpacks up to git's limit, 96 MiB by default, and every
# object it parsed: read through ten thousand versions (`verify --all`), it grew by 40 MiB. Bounded here: a smaller
# cache (reading oldest first, a version's bases are those of the last few, so reads are no slower), and a new
# process every _READER_READS reads (about 500 versions verified; starting one costs a few milliseconds).
_READER_CACHE = "core.deltaBaseCacheLimit=8m"
_READER_READS = 10_000


@dataclass(frozen=True)
class Identity:
    name: str
    email: str

    def signature(self, when: datetime) -> str:
        return f"{self.name} <{self.email}> {int(when.timestamp())} +0000"


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class GitStore(GitRemote):
    """A git repository (bare or not), addressed by its git dir.

    With a `remote`, the repository is a local cache of that remote: `sync` brings its refs up to date (moved tags
    included) and `transaction` pushes with `git push --atomic` and a lease per ref instead of moving local refs.
    """

    def __init__(self, git_dir: Path, remote: str | None = None) -> None:
        self.git_dir = git_dir
        self.remote = remote
        self.settings: tuple[tuple[str, str], ...] = ()  # git config for this process's git commands only
        self._cat: subprocess.Popen[bytes] | None = None
        self._reads = 0  # by the running `_cat`
        self._history: tuple[str, frozenset[str] | None] | None = None  # is_ancestor's tip and its commits
        # Every git config value this repository sees, read by one `git config --list` for all the keys a command
        # asks (remote, identity, signing): one process, not one per key. Keyed by `settings`, dropped by a write.
        self._config_values: tuple[tuple[tuple[str, str], ...], dict[str, str]] | None = None

    # -- opening -------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path) -> GitStore:
        if not path.exists():
            raise NotARegistry(f"{path} does not exist: create a registry with `dspyreg init {path}`")
        plain = _plain_git_dir(path)
        store = cls(plain or _discovered_git_dir(path))
        # A clone of a remote registry: its origin is the registry, this clone its cache.
        store.remote = store._config("remote.origin.url")
        if plain == path.resolve() and (store._config("safe.bareRepository") or "").lower() == "explicit":
            _discovered_git_dir(path)  # git refuses to find this bare repository by itself: say so as git does
        return store

    def _env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of our git commands: `settings` through GIT_CONFIG_KEY_n, never on a command line (they
        may hold a token) nor on disk."""
        env = {**os.environ, **_GIT_ENV, **(extra or {})}
        if self.settings:
            first = int(env.get("GIT_CONFIG_COUNT") or 0)
            for i, (key, value) in enumerate(self.settings, start=first):
                env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
            env["GIT_CONFIG_COUNT"] = str(first + len(self.settings))
        return env

    @classmethod
    def init(cls, path: Path, *, bare: bool) -> GitStore:
        """A new empty repository at `path` whose branch is main; OSError when the folder cannot be made."""
        path.mkdir(parents=True, exist_ok=True)
        store = cls((path if bare else path / ".git").resolve())
        store.run("init", "--quiet", "--initial-branch=main", *(["--bare"] if bare else []), str(path.resolve()))
        # A version writes about ten loose objects: pack at 500 (about 50 versions), not at git's default
        # 6,700; the registry's own setting, so its owner may change it (`pack_when_due` runs `git gc --auto`).
        store.run("config", "--local", "gc.auto", str(PACK_AFTER_LOOSE_OBJECTS))
        return store

    def close(self) -> None:
        if self._cat is not None:
            assert self._cat.stdin is not None
            self._cat.stdin.close()
            self._cat.wait()
            self._cat = None

    def __enter__(self) -> GitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running git ---------------------------------------------------------------------------------------------
    def run(self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None) -> str:
        cmd = ["git", f"--git-dir={self.git_dir}", *args]
        if args[:1] == ("config",):
            self._config_values = None  # it may write: read the values again next time
        # Its own session: a Ctrl-C at the terminal reaches dspyreg, which decides (interrupts.py), never git midway.
        proc = subprocess.run(cmd, input=input, capture_output=True, env=self._env(env), start_new_session=True)
        if proc.returncode != 0:
            raise GitError(list(args), proc.returncode, proc.stderr.decode(errors="replace"))
        return proc.stdout.decode()

    def identity(self) -> Identity:
        name = os.environ.get("GIT_AUTHOR_NAME") or self._config("user.name") or os.environ.get("USER") or "dspyreg"
        email = os.environ.get("GIT_AUTHOR_EMAIL") or self._config("user.email") or "dspyreg@localhost"
        return Identity(name, email)

    def git_config(self, key: str) -> str | None:
        """A value of the user's git config as this repository sees it (None when unset)."""
        return self._config(key)

    def _config(self, key: str) -> str | None:
        """As `git config --get key` answers (the last value; None when unset or empty)."""
        if self._config_values is None or self._config_values[0] != self.settings:
            values: dict[str, str] = {}
            try:
                listed = self.run("config", "-z", "--list")
            except GitError:
                listed = ""
            for item in filter(None, listed.split("\0")):
                name, _, value = item.partition("\n")  # `name` alone: a key without `=` (an implicit true)
                values[name] = value
            self._config_values = (self.settings, values)
        return self._config_values[1].get(_config_name(key), "").strip() or None

    # -- reading -------------------------------------------------------------------------------------------------
    def read(self, spec: str) -> GitObject | None:
        """Any object by name (`<sha>`, `refs/tags/qa/prod`, `<commit>:qa/manifest.toml`), or None if missing.

        One `git cat-file --batch` answers them all, started again every _READER_READS reads: git keeps what it
        parsed (each commit peeled, with its text) for as long as it runs."""
        if self._cat is not None and self._reads >= _READER_READS:
            self.close()
        if self._cat is None:
            self._reads = 0
            self._cat = subprocess.Popen(
                ["git", f"--git-dir={self.git_dir}", "-c", _READER_CACHE, "cat-file", "--batch"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, **_GIT_ENV},
                start_new_session=True,
            )
        assert self._cat.stdin is not None and self._cat.stdout is not None
        self._reads += 1
        self._cat.stdin.write(spec.encode() + b"\n")
        self._cat.stdin.flush()
        header = self._cat.stdout.readline().decode()
        parts = header.split()
        if len(parts) != 3:
            return None
        sha, kind, size = parts
        data = self._cat.stdout.read(int(size) + 1)[:-1]
        return GitObject(sha, kind, data)

    def ref_value(self, ref: str) -> str | None:
        """The sha a ref holds (for a tag: the tag object), or None when the ref does not exist."""
        obj = self.read(ref)
        return obj.sha if obj is not None else None

    def is_ancestor(self, commit: str, ref: str) -> bool:
        """Is `commit` in the history of `ref` (one `git merge-base --is-ancestor`, no walk in Python)? Asked again
        of the same tip (`verify --all`: every version against main), the tip's commits are listed once and kept,
        so ten thousand versions cost one `git rev-list`, not ten thousand processes."""
        tip = self.peel_to_commit(ref)
        if tip is not None and len(commit) == len(tip) and self._history is not None and self._history[0] == tip:
            if self._history[1] is None:
                listed = self.run("rev-list", tip, "--").split()
                self._history = tip, frozenset(listed)
            assert self._history[1] is not None
            return commit in self._history[1]
        if tip is not None:
            self._history = tip, None
        args = ["merge-base", "--is-ancestor", commit, ref]
        proc = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", *args], capture_output=True, env={**os.environ, **_GIT_ENV}
        )
        if proc.returncode not in (0, 1):
            raise GitError(args, proc.returncode, proc.stderr.decode(errors="replace"))
        return proc.returncode == 0

    def peel_to_commit(self, spec: str) -> str | None:
        obj = self.read(f"{spec}^{{commit}}")
        return obj.sha if obj is not None and obj.type == "commit" else None

    def read_blob(self, commit: str, path: str) -> bytes | None:
        obj = self.read(f"{commit}:{path}")
        return obj.data if obj is not None and obj.type == "blob" else None

    def blob(self, sha: str) -> bytes:
        """The content of the blob `sha` (as listed by list_bundle); empty when it is missing."""
        obj = self.read(sha)
        return obj.data if obj is not None and obj.type == "blob" else b""

    def list_tree(self, tree_ish: str) -> dict[str, TreeEntry]:
        """Entries of a tree, or of a commit's or tag's root tree (`<rev>:<path>` names a subtree)."""
        obj = self.read(tree_ish)
        if obj is not None and obj.type != "tree":
            obj = self.read(f"{obj.sha}^{{tree}}")
        if obj is None or obj.type != "tree":
            return {}
        try:
            return tree_entries(obj)  # the tree object is at hand already (cat-file --batch): no `ls-tree` process
        except ValueError:  # a malformed tree (written byte by byte): git says what is wrong with it
            pass
        out = self.run("ls-tree", "-z", obj.sha)
        entries: dict[str, TreeEntry] = {}
        for line in filter(None, out.split("\0")):
            meta, name = line.split("\t", 1)
            mode, kind, sha = meta.split()
            entries[name] = TreeEntry(mode, kind, sha)
        return entries

    def list_files(self, tree_ish: str, prefix: str) -> list[str]:
        out = self.run("ls-tree", "-r", "-z", "--name-only", tree_ish, "--", prefix)
        return [p for p in out.split("\0") if p]

    def list_bundle(self, commit: str, prefix: str, *, where: str | None = None) -> list[BundleEntry]:
        """Every file under the folder `prefix` (e.g. `qa/`) at `commit`, sorted by path, each checked before anyone
        writes it (gittree.list_bundle); UnsafeTree naming `where` (default `<commit>:<prefix>`) and the entry."""
        return list_bundle(self.read, commit, prefix, where=where or f"{commit[:12]}:{prefix}")

    def for_each_ref(self, fields: list[str], *patterns: str) -> list[list[str]]:
        fmt = "%00".join(fields) + "%00%01"
        out = self.run("for-each-ref", f"--format={fmt}", *patterns)
        rows = [r.strip("\n") for r in out.split("\0\x01") if r.strip("\n")]
        return [r.split("\0") for r in rows]

    def tags(self, prefix: str = "refs/tags/") -> list[tuple[str, str, str | None]]:
        """(refname, object, peeled) of every tag whose name starts with `prefix`, sorted by name: `peeled` is what an
        annotated tag points at in the end, None for a lightweight tag. One `git show-ref -d`, which takes a packed
        tag's peeled value from packed-refs without reading the tag (a tenth of for_each_ref's `%(*objectname)` at
        10,000 tags); no message is read: read the tags wanted with `read_many`."""
        proc = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "show-ref", "-d", "--tags"],
            capture_output=True,
            env=self._env(),
            start_new_session=True,
        )
        if proc.returncode != 0 and (proc.returncode != 1 or proc.stdout or proc.stderr.strip()):  # 1: no tags
            raise GitError(["show-ref", "-d", "--tags"], proc.returncode, proc.stderr.decode(errors="replace"))
        found: list[tuple[str, str, str | None]] = []
        for line in proc.stdout.decode().splitlines():
            sha, _, name = line.partition(" ")
            if name.endswith("^{}"):
                if found and found[-1][0] == name[:-3]:
                    found[-1] = (found[-1][0], found[-1][1], sha)
            elif name.startswith(prefix):
                found.append((name, sha, None))
        return found

    def messages(self, ref: str, *, limit: int | None = None) -> Iterator[str]:
        """Commit messages of `ref`'s first-parent history, newest first."""
        args = ["log", "--first-parent", "-z", "--format=%B"]
        if limit is not None:
            args.append(f"-n{limit}")
        for message in self.run(*args, ref, "--").split("\0"):
            if message.strip():
                yield message

    def stream_messages(self, ref: str) -> Generator[str, None, None]:
        """Commit messages of `ref`'s first-parent history, newest first, read as git prints them: a reader that
        stops early (closes the iterator) stops git too, so the journal's old commits are never read."""
        args = ["log", "--first-parent", "-z", "--format=%B", ref, "--"]
        proc = subprocess.Popen(
            ["git", f"--git-dir={self.git_dir}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env(),
            start_new_session=True,
        )
        assert proc.stdout is not None and proc.stderr is not None
        finished = False
        try:
            pending = b""
            while chunk := os.read(proc.stdout.fileno(), 1 << 16):
                *done, pending = (pending + chunk).split(b"\0")
                for message in done:
                    if message.strip():
                        yield message.decode(errors="replace")
            if pending.strip():
                yield pending.decode(errors="replace")
            finished = True
        finally:
            if not finished:
                proc.kill()
            proc.stdout.close()
            err = proc.stderr.read().decode(errors="replace")
            proc.stderr.close()
            code = proc.wait()
        if code != 0:
            raise GitError(args, code, err)

    def read_many(self, specs: list[str], *, ids_only: bool = False) -> list[GitObject | None]:
        """Many objects by name (as `read`), through one `git cat-file --batch` fed every name at once: the cost
        of one process, not one round trip per object. `ids_only`: their sha and type (empty data), read by
        `--batch-check`, for callers that read each distinct object once."""
        if not specs:
            return []
        proc = subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "cat-file", "--batch-check" if ids_only else "--batch"],
            input="".join(f"{spec}\n" for spec in specs).encode(),
            capture_output=True,
            env=self._env(),
            start_new_session=True,
        )
        if proc.returncode != 0:
            raise GitError(["cat-file", "--batch"], proc.returncode, proc.stderr.decode(errors="replace"))
        out, at = proc.stdout, 0
        found: list[GitObject | None] = []
        for _ in specs:
            end = out.index(b"\n", at)
            parts = out[at:end].decode().split()
            at = end + 1
            if len(parts) != 3 or parts[-1] in ("missing", "ambiguous"):  # `<spec> missing`
                found.append(None)
                continue
            sha, kind, size = parts
            if ids_only:
                found.append(GitObject(sha, kind, b""))
                continue
            found.append(GitObject(sha, kind, out[at : at + int(size)]))
            at += int(size) + 1
        return found

    # -- writing objects (invisible until a transaction moves a ref) -----------------------------------------------
    def write_blobs(self, contents: Mapping[str, bytes]) -> dict[str, str]:
        if not contents:
            return {}
        with tempfile.TemporaryDirectory(prefix="dspyreg-") as tmp:
            paths = []
            for i, data in enumerate(contents.values()):
                path = Path(tmp) / str(i)
                path.write_bytes(data)
                paths.append(str(path))
            out = self.run("hash-object", "-w", "--no-filters", "--stdin-paths", input="\n".join(paths).encode())
        return dict(zip(contents, out.split(), strict=True))

    def write_tree(self, base_tree: str | None, changes: Mapping[str, TreeEntry | None]) -> str:
        """A tree equal to `base_tree` with nested `changes` applied (path -> entry, or None to remove)."""
        entries = self.list_tree(base_tree) if base_tree else {}
        nested: dict[str, dict[str, TreeEntry | None]] = {}
        for path, entry in changes.items():
            head, sep, rest = path.partition("/")
            if sep:
                nested.setdefault(head, {})[rest] = entry
            elif entry is None:
                entries.pop(head, None)
            else:
                entries[head] = entry
        for name, sub_changes in nested.items():
            base = entries.get(name)
            sub = self.write_tree(base.sha if base and base.type == "tree" else None, sub_changes)
            if sub == EMPTY_TREE:
                entries.pop(name, None)
            else:
                entries[name] = TreeEntry("040000", "tree", sub)
        lines = "".join(f"{e.mode} {e.type} {e.sha}\t{name}\0" for name, e in entries.items())
        return self.run("mktree", "-z", input=lines.encode()).strip()

    def write_commit(self, tree: str, parents: list[str], message: str, who: Identity, when: datetime) -> str:
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        stamp = f"@{int(when.timestamp())} +0000"
        env = {
            "GIT_AUTHOR_NAME": who.name,
            "GIT_AUTHOR_EMAIL": who.email,
            "GIT_AUTHOR_DATE": stamp,
            "GIT_COMMITTER_NAME": who.name,
            "GIT_COMMITTER_EMAIL": who.email,
            "GIT_COMMITTER_DATE": stamp,
        }
        return self.run(*args, input=message.encode(), env=env).strip()

    def write_tag(
        self,
        target: str,
        name: str,
        message: str,
        who: Identity,
        when: datetime,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> str:
        """An annotated tag object named `name` (e.g. `qa/prod`) pointing at commit `target`; with `sign`, its
        armored signature of the body is appended, as `git tag -s` does."""
        body = f"object {target}\ntype commit\ntag {name}\ntagger {who.signature(when)}\n\n{message.rstrip()}\n"
        data = body.encode()
        if sign is not None:
            data += sign(data)
        return self.run("mktag", input=data).strip()

    # -- moving refs -----------------------------------------------------------------------------------------------
    def transaction(self, updates: list[RefUpdate], *, lock_retries: int = 8) -> None:
        """Move every ref or none; each must still hold its expected old value, else ConflictError."""
        interrupts.commit_point()
        if self.remote is not None:
            self._push(updates)
        else:
            self._local_transaction(updates, lock_retries=lock_retries)
        self.pack_when_due()

    def pack_when_due(self) -> None:
        """`git gc --auto` after a write: nothing when few objects are loose (a directory count), else git packs
        them in a process it detaches itself (gc.autoDetach), so the command does not wait. Unpacked, every
        version keeps its objects loose, about 30 times the disk. Housekeeping: its failure fails no write."""
        subprocess.run(
            ["git", f"--git-dir={self.git_dir}", "gc", "--auto", "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=self._env(),
            start_new_session=True,
        )

    def _local_transaction(self, updates: list[RefUpdate], *, lock_retries: int = 8, check_old: bool = True) -> None:
        """Only an expected old value that changed is a conflict (ConflictError, exit 3); a lock another git holds
        right now is waited for (up to FRESH_LOCK_PATIENCE; `lock_retries=0`: not at all), a lock left by a crash
        is named at once (LockedRef, exit 1)."""
        lines = ["start"]
        for u in updates:
            old = f" {u.old}" if check_old else ""
            if u.new == ZERO_SHA:
                lines.append(f"delete {u.ref}{old}")
            else:
                lines.append(f"update {u.ref} {u.new}{old}")
        lines += ["prepare", "commit", ""]
        script = "\n".join(lines).encode()
        deadline = time.monotonic() + (FRESH_LOCK_PATIENCE if lock_retries > 0 else 0.0)
        attempt = 0
        while True:
            try:
                self.run("update-ref", "--stdin", input=script)
                return
            except GitError as err:
                changed = self._changed(updates) if check_old else []
                if changed:
                    raise ConflictError(
                        f"another writer changed {changed[0]} first; nothing was changed: re-run the command"
                    ) from None
                if not is_lock_error(err.stderr):
                    raise
                self._wait_on_locks(err, [u.ref for u in updates], deadline, attempt)
                attempt += 1

    def _wait_on_locks(self, err: GitError, refs: list[str], deadline: float, attempt: int) -> None:
        """Return after a short sleep while the locks that failed `err` are fresh (another git is at work on them);
        raise LockedRef, naming the lock file and how to remove it, when one is stale or the wait is over."""
        where = "this cache of a remote registry" if self.remote is not None else "this registry"
        locks = present_locks(self.git_dir, refs, lock_errors(err.stderr))
        stale = next((lock for lock in locks if lock.stale), None)
        if stale is not None:
            raise LockedRef(stale_lock_message(stale, where)) from None
        if time.monotonic() >= deadline:
            if locks:
                raise LockedRef(held_lock_message(locks[0], where)) from None
            raise LockedRef(
                f"refs of {where} stayed locked by other writers ({_first_line(err)}); nothing was changed: "
                "re-run the command"
            ) from None
        time.sleep(min(0.02 * (attempt + 1), 0.2))

    def _changed(self, updates: list[RefUpdate]) -> list[str]:
        """The refs that no longer hold their expected old value."""
        changed = []
        for u in updates:
            proc = subprocess.run(
                ["git", f"--git-dir={self.git_dir}", "rev-parse", "-q", "--verify", u.ref],
                capture_output=True,
                env={**os.environ, **_GIT_ENV},
            )
            current = proc.stdout.decode().strip() or ZERO_SHA
            if current != u.old:
                changed.append(u.ref)
        return changed

    def _delete_local_refs(self, refs: list[str]) -> None:
        """Delete `refs` here, whatever they hold (a sync drops what the remote deleted)."""
        self._local_transaction([RefUpdate(ref, ZERO_SHA, ZERO_SHA) for ref in refs], check_old=False)

    def _olds_hold(self, updates: list[RefUpdate]) -> bool:
        return not self._changed(updates)


def _plain_git_dir(path: Path) -> Path | None:
    """The git dir of `path` when it plainly is one that git would find there by itself, without asking git (one
    process less for every command): a bare repository or a work tree with a `.git` folder, both owned by this user
    (git refuses another's), with no GIT_* variable that moves git's repository. None: ask git."""
    uid = getattr(os, "geteuid", None)  # no owners to compare on Windows: ask git
    if uid is None or any(
        os.environ.get(name) for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY")
    ):
        return None
    for candidate in (path / ".git", path):  # git's own order
        try:
            head = (candidate / "HEAD").read_bytes()[:256]
            owned = all(os.stat(p).st_uid == uid() for p in {path, candidate})
        except OSError:
            continue
        if (
            owned
            and (head.startswith(b"ref: refs/") or bool(_HEX_HEAD.fullmatch(head.strip())))
            and (candidate / "objects").is_dir()
            and (candidate / "refs").is_dir()
        ):
            return candidate.resolve()
    return None


def _discovered_git_dir(path: Path) -> Path:
    """The git dir git finds at `path` (`rev-parse --absolute-git-dir`): NotARegistry unless it is `path` itself or
    its `.git`."""
    proc = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--absolute-git-dir"],
        capture_output=True,
        env={**os.environ, **_GIT_ENV},
    )
    if proc.returncode != 0:
        raise NotARegistry(f"{path} is not a git repository: {_init_hint(path)}")
    git_dir = Path(proc.stdout.decode().strip()).resolve()
    # A plain folder inside some other work tree is not a registry just because git finds a parent repository.
    if git_dir not in (path.resolve(), (path / ".git").resolve()):
        raise NotARegistry(f"{path} is not a git repository: {_init_hint(path)}")
    return git_dir


def _config_name(key: str) -> str:
    """A config key as `git config --list` prints it: section and name in lower case, a subsection as written."""
    section, _, rest = key.partition(".")
    middle, _, name = rest.rpartition(".")
    return ".".join(p for p in (section.lower(), middle, name.lower()) if p)


def _first_line(err: GitError) -> str:
    """git's own error line: for a lock, the last line is only its advice to remove the file."""
    lines = [ln for ln in err.stderr.splitlines() if ln.strip()]
    return lines[0] if lines else str(err)


def _init_hint(path: Path) -> str:
    """`dspyreg init PATH` when init accepts PATH (an empty folder), else a new folder for the registry."""
    from .hints import init_elsewhere

    if path.is_dir() and any(path.iterdir()):
        return init_elsewhere(path)
    return f"create a registry with `dspyreg init {path}`"
