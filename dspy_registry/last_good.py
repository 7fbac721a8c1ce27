"""The last version a client verified for each ref of a remote registry, kept on disk so that a git host outage
never takes a client down: `load` and `serve` record it after each verified use, and fall back to it (with one
warning naming it) when the remote cannot be reached.

One small JSON file per registry URL, program and ref under DSPYREG_CACHE/last-good/, replaced atomically. It is read
back as untrusted input: its shape, names and sha are checked, and the commit it names must be in the cache clone,
be that version's published commit, and verify again, before anything is loaded from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .checks import check_for_use
from .errors import RegistryError, RemoteUnreachable
from .gitremote import hide_userinfo
from .gitstore import utc_now
from .hints import cache_dir
from .opening import unsynced_store
from .refs import is_version, parse_ref, tag_ref
from .registry import Registry
from .results import Resolved

FOLDER = "last-good"
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
_FIELDS = ("registry", "program", "ref", "version", "commit", "verified_at")


@dataclass(frozen=True)
class Fallback:
    """What a client uses while the remote is unreachable: an unsynced registry (the cache clone; close it), the
    version last verified for the ref, the ref itself, and the one-line warning that names them."""

    registry: Registry
    resolved: Resolved
    ref: str
    message: str


def _path(location: str, program: str, leaf: str) -> Path:
    key = hashlib.sha256(json.dumps([location, program, leaf]).encode()).hexdigest()[:32]
    return cache_dir() / FOLDER / f"{key}.json"


def _leaf(ref: str, program: str) -> str:
    spec = parse_ref(ref, program)
    return spec.version or spec.environment or spec.sha or ref


def record(reg: Registry, ref: str, resolved: Resolved) -> None:
    """Remember `resolved` as what `ref` named when it was last verified, for a remote registry (a local one is
    never unreachable). Written whole or not at all; a cache folder that cannot be written only loses the fallback."""
    if reg.store.remote is None:
        return
    path = _path(reg.location, resolved.program, _leaf(ref, resolved.program))
    body = {
        "registry": hide_userinfo(reg.location),  # a token in the URL is never written down
        "program": resolved.program,
        "ref": _leaf(ref, resolved.program),
        "version": resolved.version,
        "commit": resolved.commit,
        "verified_at": utc_now().isoformat().replace("+00:00", "Z"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    except OSError:
        return  # the fallback is a convenience: the load itself succeeded (and a stale record is checked on use)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(body, out)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def fallback(
    location: str, ref: str | None, name: str | None, *, require_signed: bool, cause: RemoteUnreachable
) -> Fallback:
    """The version last verified for `ref` (default: production) of the registry at `location`, checked again in
    the cache clone; `cause` itself when nothing was recorded, a RegistryError saying why when the record is not
    trusted."""
    try:
        reg = Registry(unsynced_store(location), location)
    except RegistryError:
        raise cause from None  # no cache clone of it on this machine: nothing was ever verified here
    try:
        target = ref or reg.production
        spec = parse_ref(target, name)
        program = spec.program or _only_program(reg, cause)
        leaf = _leaf(target, program)
        path = _path(location, program, leaf)
        if not path.is_file():
            raise cause
        try:
            resolved, verified_at = _trusted(reg, path, program, leaf, require_signed)
        except RegistryError as err:
            raise RegistryError(
                f"{cause}; the last verified version recorded in {path} is not trusted ({err}): remove that file"
            ) from None
        where = hide_userinfo(location)
        message = (
            f"registry {where} unreachable ({hide_userinfo(cause.detail)}): using {program} {leaf} = "
            f"{resolved.version} ({resolved.commit[:7]}) last verified at {verified_at}"
        )
        return Fallback(reg, Resolved(program, resolved.version, resolved.commit, spec.environment), target, message)
    except BaseException:
        reg.close()
        raise


def _only_program(reg: Registry, cause: RemoteUnreachable) -> str:
    programs = reg.programs()
    if len(programs) != 1:
        raise cause  # which program is meant cannot be told offline: the caller names it with --name
    return programs[0]


def _trusted(reg: Registry, path: Path, program: str, leaf: str, require_signed: bool) -> tuple[Resolved, str]:
    """The record at `path`, every field checked, and its version verified again in the cache clone."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RegistryError(f"unreadable: {type(err).__name__}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in _FIELDS):
        raise RegistryError(f"not a record: it needs the text fields {', '.join(_FIELDS)}")
    if (data["registry"], data["program"], data["ref"]) != (hide_userinfo(reg.location), program, leaf):
        raise RegistryError("it names another registry, program or ref")
    version, commit = data["version"], data["commit"]
    if not is_version(version) or not _FULL_SHA.fullmatch(commit):
        raise RegistryError("its version or commit is malformed")
    try:
        verified_at = datetime.fromisoformat(data["verified_at"].replace("Z", "+00:00"))
    except ValueError:
        raise RegistryError("its time is malformed") from None
    if reg.store.peel_to_commit(commit) != commit:
        raise RegistryError(f"commit {commit[:12]} is not in the cache clone")
    if reg.store.peel_to_commit(tag_ref(program, version)) != commit:
        raise RegistryError(f"commit {commit[:12]} is not the one {program} {version} was published as")
    resolved = Resolved(program, version, commit)
    check_for_use(reg, resolved, verify=True, require_signed=require_signed)  # the version only: not the stale tag
    return resolved, verified_at.isoformat().replace("+00:00", "Z")
