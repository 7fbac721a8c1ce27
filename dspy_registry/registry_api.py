"""What the modules below the facade read of a Registry: a Protocol, so moves.py, delivery.py, lifecycle.py,
publishing.py and sides.py take the registry handed in and never import registry.py (no import cycle)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .checks import RegistryChecked

if TYPE_CHECKING:
    from .manifest import Manifest
    from .results import Records, Resolved


class RegistryAPI(RegistryChecked, Protocol):
    """The Registry (registry.py) as the modules that do its work see it."""

    published_tags: tuple[tuple[str, str | None], list[str]] | None  # publishing.published_versions' cache

    def program_of(self, program: str | None) -> str: ...

    def check_env(self, env: str, *, allow_rollback: bool = False) -> str: ...

    def signer(self, sign: bool | None) -> Callable[[bytes], bytes] | None: ...

    def manifest(self, resolved: Resolved) -> Manifest: ...

    def records(self, resolved: Resolved) -> Records: ...

    def score(self, resolved: Resolved, records: Records | None = None) -> float | None: ...

    def interface(self, resolved: Resolved) -> dict[str, Any] | None: ...

    def proto(self, resolved: Resolved) -> str: ...

    def yanked(self, resolved: Resolved) -> str | None: ...
