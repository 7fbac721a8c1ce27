"""Where a registry's git store comes from: opened by path, by git URL (through its cache clone) or through a local
clone of a remote registry; or created from registry-template/ by `init`. Registry.open and Registry.init wrap these.
"""

from __future__ import annotations

from pathlib import Path

from .errors import NotARegistry, RegistryError
from .gitstore import GitStore, is_url, utc_now
from .gittree import TreeEntry
from .hints import cache_dir, init_elsewhere
from .manifest import RegistryConfig
from .refs import JOURNAL_REF, MAIN_REF, ZERO_SHA, RefUpdate

TEMPLATE_DIR_NAMES = ("registry_template", "../registry-template")


def open_store(where: str) -> tuple[GitStore, RegistryConfig]:
    """The store of the registry at `where`, its refs brought up to date first (moved tags included, so nothing acts
    on a stale prod), and its registry.toml, every value checked before any command acts on it."""
    store = unsynced_store(where)
    try:
        store.sync()
        settings = store.read_blob(MAIN_REF, "registry.toml")
        if settings is None:
            # `init` refuses a repository that has a main branch already: only an empty one can become a registry.
            empty = store.ref_value(MAIN_REF) is None and not is_url(where)
            hint = f"create one with `dspyreg init {where}`" if empty else init_elsewhere(Path(where))
            raise NotARegistry(
                f"{where} is a git repository but not a dspyreg registry (no registry.toml on main): {hint}"
            )
        return store, RegistryConfig.loads(settings)
    except BaseException:
        store.close()
        raise


def unsynced_store(where: str) -> GitStore:
    """The store of the registry at `where` as it is on this machine, not synced: for a remote registry, its cache
    clone as last fetched (what a client falls back to while the remote is unreachable, last_good.py)."""
    return GitStore.cache_of(where, cache_dir()) if is_url(where) else _local_store(Path(where))


def init_store(where: str, *, bare: bool = True) -> GitStore:
    """A new registry from registry-template/: in a new or empty folder, an empty repository, or an empty remote."""
    if is_url(where):
        store = GitStore.cache_of(where, cache_dir())
        existing = store.remote_refs()
        if MAIN_REF in existing:
            raise NotARegistry(
                f"{where} already has a main branch (is it a registry already?): choose an empty repository"
            )
        _refuse_foreign_refs(where, list(existing))
        _write_template(store)
        from .git_setup import configure

        configure(store)  # the cache clone's own config: git diff there prints dspyreg's view
        return store
    path = Path(where)
    if path.exists() and not path.is_dir():
        raise NotARegistry(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        try:
            store = GitStore.open(path)
        except NotARegistry:
            raise NotARegistry(f"{path} is not empty and not a git repository: {init_elsewhere(path)}") from None
        if store.ref_value(MAIN_REF) is not None:
            store.close()
            raise NotARegistry(
                f"{path} already has a main branch (is it a registry already? then use it with `--registry "
                f"{path}`): or {init_elsewhere(path)}"
            )
        try:
            _refuse_foreign_refs(where, [ref for (ref,) in store.for_each_ref(["%(refname)"])])
        except NotARegistry:
            store.close()
            raise
    else:
        try:
            store = GitStore.init(path, bare=bare)
        except OSError as err:
            raise NotARegistry(f"cannot create a registry in {path}: {err.strerror or err}") from None
    _write_template(store)
    from .git_setup import configure

    configure(store)  # .gitattributes came with the template; the driver's command is local config
    if not bare and store.git_dir == (path / ".git").resolve():
        store.run(f"--work-tree={path}", "reset", "-q", "--hard", MAIN_REF)  # show the template in the new checkout
    return store


def _write_template(store: GitStore) -> None:
    files = {
        str(p.relative_to(template_dir())): p.read_bytes() for p in sorted(template_dir().rglob("*")) if p.is_file()
    }
    blobs = store.write_blobs(files)
    tree = store.write_tree(None, {p: TreeEntry("100644", "blob", sha) for p, sha in blobs.items()})
    who, now = store.identity(), utc_now()
    main = store.write_commit(tree, [], "Initialize dspyreg registry\n", who, now)
    journal = store.write_commit(store.write_tree(None, {}), [], "Start the dspyreg journal\n", who, now)
    store.transaction([RefUpdate(MAIN_REF, main, ZERO_SHA), RefUpdate(JOURNAL_REF, journal, ZERO_SHA)])


def template_dir() -> Path:
    here = Path(__file__).parent
    for name in TEMPLATE_DIR_NAMES:
        candidate = (here / name).resolve()
        if (candidate / "registry.toml").is_file():
            return candidate
    raise RegistryError("registry template not found: reinstall dspy-registry")


def _local_store(path: Path) -> GitStore:
    """A registry folder; or, for a clone of a registry (a repository with an origin), the shared cache of that
    origin, as for a URL: dspyreg reads and writes the origin, and never syncs into (so never deletes or rewrites)
    the user's own branches, tags and checkout. See docs/remote.md."""
    store = GitStore.open(path)
    origin = store.remote
    if origin is None:
        return store
    settings = store.network_settings()  # e.g. the auth header of a CI checkout: the cache needs it to reach origin
    store.close()
    if not is_url(origin) and not Path(origin).is_absolute():
        origin = str((path / origin).resolve())  # git reads a relative origin from the clone's folder
    return GitStore.cache_of(origin, cache_dir(), settings)


def _refuse_foreign_refs(where: str, refs: list[str]) -> None:
    """`init` writes only into a repository without refs: it never adds branches to someone else's repository."""
    if refs:
        shown = ", ".join(sorted(refs)[:3]) + (" ..." if len(refs) > 3 else "")
        raise NotARegistry(f"{where} already has refs ({shown}): choose a new folder or an empty repository")
