"""A version's gRPC field numbers, fixed when it is published: `<program>/field-numbers.json` in its bundle.

At publish, the new version's table is the stored table of the nearest lower version (in semantic-version order)
that has one, with the interfaces of any versions between them and then its own interface numbered on top
(proto.number); when no lower version has one (a registry published by an older dspyreg), its whole history numbers
it once, as `dspyreg proto` numbered every version before tables were stored. `dspyreg proto`, `export` and serving
then render a version from its own table and interface.json alone (proto.render_numbered): the cost does not grow
with history, and no version published later (say a hotfix of an older line) changes the .proto of one published
before it.

A version without a table (published before tables were stored), or whose table does not number its own interface
(a bundle assembled by hand), is numbered by the interfaces of every version up to it, as before. The table is read
from git, where anyone who can push may write one: it is checked (shape, numbers protobuf accepts, no number given
twice in a scope, bounded size; `verify` reports the same, table_problem), and a bad one is BadFieldNumbers naming
the version, never a wrong .proto.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import proto
from .errors import BadFieldNumbers
from .refs import tag_ref, version_key
from .state import canonical_json

if TYPE_CHECKING:
    from .gitstore import GitStore
    from .gittree import GitObject
    from .results import Resolved

FIELD_NUMBERS_JSON = "field-numbers.json"
INTERFACE_JSON = "interface.json"
BUNDLE_FILES = (FIELD_NUMBERS_JSON, INTERFACE_JSON)  # what a version's .proto is read from
FORMAT = 1
MAX_BYTES = 4 << 20
MAX_NUMBERS = 100_000
LARGEST_FIELD_NUMBER = 2**29 - 1  # protobuf's

Versions = Sequence[tuple[str, str]]  # (version, commit) of a program's published versions, oldest first


# -- the file ---------------------------------------------------------------------------------------------------------
def encode(table: Mapping[str, Mapping[str, int]]) -> bytes:
    """field-numbers.json: {"format": 1, "numbers": {scope: {key: number}}}, keys sorted (state.canonical_json)."""
    return canonical_json({"format": FORMAT, "numbers": table})


def decode(data: bytes, where: str) -> proto.Table:
    """The table of a field-numbers.json read from git (`where`: e.g. `qa v1.1`); raises BadFieldNumbers, naming the
    first problem (table_problem), for anything dspyreg would not have written."""
    table, problem = _checked(data)
    if table is None:
        upgrade = problem.startswith("has format") and "(from a newer dspyreg? upgrade dspyreg)"
        hint = upgrade or "(not written by dspyreg publish: run `dspyreg verify` on this version)"
        raise BadFieldNumbers(f"{where}: {FIELD_NUMBERS_JSON} {problem} {hint}")
    return table


def table_problem(data: bytes) -> str:
    """What is wrong with a field-numbers.json read from git, or "" when it is a table dspyreg writes."""
    return _checked(data)[1]


def _checked(data: bytes) -> tuple[proto.Table | None, str]:
    """(the table, "") or (None, its first problem)."""
    if len(data) > MAX_BYTES:
        return None, f"is larger than {MAX_BYTES >> 20} MiB"
    try:
        document: Any = json.loads(data)
    except (ValueError, RecursionError):
        return None, "is not valid JSON"
    if not isinstance(document, dict) or set(document) != {"format", "numbers"}:
        return None, 'is not an object of "format" and "numbers"'
    if document["format"] != FORMAT or isinstance(document["format"], bool):
        return None, f"has format {json.dumps(document['format'])[:40]}, not {FORMAT}"
    numbers = document["numbers"]
    if not isinstance(numbers, dict) or not all(isinstance(keys, dict) for keys in numbers.values()):
        return None, 'has "numbers" that is not an object of objects (scope -> key -> number)'
    if sum(len(keys) for keys in numbers.values()) > MAX_NUMBERS:
        return None, f"holds more than {MAX_NUMBERS:,} numbers"
    for scope, keys in numbers.items():
        problem = _scope_problem(keys)
        if problem:
            return None, f"gives {json.dumps(scope)[:80]} {problem}"
    return numbers, ""


def _scope_problem(keys: Mapping[str, Any]) -> str:
    """What is wrong with the numbers of one scope, or ""."""
    seen: dict[int, str] = {}
    for key, n in keys.items():
        what = json.dumps(key)[:80]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= LARGEST_FIELD_NUMBER:
            return f"{what} the number {json.dumps(n)[:40]}, not a whole number from 1 to {LARGEST_FIELD_NUMBER}"
        if n in proto.RESERVED_BY_PROTOBUF:
            return f"{what} the number {n}, which protobuf reserves (19000-19999)"
        if n in seen:
            return f"the number {n} twice ({json.dumps(seen[n])[:80]} and {what})"
        seen[n] = key
    return ""


def covers(program: str, table: Mapping[str, Mapping[str, int]], sig: proto.Signature) -> bool:
    """Whether `table` numbers every field (and enum value) of `sig`."""
    return all(key in table.get(scope, {}) for scope, key in proto.numbered_keys(program, sig))


# -- reading versions -------------------------------------------------------------------------------------------------
def version_proto(store: GitStore, resolved: Resolved, versions: Callable[[], Versions]) -> str:
    """The .proto of `resolved`: from its own table and interface.json when it has a table, else numbered by every
    published version up to it (`versions` lists them; asked only then)."""
    program = resolved.program
    table_data, interface_data = _blobs(store.read_many([f"{resolved.commit}:{program}/{n}" for n in BUNDLE_FILES]))
    sig = _signature(program, interface_data)
    table = _table(table_data, f"{program} {resolved.version}", program, sig)
    if table is not None:
        return proto.render_numbered(program, sig, table)
    below = version_key(resolved.version)
    lower = [(v, c) for v, c in versions() if version_key(v) < below]
    history = proto.history_signatures(
        program, [*_interfaces(store, program, lower), interface_data], {interface_data: sig}
    )
    return proto.render(program, history)


def publish_table(
    store: GitStore,
    program: str,
    version: str,
    interface: bytes,
    published: Sequence[str],
    versions: Callable[[], Versions],
) -> bytes:
    """field-numbers.json of `program` `version`, about to be published with `interface` (raw interface.json):
    numbered on top of the nearest lower version that has a table, else by every lower version. `published` names the
    program's versions (publish has read them); `versions` lists them with their commits, asked only when the nearest
    lower version has no table."""
    below = version_key(version)
    nearest = max((v for v in published if version_key(v) < below), key=version_key, default=None)
    base = _tagged_table(store, program, nearest) if nearest is not None else None
    if base is not None:
        return encode(proto.number(program, proto.history_signatures(program, [interface]), base))
    history = [(v, c) for v, c in versions() if version_key(v) < below]
    base, start = _nearest_table(store, program, history)
    signatures = proto.history_signatures(program, [*_interfaces(store, program, history[start:]), interface])
    return encode(proto.number(program, signatures, base))


def _tagged_table(store: GitStore, program: str, version: str) -> proto.Table | None:
    """The usable table of `program` `version`, read through its tag (one git process); None if it has none, or if
    its tag is not annotated (such a tag numbers nothing: Registry.version_commits leaves it out)."""
    ref = tag_ref(program, version)
    tag, *files = store.read_many([ref, *(f"{ref}:{program}/{name}" for name in BUNDLE_FILES)])
    if tag is None or tag.type != "tag":
        return None
    table_data, interface_data = _blobs(files)
    return _table(table_data, f"{program} {version}", program, _signature(program, interface_data))


def _nearest_table(store: GitStore, program: str, lower: Versions) -> tuple[proto.Table | None, int]:
    """(the table of the highest of `lower` that has a usable one, the index after that version), else (None, 0)."""
    ids = store.read_many([f"{c}:{program}/{FIELD_NUMBERS_JSON}" for _, c in lower], ids_only=True)
    for i in range(len(ids) - 1, -1, -1):
        stored = ids[i]
        if stored is None or stored.type != "blob":
            continue
        version, commit = lower[i]
        table_data, interface_data = _blobs(store.read_many([f"{commit}:{program}/{n}" for n in BUNDLE_FILES]))
        found = _table(table_data, f"{program} {version}", program, _signature(program, interface_data))
        if found is not None:
            return found, i + 1
    return None, 0


def _table(data: bytes | None, where: str, program: str, sig: proto.Signature) -> proto.Table | None:
    """The version's table, if it has one that numbers its own signature; a malformed one raises."""
    if data is None:
        return None
    table = decode(data, where)
    return table if covers(program, table, sig) else None


def _signature(program: str, interface: bytes | None) -> proto.Signature:
    return proto.signature(program, proto.read_interface(interface))


def _blobs(found: Sequence[GitObject | None]) -> tuple[bytes | None, ...]:
    """The data of each object that is a blob, else None (a missing file, or a folder in its place)."""
    return tuple(obj.data if obj is not None and obj.type == "blob" else None for obj in found)


def _interfaces(store: GitStore, program: str, versions: Versions) -> list[bytes | None]:
    """The raw interface.json of each of `versions`, in order: which blob each holds (one cat-file process), then
    each distinct blob once (another); versions mostly share their interface."""
    ids = store.read_many([f"{c}:{program}/{INTERFACE_JSON}" for _, c in versions], ids_only=True)
    blobs = sorted({obj.sha for obj in ids if obj is not None and obj.type == "blob"})
    data = {obj.sha: obj.data for obj in store.read_many(blobs) if obj is not None and obj.type == "blob"}
    return [data.get(obj.sha) if obj is not None else None for obj in ids]
