"""What a git tree holds, read from its raw objects (no `ls-tree` process): entries with git's canonical modes, and a
bundle's files with every name checked before anything writes them. GitStore hands in its object reader."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import UnsafeTree

# What a bundle may hold: regular files (executable or not) and folders. Links and submodules are never written.
_FILE_MODES = {0o100644: "100644", 0o100755: "100755"}
_TREE_MODE = 0o40000
_OTHER_MODES = {0o120000: "a symbolic link", 0o160000: "a submodule"}
# Code points HFS+ ignores in names, so `.g\u200cit` is `.git` there (the list git's fsck uses).
_HFS_IGNORED = dict.fromkeys([*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF])


@dataclass(frozen=True)
class GitObject:
    sha: str
    type: str
    data: bytes


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    type: str
    sha: str


@dataclass(frozen=True)
class BundleEntry:
    """A file of a bundle: its path inside the bundle folder (checked safe to write there), mode and blob sha."""

    path: str
    mode: str
    sha: str


Read = Callable[[str], GitObject | None]  # an object by name (`<rev>:<path>`, a sha), None when missing


def tree_entries(tree: GitObject) -> dict[str, TreeEntry]:
    """The entries of a raw tree object by name, as `git ls-tree` prints them; ValueError for a malformed tree."""
    return {
        name.decode(): TreeEntry(*_canonical_mode(raw_mode), sha)
        for raw_mode, name, sha in _tree_items(tree.data, len(tree.sha) // 2)
    }


def list_bundle(read: Read, commit: str, prefix: str, *, where: str) -> list[BundleEntry]:
    """Every file under the folder `prefix` (e.g. `qa/`) at `commit`, read with `read`, sorted by path, each checked
    before anyone writes it: UnsafeTree (naming `where` and the entry) for a name that is empty, `.`, `..`, `.git`,
    absolute, holds a slash, backslash or control character, or is not UTF-8; and for anything but regular
    files and folders (links, submodules). Reads the raw tree objects: `ls-tree` prints `..` as a path part,
    and fails on an empty name."""
    top = read(f"{commit}:{prefix.strip('/')}")
    if top is None or top.type != "tree":
        return []
    width = len(top.sha) // 2  # 20 bytes per object id (SHA-1), 32 in a SHA-256 repository
    entries: list[BundleEntry] = []
    pending = [("", top)]
    while pending:
        folder, tree = pending.pop()
        seen: set[bytes] = set()
        try:
            items = list(_tree_items(tree.data, width))
        except ValueError:  # only a tree written byte by byte is malformed
            raise UnsafeTree(where, folder or prefix, "a malformed tree") from None
        for raw_mode, raw_name, sha in items:
            path = f"{folder}{_shown(raw_name)}"
            if raw_name in seen:
                raise UnsafeTree(where, path, "a duplicate entry")
            seen.add(raw_name)
            mode = int(raw_mode, 8) if raw_mode.isdigit() else -1
            reason = _unsafe_name(raw_name)
            if reason is not None:  # name the file that would land outside, e.g. `../evil.py`, not just `..`
                raise UnsafeTree(where, _first_file(read, path, sha, width) if mode == _TREE_MODE else path, reason)
            if mode == _TREE_MODE:
                sub = read(sha)
                if sub is None or sub.type != "tree":
                    raise UnsafeTree(where, path, "a folder entry that is not a tree")
                pending.append((f"{path}/", sub))
            elif mode in _FILE_MODES:
                entries.append(BundleEntry(path, _FILE_MODES[mode], sha))
            else:
                raise UnsafeTree(where, path, _OTHER_MODES.get(mode, f"mode {raw_mode}"))
    return sorted(entries, key=lambda e: e.path)


def _first_file(read: Read, path: str, tree_sha: str, width: int) -> str:
    """The path of the first file under the folder `path` (the folder itself when there is none)."""
    for _ in range(64):  # bounded: a forged tree may nest without end
        tree = read(tree_sha)
        try:
            items = list(_tree_items(tree.data, width)) if tree is not None and tree.type == "tree" else []
        except ValueError:
            break
        if not items:
            break
        raw_mode, raw_name, tree_sha = items[0]
        path = f"{path}/{_shown(raw_name)}"
        if raw_mode.lstrip("0") != "40000":
            break
    return path


def _tree_items(data: bytes, width: int) -> Iterator[tuple[str, bytes, str]]:
    """(mode, name, sha) of each entry of a raw tree object: `<mode> <name>\\0<binary id>`."""
    at = 0
    while at < len(data):
        space = data.index(b" ", at)
        nul = data.index(b"\0", space)
        if nul + 1 + width > len(data):
            raise ValueError("truncated tree entry")
        yield data[at:space].decode("ascii", "replace"), data[space + 1 : nul], data[nul + 1 : nul + 1 + width].hex()
        at = nul + 1 + width


def _canonical_mode(raw_mode: str) -> tuple[str, str]:
    """(mode, type) of a raw tree entry as `git ls-tree` prints them: git's canon_mode, zero-padded octal."""
    mode = int(raw_mode, 8)  # ValueError for anything but octal digits
    kind = mode & 0o170000
    if kind == 0o100000:
        return ("100755" if mode & 0o100 else "100644"), "blob"
    if kind == 0o120000:
        return "120000", "blob"
    if kind == 0o040000:
        return "040000", "tree"
    return "160000", "commit"


def _shown(name: bytes) -> str:
    """A tree entry name as one printable line (control characters and undecodable bytes escaped)."""
    text = name.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _unsafe_name(name: bytes) -> str | None:
    """Why a tree entry name may not be written inside a folder (None: it may)."""
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if any(not c.isprintable() for c in text):
        return "a control character"
    if "/" in text:
        if text.startswith("/"):
            return "absolute path"
        return "path traversal" if {".", ".."} & set(text.split("/")) else "a slash in a name"
    if "\\" in text:
        return "a backslash"
    if text in (".", ".."):
        return "path traversal"
    if not text:
        return "an empty component"
    # .git in any case, with the trailing dots and spaces Windows drops, its 8.3 short name, or HFS+'s ignored
    # code points: git's own checks (fsck hasDotgit) for a name that would reach into a repository.
    folded = text.translate(_HFS_IGNORED).lower().rstrip(". ")
    if folded in (".git", "git~1"):
        return "a .git component"
    return None
