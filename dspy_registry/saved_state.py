"""What a saved DSPy state must be to be published, and who saved it; imports nothing heavy.

A published program.json must load with DSPy's own reader (orjson, which refuses NaN and Infinity) and must be
written back byte for byte: so a state is refused when a number is not finite, a string is not valid Unicode, a demo
is not an object, or its format is one that DSPy >= 2.6 no longer loads. Each refusal is one line naming the
predictor, the demo and the field. `metadata.dependency_versions` (what `Module.save` records) tells which DSPy and
Python saved the state; publish keeps it in the manifest's [saved_with].
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from .errors import BadState
from .state import LEGACY_PREDICTOR_KEYS, METADATA_KEY, is_predictor_state

DEPENDENCY_VERSIONS = "dependency_versions"
_NO_SIGNATURE = (
    "saved by DSPy < 2.5.3, a format DSPy >= 2.6 no longer loads: load it with DSPy 2.5.x "
    "(program.load_state(json.load(file), use_legacy_loading=True)), copy each predictor's instructions and demos "
    "into the program under DSPy >= 2.6, and save that with program.save('x.json')"
)
_EXTENDED_SIGNATURE = (
    "from DSPy < 2.6 (a ChainOfThought saved by DSPy 2.5 or older), which DSPy >= 2.6 refuses to load: load it with "
    "the DSPy that saved it, copy each predictor's instructions and demos into the program under DSPy >= 2.6, and "
    "save that with program.save('x.json')"
)


def saved_with(state: Mapping[str, Any]) -> dict[str, str]:
    """`metadata.dependency_versions` of a saved state (python, dspy, cloudpickle...); empty when absent or not a
    mapping of strings (read tolerantly: diff shows any file; publish refuses a malformed one first)."""
    metadata = state.get(METADATA_KEY)
    versions = metadata.get(DEPENDENCY_VERSIONS) if isinstance(metadata, Mapping) else None
    if not isinstance(versions, Mapping):
        return {}
    return {str(k): v for k, v in versions.items() if isinstance(v, str)}


def check_saved_state(state: Mapping[str, Any], source: str) -> None:
    """Raise BadState, in one line, unless `state` (keyed by predictor name) is exact JSON in a format DSPy >= 2.6
    loads: finite numbers, valid Unicode, demos that are objects, well-formed metadata."""
    _check_metadata(state.get(METADATA_KEY), source)
    for name, entry in state.items():
        if name == METADATA_KEY or not isinstance(entry, Mapping):
            continue
        if is_predictor_state(entry):
            _check_format(name, entry, source)
            demos = entry.get("demos")
            for i, demo in enumerate(demos if isinstance(demos, list) else []):
                if not isinstance(demo, Mapping):
                    raise BadState(
                        f"{source}: predictor {name!r} demo {i} is {_json_type(demo)}, expected an object of "
                        "field values (as DSPy saves an Example)"
                    )
        kind = "predictor" if is_predictor_state(entry) else "entry"  # e.g. a Retrieve's {"k": 3}
        for path, problem in _inexact(entry, ()):
            raise BadState(f"{source}: {kind} {name!r} {_where(path)} holds {problem}")
    for path, problem in _inexact(state.get(METADATA_KEY), (METADATA_KEY,)):
        raise BadState(f"{source}: {'.'.join(map(str, path))} holds {problem}")


def _check_metadata(metadata: Any, source: str) -> None:
    if metadata is None:
        return  # hand-made states often have none; DSPy's load_state never reads it
    versions = metadata.get(DEPENDENCY_VERSIONS) if isinstance(metadata, Mapping) else None
    if not isinstance(metadata, Mapping) or (
        versions is not None
        and (not isinstance(versions, Mapping) or not all(isinstance(v, str) for v in versions.values()))
    ):
        raise BadState(
            f"{source}: its top-level 'metadata' is not what DSPy's save writes "
            '({"dependency_versions": {"python": "3.11", "dspy": "3.4.1", ...}}): fix it or remove it'
        )


def _check_format(name: str, entry: Mapping[str, Any], source: str) -> None:
    legacy = sorted(entry.keys() & LEGACY_PREDICTOR_KEYS)
    if "signature" not in entry:
        keys = f" (it has {', '.join(legacy)} and no signature)" if legacy else " (it has no signature)"
        raise BadState(f"{source}: predictor {name!r} was {_NO_SIGNATURE}{keys}")
    if legacy:
        raise BadState(f"{source}: predictor {name!r} has {', '.join(legacy)}, {_EXTENDED_SIGNATURE}")


def _inexact(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, what) of every number JSON cannot hold and every string that is not valid Unicode, without recursion
    (parse_state already bounded the depth)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            yield (
                where,
                (
                    f"{json_number(item)}, which JSON cannot hold (DSPy's own save writes null, its load refuses it): "
                    "use a finite number, a string or null"
                ),
            )
        elif isinstance(item, str) and not _valid_unicode(item):
            yield where, "a lone surrogate, which is not valid Unicode: fix the text"
        elif isinstance(item, Mapping):
            for key, child in reversed(list(item.items())):
                if isinstance(key, str) and not _valid_unicode(key):
                    yield where, "a key with a lone surrogate, which is not valid Unicode: fix the text"
                stack.append((child, (*where, str(key))))
        elif isinstance(item, list):
            stack.extend((child, (*where, i)) for i, child in reversed(list(enumerate(item))))


def _where(path: tuple[str | int, ...]) -> str:
    if len(path) >= 3 and path[0] == "demos" and isinstance(path[1], int):
        rest = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path[3:])
        return f"demo {path[1]} field {path[2]!r}{rest}"
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: Any) -> str:
    names = {str: "a string", list: "a list", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def json_number(value: float) -> str:
    """How JavaScript and Python's json spell a float that JSON has no number for."""
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"


def printable_json(value: Any) -> Any:
    """`value` fit for strict JSON output: a float JSON cannot hold becomes its name as a string ("NaN",
    "Infinity", "-Infinity"), so `--json` output parses everywhere and still says what the file held."""
    if isinstance(value, float) and not math.isfinite(value):
        return json_number(value)
    if isinstance(value, Mapping):
        return {k: printable_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable_json(v) for v in value]
    return value


def invalid_text(value: str) -> bool:
    """A string no UTF-8 encoder can write (a lone surrogate: what Python makes of argv bytes that are not UTF-8)."""
    return not _valid_unicode(value)


def minor_version(version: str) -> str:
    return ".".join(version.split(".")[:2])


def version_warning(source: str, saved: Mapping[str, str], running: str) -> str | None:
    """A warning when the state was saved by another DSPy minor version than the one publishing it."""
    dspy = saved.get("dspy")
    if not dspy or minor_version(dspy) == minor_version(running):
        return None
    return (
        f"{source} was saved by DSPy {dspy} and is published with DSPy {running}: this DSPy may load or render it "
        "differently; check prompts/*.md, or re-save the state with this DSPy (program.save('x.json'))"
    )
