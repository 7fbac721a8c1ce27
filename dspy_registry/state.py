"""Reading and linting saved DSPy state (`Module.save("x.json")`) without importing dspy.

Pickle is never loaded: it is recognised by name or by its first bytes and refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import BadState

METADATA_KEY = "metadata"
PREDICTOR_KEYS = frozenset({"demos", "signature", "lm", "traces", "train", "fields"})
LEGACY_PREDICTOR_KEYS = frozenset(
    {
        "extended_signature",
        "signature_instructions",
        "signature_prefix",
        "extended_signature_instructions",
        "extended_signature_prefix",
    }
)
SECRET_KEYS = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "api_secret",
        "secret",
        "token",
        "access_token",
        "password",
        "headers",
        "extra_headers",
        "authorization",
        "organization",
        "model_list",
    }
)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pk", ".cloudpickle", ".dill")


def read_state_file(path: Path) -> dict[str, Any]:
    """The JSON state at `path`, or BadState saying exactly why it cannot be one."""
    if path.is_dir():
        if (path / "program.pkl").exists() or (path / "metadata.json").exists():
            raise BadState(
                f"{path} is a save_program=True folder (cloudpickle): save the state with program.save('x.json')"
            )
        raise BadState(f"{path} is a folder, not a DSPy state file: pass the .json that program.save() wrote")
    if not path.exists():
        raise BadState(f"{path} does not exist")
    if not path.is_file():  # a device or a pipe (/dev/zero) would be read forever
        raise BadState(f"{path} is not a regular file: pass the .json that program.save() wrote")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise BadState(
            f"{path} is a pickle file: dspyreg never loads pickle; save the state with program.save('x.json')"
        )
    return parse_state(path.read_bytes(), str(path))


def parse_state(data: bytes, source: str) -> dict[str, Any]:
    if data[:1] == b"\x80" or data[:2] in (b"(d", b"(l", b"}q", b"]q"):
        raise BadState(
            f"{source} holds pickle bytes: dspyreg never loads pickle; save the state with program.save('x.json')"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadState(
            f"{source} is not UTF-8 text (byte {err.start}): expected the JSON that program.save() writes"
        ) from None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadState(f"{source} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise BadState(f"{source} is JSON nested too deeply to be a DSPy state") from None
    if not isinstance(state, dict):
        raise BadState(f"{source} is JSON but not a DSPy state: expected an object of predictor names")
    return state


def is_predictor_state(value: Any) -> bool:
    """A predictor's entry, from any DSPy version: it carries demos, a signature, or legacy signature keys."""
    return isinstance(value, dict) and bool(({"demos", "signature"} | LEGACY_PREDICTOR_KEYS) & value.keys())


def strip_secrets(state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of `state` without API keys or endpoints in any LM state, and a warning per key removed."""
    warnings: list[str] = []
    clean: dict[str, Any] = {}
    for name, entry in state.items():
        if isinstance(entry, dict) and isinstance(entry.get("lm"), dict):
            lm = dict(entry["lm"])
            for key in sorted(lm.keys() & SECRET_KEYS):
                del lm[key]
                warnings.append(
                    f"removed {key!r} from the LM state of {name!r}: secrets and endpoints are never stored"
                )
            entry = {**entry, "lm": lm}
        clean[name] = entry
    return clean, warnings


def secrets_in(state: dict[str, Any]) -> list[str]:
    """Where `state` holds LM secrets, e.g. `qa.predict.lm.api_key` (empty when clean)."""
    return [
        f"{name}.lm.{key}"
        for name, entry in state.items()
        if isinstance(entry, dict) and isinstance(entry.get("lm"), dict)
        for key in sorted(entry["lm"].keys() & SECRET_KEYS)
    ]


def canonical_json(value: Any) -> bytes:
    """Keys sorted, two-space indent, UTF-8, trailing newline: stable bytes for stable diffs and hashes."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
