"""Pure naming rules: programs, versions, environments, tag names, and parsing what users type.

Nothing here touches git or the file system, so every rule is cheap to test and to reuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import InvalidName

PROGRAM_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
ENV_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_IDENT = r"[0-9A-Za-z-]+"
VERSION_RE = re.compile(
    rf"v?(?P<major>0|[1-9][0-9]*)(?:\.(?P<minor>0|[1-9][0-9]*)(?:\.(?P<patch>0|[1-9][0-9]*))?)?"
    rf"(?:-(?P<pre>{_IDENT}(?:\.{_IDENT})*))?"
)
SHA_RE = re.compile(r"[0-9a-f]{7,40}")
# A version is a file name under refs/tags/<program>/ (plus git's `.lock` while it moves): stay far below the 255
# bytes a file name may have, so a long prerelease is refused up front instead of failing inside a ref transaction.
MAX_VERSION_LENGTH = 128
# Free text (notes, reasons) goes into tag and commit messages and terminals: no control characters but line breaks
# and tabs where several lines make sense (git refuses NUL; escape sequences would repaint a reader's terminal).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_LINE_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

ROLLBACK_ENV = "rollback"
UNSET = "unset"  # the one word for an environment that points nowhere, in every command's output
DEFAULT_ENVIRONMENTS = ("staging", "prod")
TAG_PREFIX = "refs/tags/"
MAIN_REF = "refs/heads/main"
JOURNAL_REF = "refs/heads/dspyreg/journal"
ZERO_SHA = "0" * 40


def check_program(name: str) -> str:
    if not PROGRAM_RE.fullmatch(name):
        raise _invalid(f"invalid program name {name!r}: use 1-64 of a-z 0-9 _ - starting with a letter or digit")
    return name


def is_version(text: str) -> bool:
    return len(text) <= MAX_VERSION_LENGTH and VERSION_RE.fullmatch(text) is not None


def normalize_version(text: str) -> str:
    """`1.2` -> `v1.2`; refuses anything that is not `vMAJOR[.MINOR[.PATCH]][-PRERELEASE]`."""
    if len(text) > MAX_VERSION_LENGTH:
        raise _invalid(f"invalid version {text[:24]!r}... ({len(text)} characters): use at most {MAX_VERSION_LENGTH}")
    if not is_version(text):
        raise _invalid(f"invalid version {text!r}: use vMAJOR[.MINOR[.PATCH]][-PRERELEASE], e.g. v1.0 or v2.0.1-rc1")
    return text if text.startswith("v") else f"v{text}"


def check_environment(name: str) -> str:
    if not ENV_RE.fullmatch(name) or is_version(name):
        raise _invalid(f"invalid environment name {name!r}: use a-z 0-9 _ - starting with a letter, not a version")
    return name


def check_text(option: str, text: str, *, multiline: bool = False) -> str:
    """Free text a user gives (`--notes`, `--reason`...): refused if it holds control characters."""
    bad = (_CONTROL_RE if multiline else _LINE_CONTROL_RE).search(text)
    if bad is not None:
        allowed = "line breaks and tabs are fine" if multiline else "use one line of text"
        raise _invalid(f"{option} holds the control character {bad.group()!r} at {bad.start()}: {allowed}")
    return text


VersionKey = tuple[int, int, int, int, tuple[tuple[int, int | str], ...], str]


@lru_cache(maxsize=1 << 16)
def version_key(version: str) -> VersionKey:
    """Semantic-version order; a prerelease sorts before its release; ties broken by the text itself. Cached: a
    publish to a program of 10,000 versions compares each of them several times (a bad version is not cached)."""
    m = VERSION_RE.fullmatch(version)
    if m is None:
        raise _invalid(f"invalid version {version!r}")
    pre = m.group("pre")
    pre_key: tuple[tuple[int, int | str], ...] = (
        tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre.split(".")) if pre else ()
    )
    return (
        int(m.group("major")),
        int(m.group("minor") or 0),
        int(m.group("patch") or 0),
        0 if pre else 1,
        pre_key,
        version,
    )


def same_release(a: str, b: str) -> bool:
    """`v1.0` and `v1.0.0` name the same release."""
    return version_key(a)[:5] == version_key(b)[:5]


def tag_ref(program: str, leaf: str) -> str:
    return f"{TAG_PREFIX}{program}/{leaf}"


def split_tag_ref(ref: str) -> tuple[str, str] | None:
    """`refs/tags/qa/v1.0` -> (`qa`, `v1.0`); None for tags that are not dspyreg's."""
    if not ref.startswith(TAG_PREFIX):
        return None
    program, _, leaf = ref[len(TAG_PREFIX) :].partition("/")
    if not PROGRAM_RE.fullmatch(program) or not leaf or "/" in leaf:
        return None
    return program, leaf


@dataclass(frozen=True)
class RefSpec:
    """What a user typed, parsed: exactly one of version, environment or sha is set."""

    program: str | None
    version: str | None = None
    environment: str | None = None
    sha: str | None = None

    def __str__(self) -> str:
        leaf = self.version or self.environment or self.sha or ""
        return f"{self.program}/{leaf}" if self.program else leaf


def parse_ref(text: str, program: str | None = None) -> RefSpec:
    """Parse `v1.1`, `qa/v1.1`, `prod`, `qa/prod` or a commit sha; `program` fills a missing program part."""
    if program is not None:
        check_program(program)
    head, sep, leaf = text.partition("/")
    if sep:
        if not PROGRAM_RE.fullmatch(head):
            raise _invalid(f"invalid ref {text!r}: {head!r} is not a program name")
        if program is not None and head != program:
            raise _invalid(f"ref {text!r} names program {head!r} but --name is {program!r}")
        program = head
    else:
        leaf = text
    if is_version(leaf):
        return RefSpec(program, version=normalize_version(leaf))
    if ENV_RE.fullmatch(leaf) and not (SHA_RE.fullmatch(leaf) and not sep):
        return RefSpec(program, environment=leaf)
    if not sep and SHA_RE.fullmatch(leaf):
        return RefSpec(program, sha=leaf)
    raise _invalid(f"invalid ref {text!r}: use a version (v1.1), an environment (prod), program/ref, or a commit sha")


def _invalid(message: str) -> InvalidName:
    return InvalidName(message)


@dataclass(frozen=True)
class RefUpdate:
    """Move `ref` from `old` to `new`; ZERO_SHA as old means "must not exist", as new means "delete"."""

    ref: str
    new: str
    old: str
