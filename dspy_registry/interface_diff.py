"""Pure: what changed in what callers see of a program, its entrypoint and interface.json's inputs and outputs.

One name may hold a different program from one version to the next (another class, another forward()). A change
breaks callers when a call that worked before may fail or read the wrong thing: a removed or retyped input, an input
that became required (or a new required one), a removed or retyped output. Such a change deserves a major version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .refs import version_key


@dataclass(frozen=True)
class Retyped:
    name: str
    before: str
    after: str


@dataclass(frozen=True)
class FieldSetChanges:
    """Inputs or outputs: each field is interface.json's {name, type, description, required}."""

    added: tuple[Mapping[str, Any], ...] = ()
    removed: tuple[Mapping[str, Any], ...] = ()
    retyped: tuple[Retyped, ...] = ()
    newly_required: tuple[Mapping[str, Any], ...] = ()  # inputs that callers could leave out before

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.retyped or self.newly_required)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [dict(f) for f in self.added],
            "removed": [dict(f) for f in self.removed],
            "retyped": [{"name": r.name, "before": r.before, "after": r.after} for r in self.retyped],
            "newly_required": [dict(f) for f in self.newly_required],
        }


@dataclass(frozen=True)
class InterfaceChanges:
    entrypoint: tuple[str, str] | None  # (before, after)
    inputs: FieldSetChanges
    outputs: FieldSetChanges

    @property
    def breaking_changes(self) -> tuple[str, ...]:
        """Why callers may break, one phrase each (empty when a caller of the old version still works)."""
        reasons = [f"removed input {f['name']!r}" for f in self.inputs.removed]
        reasons += [f"input {r.name!r} retyped {r.before} -> {r.after}" for r in self.inputs.retyped]
        reasons += [f"new required input {f['name']!r}" for f in self.inputs.added if _required(f)]
        reasons += [f"input {f['name']!r} is now required" for f in self.inputs.newly_required]
        reasons += [f"removed output {f['name']!r}" for f in self.outputs.removed]
        reasons += [f"output {r.name!r} retyped {r.before} -> {r.after}" for r in self.outputs.retyped]
        return tuple(reasons)

    @property
    def breaking(self) -> bool:
        return bool(self.breaking_changes)

    def summary(self) -> tuple[str, ...]:
        """Every change, one phrase each, breaking ones included."""
        parts = [f"entrypoint {self.entrypoint[0]} -> {self.entrypoint[1]}"] if self.entrypoint else []
        for role, changes in (("input", self.inputs), ("output", self.outputs)):
            parts += [f"added {role} {f['name']!r} ({f.get('type', 'Any')})" for f in changes.added]
            parts += [f"removed {role} {f['name']!r}" for f in changes.removed]
            parts += [f"{role} {r.name!r} retyped {r.before} -> {r.after}" for r in changes.retyped]
            parts += [f"{role} {f['name']!r} is now required" for f in changes.newly_required]
        return tuple(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "entrypoint": {"before": self.entrypoint[0], "after": self.entrypoint[1]} if self.entrypoint else None,
            "inputs": self.inputs.to_json(),
            "outputs": self.outputs.to_json(),
            "breaking": self.breaking,
            "breaking_changes": list(self.breaking_changes),
        }


def _required(f: Mapping[str, Any]) -> bool:
    return f.get("required", True) is not False  # interface.json without `required` predates optional inputs


def _fields(interface: Mapping[str, Any], key: str) -> dict[str, Mapping[str, Any]]:
    raw = interface.get(key)
    items: Sequence[Any] = raw if isinstance(raw, list) else []
    return {str(f["name"]): f for f in items if isinstance(f, Mapping) and "name" in f}


def _field_set(before: Mapping[str, Any], after: Mapping[str, Any], key: str) -> FieldSetChanges:
    a, b = _fields(before, key), _fields(after, key)
    common = [n for n in b if n in a]
    return FieldSetChanges(
        added=tuple(f for n, f in b.items() if n not in a),
        removed=tuple(f for n, f in a.items() if n not in b),
        retyped=tuple(
            Retyped(n, str(a[n].get("type")), str(b[n].get("type")))
            for n in common
            if a[n].get("type") != b[n].get("type")
        ),
        newly_required=tuple(b[n] for n in common if _required(b[n]) and not _required(a[n])),
    )


def diff_interface(
    entrypoint_a: str | None,
    interface_a: Mapping[str, Any] | None,
    entrypoint_b: str | None,
    interface_b: Mapping[str, Any] | None,
) -> InterfaceChanges | None:
    """The changes from side a to side b, or None when callers see the same program (or a side does not say)."""
    if interface_a is None or interface_b is None:
        return None
    entrypoint = (entrypoint_a or "", entrypoint_b or "") if entrypoint_a != entrypoint_b else None
    changes = InterfaceChanges(
        entrypoint, _field_set(interface_a, interface_b, "inputs"), _field_set(interface_a, interface_b, "outputs")
    )
    return changes if (changes.entrypoint or changes.inputs or changes.outputs) else None


def publish_warning(name: str, previous: str, version: str, changes: InterfaceChanges) -> str:
    """The publish-time warning: what callers of `previous` will see differently, and a major version when it
    breaks them and `version` is not one already."""
    text = f"{name} {version} is not the same program as {previous}: " + "; ".join(changes.summary())
    old_major, new_major = version_key(previous)[0], version_key(version)[0]
    if changes.breaking and new_major <= old_major:
        text += f". This breaks callers: consider publishing it as v{old_major + 1}.0 (a major version)"
    return text
