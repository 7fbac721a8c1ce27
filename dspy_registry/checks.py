"""What `dspyreg verify` runs over a registry, and what load, export, serve, eval and bench check before using a
version: verify.py's problems of versions and environment tags, plus (asked for) trust.py's signature problems.

Handed the registry as a small protocol (RegistryChecked): this module never imports the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from .errors import UnknownRef
from .manifest import BadManifest, Manifest
from .refs import ROLLBACK_ENV
from .results import Resolved
from .runtime.drift import PUBLISHED_WITH, SAVED_WITH, drifts, installed_versions
from .trust import signature_problems
from .verify import Problem, RegistryReader, VerificationFailed, verify_environments, verify_version

if TYPE_CHECKING:
    from .results import VersionInfo


class RegistryChecked(RegistryReader, Protocol):
    """What checking reads of a registry beyond RegistryReader (the Registry is one)."""

    def resolve(self, ref: str, name: str | None = None) -> Resolved: ...

    def versions(self, program: str | None = None) -> list[VersionInfo]: ...


def ref_problems(reg: RegistryChecked, resolved: Resolved, *, require_signed: bool, load: bool) -> list[Problem]:
    """Problems of one resolved ref's version and of its program's environment tags."""
    problems = verify_version(reg, resolved, load=load) + verify_environments(reg, resolved.program)
    problems += drift_problems(reg, [resolved], refused=True)
    if require_signed:
        all_envs = (*reg.config.environments, ROLLBACK_ENV)
        problems += signature_problems(reg, resolved.program, versions=[resolved.version], environments=all_envs)
    return problems


def program_problems(
    reg: RegistryChecked, programs: Iterable[str], *, everything: bool, require_signed: bool, load: bool
) -> list[Problem]:
    """Problems of every version of each program (`everything`), or of what each environment points to; plus each
    program's environment tags."""
    problems: list[Problem] = []
    all_envs = (*reg.config.environments, ROLLBACK_ENV)
    for program in programs:
        for target in verified_targets(reg, program, everything=everything):
            problems += verify_version(reg, target, load=load)
            problems += drift_problems(reg, [target], refused=True)
            if require_signed:
                problems += signature_problems(reg, program, versions=[target.version])
        problems += verify_environments(reg, program)
        if require_signed:
            problems += signature_problems(reg, program, environments=all_envs)
    return problems


def verified_targets(reg: RegistryChecked, program: str, *, everything: bool) -> list[Resolved]:
    """The versions `verify` checks of `program`: every one (`everything`), or what each environment points to."""
    targets: list[Resolved | None]
    if everything:
        targets = [Resolved(v.name, v.version, v.commit) for v in reg.versions(program)]
    else:
        targets = [_env_target(reg, program, env) for env in (*reg.config.environments, ROLLBACK_ENV)]
    seen: set[tuple[str, str]] = set()
    unique = []
    for target in targets:
        if target is not None and (target.version, target.commit) not in seen:
            seen.add((target.version, target.commit))
            unique.append(target)
    return unique


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
        if manifest is None:
            continue
        recorded = {PUBLISHED_WITH: manifest.runtime, SAVED_WITH: manifest.saved_with}
        what = f"{target.program} {target.version}"
        for drift in drifts(recorded, installed, reg.config.runtime):
            if drift.refused == refused:
                found.append(Problem(f"{target.program}/{target.version}", drift.message(what)))
    return found


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
