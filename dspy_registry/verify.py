"""Verification of versions and environments: what `dspyreg verify` reports and what load/export/serve refuse.

A version is sound when every file of its bundle matches the sha256 its manifest records, the manifest follows its
schema and names that version, program.json is JSON (never pickle) without LM secrets, and the state loads into the
bundled code. An environment is sound when its tag is one dspyreg wrote, points at the commit of the published
version it names, and agrees with the journal.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RegistryError
from .manifest import BadManifest, Manifest
from .refs import JOURNAL_REF, ROLLBACK_ENV, tag_ref
from .state import parse_state, secrets_in

if TYPE_CHECKING:
    from .registry import Registry, Resolved


@dataclass(frozen=True)
class Problem:
    subject: str  # the file or ref at fault, e.g. `qa/v1.1:prompts.json` or `refs/tags/qa/prod`
    message: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.message}"


class VerificationFailed(RegistryError):
    """A version or environment that fails verification; carries every problem found."""

    def __init__(self, what: str, problems: list[Problem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(
            f"{what} fails verification: {problems[0]}{more}; see `dspyreg verify`, or pass --no-verify to override"
        )


def verify_version(reg: Registry, resolved: Resolved, *, load: bool = True) -> list[Problem]:
    """Problems of the bundle at `resolved.commit` (empty when sound)."""
    program, commit = resolved.program, resolved.commit
    where = f"{program}/{resolved.version}"
    raw = reg.store.read_blob(commit, f"{program}/manifest.toml")
    if raw is None:
        return [Problem(f"{where}:manifest.toml", "missing")]
    try:
        manifest = Manifest.loads(raw.decode(), where=f"{where}:manifest.toml")
    except (BadManifest, UnicodeDecodeError) as err:
        return [Problem(f"{where}:manifest.toml", str(err))]
    problems = []
    if (manifest.program.name, manifest.program.version) != (program, resolved.version):
        named = f"{manifest.program.name} {manifest.program.version}"
        problems.append(Problem(f"{where}:manifest.toml", f"names {named}, not {program} {resolved.version}"))
    present = {p[len(program) + 1 :] for p in reg.store.list_files(commit, f"{program}/")} - {"manifest.toml"}
    for path in sorted(present - manifest.files.keys()):
        problems.append(Problem(f"{where}:{path}", "is not listed in the manifest"))
    contents: dict[str, bytes] = {}
    for path, digest in sorted(manifest.files.items()):
        data = reg.store.read_blob(commit, f"{program}/{path}")
        if data is None:
            problems.append(Problem(f"{where}:{path}", "listed in the manifest but missing"))
        elif hashlib.sha256(data).hexdigest() != digest:
            problems.append(Problem(f"{where}:{path}", "sha256 differs from the manifest (changed after publishing)"))
        else:
            contents[path] = data
    state_bytes = reg.store.read_blob(commit, f"{program}/program.json")
    if state_bytes is None:
        return [*problems, Problem(f"{where}:program.json", "missing")]
    try:
        state = parse_state(state_bytes, f"{where}:program.json")
    except RegistryError as err:
        return [*problems, Problem(f"{where}:program.json", str(err))]
    for secret in secrets_in(state):
        problems.append(Problem(f"{where}:program.json", f"holds an LM secret or endpoint at {secret}"))
    if load and not problems:
        problems += _load_problems(where, manifest, contents)
    return problems


def _load_problems(where: str, manifest: Manifest, contents: dict[str, bytes]) -> list[Problem]:
    """Does program.json load into the bundled code? (Imports dspy and the bundle's code.)"""
    from .runtime.inference import load_program

    with tempfile.TemporaryDirectory(prefix="dspyreg-verify-") as tmp:
        for path, data in contents.items():
            target = Path(tmp) / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        try:
            load_program(Path(tmp), manifest.program.entrypoint, f"verify{hashlib.sha256(tmp.encode()).hexdigest()}")
        except Exception as err:
            detail = " ".join(str(err).split())[:300]
            return [
                Problem(f"{where}:program.json", f"does not load into the bundled code: {type(err).__name__}: {detail}")
            ]
    return []


def verify_environments(reg: Registry, program: str, envs: tuple[str, ...] | None = None) -> list[Problem]:
    """Problems of `program`'s environment tags (all, or `envs`): each must be dspyreg's, on a published version's
    commit, and agree with the journal."""
    from .registry import _payload_version, _tag_payload

    journal = reg.store.ref_value(JOURNAL_REF)
    problems = []
    for env in envs or (*reg.config.environments, ROLLBACK_ENV):
        ref = tag_ref(program, env)
        try:
            expected = _journal_version(reg, journal, program, env)
        except (ValueError, RecursionError, KeyError, TypeError, IndexError, AttributeError):
            state_env = reg.production if env == ROLLBACK_ENV else env
            corrupt = Problem(f"{JOURNAL_REF}:{program}/{state_env}.json", "is corrupt: not the JSON dspyreg writes")
            problems += [] if corrupt in problems else [corrupt]
            continue
        tag = reg.store.read(ref)
        if tag is None:
            if expected is not None:
                problems.append(Problem(ref, f"missing, but the journal says {program}/{env} is {expected}"))
            continue
        if tag.type != "tag":
            problems.append(Problem(ref, "is not an annotated tag written by dspyreg (moved by hand?)"))
            continue
        version = _payload_version(_tag_payload(tag.data))
        commit = reg.store.peel_to_commit(ref)
        if not version:
            problems.append(Problem(ref, "its message has no dspyreg record (moved by hand?)"))
            version = _version_at(reg, commit, program)
            if version is None:
                continue
        published = reg.store.peel_to_commit(tag_ref(program, version))
        if published is None:
            problems.append(Problem(ref, f"names {version}, which is not a published version of {program}"))
        elif commit != published:
            problems.append(
                Problem(
                    ref,
                    f"points at commit {str(commit)[:12]}, not at {program} {version} ({published[:12]}): "
                    "moved by hand to an unpublished commit?",
                )
            )
        if version != expected:
            problems.append(Problem(ref, f"names {version}, but the journal says {expected or 'unset'}"))
    return problems


def _version_at(reg: Registry, commit: str | None, program: str) -> str | None:
    raw = reg.store.read_blob(commit, f"{program}/manifest.toml") if commit else None
    try:
        return Manifest.loads(raw.decode()).program.version if raw else None
    except (BadManifest, UnicodeDecodeError):
        return None


def _journal_version(reg: Registry, journal: str | None, program: str, env: str) -> str | None:
    """Where the journal says `env` points; for rollback, the top of production's history."""
    if journal is None:
        return None
    state_env = reg.production if env == ROLLBACK_ENV else env
    blob = reg.store.read_blob(journal, f"{program}/{state_env}.json")
    if blob is None:
        return None
    state = json.loads(blob)
    if env == ROLLBACK_ENV:
        return state["history"][-1] if state["history"] else None
    version = state.get("version")
    return version if isinstance(version, str) else None
