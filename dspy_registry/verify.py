"""Verification of versions and environments: what `dspyreg verify` reports and what load/export/serve refuse.

A version is sound when every file of its bundle matches the sha256 its manifest records, the manifest follows its
schema, names that version and an entrypoint inside the bundle's code/, its tree holds only plain files and folders,
its version tag points at a commit on main that holds it, program.json is JSON (never pickle), field-numbers.json
(when there is one) is a table of numbers protobuf accepts, and no LM state (in program.json, prompts.json or the
manifest's [lm]) holds a key outside the allowlist and neither JSON file a credential-named key. All of that is read
from git: verifying never imports a bundle's code (a registry is input written by others). Whether the state loads
into the bundled code is checked only when asked (`load`, i.e. `dspyreg verify --load`), in a child process
(load_check.py). An environment is sound when its tag is one dspyreg wrote, points at the commit of the published
version it names, and agrees with the journal.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import RegistryError, UnsafeTree
from .journal import journal_version, payload_version, tag_payload
from .manifest import BadManifest, Manifest, ProgramInfo
from .provenance import args_findings
from .refs import JOURNAL_REF, MAIN_REF, ROLLBACK_ENV, UNSET, tag_ref
from .state import lm_findings, parse_state, secret_findings

if TYPE_CHECKING:
    from .gitstore import GitStore
    from .gittree import BundleEntry
    from .manifest import RegistryConfig
    from .results import Resolved


class RegistryReader(Protocol):
    """What verification reads of a registry (the Registry is one): handed in, so this module never imports it."""

    @property
    def store(self) -> GitStore: ...

    @property
    def config(self) -> RegistryConfig: ...

    @property
    def production(self) -> str: ...

    def bundle(self, resolved: Resolved) -> list[BundleEntry]: ...


# How long `verify --load` waits for one version's child (importing dspy alone takes seconds on a busy machine).
LOAD_TIMEOUT_SECONDS = 300.0


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


def verify_version(
    reg: RegistryReader, resolved: Resolved, *, load: bool = False, timeout: float = LOAD_TIMEOUT_SECONDS
) -> list[Problem]:
    """Problems of the bundle at `resolved.commit` and of its version's tag (empty when sound), read statically; with
    `load`, also whether program.json loads into the bundled code, checked in a child process that may run that code."""
    return check_version(reg, resolved, load=load, timeout=timeout).problems


@dataclass(frozen=True)
class VersionCheck:
    """verify_version's problems of one version, and the manifest they were read from."""

    problems: list[Problem]
    manifest: Manifest | None  # as read at the version's commit; None when missing or unreadable


def check_version(
    reg: RegistryReader, resolved: Resolved, *, load: bool = False, timeout: float = LOAD_TIMEOUT_SECONDS
) -> VersionCheck:
    """verify_version's problems, with the manifest at `resolved.commit`: read and parsed once for the tag's check,
    the bundle's and the caller's (`verify --all` compares it with the installed DSPy too)."""
    where = f"{resolved.program}/{resolved.version}"
    raw = reg.store.read_blob(resolved.commit, f"{resolved.program}/manifest.toml")
    try:
        read: Manifest | str | None = (
            Manifest.loads(raw.decode(), where=f"{where}:manifest.toml") if raw is not None else None
        )
    except (BadManifest, UnicodeDecodeError) as err:
        read = str(err)
    manifest = read if isinstance(read, Manifest) else None
    tag = version_tag_problems(reg, resolved.program, resolved.version, read_at=(resolved.commit, manifest))
    return VersionCheck(tag + _bundle_problems(reg, resolved, read, load=load, timeout=timeout), manifest)


def version_tag_problems(
    reg: RegistryReader, program: str, version: str, *, read_at: tuple[str, Manifest | None] | None = None
) -> list[Problem]:
    """A version tag is honest when it is annotated and points at a commit on main whose manifest names that
    program and version: a tag moved (or made) by hand to any other commit is reported. None for a version that is
    not published (a commit given by sha). `read_at`: a commit and its manifest read already (None: unreadable),
    not read again when the tag points there."""
    ref = tag_ref(program, version)
    tag = reg.store.read(ref)
    commit = reg.store.peel_to_commit(ref)
    if tag is None or commit is None:
        return []
    problems = []
    if tag.type != "tag":
        problems.append(Problem(ref, "is not an annotated tag written by dspyreg (made by hand?)"))
    if not reg.store.is_ancestor(commit, MAIN_REF):
        problems.append(Problem(ref, f"points at commit {commit[:12]}, which is not on main (moved by hand?)"))
    if read_at is not None and read_at[0] == commit:
        named = read_at[1].program if read_at[1] is not None else None
    else:
        named = _manifest_at(reg, commit, program)
    if named is None or (named.name, named.version) != (program, version):
        holds = f"names {named.name} {named.version}" if named else "is missing or unreadable"
        problems.append(Problem(ref, f"points at commit {commit[:12]}, whose {program}/manifest.toml {holds}"))
    return problems


def _manifest_at(reg: RegistryReader, commit: str, program: str) -> ProgramInfo | None:
    """The [program] of `program`'s manifest at `commit`; None when it is missing or unreadable."""
    raw = reg.store.read_blob(commit, f"{program}/manifest.toml")
    try:
        return Manifest.loads(raw.decode()).program if raw else None
    except (BadManifest, UnicodeDecodeError):
        return None


def _bundle_problems(
    reg: RegistryReader, resolved: Resolved, read: Manifest | str | None, *, load: bool, timeout: float
) -> list[Problem]:
    """The bundle's problems; `read` is its manifest as check_version read it (a string: why it does not parse)."""
    program, commit = resolved.program, resolved.commit
    where = f"{program}/{resolved.version}"
    try:  # first of all: a forged path is refused before anything reads or writes the bundle's files
        entries = {e.path: e for e in reg.bundle(resolved)}
    except UnsafeTree as err:
        return [Problem(where, f"tree entry '{err.path}' is not allowed ({err.reason})")]
    if read is None:
        return [Problem(f"{where}:manifest.toml", "missing")]
    if isinstance(read, str):
        return [Problem(f"{where}:manifest.toml", read)]
    manifest = read
    problems = []
    if (manifest.program.name, manifest.program.version) != (program, resolved.version):
        named = f"{manifest.program.name} {manifest.program.version}"
        problems.append(Problem(f"{where}:manifest.toml", f"names {named}, not {program} {resolved.version}"))
    entrypoint = _entrypoint_problem(manifest.program.entrypoint, manifest.files)
    if entrypoint is not None:
        problems.append(Problem(f"{where}:manifest.toml", entrypoint))
    present = set(entries) - {"manifest.toml"}
    for path in sorted(present - manifest.files.keys()):
        problems.append(Problem(f"{where}:{path}", "is not listed in the manifest"))
    contents: dict[str, bytes] = {}
    for path, digest in sorted(manifest.files.items()):
        entry = entries.get(path)  # the manifest's own names are never used to read or write
        data = reg.store.blob(entry.sha) if entry is not None else None
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
    problems += _secret_problems(where, state, contents.get("prompts.json"), manifest)
    # Imported here: `show` and `promote` check environment tags through this module and need neither.
    from .rendered import RENDERED_JSON, rendered_problem

    rendered = rendered_problem(contents.get(RENDERED_JSON))  # shape and size: `diff --rendered` reads it
    problems += [Problem(f"{where}:{RENDERED_JSON}", rendered)] if rendered else []
    from .field_numbers import FIELD_NUMBERS_JSON, table_problem

    numbers = contents.get(FIELD_NUMBERS_JSON)  # shape and size: `proto`, `export` and serving read it
    numbers_problem = table_problem(numbers) if numbers is not None else ""
    problems += [Problem(f"{where}:{FIELD_NUMBERS_JSON}", numbers_problem)] if numbers_problem else []
    if load and not problems:
        problems += _load_problems(where, manifest.program.entrypoint, commit, contents, timeout)
    return problems


def _secret_problems(where: str, state: dict[str, Any], prompts: bytes | None, manifest: Manifest) -> list[Problem]:
    """Credentials in program.json, prompts.json or the manifest's [lm], named by file and JSON path, never by value."""
    found = [("program.json", f) for f in secret_findings(state)]
    if prompts is not None:
        with contextlib.suppress(ValueError):  # not JSON: its sha256 or the load says what is wrong
            document = json.loads(prompts)
            found += [("prompts.json", f) for f in secret_findings(document)] if isinstance(document, dict) else []
    found += [("manifest.toml", f) for f in lm_findings(manifest.lm, "[lm]")]
    if manifest.lineage.optimizer is not None:
        found += [("manifest.toml", f) for f in args_findings(manifest.lineage.optimizer.args)]
    return [
        Problem(
            f"{where}:{file}",
            f"holds an LM secret or endpoint at {f.path} ({f.what})" if f.in_lm else f"holds {f.what} at {f.path}",
        )
        for file, f in found
    ]


def _entrypoint_problem(entrypoint: str, files: Mapping[str, str]) -> str | None:
    """Why `entrypoint` does not name a module of the bundle's code/ listed in [files]; None when it does."""
    if not isinstance(entrypoint, str):  # the manifest is TOML written by anyone: the type is not checked on read
        return f"entrypoint {entrypoint!r} is not a string `module:Attr`"
    from .runtime.inference import EntrypointError, entrypoint_module

    try:
        _, _, candidates = entrypoint_module(entrypoint)
    except EntrypointError as err:
        return str(err)
    if any(f"code/{candidate}" in files for candidate in candidates):
        return None
    return (
        f"entrypoint {entrypoint!r} does not name a module inside the bundle's code/ "
        f"(no code/{candidates[0]} or code/{candidates[1]} in [files])"
    )


def _load_problems(
    where: str, entrypoint: str, commit: str, contents: dict[str, bytes], timeout: float
) -> list[Problem]:
    """Does program.json load into the bundled code? The code runs in a child process (`python -m
    dspy_registry.load_check`) on a copy of code/ and program.json in a temporary folder under the cache, never in
    this one; the child's failure, crash or timeout is the problem."""
    from .export import write_inside
    from .hints import cache_dir

    subject = f"{where}:program.json"
    base = cache_dir() / "verify"
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix="load-", ignore_cleanup_errors=True) as tmp:
        # The child's working folder holds only `bundle/`: nothing of the bundle shadows `dspy_registry` for `-m`.
        bundle = Path(tmp) / "bundle"
        write_inside(bundle, {p: d for p, d in contents.items() if p.startswith("code/") or p == "program.json"})
        command = [sys.executable, "-m", "dspy_registry.load_check", str(bundle), entrypoint, commit]
        child = subprocess.Popen(
            command,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**_without_secrets(os.environ), "LITELLM_LOCAL_MODEL_COST_MAP": "true"},
            start_new_session=True,  # its own process group: a timeout stops whatever the code started too
        )
        try:
            _, err = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return [Problem(subject, f"did not load within {timeout:g} s (checked in a child process, stopped)")]
    if child.returncode == 0:
        return []
    if child.returncode < 0:
        return [Problem(subject, f"the load check crashed (signal {-child.returncode}, checked in a child process)")]
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    detail = " ".join((lines[-1] if lines else f"exit code {child.returncode}").split())[:300]
    return [Problem(subject, f"does not load into the bundled code (checked in a child process): {detail}")]


def _without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the load check: loading needs no LM, so keys, tokens and passwords stay in this process."""
    secret = ("KEY", "TOKEN", "SECRET", "PASSWORD", "CREDENTIAL")
    return {name: value for name, value in environ.items() if not any(word in name.upper() for word in secret)}


def verify_environments(reg: RegistryReader, program: str, envs: tuple[str, ...] | None = None) -> list[Problem]:
    """Problems of `program`'s environment tags (all, or `envs`): each must be dspyreg's, on a published version's
    commit, and agree with the journal."""
    journal = reg.store.ref_value(JOURNAL_REF)
    problems = []
    for env in envs or (*reg.config.environments, ROLLBACK_ENV):
        ref = tag_ref(program, env)
        try:
            expected = journal_version(reg.store, journal, program, env, reg.production)
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
        version = payload_version(tag_payload(tag.data))
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
            problems.append(Problem(ref, f"names {version}, but the journal says {expected or UNSET}"))
    return problems


def _version_at(reg: RegistryReader, commit: str | None, program: str) -> str | None:
    named = _manifest_at(reg, commit, program) if commit else None
    return named.version if named is not None else None
