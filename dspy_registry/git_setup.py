"""Plain git prints dspyreg's view of program.json and prompts.json: `.gitattributes` on main names the `dspyreg`
diff driver for them (in the first commit of every registry since `init` writes it from registry-template/), and a
repository's local git config says which command the driver runs (`dspyreg textconv`, see textconv.py).

The config is local to each repository (git never takes it from a clone's origin), so `init` sets it in the new
registry and `dspyreg git-setup` in an existing registry, a cache clone or a person's own clone. A bare repository
has no work tree to read `.gitattributes` from: its `info/attributes` names the driver too.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import RegistryError
from .gitstore import GitStore, is_url, utc_now
from .gittree import TreeEntry
from .refs import MAIN_REF, RefUpdate

DRIVER = "dspyreg"
ATTRIBUTE_LINES = (f"*/program.json diff={DRIVER}", f"*/prompts.json diff={DRIVER}")
ATTRIBUTES_COMMENT = (
    "# program.json and prompts.json: git diff, log -p and show print dspyreg's view (dspyreg git-setup)."
)
COMMIT_MESSAGE = "Name dspyreg's diff driver for program.json and prompts.json in .gitattributes\n"


@dataclass(frozen=True)
class GitSetupResult:
    commit: str | None  # the commit on main that added the lines to .gitattributes; None when they were there
    configured: tuple[str, ...]  # the git dirs whose local config now names the driver
    command: str  # the textconv command written to them


def textconv_command() -> str:
    """The command git runs, quoted for git's shell: the `dspyreg` script that is running, else this interpreter
    with `-m dspy_registry` (a library call, e.g. `Registry.init` from Python)."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.name in ("dspyreg", "dspyreg.exe") and script.is_file():
        parts = [os.path.abspath(script), "textconv"]  # not resolved: a venv's script must stay in its venv
    else:
        parts = [sys.executable, "-m", "dspy_registry", "textconv"]
    return " ".join(shlex.quote(part) for part in parts)


def missing_attribute_lines(text: str) -> list[str]:
    present = {line.strip() for line in text.splitlines()}
    return [line for line in ATTRIBUTE_LINES if line not in present]


def commit_attributes(store: GitStore) -> str | None:
    """Add the driver's lines to main's .gitattributes in one commit, main moved from its expected old value (or
    pushed with a lease); None, and nothing written, when they are there already."""
    parent = store.ref_value(MAIN_REF)
    if parent is None:
        raise RegistryError("the registry has no main branch: create it with `dspyreg init`")
    entry = store.list_tree(MAIN_REF).get(".gitattributes")
    if entry is not None and (entry.type != "blob" or entry.mode not in ("100644", "100755")):
        raise RegistryError(".gitattributes on main is not a regular file: fix it by hand, nothing was changed")
    old = store.blob(entry.sha).decode("utf-8", "replace") if entry is not None else ""
    missing = missing_attribute_lines(old)
    if not missing:
        return None
    text = (old if not old or old.endswith("\n") else old + "\n") + "\n".join([ATTRIBUTES_COMMENT, *missing]) + "\n"
    blob = store.write_blobs({".gitattributes": text.encode()})[".gitattributes"]
    tree = store.write_tree(parent, {".gitattributes": TreeEntry("100644", "blob", blob)})
    commit = store.write_commit(tree, [parent], COMMIT_MESSAGE, store.identity(), utc_now())
    store.transaction([RefUpdate(MAIN_REF, commit, parent)])
    return commit


def configure(store: GitStore, command: str | None = None) -> str:
    """Name the driver's command in the repository's local config (and, when bare, in info/attributes); returns
    the command."""
    command = command or textconv_command()
    store.run("config", "--local", f"diff.{DRIVER}.textconv", command)
    if store.run("rev-parse", "--is-bare-repository").strip() == "true":
        _add_info_attributes(store.git_dir)
    return command


def _add_info_attributes(git_dir: Path) -> None:
    """The lines in `<git dir>/info/attributes`, written beside it and renamed over it: never through a link."""
    info = git_dir / "info"
    target = info / "attributes"
    if info.is_symlink() or target.is_symlink() or (target.exists() and not target.is_file()):
        raise RegistryError(f"{target} is a link or not a file: dspyreg does not write through it")
    info.mkdir(exist_ok=True)
    old = target.read_text(errors="replace") if target.exists() else ""
    missing = missing_attribute_lines(old)
    if not missing:
        return
    text = (old if not old or old.endswith("\n") else old + "\n") + "\n".join([ATTRIBUTES_COMMENT, *missing]) + "\n"
    fd, tmp = tempfile.mkstemp(dir=info, prefix=".attributes-")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def set_up(store: GitStore, location: str) -> GitSetupResult:
    """`dspyreg git-setup`: the lines committed on the registry's main if missing, and the driver configured in the
    registry's store (the registry, or the cache clone of a remote one) and in the clone `location` names, if any."""
    commit = commit_attributes(store)
    command = configure(store)
    configured = [str(store.git_dir)]
    if not is_url(location):
        with GitStore.open(Path(location)) as own:  # a person's clone: its own config, not only the cache's
            if own.git_dir != store.git_dir:
                configure(own, command)
                configured.append(str(own.git_dir))
    return GitSetupResult(commit, tuple(configured), command)
