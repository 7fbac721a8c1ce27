"""`dspyreg site DIR`: every page of pages.py written as static files, with relative links, for file:// or a git
host's pages.

The site is built aside and moved in by export.write_export, so DIR only ever receives the site's own files: a new
or empty DIR, or one this command wrote before (its owned list names the SITE_MARK file); any other non-empty DIR is
refused unless `force`, and even then only the site's files are replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RegistryError
from ..export import owned_files, write_export
from .pages import STATIC, Pages

if TYPE_CHECKING:
    from ..registry import Registry

SITE_MARK = ".dspyreg-site"


@dataclass(frozen=True)
class SiteResult:
    folder: Path
    pages: tuple[str, ...]


def build_site(registry: Registry, dest: Path, *, force: bool = False) -> SiteResult:
    ours = dest.is_dir() and SITE_MARK in owned_files(dest)
    if dest.is_dir() and any(dest.iterdir()) and not (ours or force):
        raise RegistryError(
            f"{dest} is not empty and holds no site dspyreg wrote: choose an empty folder, or pass --force to write "
            "the site's files into it (other files stay)"
        )
    pages = Pages(registry, live=False)
    files = {path: pages.render(path).encode() for path in pages.site_paths()}
    files["static/style.css"] = (STATIC / "style.css").read_bytes()
    files[SITE_MARK] = b"Written by `dspyreg site`: the files listed in .dspyreg-bundle.json are replaced on rebuild.\n"
    write_export(dest, files, force=True)
    return SiteResult(dest, tuple(p for p in files if p.endswith(".html")))
