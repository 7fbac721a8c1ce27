"""The one publish path behind both front doors, `dspy_registry.publish` (a live program) and `dspyreg publish` (a
program spec and a saved state): what is published is built the same way for both (`publish_inputs`), and the new
version is written the same way (`write_version`: the bundle's tree on main and its version tag, in one transaction).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConflictError, DuplicateVersion, InvalidName, RegistryError
from .gittree import TreeEntry
from .journal import payload_line
from .refs import (
    MAIN_REF,
    ZERO_SHA,
    RefUpdate,
    check_program,
    check_text,
    is_version,
    normalize_version,
    same_release,
    tag_ref,
    version_key,
)

if TYPE_CHECKING:
    from datetime import datetime

    from .bundle import ProgramSource, PublishMeta
    from .gitstore import GitStore, Identity
    from .registry_api import RegistryAPI

PUBLISH_RETRIES = 5


@dataclass(frozen=True, kw_only=True)
class PublishInputs:
    """What both front doors hand to Registry.publish besides the state and the metadata."""

    source: ProgramSource
    lm: Mapping[str, Any] | None  # the manifest's [lm]: model and settings, never a key
    recorder: Any  # the LM that runs the program once for examples/output.json, or None


def publish_inputs(program: Any, *, lm: Any = None, record_example: bool = False, no_lm: str) -> PublishInputs:
    """The source of `program` (a live dspy.Module, or a `path/to/file.py:Attr` / `package.module:Attr` spec to
    import) and, with `record_example`, the LM to record its example output with (`no_lm`: the error when there is
    none, in the words of the front door)."""
    from .bundle import import_program, lm_config

    source = import_program(program) if isinstance(program, str) else live_source(program)
    recorder = recording_lm(lm) if record_example else None
    if record_example and recorder is None:
        raise RegistryError(no_lm)
    no_model = lm is None or (isinstance(lm, str) and not lm)  # `--lm ""` names no model
    return PublishInputs(source=source, lm=None if no_model else lm_config(lm), recorder=recorder)


def live_source(program: Any) -> ProgramSource:
    """A live program's source: its class's file becomes the bundle's code/."""
    import inspect

    from .bundle import ProgramSource

    cls = type(program)
    if cls.__module__ == "__main__":
        return main_source(program)
    source_file = inspect.getsourcefile(cls)
    if source_file is None:
        raise RegistryError(f"cannot find the source file of {cls.__qualname__}: define it in a .py file")
    path = Path(source_file)
    # A copy: publishing checks the state by loading it, which must not touch the caller's program (or its LMs).
    return ProgramSource(program.deepcopy(), {path.name: path.read_bytes()}, f"{path.stem}:{cls.__qualname__}", path)


def main_source(program: Any) -> ProgramSource:
    """A program whose class is defined in a notebook cell or the script being run: the class and what it uses there,
    captured as one module (bundling the script itself would make every `load` run it again, and publish again)."""
    import tempfile

    from .bundle import ProgramSource
    from .notebook import capture_main_class, check_captured

    captured = capture_main_class(type(program))
    with tempfile.TemporaryDirectory(prefix="dspyreg-capture-") as where:
        check_captured(captured, program, where)
    return ProgramSource(program.deepcopy(), {captured.filename: captured.text.encode()}, captured.entrypoint)


def recording_lm(lm: Any) -> Any:
    """The LM to record an example with: a dspy LM as given; for a model name, that model made as a server makes it
    (DSPYREG_LM_* give its key and API base); for none, dspy's configured LM, else DSPYREG_LM_MODEL's. None if none."""
    import dspy

    from .runtime.inference import make_lm

    if lm is not None and not isinstance(lm, str):
        return lm
    if lm is None and dspy.settings.lm is not None:
        return dspy.settings.lm
    return make_lm({"model": lm} if lm else {})


def check_metadata(
    *, dev_score: float | None, trainset_size: int | None, notes: str, optimizer: str | None, lm: Any
) -> None:
    """Refuse metadata that the manifest or a tag message could not hold as given, naming the option."""
    if dev_score is not None and not 0.0 <= dev_score <= 1.0:
        raise InvalidName(f"dev score {dev_score} is not a fraction in [0, 1] (divide a percentage by 100)")
    if trainset_size is not None and not 0 <= trainset_size < 2**63:
        raise InvalidName(f"trainset size {trainset_size} is not a count (0 to 2**63-1, what TOML can hold)")
    check_text("--notes", notes, multiline=True)
    for option, text in (("--optimizer", optimizer), ("--lm", (lm or {}).get("model"))):
        if isinstance(text, str):
            check_text(option, text)


def write_version(
    store: GitStore,
    meta: PublishMeta,
    files: Mapping[str, bytes],
    *,
    who: Identity,
    now: datetime,
    signer: Callable[[bytes], bytes] | None,
) -> str:
    """Commit `files` as the program's folder on main and tag the commit `name/version` (its message ends with the
    payload `list` reads), in one transaction; rebuilt on the new tip while another publish moves main. Returns the
    commit."""
    name, version, notes = meta.name, meta.version, meta.notes
    payload = {
        "created": meta.created,
        "dev_score": meta.dev_score,
        "optimizer": meta.optimizer,
        "trainset_size": meta.trainset_size,
        "notes": notes,
    }
    blobs = store.write_blobs(files)
    subtree = store.write_tree(None, {p: TreeEntry("100644", "blob", s) for p, s in blobs.items()})
    message = f"Publish {name} {version}\n\n" + (f"{notes}\n\n" if notes else "") + payload_line(payload)
    tag_name = tag_ref(name, version)
    for _attempt in range(PUBLISH_RETRIES):
        parent = store.ref_value(MAIN_REF)
        assert parent is not None  # Registry.open checked main
        root = store.write_tree(parent, {name: TreeEntry("040000", "tree", subtree)})
        commit = store.write_commit(root, [parent], message, who, now)
        tag = store.write_tag(commit, f"{name}/{version}", message, who, now, signer)
        try:
            store.transaction([RefUpdate(MAIN_REF, commit, parent), RefUpdate(tag_name, tag, ZERO_SHA)])
        except ConflictError:
            store.sync()  # a remote registry: learn where main and the tag are now
            if store.ref_value(tag_name) is not None:
                raise ConflictError(f"another writer published {name} {version} first; nothing was changed") from None
            continue  # main moved (another publish): rebuild on the new tip
        return commit
    raise ConflictError(
        f"main kept moving while publishing {name} {version} ({PUBLISH_RETRIES} tries); "
        "nothing was changed: re-run the command"
    )


# -- what a new version may be --------------------------------------------------------------------------------------
def interface_warnings(
    reg: RegistryAPI, name: str, version: str, entrypoint: str, files: Mapping[str, bytes]
) -> tuple[str, ...]:
    """A warning when callers of the highest published version of `name` would see another program."""
    from .interface_diff import diff_interface, publish_warning

    published = published_versions(reg, name)
    if not published or "interface.json" not in files:
        return ()
    previous = max(published, key=version_key)
    try:
        resolved = reg.resolve(previous, name)
        before = reg.manifest(resolved).program.entrypoint, reg.interface(resolved)
    except RegistryError:
        return ()  # a damaged earlier version is verify's to report; it does not stop a new one
    changes = diff_interface(*before, entrypoint, json.loads(files["interface.json"]))
    return (publish_warning(name, previous, version, changes),) if changes else ()


def field_numbers(reg: RegistryAPI, name: str, version: str) -> Callable[[bytes], bytes]:
    """What build_bundle hands the new version's interface.json to for its field-numbers.json: its gRPC field numbers
    on top of the versions of `name` published before it (field_numbers.publish_table)."""
    from .field_numbers import publish_table

    published = published_versions(reg, name)

    def numbered(interface: bytes) -> bytes:
        return publish_table(reg.store, name, version, interface, published, lambda: reg.version_commits(name))

    return numbered


def check_new_version(reg: RegistryAPI, name: str, version: str) -> str:
    """The normalized version, if `name` may publish it; raises otherwise."""
    check_program(name)
    version = normalize_version(version)
    if reg.store.ref_value(tag_ref(name, version)) is not None:
        raise DuplicateVersion(f"{name} {version} is already published; versions are immutable: use a new version")
    for existing in published_versions(reg, name):
        if same_release(existing, version):
            raise DuplicateVersion(f"{name} {existing} is already published and names the same release as {version}")
    return version


def published_versions(reg: RegistryAPI, name: str) -> list[str]:
    """The versions `name` has published: one for-each-ref, kept while `main` holds (a publish moves it), so the
    CLI's early check, publish's own, its interface warning and its field numbers read the program's tags once."""
    key = (name, reg.store.ref_value(MAIN_REF))
    if reg.published_tags is None or reg.published_tags[0] != key:
        rows = reg.store.for_each_ref(["%(refname:lstrip=3)"], f"refs/tags/{name}/")
        reg.published_tags = key, [v for (v,) in rows if is_version(v)]
    versions: list[str] = reg.published_tags[1]
    return versions
