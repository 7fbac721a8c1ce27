"""SSH signatures on the tags dspyreg writes, as git makes them with `gpg.format=ssh`, and registry.toml's [signing].

A signed tag object is its unsigned body followed by an armored `-----BEGIN SSH SIGNATURE-----` block made by
`ssh-keygen -Y sign -n git` over that body: exactly what `git tag -s` writes, so `git verify-tag` accepts it.
Verification reads the signer's public key out of the signature itself (the SSHSIG blob), so a problem can name the
signer's fingerprint even when the key is not allowed or the signature does not verify, then lets `ssh-keygen -Y
verify` check it against the one allowed key it matched. This module runs ssh-keygen, never git.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RegistryError
from .refs import ROLLBACK_ENV

NAMESPACE = "git"  # what git signs and verifies tags and commits in
SSH_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
PGP_BEGIN = b"-----BEGIN PGP SIGNATURE-----"
_SSH_END = b"-----END SSH SIGNATURE-----"
_SIGNATURE_MARKERS = (SSH_BEGIN, PGP_BEGIN, b"-----BEGIN SIGNED MESSAGE-----")
VERSIONS_KEY = "versions"


class SigningError(RegistryError):
    """A tag that cannot be signed: no key configured, or ssh-keygen failed."""


# -- registry.toml [signing] -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicKey:
    """An OpenSSH public key as `ssh-ed25519 AAAA... comment` names it; `blob` is the decoded key."""

    kind: str
    blob: bytes
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.blob)

    def line(self) -> str:
        import base64

        return f"{self.kind} {base64.b64encode(self.blob).decode()}"


@dataclass(frozen=True)
class SigningConfig:
    """registry.toml's [signing]: whether dspyreg signs the tags it writes, and who may sign which tags.

    `versions` may sign version tags (publish); `environments[env]` may sign that environment's tag (promote,
    rollback). The managed rollback tag is written with production's move, so production's signers sign it.
    """

    sign: bool = False
    versions: tuple[PublicKey, ...] = ()
    environments: Mapping[str, tuple[PublicKey, ...]] = field(default_factory=dict)

    def allowed(self, env: str | None, production: str) -> tuple[PublicKey, ...]:
        """Who may sign the tag of `env` (None: a version tag)."""
        if env is None:
            return self.versions
        return self.environments.get(production if env == ROLLBACK_ENV else env, ())

    @classmethod
    def from_toml(cls, value: Any, environments: Sequence[str]) -> SigningConfig:
        """The [signing] table as parsed TOML; ValueError naming the key at fault."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise _bad("[signing] must be a table")
        unknown = sorted(set(value) - {"sign", VERSIONS_KEY, "environments"})
        if unknown:
            raise _bad(f"[signing] has unknown key {unknown[0]!r} (known: sign, versions, environments)")
        sign = value.get("sign", False)
        if not isinstance(sign, bool):
            raise _bad(f"[signing] sign must be true or false, not {sign!r}")
        versions = _keys(value.get(VERSIONS_KEY, []), "[signing] versions")
        envs = value.get("environments", {})
        if not isinstance(envs, dict):
            raise _bad("[signing.environments] must be a table of environment = [public keys]")
        allowed = {}
        for env, keys in envs.items():
            if env not in environments:
                managed = " (the rollback tag is signed by whoever moves production: list them there)"
                hint = managed if env == ROLLBACK_ENV else ""
                raise _bad(
                    f"[signing.environments] {env!r} is not an environment of [environments] order "
                    f"({', '.join(environments)}){hint}"
                )
            allowed[env] = _keys(keys, f"[signing.environments] {env}")
        return cls(sign, versions, allowed)


def parse_public_key(text: str) -> PublicKey | None:
    """`ssh-ed25519 AAAA... comment` as a PublicKey, or None when it is not one (the type must match the blob's)."""
    import base64
    import binascii

    parts = text.strip().split(None, 2)
    if len(parts) < 2:
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    inner = _read_string(blob, 0)
    if inner is None or inner[0] != parts[0].encode():
        return None
    return PublicKey(parts[0], blob, parts[2] if len(parts) > 2 else "")


def _keys(value: Any, where: str) -> tuple[PublicKey, ...]:
    if not isinstance(value, list):
        raise _bad(f'{where} must be a list of SSH public keys ("ssh-ed25519 AAAA... name")')
    keys = []
    for i, item in enumerate(value):
        key = parse_public_key(item) if isinstance(item, str) else None
        if key is None:
            raise _bad(f'{where}[{i}] is not an SSH public key line such as "ssh-ed25519 AAAA... alice@example.com"')
        keys.append(key)
    return tuple(keys)


def _bad(message: str) -> ValueError:
    # manifest.py turns it into BadManifest: this module stays below manifest.py.
    return ValueError(message)


# -- reading signed tags --------------------------------------------------------------------------------------------
def split_signature(data: bytes) -> tuple[bytes, bytes | None]:
    """A tag object's data as (signed payload, armored signature or None), split where git splits it: at the last
    line that starts a signature block."""
    best = -1
    for marker in _SIGNATURE_MARKERS:
        at = data.rfind(b"\n" + marker)
        best = max(best, at + 1 if at >= 0 else -1)
    if best < 0:
        return data, None
    return data[:best], data[best:]


def fingerprint(blob: bytes) -> str:
    """OpenSSH's fingerprint of a public key blob: `SHA256:` and unpadded base64, as `ssh-keygen -l` prints it."""
    import base64
    import hashlib

    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def signer_key(signature: bytes) -> bytes | None:
    """The public key blob inside an armored SSH signature (SSHSIG: magic, version, publickey, ...), or None."""
    lines = signature.strip().splitlines()
    if not lines or lines[0].strip() != SSH_BEGIN or _SSH_END not in (ln.strip() for ln in lines):
        return None
    body = b"".join(ln.strip() for ln in lines[1 : [ln.strip() for ln in lines].index(_SSH_END)])
    import base64
    import binascii

    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    if raw[:6] != b"SSHSIG" or len(raw) < 10:
        return None
    key = _read_string(raw, 10)
    return key[0] if key is not None else None


def _read_string(data: bytes, at: int) -> tuple[bytes, int] | None:
    """An SSH wire-format string (uint32 length, bytes) at offset `at`, and the offset after it."""
    if at + 4 > len(data):
        return None
    size = int.from_bytes(data[at : at + 4], "big")
    end = at + 4 + size
    return (data[at + 4 : end], end) if end <= len(data) else None


@dataclass(frozen=True)
class SignatureCheck:
    """What the signature on one tag says: `status` is good, unsigned, pgp, malformed, not_allowed or bad."""

    status: str
    fingerprint: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "good"


def check_signature(data: bytes, allowed: Sequence[PublicKey]) -> SignatureCheck:
    """Is the tag object `data` signed, by one of `allowed`, and does the signature verify over its payload?"""
    payload, signature = split_signature(data)
    if signature is None:
        return SignatureCheck("unsigned")
    if signature.startswith(PGP_BEGIN):
        return SignatureCheck("pgp")
    blob = signer_key(signature)
    if blob is None:
        return SignatureCheck("malformed")
    who = fingerprint(blob)
    key = next((k for k in allowed if k.blob == blob), None)
    if key is None:
        return SignatureCheck("not_allowed", who)
    with tempfile.TemporaryDirectory(prefix="dspyreg-verify-") as tmp:
        signers, sig = Path(tmp) / "allowed_signers", Path(tmp) / "tag.sig"
        signers.write_text(f'signer namespaces="{NAMESPACE}" {key.line()}\n')
        sig.write_bytes(signature)
        proc = _ssh_keygen(
            ["-Y", "verify", "-f", str(signers), "-I", "signer", "-n", NAMESPACE, "-s", str(sig)], payload
        )
    return SignatureCheck("good" if proc.returncode == 0 else "bad", who)


# -- signing -----------------------------------------------------------------------------------------------------------
def sign_payload(payload: bytes, signing_key: str) -> bytes:
    """The armored SSH signature of `payload` by `signing_key`, as git makes it for gpg.format=ssh: a key file
    (private, or public with its private half in ssh-agent), or a literal `key::ssh-ed25519 AAAA...` in the agent."""
    with tempfile.TemporaryDirectory(prefix="dspyreg-sign-") as tmp:
        literal = signing_key.removeprefix("key::")
        if signing_key.startswith("key::") or parse_public_key(literal) is not None:
            key_file = Path(tmp) / "key.pub"
            key_file.write_text(literal.strip() + "\n")
            args = ["-Y", "sign", "-U", "-n", NAMESPACE, "-f", str(key_file)]
        else:
            key_file = Path(os.path.expanduser(signing_key))
            if not key_file.is_file():
                raise SigningError(f"git's user.signingkey {signing_key} is not a file: set it to your SSH key's path")
            args = ["-Y", "sign", "-n", NAMESPACE, "-f", str(key_file)]
        proc = _ssh_keygen(args, payload)
    if proc.returncode != 0 or not proc.stdout.startswith(SSH_BEGIN):
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SigningError(
            f"ssh-keygen could not sign with {signing_key}: {detail[-1] if detail else f'exit {proc.returncode}'}"
        )
    return proc.stdout


def _ssh_keygen(args: list[str], payload: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["ssh-keygen", *args], input=payload, capture_output=True)
    except FileNotFoundError:
        raise SigningError("ssh-keygen is not installed: signing needs OpenSSH 8.2 or later") from None


_TRUE = ("true", "yes", "on", "1")


def tag_signer(
    requested: bool | None, registry_sign: bool, git_config: Callable[[str], str | None]
) -> Callable[[bytes], bytes] | None:
    """How to sign the tags of one write, or None to leave them unsigned.

    `requested` is --sign/--no-sign (None: not given); otherwise registry.toml's `[signing] sign` or git's
    `tag.gpgSign` turn signing on. Signing needs git's `user.signingkey` and `gpg.format=ssh`, as `git tag -s` would:
    asked to sign without them, the write is refused rather than left unsigned.
    """
    if requested is None:
        requested = registry_sign or (git_config("tag.gpgSign") or "").lower() in _TRUE
    if not requested:
        return None
    key = git_config("user.signingkey")
    if not key:
        raise SigningError(
            "signing is on (--sign, registry.toml [signing] sign, or git's tag.gpgSign) but git has no "
            "user.signingkey: `git config --global user.signingkey ~/.ssh/id_ed25519.pub`, or pass --no-sign"
        )
    if (git_config("gpg.format") or "openpgp").lower() != "ssh":
        raise SigningError(
            "dspyreg signs tags with SSH keys only: `git config --global gpg.format ssh` "
            f"(user.signingkey is {key}), or pass --no-sign"
        )
    return lambda payload: sign_payload(payload, key)
