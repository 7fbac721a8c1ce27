"""Reading and linting saved DSPy state (`Module.save("x.json")`) without importing dspy.

Pickle is never loaded: it is recognised by name or by its first bytes and refused. Secrets are kept out by one
allowlist of LM settings (`LM_STATE_KEYS`) and one screen (`screen_lm_state`), which publish, prompts.json, the
manifest's [lm], diff masking and verify all use.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BadState
from .runtime.server_limits import JsonRefused, strict_json

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
# LM state is kept by an allowlist: DSPy's own keys (what `dspy.LM(...).dump_state()` writes in DSPy 3.4 besides the
# provider's keyword arguments) and generation settings. Everything else that a provider takes as a keyword
# (api_key, api_base, base_url, aws_*, azure_ad_token, vertex_credentials, client_secret, api_version, organization,
# headers...) is dropped: keys, tokens, endpoints and deployment settings come from the environment that runs the
# program, never from the registry.
LM_STATE_KEYS = frozenset(
    {
        "_dspy_lm_class",  # the LM class path; DSPy loads a custom class only when asked to
        "model",
        "model_type",
        "finetuning_model",
        "use_developer_role",
        "engine",  # "litellm" or "lm15"; a custom engine is an object, not plain, and is dropped
        "cache",
        "num_retries",
        "timeout",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "top_p",
        "top_k",
        "n",
        "stop",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "logprobs",
        "top_logprobs",
        "rollout_id",
        "reasoning_effort",
        "launch_kwargs",
        "train_kwargs",
    }
)
# Allowed keys whose value may be a list or an object; every other allowed key holds a scalar. A nested value is
# kept only when no key inside it is credential-named and no string inside it looks like a credential.
LM_NESTED_KEYS = frozenset({"stop", "launch_kwargs", "train_kwargs"})
MASK = "***"
# Where a predictor keeps examples. They are user data (a demo about API keys may quote one): never rewritten, and
# their keys (field names) and values are not taken for credentials; publish only warns about credential-shaped text.
EXAMPLE_KEYS = frozenset({"demos", "traces", "train"})
# Matched against a key in snake_case (camelCase is split first): `api_key`, `apiKey`, `hf_token`, `client_secret`,
# `aws_region_name` match; `keywords`, `tokenizer`, `max_tokens` (allowed) do not.
_CREDENTIAL_NAME = re.compile(r"(^|_)(keys?|tokens?)(_|$)|secret|passw|credential|authoriz|cookie|^(aws|azure|vertex)_")
_CREDENTIAL_VALUES = (
    ("an API key (sk-...)", re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("a GitHub token", re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}")),
    ("a JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.")),
    ("a bearer token", re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{16,}")),
    ("a URL with a password", re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")),
)
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pk", ".cloudpickle", ".dill")
ENV_MAX_STATE_BYTES = "DSPYREG_MAX_STATE_BYTES"
DEFAULT_MAX_STATE_BYTES = 64 << 20
STATE_MAX_DEPTH = 128  # a predictor's demos nest a few levels; their values may nest a little more


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
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise BadState(
            f"{path} is a pickle file: dspyreg never loads pickle; save the state with program.save('x.json')"
        )
    return parse_state(_read_bounded(path, max_state_bytes()), str(path))


def max_state_bytes() -> int:
    raw = os.environ.get(ENV_MAX_STATE_BYTES) or str(DEFAULT_MAX_STATE_BYTES)
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < 1:
        raise BadState(f"{ENV_MAX_STATE_BYTES}={raw!r} is not a positive number of bytes")
    return limit


def _read_bounded(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a regular file: a device (/dev/zero), a FIFO or a socket is refused before it is
    read, and a file is never read whole into memory beyond the limit."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang; fstat then tells what was really opened.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise BadState(f"cannot read {path}: {err.strerror or err}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadState(
                f"{path} is not a regular file (a device, FIFO or socket): pass the .json program.save wrote"
            )
        if info.st_size > limit:
            raise BadState(_too_large(path, info.st_size, limit))
        data = handle.read(limit + 1)  # the file may grow after fstat
    if len(data) > limit:
        raise BadState(_too_large(path, len(data), limit))
    return data


def _too_large(path: Path, size: int, limit: int) -> str:
    return (
        f"{path} is {size} bytes, over the {limit}-byte limit for a state file: set {ENV_MAX_STATE_BYTES} to raise it"
    )


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
        # Strict but for NaN and Infinity, which Python's json writes: nesting, huge integers and lone surrogates
        # are refused here in one line rather than failing later (RecursionError, ValueError, UnicodeEncodeError).
        state = strict_json(text, max_depth=STATE_MAX_DEPTH, allow_non_finite=True, what=source)
    except JsonRefused as err:
        raise BadState(str(err)) from None
    if not isinstance(state, dict):
        raise BadState(f"{source} is JSON but not a DSPy state: expected an object of predictor names")
    return state


def is_predictor_state(value: Any) -> bool:
    """A predictor's entry, from any DSPy version: it carries demos, a signature, or legacy signature keys."""
    return isinstance(value, dict) and bool(({"demos", "signature"} | LEGACY_PREDICTOR_KEYS) & value.keys())


# -- secrets: one allowlist, one screen, used by publish, prompts.json, the manifest's [lm], diff and verify -------
@dataclass(frozen=True)
class LMScreen:
    kept: dict[str, Any]  # the allowed, plain settings, in their original order
    dropped: tuple[str, ...]  # every other key (never its value), in its original order


@dataclass(frozen=True)
class Finding:
    path: str  # JSON path inside its file, e.g. `check.lm.aws_secret_access_key` or `[lm].api_key`
    what: str  # why it is there, never the value
    in_lm: bool = False  # inside an LM state or the manifest's [lm]


def screen_lm_state(lm: Mapping[str, Any]) -> LMScreen:
    """Split an LM state (or a manifest's [lm]) into what may be stored and the keys that may not."""
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in lm.items():
        plain = key in LM_NESTED_KEYS or value is None or isinstance(value, (str, int, float, bool))
        if key in LM_STATE_KEYS and plain and not any(_credentials(value, key)):
            kept[key] = value
        else:
            dropped.append(key)
    return LMScreen(kept, tuple(dropped))


def is_credential_name(key: str) -> bool:
    """A key named like a secret (`api_key`, `client_secret`, `aws_*`...); allowed LM settings such as max_tokens
    are not."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
    return key not in LM_STATE_KEYS and bool(_CREDENTIAL_NAME.search(snake))


def credential_kind(text: str) -> str | None:
    """What `text` looks like if it holds a credential (e.g. "an AWS access key id"), else None."""
    return next((kind for kind, pattern in _CREDENTIAL_VALUES if pattern.search(text)), None)


def _credentials(value: Any, path: str, *, values: bool = True) -> Iterator[Finding]:
    """Credential-named keys anywhere inside `value`, and (with `values`) credential-shaped strings."""
    if isinstance(value, str):
        kind = credential_kind(value) if values else None
        if kind:
            yield Finding(path, f"a value that looks like {kind}")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if is_credential_name(str(key)):
                yield Finding(f"{path}.{key}", "a credential-named key")
            else:
                yield from _credentials(item, f"{path}.{key}", values=values)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _credentials(item, f"{path}[{i}]", values=values)


def lm_findings(lm: Any, path: str) -> list[Finding]:
    """Why the LM state (or manifest [lm]) at `path` may not be stored: each key outside the allowlist or not plain."""
    if lm is None:
        return []
    if not isinstance(lm, Mapping):
        return [Finding(path, "an LM state that is not an object", in_lm=True)]
    return [
        Finding(f"{path}.{key}", "a key outside the LM allowlist, or a credential in its value", in_lm=True)
        for key in screen_lm_state(lm).dropped
    ]


def secret_findings(document: Mapping[str, Any]) -> list[Finding]:
    """Where a program.json or prompts.json document may hold a credential: every LM state key outside the
    allowlist or not plain (values are checked there), and every credential-named key elsewhere.

    Left alone, being the user's own names or data: predictor names, the output field names that key `fields`, and
    examples (demos, traces, train), whose text is never taken for a credential by verify.
    """
    findings: list[Finding] = []
    for name, entry in document.items():
        if not isinstance(entry, Mapping):
            continue
        for key, value in entry.items():
            path = f"{name}.{key}"
            if key == "lm":
                findings += lm_findings(value, path)
            elif key in EXAMPLE_KEYS:
                continue
            elif is_credential_name(str(key)):
                findings.append(Finding(path, "a credential-named key"))
            elif key == "fields" and isinstance(value, Mapping):
                for field, config in value.items():
                    findings += _credentials(config, f"{path}.{field}", values=False)
            else:
                findings += _credentials(value, path, values=False)
    return findings


def example_findings(state: Mapping[str, Any]) -> list[Finding]:
    """Credential-shaped text inside demos: kept (user data), but worth a warning at publish."""
    return [
        finding
        for name, entry in state.items()
        if isinstance(entry, Mapping)
        for key in sorted(EXAMPLE_KEYS & entry.keys())
        for finding in _credentials(entry[key], f"{name}.{key}")
        if finding.what != "a credential-named key"  # field names of demos are the user's
    ]


def strip_secrets(state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of `state` whose LM states keep only allowlisted settings, and a warning per key removed (naming the
    predictor and the key, never the value)."""
    warnings: list[str] = []
    clean: dict[str, Any] = {}
    for name, entry in state.items():
        if isinstance(entry, dict) and entry.get("lm") is not None:
            lm = entry["lm"]
            if isinstance(lm, Mapping):
                screen = screen_lm_state(lm)
                warnings += [lm_removed_warning(key, f"the LM state of {name!r}") for key in screen.dropped]
                entry = {**entry, "lm": screen.kept}
            else:
                warnings.append(f"removed the LM state of {name!r}: it is not an object")
                entry = {**entry, "lm": None}
        clean[name] = entry
    return clean, warnings


def lm_removed_warning(key: str, where: str) -> str:
    return (
        f"removed {key!r} from {where}: only model and generation settings are stored "
        "(secrets, endpoints and provider settings come from the environment)"
    )


def secrets_in(state: dict[str, Any]) -> list[str]:
    """Where `state` may hold a credential, e.g. `qa.predict.lm.api_key` (empty when clean)."""
    return [finding.path for finding in secret_findings(state)]


def mask_lm_state(lm: Any) -> Any:
    """An LM state fit to print: every key that may not be stored keeps its name, its value becomes `***`."""
    if lm is None:
        return None
    if not isinstance(lm, Mapping):
        return MASK
    dropped = set(screen_lm_state(lm).dropped)
    return {key: MASK if key in dropped else value for key, value in lm.items()}


def mask_credentials(value: Any) -> Any:
    """`value` fit to print: credential-named keys keep their name with `***` as value; credential-shaped text is
    `***`."""
    if isinstance(value, str):
        return MASK if credential_kind(value) else value
    if isinstance(value, Mapping):
        return {k: MASK if is_credential_name(str(k)) else mask_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_credentials(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    """Keys sorted, two-space indent, UTF-8, trailing newline: stable bytes for stable diffs and hashes."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def state_json(state: Any) -> bytes:
    """program.json: the state in the order DSPy saved it, two-space indent, UTF-8, trailing newline. Never sorted:
    the order of a dict inside a demo is part of the prompt the LM receives."""
    return (json.dumps(state, indent=2, ensure_ascii=False) + "\n").encode()
