"""Forged versions built with git plumbing, as an attacker with push access would: extra tree entries that git's
porcelain refuses (`..`, `.git`, symlinks, submodules, names with slashes), a manifest whose [files] hashes match
them, a commit and an annotated version tag that look like dspyreg's."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import tomlkit


def plumb(repo: Path, *args: str, data: bytes | None = None) -> str:
    """`git --git-dir=repo ARGS` with `data` on stdin; its stdout."""
    proc = subprocess.run(["git", f"--git-dir={repo}", *args], input=data, capture_output=True, check=True)
    return proc.stdout.decode().strip()


def write_blob(repo: Path, data: bytes) -> str:
    return plumb(repo, "hash-object", "-w", "--stdin", data=data)


def _entries(repo: Path, tree: str) -> dict[bytes, tuple[str, str]]:
    out = subprocess.run(["git", f"--git-dir={repo}", "ls-tree", "-z", tree], capture_output=True, check=True).stdout
    entries = {}
    for line in filter(None, out.split(b"\0")):
        meta, name = line.split(b"\t", 1)
        mode, _kind, sha = meta.decode().split()
        entries[name] = (mode, sha)
    return entries


def _write_tree(repo: Path, entries: dict[bytes, tuple[str, str]]) -> str:
    """A tree object written byte for byte (`--literally`: mktree refuses names with slashes), in git's order."""

    def key(name: bytes) -> bytes:
        return name + (b"/" if entries[name][0] == "040000" else b"")

    body = b"".join(
        entries[n][0].lstrip("0").encode() + b" " + n + b"\0" + bytes.fromhex(entries[n][1])
        for n in sorted(entries, key=key)
    )
    return plumb(repo, "hash-object", "-w", "-t", "tree", "--literally", "--stdin", data=body)


def _add(repo: Path, tree: str | None, parts: tuple[str, ...], mode: str, sha: str) -> str:
    entries = _entries(repo, tree) if tree else {}
    name = parts[0].encode()
    if len(parts) == 1:
        entries[name] = (mode, sha)
    else:
        sub = entries.get(name)
        entries[name] = ("040000", _add(repo, sub[1] if sub and sub[0] == "040000" else None, parts[1:], mode, sha))
    return _write_tree(repo, entries)


def forge_version(
    repo: Path,
    extra: dict[tuple[str, ...], tuple[str, bytes]],
    *,
    version: str = "v9.0",
    base: str = "qa/v1.1",
    program: str = "qa",
    on_main: bool = True,
    manifest_version: str | None = None,
    runtime: dict[str, str] | None = None,
) -> str:
    """Publish `program` `version` by hand: `base`'s bundle plus `extra` (path components -> (mode, content); for a
    submodule, content is the commit sha), every extra file listed in the manifest with its true sha256.
    `runtime` overrides versions of the manifest's [runtime]. The commit goes on main (or beside it,
    `on_main=False`) under an annotated tag with dspyreg's payload line.
    Returns the forged commit."""
    base_commit = plumb(repo, "rev-parse", f"{base}^{{commit}}")
    manifest = tomlkit.parse(plumb(repo, "cat-file", "blob", f"{base_commit}:{program}/manifest.toml") + "\n")
    manifest["program"]["version"] = manifest_version or version  # type: ignore[index]
    for package, recorded in (runtime or {}).items():  # what the manifest says the publisher ran
        manifest["runtime"][package] = recorded  # type: ignore[index]
    bundle = plumb(repo, "rev-parse", f"{base_commit}:{program}")
    for parts, (mode, content) in extra.items():
        sha = content.decode() if mode == "160000" else write_blob(repo, content)
        bundle = _add(repo, bundle, parts, mode, sha)
        manifest["files"]["/".join(parts)] = hashlib.sha256(content).hexdigest()  # type: ignore[index]
    bundle = _add(repo, bundle, ("manifest.toml",), "100644", write_blob(repo, tomlkit.dumps(manifest).encode()))
    main = plumb(repo, "rev-parse", "refs/heads/main")
    root = _add(repo, plumb(repo, "rev-parse", f"{main}^{{tree}}"), (program,), "040000", bundle)
    commit = plumb(repo, "commit-tree", root, "-p", main, data=f"Publish {program} {version}\n".encode())
    if on_main:
        plumb(repo, "update-ref", "refs/heads/main", commit, main)
    tag_version(repo, program, version, commit)
    return commit


def tag_version(repo: Path, program: str, version: str, commit: str) -> None:
    """Point the annotated version tag `program/version` at `commit` (made, or moved, by hand)."""
    payload = json.dumps({"created": "2026-01-01T00:00:00Z", "dev_score": 0.9, "notes": "", "optimizer": "x"})
    body = (
        f"object {commit}\ntype commit\ntag {program}/{version}\n"
        f"tagger Mallory <m@example.com> 1767225600 +0000\n\nPublish {program} {version}\n\n{payload}\n"
    )
    tag = plumb(repo, "mktag", data=body.encode())
    plumb(repo, "update-ref", f"refs/tags/{program}/{version}", tag)


def files_named(name: str, *roots: Path) -> list[Path]:
    """Every file or link called `name` under `roots` (where a payload must never land)."""
    return [p for root in roots if root.exists() for p in root.rglob(name)]
