"""Environment moves and the gates in front of them: promote (with registry.toml's gates), and the one move every
write of an environment goes through (promote, rollback, unassign): the journal entry, the env tag, the rollback tag
that follows production, all in one ref transaction with the expected old values they were read at.

Functions of a Registry (registry.py is the facade that names them); the journal format is journal.py's.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from . import journal, lifecycle
from .errors import ConflictError, ForgedTag, GateRefused, InvalidName
from .gitstore import utc_now
from .refs import JOURNAL_REF, ROLLBACK_ENV, RefSpec, check_text, parse_ref
from .results import JournalEntry, MoveResult

if TYPE_CHECKING:
    from .example_compare import ExampleComparison
    from .registry_api import RegistryAPI
    from .results import Records, Resolved


def promote(
    reg: RegistryAPI,
    source: str,
    to: str | None = None,
    *,
    name: str | None = None,
    reason: str = "",
    force: bool = False,
    sign: bool | None = None,
) -> MoveResult:
    """Point `to` (default: the next environment) at `source`'s version, if registry.toml's gates allow it;
    `force` (with a reason) overrides the gates and the journal records the override."""
    spec = parse_ref(source, name)
    program = reg.program_of(spec.program)
    envs = reg.config.environments
    if spec.environment is not None:
        src_env = reg.check_env(spec.environment, allow_rollback=True)
        if to is None:
            if src_env == ROLLBACK_ENV or envs.index(src_env) == len(envs) - 1:
                raise InvalidName(f"{src_env} is the last environment: say where to with --to")
            to = envs[envs.index(src_env) + 1]
    elif to is None:
        to = envs[0]
    if to == ROLLBACK_ENV:
        raise InvalidName("the rollback environment is managed by dspyreg: promote to prod, or use `dspyreg rollback`")
    target_env = reg.check_env(to)
    check_text("--reason", reason, multiline=True)
    if force and not reason.strip():
        raise InvalidName("--force needs --reason: the journal records why the gates were overridden")
    resolved = reg.resolve(str(RefSpec(program, spec.version, spec.environment, spec.sha)))
    if yank := lifecycle.yanked(reg.store, program).get(resolved.version):
        raise lifecycle.Yanked(
            f"{program} {resolved.version} is yanked ({yank.reason}): promote another version, "
            f"or `dspyreg unyank {resolved.version}` first"
        )
    refusals = gate_refusals(reg, program, target_env, resolved)
    if refusals and not force:
        raise GateRefused(
            f"promotion of {program} {resolved.version} to {target_env} refused by registry.toml's gates: "
            f"{'; '.join(refusals)} (override with --force --reason)"
        )
    return move(reg, program, target_env, resolved.version, "promote", reason, override="; ".join(refusals), sign=sign)


def gate_refusals(reg: RegistryAPI, program: str, env: str, candidate: Resolved) -> list[str]:
    """What registry.toml's [gates.<env>] say against moving `env` to `candidate` (empty: the gates allow it)."""
    from .quality import Incumbent
    from .quality import gate_refusals as quality_refusals

    gates = reg.config.gates.get(env) or {}
    if not gates:
        return []
    records = reg.records(candidate)
    current = journal.env_state(reg.store, program, env, None).version
    incumbent = None
    if gates.get("no_regression") and current and current != candidate.version:
        incumbent = Incumbent(current, reg.score(reg.resolve(current, program)))
    against = None
    if gates.get("min_delta_ci_low") is not None and current and current != candidate.version:
        against = comparison(reg, reg.resolve(current, program), candidate, records)
    latest = records.latest_evaluation
    refusals = quality_refusals(
        gates,
        env,
        f"{program} {candidate.version}",
        reg.score(candidate, records),
        evaluated=latest is not None,
        incumbent=incumbent,
        leakage=latest.leakage if latest is not None else None,
        comparison=against,
    )
    if needed := gates.get("approvals"):
        found = lifecycle.approvals(reg.store, program)
        publisher = reg.manifest(candidate).program.author
        signers = reg.config.signing.allowed(env, reg.production)
        if refusal := lifecycle.approval_refusal(found, candidate.version, env, publisher, needed, signers):
            refusals.append(f"{program} {refusal}")
    return refusals


def comparison(reg: RegistryAPI, a: Resolved, b: Resolved, b_records: Records | None = None) -> ExampleComparison | str:
    """`a` against `b` example by example, or why they do not compare (one line)."""
    from .example_compare import NotComparable, compare

    b_records = b_records or reg.records(b)
    try:
        return compare(
            f"{a.program}/{a.version}",
            f"{b.program}/{b.version}",
            reg.records(a).evaluations,
            b_records.evaluations,
        )
    except NotComparable as err:
        return str(err)


def move(
    reg: RegistryAPI,
    program: str,
    env: str,
    version: str | None,
    action: str,
    reason: str,
    *,
    override: str = "",
    sign: bool | None = None,
) -> MoveResult:
    """Move env (and, for production, the rollback tag) and append the journal, in one transaction.

    Every expected old value comes from the reads the new state was computed from (the journal first, then the
    tags), so a writer that moved any of them meanwhile makes this transaction fail instead of being overwritten.
    """
    journal_old = reg.store.ref_value(JOURNAL_REF)
    current = journal.env_state(reg.store, program, env, journal_old)
    new_version, history = journal.next_state(current, program, env, version, clear=action == "unassign")
    if new_version is not None:
        from .verify import version_tag_problems

        forged = version_tag_problems(reg, program, new_version)
        if forged:  # the env tag would point wherever the version tag was moved to
            raise ForgedTag(f"refusing to {action} {program}/{env} to {new_version}: {forged[0]}; nothing was changed")
    version = new_version
    if current.version == version:
        return MoveResult(())
    signer = reg.signer(sign)
    who, now = reg.store.identity(), utc_now()
    actor, when = f"{who.name} <{who.email}>", now.isoformat().replace("+00:00", "Z")
    move = uuid.uuid4().hex[:16]  # one id for every entry of this transaction
    entry = JournalEntry(program, env, current.version, version, action, actor, when, reason, move, override)
    moves = [(current, entry)]
    if env == reg.production:
        moves += journal.rollback_follows(reg.store, entry, history)
    updates = journal.move_updates(reg.store, moves, history, journal_old, who, now, signer)
    try:
        reg.store.transaction(updates)
    except ConflictError as err:
        raise ConflictError(_lost_to(reg, program, env, journal_old, str(err))) from None
    return MoveResult(tuple(entry for _, entry in moves))


def _lost_to(reg: RegistryAPI, program: str, env: str, since: str | None, fallback: str) -> str:
    """Say which move beat ours (see journal.lost_to), read from the journal afresh."""
    reg.store.sync()
    reg.store.close()
    return journal.lost_to(reg.store, program, env, since, fallback)
