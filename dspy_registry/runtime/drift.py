"""DSPy drift: the installed DSPy and LiteLLM against the versions a bundle records, under a policy.

A bundle records two sets of versions: manifest.toml's [runtime] (the publisher's) and program.json's
`metadata.dependency_versions` (the DSPy that saved the state, the optimizer's). A major or minor difference from
the installed version changes how prompts are built and parsed, so it is reported (once per process per version);
a patch difference is silent. registry.toml's `[runtime]` may set a policy per package:

    "any"         never report
    "warn"        report a major or minor difference (the default)
    "same-major"  refuse a major difference, report a minor one
    "same-minor"  refuse a major or minor difference

This file is copied into every exported bundle beside inference.py and imports nothing of dspyreg; it reads the
installed versions with importlib.metadata, which imports nothing, so `dspyreg verify` uses it without DSPy.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("dspy", "litellm")
POLICIES = ("any", "warn", "same-major", "same-minor")
DEFAULT_POLICY = "warn"
PUBLISHED_WITH = "published with"
SAVED_WITH = "saved with"
_DISTRIBUTIONS = {"dspy": ("dspy", "dspy-ai"), "litellm": ("litellm",)}
_RELEASE = re.compile(r"\s*v?(\d+)\.(\d+)")
_reported: set[tuple[str, str, str]] = set()
_reported_lock = threading.Lock()


class DriftRefused(RuntimeError):
    """The installed DSPy (or LiteLLM) differs from a recorded one by more than the policy allows."""


class DriftWarning(UserWarning):
    """The installed DSPy (or LiteLLM) differs from a recorded one by a minor or major version."""


@dataclass(frozen=True)
class Drift:
    package: str
    installed: str
    recorded: str
    source: str  # PUBLISHED_WITH or SAVED_WITH
    level: str  # "major" or "minor"
    refused: bool

    def message(self, what: str) -> str:
        if self.refused:
            return (
                f"{what} was {self.source} {self.package} {self.recorded}, but {self.package} {self.installed} is "
                f"installed: a {self.level} difference, which registry.toml's [runtime] {self.package} policy "
                f"refuses (install {self.package}=={self.recorded}, or republish under {self.installed})"
            )
        return (
            f"{what} was {self.source} {self.package} {self.recorded}, but {self.package} {self.installed} is "
            f"installed (a {self.level} difference: prompts and parsing may change)"
        )


def release(text: str) -> tuple[int, int] | None:
    """(major, minor) of a version string, or None when it does not start with two numbers."""
    match = _RELEASE.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def difference(installed: str, recorded: str) -> str | None:
    """ "major", "minor", or None (same major and minor: a patch difference, or versions that cannot be read)."""
    a, b = release(installed), release(recorded)
    if a is None or b is None or a == b:
        return None
    return "major" if a[0] != b[0] else "minor"


def refuses(policy: str, level: str) -> bool:
    return policy == "same-minor" or (policy == "same-major" and level == "major")


def installed_versions() -> dict[str, str]:
    """The installed version of each package of PACKAGES (absent ones left out), read from package metadata."""
    # Imported here: manifest.py reads PACKAGES, and a read command must not pay for importlib.metadata (0.1 s).
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for package in PACKAGES:
        for distribution in _DISTRIBUTIONS[package]:
            try:
                found[package] = version(distribution)
                break
            except PackageNotFoundError:
                continue
    return found


def drifts(
    recorded: Mapping[str, Mapping[str, str]], installed: Mapping[str, str], policy: Mapping[str, str]
) -> list[Drift]:
    """Every major or minor difference between `installed` and a version of `recorded` (source -> package ->
    version) that the policy does not silence, each marked refused or not."""
    found: list[Drift] = []
    for package in PACKAGES:
        rule = policy.get(package, DEFAULT_POLICY)
        now = installed.get(package)
        if rule == "any" or now is None:
            continue
        for source, versions in recorded.items():
            then = versions.get(package)
            level = difference(now, then) if isinstance(then, str) else None
            if level is not None and isinstance(then, str):
                found.append(Drift(package, now, then, source, level, refuses(rule, level)))
    return found


def recorded_versions(bundle_dir: Path) -> dict[str, dict[str, str]]:
    """What a bundle folder records: manifest.toml's [runtime] (read with tomllib, Python >= 3.11; without it only
    program.json's) and program.json's metadata.dependency_versions. Unreadable parts count as recording nothing."""
    recorded: dict[str, dict[str, str]] = {}
    try:
        import tomllib

        runtime = tomllib.loads((bundle_dir / "manifest.toml").read_text()).get("runtime", {})
        recorded[PUBLISHED_WITH] = _strings(runtime)
    except (ImportError, OSError, ValueError):
        pass
    try:
        metadata = json.loads((bundle_dir / "program.json").read_bytes()).get("metadata", {})
        recorded[SAVED_WITH] = _strings(metadata.get("dependency_versions", {}))
    except (OSError, ValueError, AttributeError):
        pass
    return recorded


def _strings(table: object) -> dict[str, str]:
    return {str(k): v for k, v in table.items() if isinstance(v, str)} if isinstance(table, dict) else {}


def check(
    what: str,
    recorded: Mapping[str, Mapping[str, str]],
    policy: Mapping[str, str],
    report: Callable[[str], None],
) -> None:
    """Raise DriftRefused (naming both versions) when the policy refuses a difference; else `report` each
    difference, once per process per (package, recorded, installed) version."""
    found = drifts(recorded, installed_versions(), policy)
    refused = [d for d in found if d.refused]
    if refused:
        raise DriftRefused(refused[0].message(what))
    for drift in found:
        key = (drift.package, drift.recorded, drift.installed)
        with _reported_lock:
            if key in _reported:
                continue
            _reported.add(key)
        report(drift.message(what))
