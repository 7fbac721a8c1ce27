"""A version's life besides environment moves: yank and unyank (PyPI's meaning), approvals, and clearing an
environment (`unassign`, which is an environment move, in registry.py).

The state lives on the journal beside the environments' files, one file per program whose name no environment can
have: `<program>/_yanked.json` ({"yanked": {version: {reason, actor, time}}}) and `<program>/_approvals.json`
({"approvals": [{version, env, actor, time, reason, signature?}]}). Each change is one journal commit with one entry,
landed with the journal's expected old value like a move, so two writers never lose one another's change. What is read
back is input written by others: a file not in this shape is refused, naming it, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import CorruptRecord, InvalidName, RegistryError
from .gitstore import utc_now
from .journal import journal_commit
from .refs import JOURNAL_REF, check_text, is_version, parse_ref
from .results import Approval, JournalEntry, Yank
from .signing import check_signature

if TYPE_CHECKING:
    from datetime import datetime

    from .gitstore import GitStore, Identity
    from .registry_api import RegistryAPI
    from .results import Resolved
    from .signing import PublicKey

YANKED = "_yanked.json"
APPROVALS = "_approvals.json"


class Yanked(RegistryError):
    """The version is yanked: promote refuses it."""


def yanked(store: GitStore, program: str, journal: str | None = None) -> dict[str, Yank]:
    """The yanked versions of `program` (by version), as the journal commit `journal` (default: now) has them."""
    value = _read(store, program, YANKED, "yanked", dict, journal)
    result = {}
    for version, entry in value.items():
        if not (is_version(version) and isinstance(entry, dict) and _texts(entry, ("reason", "actor", "time"))):
            raise _corrupt(program, YANKED)
        result[version] = Yank(version=version, reason=entry["reason"], actor=entry["actor"], time=entry["time"])
    return result


def approvals(store: GitStore, program: str, journal: str | None = None) -> list[Approval]:
    """Every approval recorded for `program`, oldest first."""
    found = []
    for entry in _read(store, program, APPROVALS, "approvals", list, journal):
        keys = ("version", "env", "actor", "time", "reason")
        signature = entry.get("signature") if isinstance(entry, dict) else None
        if not (isinstance(entry, dict) and _texts(entry, keys) and isinstance(signature, (str, type(None)))):
            raise _corrupt(program, APPROVALS)
        if set(entry) - {*keys, "signature"} or not is_version(entry["version"]):
            raise _corrupt(program, APPROVALS)
        found.append(Approval(**{k: entry[k] for k in keys}, signature=signature))
    return found


def set_yanked(
    store: GitStore, program: str, version: str, reason: str, *, yank: bool, who: Identity, now: datetime
) -> JournalEntry:
    """Yank `version` (or unyank it, `yank=False`) in one journal commit; the entry it journaled."""
    actor, when = _actor(who, now)
    journal_old = store.ref_value(JOURNAL_REF)
    current = yanked(store, program, journal_old)
    if yank and version in current:
        raise InvalidName(f"{program} {version} is yanked already ({current[version].reason})")
    if not yank and version not in current:
        raise InvalidName(f"{program} {version} is not yanked: nothing to unyank")
    if yank:
        current[version] = Yank(version=version, reason=reason, actor=actor, time=when)
    else:
        del current[version]
    action = "yank" if yank else "unyank"
    entry = JournalEntry(program, "", version, version, action, actor, when, reason)
    files = {f"{program}/{YANKED}": {"yanked": {v: _without_version(y.to_json()) for v, y in current.items()}}}
    store.transaction([journal_commit(store, journal_old, files, [entry], f"{action} {program} {version}", who, now)])
    return entry


def add_approval(
    store: GitStore,
    program: str,
    version: str,
    env: str,
    reason: str,
    *,
    who: Identity,
    now: datetime,
    signer: Callable[[bytes], bytes] | None,
) -> Approval:
    """Record who approves `version` for `env` (signed by `signer` when signing is on) in one journal commit."""
    actor, when = _actor(who, now)
    approval = Approval(version=version, env=env, actor=actor, time=when, reason=reason)
    if signer is not None:
        approval = Approval(**{**vars(approval), "signature": signer(approval.payload()).decode()})
    journal_old = store.ref_value(JOURNAL_REF)
    every = [a.to_json() for a in approvals(store, program, journal_old)] + [approval.to_json()]
    entry = JournalEntry(
        program, approval.env, None, approval.version, "approve", approval.actor, approval.time, approval.reason
    )
    summary = f"approve {program} {approval.version} for {approval.env}"
    files = {f"{program}/{APPROVALS}": {"approvals": every}}
    store.transaction([journal_commit(store, journal_old, files, [entry], summary, who, now)])
    return approval


def approval_refusal(
    found: list[Approval], version: str, env: str, publisher: str, needed: int, signers: tuple[PublicKey, ...]
) -> str | None:
    """What the gate `approvals = needed` says against `version` going to `env`: approvals from people other than
    its publisher, and, when registry.toml names who may sign `env`, only those signed by one of them."""
    people = set()
    for a in found:
        if a.version != version or a.env != env or a.actor == publisher:
            continue
        if signers and (a.signature is None or not check_signature(a.payload() + a.signature.encode(), signers).ok):
            continue
        people.add(a.actor)
    if len(people) >= needed:
        return None
    signed = " signed by a key [signing.environments] allows," if signers else ""
    return (
        f"{version} has {len(people)} approval(s){signed} from someone other than its publisher, {needed} needed "
        f"(approvals): `dspyreg approve {version} --for {env}`"
    )


def _read(store: GitStore, program: str, name: str, key: str, kind: type, journal: str | None) -> Any:
    journal = journal if journal is not None else store.ref_value(JOURNAL_REF)
    blob = store.read_blob(journal, f"{program}/{name}") if journal else None
    if blob is None:
        return kind()
    try:
        value = json.loads(blob)[key]
    except (ValueError, RecursionError, KeyError, TypeError):
        raise _corrupt(program, name) from None
    if not isinstance(value, kind):
        raise _corrupt(program, name)
    return value


def _texts(entry: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    return all(isinstance(entry.get(k), str) for k in keys)


def _without_version(value: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != "version"}


def _corrupt(program: str, name: str) -> CorruptRecord:
    return CorruptRecord(
        f"journal {program}/{name} is corrupt (not the JSON dspyreg writes): "
        f"restore {JOURNAL_REF} from a good commit (`git log {JOURNAL_REF}`)"
    )


def _actor(who: Identity, now: datetime) -> tuple[str, str]:
    return f"{who.name} <{who.email}>", now.isoformat().replace("+00:00", "Z")


# -- the commands (functions of a Registry, named by its facade) ----------------------------------------------------
def yank(reg: RegistryAPI, ref: str, *, name: str | None = None, reason: str = "", undo: bool = False) -> JournalEntry:
    """Yank a version (`undo`: unyank it): it stays resolvable by its exact ref and keeps its history, but `list`
    hides it, promote refuses it, and load, serve and show flag it. Journaled."""
    resolved = _exact_version(reg, ref, name, "yank" if not undo else "unyank")
    check_text("--reason", reason, multiline=True)
    if not undo and not reason.strip():
        raise InvalidName("yank needs --reason: the journal and every warning about the version say why")
    who, now = reg.store.identity(), utc_now()
    return set_yanked(reg.store, resolved.program, resolved.version, reason, yank=not undo, who=who, now=now)


def approve(
    reg: RegistryAPI, ref: str, env: str, *, name: str | None = None, reason: str = "", sign: bool | None = None
) -> Approval:
    """Record that the configured git identity approves a version for `env` (signed when signing is on); the gate
    `approvals` in [gates.<env>] counts approvals from people other than the version's publisher."""
    resolved = _exact_version(reg, ref, name, "approve")
    check_text("--reason", reason, multiline=True)
    env = reg.check_env(env)
    signer = reg.signer(sign)
    who, now = reg.store.identity(), utc_now()
    return add_approval(reg.store, resolved.program, resolved.version, env, reason, who=who, now=now, signer=signer)


def _exact_version(reg: RegistryAPI, ref: str, name: str | None, what: str) -> Resolved:
    spec = parse_ref(ref, name)
    if spec.version is None:
        raise InvalidName(f"{what} takes a version (v1.1 or qa/v1.1), not {ref!r}")
    return reg.resolve(ref, name)
