"""`dspy_registry.load`'s cache in a process: a ref is resolved (and a remote registry fetched) at most once per ttl
seconds; within it, a load is a copy of the program already built, without running git. When the remote cannot be
reached, the last version verified for that ref is used, with one warning naming it (last_good.py).

Every load returns a fresh deep copy: DSPy modules are mutable (demos, per-predictor LMs, attributes set by callers),
so one caller's changes never reach another's program, nor the copy kept here.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RegistryError, RegistryUnreachableWarning, RemoteUnreachable
from .hints import cache_dir, default_location

if TYPE_CHECKING:
    import dspy


@dataclass(frozen=True)
class _Loaded:
    program: Any  # the pristine copy: never handed out
    resolved_at: float  # time.monotonic()


_LOADED: dict[tuple[str, str, str, str, bool], _Loaded] = {}
_LOCK = threading.Lock()


def load(name: str, ref: str, *, registry: str | Path | None, ttl: float, require_signed: bool) -> dspy.Module:
    """The program `name` at `ref`: from this process's cache when resolved less than `ttl` seconds ago, else
    resolved, verified and built afresh (or, the remote being unreachable, its last verified version)."""
    if not (ttl >= 0 and ttl < math.inf):
        raise RegistryError(f"ttl must be a number of seconds from 0 up, not {ttl!r}")
    location = str(registry or default_location())
    # The cache folder is part of the key: it is what a "machine" is (its clones and its last verified versions).
    key = (str(cache_dir()), location, name, ref, require_signed)
    with _LOCK:
        hit = _LOADED.get(key)
    # Each call's own ttl says how old a resolution it accepts (ttl=0: none).
    if hit is not None and time.monotonic() - hit.resolved_at < ttl:
        return _copy(hit.program)
    started = time.monotonic()
    program = _resolve(location, name, ref, require_signed)
    with _LOCK:
        _LOADED[key] = _Loaded(program, started)
    return _copy(program)


def clear() -> None:
    """Forget every program loaded in this process: the next load of each resolves again."""
    with _LOCK:
        _LOADED.clear()


def _resolve(location: str, name: str, ref: str, require_signed: bool) -> Any:
    from .last_good import fallback, record
    from .registry import Registry

    try:
        reg = Registry.open(location)
    except RemoteUnreachable as err:
        used = fallback(location, ref, name, require_signed=require_signed, cause=err)
        with used.registry as cached:
            program = cached.build(used.resolved)
        warnings.warn(used.message, RegistryUnreachableWarning, stacklevel=4)
        return program
    with reg:
        resolved = reg.checked(ref, name, require_signed=require_signed)
        program = reg.build(resolved)
        record(reg, ref, resolved)
        return program


def _copy(program: Any) -> Any:
    # Module.deepcopy copies what deepcopy can and shares the rest (e.g. an LM client holding a lock).
    return program.deepcopy() if hasattr(program, "deepcopy") else program
