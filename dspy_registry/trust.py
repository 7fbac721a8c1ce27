"""Signed trust: does each version and environment tag carry a signature by a key registry.toml allows for it?

What `verify --require-signed`, `load(..., require_signed=True)` and `serve --require-signed` check on top of the
usual verification (verify.py). Who may sign what is registry.toml's [signing] on `main` (see signing.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from .refs import ROLLBACK_ENV, tag_ref
from .signing import check_signature
from .verify import Problem, RegistryReader


def signature_problems(
    reg: RegistryReader,
    program: str,
    *,
    versions: Iterable[str] = (),
    environments: Iterable[str] = (),
    expect_commit: str | None = None,
) -> list[Problem]:
    """Problems of the signatures on `program`'s version tags and (set) environment tags; empty when each is signed
    by a key allowed for it and the signature verifies. With `expect_commit`, each signed tag must point at it."""
    problems = []
    tags = [(tag_ref(program, v), None) for v in versions] + [(tag_ref(program, e), e) for e in environments]
    for ref, env in tags:
        obj = reg.store.read(ref)
        if obj is None:
            if env is None:
                problems.append(Problem(ref, "missing: a version must have a signed tag"))
            continue  # an environment that is not set has nothing to trust
        problem = _tag_problem(reg, ref, env, obj.type, obj.data, expect_commit)
        if problem is not None:
            problems.append(problem)
    return problems


def _tag_problem(
    reg: RegistryReader, ref: str, env: str | None, kind: str, data: bytes, expect_commit: str | None
) -> Problem | None:
    listed = reg.production if env == ROLLBACK_ENV else env  # the rollback tag moves with production
    what = "version tags ([signing] versions)" if env is None else f"{env} ([signing.environments] {listed})"
    if kind != "tag":
        return Problem(ref, "is not an annotated tag, so it carries no signature (moved by hand?)")
    allowed = reg.config.signing.allowed(env, reg.production)
    check = check_signature(data, allowed)
    by = f"signed by {check.fingerprint}"
    if check.status == "unsigned":
        return Problem(ref, f"is not signed; --require-signed needs a signature by a key allowed for {what}")
    if check.status == "pgp":
        return Problem(ref, "is signed with OpenPGP; dspyreg verifies SSH signatures only (gpg.format=ssh)")
    if check.status == "malformed":
        return Problem(ref, "carries an SSH signature block that cannot be read")
    if check.status == "not_allowed":
        if not allowed:
            return Problem(ref, f"is {by}, but registry.toml allows no signer for {what}")
        return Problem(ref, f"is {by}, a key registry.toml does not allow for {what}")
    if check.status == "bad":
        return Problem(ref, f"is {by}, but the signature does not verify: the tag was changed after signing")
    target = data.split(b"\n", 1)[0].removeprefix(b"object ").decode(errors="replace")
    if expect_commit is not None and target != expect_commit:
        return Problem(ref, f"points at {target[:12]}, not at the commit being used ({expect_commit[:12]}): moved?")
    return None
