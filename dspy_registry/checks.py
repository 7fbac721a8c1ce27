"""What `dspyreg verify` runs over a registry, and what load, export, serve, eval and bench check before using a
version: verify.py's problems of versions and environment tags, plus (asked for) trust.py's signature problems.

Handed the registry as a small protocol (RegistryChecked): this module never imports the registry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from .errors import UnknownRef
from .manifest import BadManifest, Manifest
from .refs import ROLLBACK_ENV
from .results import Resolved
from .runtime.drift import PUBLISHED_WITH, SAVED_WITH, drifts, installed_versions
from .trust import signature_problems
from .verify import Problem, RegistryReader, VerificationFailed, check_version, verify_environments, verify_version


class RegistryChecked(RegistryReader, Protocol):
    """What checking reads of a registry beyond RegistryReader (the Registry is one)."""

    def resolve(self, ref: str, name: str | None = None) -> Resolved: ...

    def version_commits(self, program: str) -> list[tuple[str, str]]: ...


@dataclass(frozen=True)
class Finding:
    """One thing `verify` reports: a problem (verification fails), or a `warning`: a difference between the installed
    DSPy (or LiteLLM) and what a version records that registry.toml's [runtime] policy reports without refusing."""

    problem: Problem
    warning: bool = False


def ref_problems(reg: RegistryChecked, resolved: Resolved, *, require_signed: bool, load: bool) -> list[Problem]:
    """Problems of one resolved ref's version and of its program's environment tags."""
    problems = verify_version(reg, resolved, load=load) + verify_environments(reg, resolved.program)
    problems += drift_problems(reg, [resolved], refused=True)
    if require_signed:
        all_envs = (*reg.config.environments, ROLLBACK_ENV)
        problems += signature_problems(reg, resolved.program, versions=[resolved.version], environments=all_envs)
    return problems


def program_findings(
    reg: RegistryChecked, programs: Iterable[str], *, everything: bool, require_signed: bool, load: bool
) -> Iterator[Finding]:
    """What `verify` finds in every version of each program (`everything`), or in what each environment points to,
    then in each program's environment tags; yielded as each version is checked, so that a caller may print it at
    once and nothing of a version is kept once the next one is read. A version's problems come first, its drift
    warnings after them."""
    installed = installed_versions()
    all_envs = (*reg.config.environments, ROLLBACK_ENV)
    for program in programs:
        for target in verified_targets(reg, program, everything=everything):
            check = check_version(reg, target, load=load)
            drift = _drifts(reg, target, check.manifest, installed)
            yield from (Finding(p) for p in check.problems)
            yield from (Finding(p) for p, refused in drift if refused)
            if require_signed:
                yield from (Finding(p) for p in signature_problems(reg, program, versions=[target.version]))
            yield from (Finding(p, warning=True) for p, refused in drift if not refused)
        yield from (Finding(p) for p in verify_environments(reg, program))
        if require_signed:
            yield from (Finding(p) for p in signature_problems(reg, program, environments=all_envs))


def verified_targets(reg: RegistryChecked, program: str, *, everything: bool) -> Iterator[Resolved]:
    """The versions `verify` checks of `program`, oldest first: every one (`everything`; only the version names and
    commits are listed up front), or what each environment points to, each once."""
    if everything:
        yield from (Resolved(program, version, commit) for version, commit in reg.version_commits(program))
        return
    seen: set[tuple[str, str]] = set()
    for env in (*reg.config.environments, ROLLBACK_ENV):
        target = _env_target(reg, program, env)
        if target is not None and (target.version, target.commit) not in seen:
            seen.add((target.version, target.commit))
            yield target


def drift_problems(reg: RegistryReader, targets: Iterable[Resolved], *, refused: bool) -> list[Problem]:
    """The installed DSPy (and LiteLLM, read from package metadata: nothing is imported) against what each target's
    manifest records: the differences registry.toml's [runtime] policy refuses (`refused`), or those it only
    reports. An unreadable manifest records nothing here (verify_version reports it)."""

    installed = installed_versions()
    found: list[Problem] = []
    for target in targets:
        raw = reg.store.read_blob(target.commit, f"{target.program}/manifest.toml")
        try:
            manifest = Manifest.loads(raw) if raw is not None else None
        except BadManifest:
            manifest = None
        found += [p for p, is_refused in _drifts(reg, target, manifest, installed) if is_refused == refused]
    return found


def _drifts(
    reg: RegistryReader, target: Resolved, manifest: Manifest | None, installed: Mapping[str, str]
) -> list[tuple[Problem, bool]]:
    """Each difference between `installed` and what `target`'s manifest records, as a problem and whether
    registry.toml's [runtime] policy refuses it."""
    if manifest is None:
        return []
    recorded = {PUBLISHED_WITH: manifest.runtime, SAVED_WITH: manifest.saved_with}
    what = f"{target.program} {target.version}"
    return [
        (Problem(f"{target.program}/{target.version}", drift.message(what)), drift.refused)
        for drift in drifts(recorded, installed, reg.config.runtime)
    ]


def _env_target(reg: RegistryChecked, program: str, env: str) -> Resolved | None:
    try:
        return reg.resolve(env, program)
    except (UnknownRef, BadManifest):  # a tag moved to a commit without a sound manifest: verify_environments says
        return None


def check_for_use(reg: RegistryReader, resolved: Resolved, *, verify: bool, require_signed: bool) -> None:
    """Raise VerificationFailed when `resolved`'s version or its environment tag fails verification (`verify`), or
    (`require_signed`) is not signed by a key registry.toml allows, naming the file or ref at fault."""
    envs = (resolved.environment,) if resolved.environment else ()
    problems: list[Problem] = []
    if verify:
        problems += verify_version(reg, resolved, load=False)
        problems += verify_environments(reg, resolved.program, envs) if envs else []
    if require_signed:
        problems += signature_problems(
            reg, resolved.program, versions=[resolved.version], environments=envs, expect_commit=resolved.commit
        )
    if problems:
        raise VerificationFailed(f"{resolved.program}/{resolved.environment or resolved.version}", problems)
