"""The journal format, read and written here only: payload lines of tag messages, per-environment history files and
journal commits on refs/dspyreg/journal.

Every tag dspyreg writes ends its message with one JSON line (the payload). Each environment has a file
`<program>/<env>.json` on the journal, `{"version": ..., "history": [earlier versions]}`, the stack `rollback` pops;
each journal commit's message holds one JSON line per tag it moved (a JournalEntry). Everything read back is input
written by others: a line or file not in dspyreg's shape is skipped or refused, never guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from .errors import CorruptRecord, InvalidName, NothingToRollBack, RegistryError, UnknownRef
from .gittree import TreeEntry
from .refs import JOURNAL_REF, ROLLBACK_ENV, UNSET, ZERO_SHA, RefUpdate, is_version, split_tag_ref, tag_ref, version_key
from .results import JournalEntry, VersionInfo

if TYPE_CHECKING:
    from datetime import datetime

    from .gitstore import GitStore, Identity


# -- tag payloads ----------------------------------------------------------------------------------------------------
def payload_line(payload: Mapping[str, Any]) -> str:
    return json.dumps(dict(payload), sort_keys=True, ensure_ascii=False) + "\n"


def tag_payload(data: bytes) -> dict[str, Any]:
    """The JSON line that dspyreg writes last in every tag message (empty for tags made by hand).

    Only the last line of the message counts, after a trailing signature block if the tag is signed, and lines
    are split at "\n" alone: user text above the payload (notes, even with a fake signature block) and Unicode line
    separators inside it (json.dumps keeps U+2028 raw) can never be read back as the payload.
    """
    lines = data.decode(errors="replace").split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if lines and lines[-1].startswith("-----END ") and lines[-1].endswith("-----"):  # the message ends signed
        from .signing import split_signature  # hashlib and base64: only for a signed message

        lines = split_signature(data)[0].decode(errors="replace").split("\n")
        while lines and not lines[-1].strip():
            lines.pop()
    if not lines or not lines[-1].startswith("{"):
        return {}
    try:
        value = json.loads(lines[-1])
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def payload_version(payload: Mapping[str, Any]) -> str | None:
    """An environment tag's version, if its payload names one as dspyreg writes it (else: a tag made by hand)."""
    value = payload.get("to_version")
    return value if isinstance(value, str) and is_version(value) and value.startswith("v") else None


def typed(payload: Mapping[str, Any], key: str, kind: type) -> Any:
    """`payload[key]` if it has the type dspyreg writes (ints count as floats, bools as neither), else None."""
    value = payload.get(key)
    if isinstance(value, bool):
        return None
    if kind is float and isinstance(value, int):
        return float(value)
    return value if isinstance(value, kind) else None


def tag_rows(tags: Iterable[tuple[str, str, str | None]], messages: Mapping[str, str]) -> list[list[str]]:
    """Tags as GitStore.tags lists them (refname, object, peeled) as the rows `version_infos` reads, each with its
    message from `messages` (empty when not read: the version's row then holds no payload)."""
    return [
        [refname, peeled or "", "commit" if peeled is None else "tag", messages.get(refname, "")]
        for refname, _, peeled in tags
    ]


def version_infos(
    rows: Iterable[list[str]], environments: tuple[str, ...], scores: Mapping[tuple[str, str], float]
) -> list[VersionInfo]:
    """The version tags among `rows` (refname, peeled commit, object type, message of each tag) as VersionInfos,
    oldest first by semantic version, each with the environments whose tags' payloads name it (in `environments`'
    order), what its own payload records (nothing when its message is empty: not read) and its latest evaluation
    score from `scores`."""
    found: list[tuple[str, str, str, str]] = []
    envs: dict[tuple[str, str], list[str]] = {}
    for refname, commit, kind, contents in rows:
        parsed = split_tag_ref(refname)
        if parsed is None or kind != "tag":
            continue
        prog, leaf = parsed
        if is_version(leaf):
            found.append((prog, leaf, commit, contents))
        elif (to_version := payload_version(tag_payload(contents.encode()))) is not None:
            envs.setdefault((prog, to_version), []).append(leaf)
    order = {env: i for i, env in enumerate(environments)}
    found.sort(key=lambda r: (r[0], version_key(r[1])))
    infos = []
    for prog, version, commit, contents in found:
        envs_of = tuple(sorted(envs.get((prog, version), []), key=lambda e: order.get(e, 99)))
        info = VersionInfo(
            name=prog,
            version=version,
            commit=commit,
            created="",
            environments=envs_of,
            dev_score=None,
            eval_score=scores.get((prog, version)),
        )
        infos.append(with_payload(info, contents) if contents else info)
    return infos


def with_payload(info: VersionInfo, message: str) -> VersionInfo:
    """`info` with what its version tag's `message` records: created, dev score, optimizer, trainset size, notes."""
    payload = tag_payload(message.encode())
    return replace(
        info,
        created=typed(payload, "created", str) or "",
        dev_score=typed(payload, "dev_score", float),
        optimizer=typed(payload, "optimizer", str),
        trainset_size=typed(payload, "trainset_size", int),
        notes=typed(payload, "notes", str) or "",
    )


# -- per-environment files -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EnvState:
    """An environment of a program: its tag's raw value and version, and the journal's stack of earlier versions."""

    raw: str  # the tag object sha, or ZERO_SHA when unset
    version: str | None
    history: tuple[str, ...]


def journal_history(blob: bytes, path: str, journal: str | None) -> tuple[str, ...]:
    """The stack of earlier versions in a journal file; a file not in dspyreg's shape is refused, not guessed at."""
    try:
        history = json.loads(blob)["history"]
    except (ValueError, RecursionError, KeyError, TypeError, IndexError):
        history = None
    if not isinstance(history, list) or not all(
        isinstance(v, str) and is_version(v) and v.startswith("v") for v in history
    ):
        raise CorruptRecord(
            f'journal {path} at {(journal or "")[:12]} is corrupt (expected {{"history": [versions]}}): '
            f"restore {JOURNAL_REF} from a good commit (`git log {JOURNAL_REF}`)"
        )
    return tuple(history)


def env_state(store: GitStore, program: str, env: str, journal: str | None) -> EnvState:
    """The env tag as it is now; its history as the journal commit `journal` has it (none when None)."""
    tag = store.read(tag_ref(program, env))
    if tag is None:
        raw, version = ZERO_SHA, None
    else:
        raw, version = tag.sha, payload_version(tag_payload(tag.data))
    blob = store.read_blob(journal, f"{program}/{env}.json") if journal else None
    history = journal_history(blob, f"{program}/{env}.json", journal) if blob else ()
    return EnvState(raw, version, history)


def journal_version(store: GitStore, journal: str | None, program: str, env: str, production: str) -> str | None:
    """Where the journal says `env` points; for rollback, the top of production's history. Raises ValueError (and
    the other errors of reading JSON by key) on a file not in dspyreg's shape: verify reports it as corrupt."""
    if journal is None:
        return None
    state_env = production if env == ROLLBACK_ENV else env
    blob = store.read_blob(journal, f"{program}/{state_env}.json")
    if blob is None:
        return None
    state = json.loads(blob)
    if env == ROLLBACK_ENV:
        return state["history"][-1] if state["history"] else None
    version = state.get("version")
    return version if isinstance(version, str) else None


# -- journal commits -------------------------------------------------------------------------------------------------
_ENTRY_FIELDS = {f: f in ("from_version", "to_version") for f in JournalEntry.__dataclass_fields__}


def journal_entries(message: str) -> list[JournalEntry]:
    """The JSON lines of a journal commit, one per move (split at "\n" alone, as for tag payloads); a line not in
    the shape dspyreg writes is skipped."""
    entries = []
    for line in message.split("\n"):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict) and _entry_shaped(value):
                entries.append(JournalEntry(**value))
    return entries


def _entry_shaped(value: dict[str, Any]) -> bool:
    required = {"program", "env", "from_version", "to_version", "action", "actor", "time"}
    return required <= value.keys() <= _ENTRY_FIELDS.keys() and all(
        isinstance(v, str) or (v is None and _ENTRY_FIELDS[k]) for k, v in value.items()
    )


def log(
    store: GitStore, program: str | None = None, env: str | None = None, *, limit: int | None = None
) -> list[JournalEntry]:
    """Every environment move, oldest first; optionally of one program and one environment; with `limit`, only the
    newest `limit` of them, and the journal is read from its tip only as far as they go (its length costs nothing)."""
    if store.ref_value(JOURNAL_REF) is None or limit == 0:
        return []
    entries: list[JournalEntry] = []
    messages = store.stream_messages(JOURNAL_REF)
    try:
        for message in messages:
            entries += (
                e
                for e in reversed(journal_entries(message))
                if (program is None or e.program == program) and (env is None or e.env == env)
            )
            if limit is not None and len(entries) >= limit:
                break
    finally:
        messages.close()  # stops git: the older commits are never read
    if limit is not None:
        del entries[limit:]
    entries.reverse()
    return entries


def first_move_since(store: GitStore, since: str, program: str, env: str) -> JournalEntry | None:
    """The entry of the first journal commit after `since` (for program/env if it has one), or None."""
    now = store.ref_value(JOURNAL_REF)
    if now is None or now == since:
        return None
    try:
        store.run("merge-base", "--is-ancestor", since, now)
    except RegistryError:
        return None  # the journal was rewritten: its commits since ours say nothing of who won
    messages = list(store.messages(f"{since}..{now}"))
    entries = journal_entries(messages[-1]) if messages else []
    return next((e for e in entries if (e.program, e.env) == (program, env)), entries[0] if entries else None)


def lost_to(store: GitStore, program: str, env: str, since: str | None, fallback: str) -> str:
    """Say which move beat ours: the first journal commit after `since`, the journal commit ours was built on.
    Later entries came after the winner (the latest one names the wrong move); when the journal did not move
    from `since` (a tag moved by hand) or was rewritten, `fallback` names the ref that changed."""
    winner = first_move_since(store, since, program, env) if since else None
    if winner is None:
        return fallback or f"another writer changed {tag_ref(program, env)} first; nothing was changed: re-run"
    who = winner.actor.split(" <")[0]
    where = f"{winner.program}/{winner.env}"
    moved = f"{winner.action} {where} {winner.from_version or UNSET} -> {winner.to_version or UNSET}"
    return (
        f"another writer moved {where} first ({moved} by {who} at {winner.time}); "
        "nothing was changed: re-run to apply yours"
    )


def next_state(
    current: EnvState, program: str, env: str, version: str | None, *, clear: bool = False
) -> tuple[str | None, tuple[str, ...]]:
    """The version `env` moves to and its new history: `version` pushes the current one on the stack; None (a
    rollback) pops the stack, which must not be empty; `clear` (unassign) leaves `env` unset and pushes what it held,
    so a rollback brings it back."""
    if clear:
        if current.version is None:
            raise InvalidName(f"{program}/{env} is {UNSET} already: nothing to unassign")
        return None, (*current.history, current.version)
    if version is None:
        if not current.history:
            raise NothingToRollBack(f"no earlier version of {program}/{env} in the journal: nothing to roll back to")
        return current.history[-1], current.history[:-1]
    return version, current.history + ((current.version,) if current.version else ())


def rollback_follows(
    store: GitStore, entry: JournalEntry, history: tuple[str, ...]
) -> list[tuple[EnvState, JournalEntry]]:
    """The move of the rollback tag that follows production's move `entry`: it names the top of production's new
    history (none when that is what it names already)."""
    rollback = env_state(store, entry.program, ROLLBACK_ENV, None)
    new_rollback = history[-1] if history else None
    if new_rollback == rollback.version:
        return []
    reason = f"previous {entry.env} version"
    follow = replace(
        entry,
        env=ROLLBACK_ENV,
        from_version=rollback.version,
        to_version=new_rollback,
        action="managed",
        reason=reason,
        override="",
    )
    return [(rollback, follow)]


def move_updates(
    store: GitStore,
    moves: Iterable[tuple[EnvState, JournalEntry]],
    history: tuple[str, ...],
    journal_old: str | None,
    who: Identity,
    now: datetime,
    signer: Callable[[bytes], bytes] | None,
) -> list[RefUpdate]:
    """The ref updates of one move: each environment tag (re)written with its entry as payload, and a journal commit
    holding the moved environment's new file and every entry, each with the expected old value it was read at.
    The first of `moves` is the environment moved; the others follow it (the rollback tag)."""
    moves = list(moves)
    first = moves[0][1]
    program, env, version = first.program, first.env, first.to_version
    updates = []
    for state, entry in moves:
        ref = tag_ref(program, entry.env)
        if entry.to_version is None:
            updates.append(RefUpdate(ref, ZERO_SHA, state.raw))
            continue
        target = store.peel_to_commit(tag_ref(program, entry.to_version))
        if target is None:
            raise UnknownRef(f"{program} {entry.to_version} is not published")
        message = f"{entry.action} {program}/{entry.env}: {entry.from_version or '-'} -> {entry.to_version}\n\n"
        tag = store.write_tag(
            target, f"{program}/{entry.env}", message + payload_line(entry.to_json()), who, now, signer
        )
        updates.append(RefUpdate(ref, tag, state.raw))
    summary = f"{first.action} {program}/{env}: {first.from_version or '-'} -> {version or UNSET}"
    env_file = {f"{program}/{env}.json": {"version": version, "history": list(history)}}
    updates.append(journal_commit(store, journal_old, env_file, [e for _, e in moves], summary, who, now))
    return updates


def journal_commit(
    store: GitStore,
    journal_old: str | None,
    files: Mapping[str, Any],
    entries: Iterable[JournalEntry],
    summary: str,
    who: Identity,
    now: datetime,
) -> RefUpdate:
    """The journal's ref update for one change: a commit on `journal_old` writing `files` (path -> JSON value) and
    holding one payload line per entry, expected to land on the journal as it was read."""
    from .state import canonical_json

    blobs = store.write_blobs({path: canonical_json(value) for path, value in files.items()})
    tree = store.write_tree(journal_old, {path: TreeEntry("100644", "blob", sha) for path, sha in blobs.items()})
    body = "".join(payload_line(entry.to_json()) for entry in entries)
    journal = store.write_commit(tree, [journal_old] if journal_old else [], f"{summary}\n\n{body}", who, now)
    return RefUpdate(JOURNAL_REF, journal, journal_old or ZERO_SHA)
