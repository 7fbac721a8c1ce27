"""Where a registry is when none is named, where dspyreg keeps its cache, and hints for a folder that is not a
registry: every hint works when followed.

Imports nothing of ours; the checks are plain file tests, so a command that only reads refs
stays as fast as before.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

DEFAULT_REGISTRY = "registry"


def default_location() -> str:
    """DSPYREG_REGISTRY, else ./registry, else the current folder when it is a registry itself (`cd registry`)."""
    named = os.environ.get("DSPYREG_REGISTRY")
    if named:
        return named
    if not Path(DEFAULT_REGISTRY).exists() and _looks_like_registry(Path.cwd()):
        return "."
    return DEFAULT_REGISTRY


def _looks_like_registry(folder: Path) -> bool:
    """A work tree with registry.toml, or a bare repository (Registry.open then checks registry.toml on main)."""
    if (folder / ".git").exists():
        return (folder / "registry.toml").is_file()
    return (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir()


def new_registry_path(taken: Path) -> Path:
    """A folder that `dspyreg init` accepts, for when `taken` holds something else: a `registry` folder inside it
    (the default layout: ./registry beside the project's code), or beside it when it is itself called registry."""
    base = taken.parent / "dspyreg-registry" if taken.name == DEFAULT_REGISTRY else taken / DEFAULT_REGISTRY
    candidate, n = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def init_elsewhere(taken: Path) -> str:
    """The hint for a folder that holds other things: a command that creates a registry there, then how to use it."""
    new = shlex.quote(str(new_registry_path(taken)))
    return f"create a registry in a new folder with `dspyreg init {new}` and use it with `--registry {new}`"


def cache_dir() -> Path:
    """DSPYREG_CACHE, else dspyreg/ in the user's cache folder: clones of remote registries, bundles, load checks."""
    configured = os.environ.get("DSPYREG_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dspyreg"
