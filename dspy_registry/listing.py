"""What `list` shows: every published version with what its tag records, its yank and its latest score. With
`scored`, only the newest versions of each program (and those an environment holds) are read whole."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from . import journal, lifecycle
from .gitstore import GitStore
from .records import latest_scores
from .refs import is_version, split_tag_ref, tag_ref
from .results import VersionInfo


def versions(
    store: GitStore, environments: tuple[str, ...], pattern: str, program: str | None, scored: int | None
) -> list[VersionInfo]:
    """The versions under the tag `pattern` (Registry.versions says what `scored` leaves out), oldest first."""
    if scored is None:
        rows = store.for_each_ref(["%(refname)", "%(*objectname)", "%(objecttype)", "%(contents)"], pattern)
        infos = journal.version_infos(rows, environments, {})
        yanks = {p: lifecycle.yanked(store, p) for p in {v.name for v in infos}}
        wanted: set[tuple[str, str]] | None = None
    else:
        tags = store.tags(pattern)
        versions_of = {t[0]: parsed for t in tags if (parsed := split_tag_ref(t[0])) and is_version(parsed[1])}
        # The environment tags' messages say which versions they hold; the versions' own, only those shown.
        envs = tag_messages(store, [t for t in tags if t[0] not in versions_of])
        infos = journal.version_infos(journal.tag_rows(tags, envs), environments, {})
        yanks = {p: lifecycle.yanked(store, p) for p in {v.name for v in infos}}
        seen: dict[str, int] = {}
        wanted = set()
        for v in reversed(infos):  # newest first
            seen[v.name] = seen.get(v.name, 0) + 1
            if seen[v.name] <= scored + len(yanks[v.name]) or v.environments:
                wanted.add((v.name, v.version))
        messages = tag_messages(store, [t for t in tags if versions_of.get(t[0]) in wanted])
        infos = [
            journal.with_payload(v, message) if (message := messages.get(tag_ref(v.name, v.version))) else v
            for v in infos
        ]
    scores = latest_scores(store, wanted, program)
    return [
        replace(v, yanked=y.reason if y else None, eval_score=scores.get((v.name, v.version)))
        if (y := yanks[v.name].get(v.version)) or (v.name, v.version) in scores
        else v
        for v in infos
    ]


def tag_messages(store: GitStore, tags: Iterable[tuple[str, str, str | None]]) -> dict[str, str]:
    """refname -> message of each annotated tag of `tags` (GitStore.tags rows), read in one `cat-file` pass."""
    wanted = [(refname, sha) for refname, sha, peeled in tags if peeled is not None]
    out = {}
    for (refname, _), obj in zip(wanted, store.read_many([sha for _, sha in wanted])):
        if obj is not None and obj.type == "tag":
            out[refname] = obj.data.partition(b"\n\n")[2].decode(errors="replace")
    return out
