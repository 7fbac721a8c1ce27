"""Signed trust: tags signed with throwaway SSH keys (ssh-keygen), registry.toml's allowed signers, and
`verify --require-signed`, `load(..., require_signed=True)` and `serve --require-signed` refusing what is unsigned,
signed by a key not allowed there, or changed after signing."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import dspy_registry
from dspy_registry.cli import app
from dspy_registry.manifest import BadManifest, RegistryConfig
from dspy_registry.registry import Registry
from dspy_registry.verify import VerificationFailed

from ..conftest import git, publish_example, ref_snapshot
from ..serving import dspyreg_serve

runner = CliRunner()


@dataclass(frozen=True)
class Key:
    private: Path
    public: str  # `ssh-ed25519 AAAA... name`
    fingerprint: str  # `SHA256:...`


def make_key(folder: Path, name: str) -> Key:
    private = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(private)], check=True)
    listed = subprocess.run(["ssh-keygen", "-lf", f"{private}.pub"], check=True, capture_output=True, text=True)
    return Key(private, Path(f"{private}.pub").read_text().strip(), listed.stdout.split()[1])


def use_key(key: Key | None) -> None:
    """The isolated HOME's git config signs with `key` (gpg.format=ssh), or has no signing key at all."""
    if key is None:
        subprocess.run(["git", "config", "--global", "--unset", "user.signingkey"], check=False)
        return
    subprocess.run(["git", "config", "--global", "gpg.format", "ssh"], check=True)
    subprocess.run(["git", "config", "--global", "user.signingkey", str(key.private)], check=True)


def set_signing(registry: Path, tmp_path: Path, toml: str) -> None:
    """Append `toml` to registry.toml on main, as a maintainer would (a plain commit pushed to the registry)."""
    clone = tmp_path / "signing-clone"
    if not clone.exists():
        git(tmp_path, "clone", "-q", str(registry), str(clone))
    git(clone, "pull", "-q", "origin", "main")
    (clone / "registry.toml").write_text((clone / "registry.toml").read_text() + toml)
    git(clone, "-c", "user.name=R", "-c", "user.email=r@x", "commit", "-qam", "signing")
    git(clone, "push", "-q", "origin", "main")


def cli(registry: Path, *args: str) -> Any:
    return runner.invoke(app, [*args, "--registry", str(registry)])


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Key]:
    folder = tmp_path / "keys"
    folder.mkdir()
    return {name: make_key(folder, name) for name in ("alice", "mallory")}


@pytest.fixture
def signed(registry_path: Path, states: dict[str, Path], keys: dict[str, Key], tmp_path: Path) -> Path:
    """A registry whose registry.toml signs every tag and allows alice everywhere and mallory on staging; alice
    published qa v1.0 and v1.1, and moved staging and prod to v1.0 (all signed)."""
    alice, mallory = keys["alice"].public, keys["mallory"].public
    set_signing(
        registry_path,
        tmp_path,
        f'\n[signing]\nsign = true\nversions = ["{alice}"]\n\n'
        f'[signing.environments]\nstaging = ["{alice}", "{mallory}"]\nprod = ["{alice}"]\n',
    )
    use_key(keys["alice"])
    with Registry.open(registry_path) as reg:
        publish_example(reg, states["v1.0"], "v1.0")
        publish_example(reg, states["v1.1"], "v1.1")
        reg.promote("v1.0")
        reg.promote("staging")
    return registry_path


def test_signed_publish_and_promote_verify_with_require_signed(signed: Path, keys: dict[str, Key]) -> None:
    assert cli(signed, "promote", "v1.1", "--to", "prod").exit_code == 0  # prod moves twice: rollback is signed too
    for args in (("verify",), ("verify", "--all"), ("verify", "qa/v1.0")):
        result = cli(signed, *args, "--require-signed")
        assert result.exit_code == 0, result.output
        assert "every tag is signed by a key registry.toml allows" in result.stdout
    # git's own verification accepts what dspyreg signed: the same bytes `git tag -s` writes with gpg.format=ssh.
    allowed = signed.parent / "allowed_signers"
    allowed.write_text(f"alice {keys['alice'].public}\n")
    for tag in ("qa/v1.0", "qa/v1.1", "qa/staging", "qa/prod", "qa/rollback"):
        check = subprocess.run(
            ["git", "-C", str(signed), "-c", f"gpg.ssh.allowedSignersFile={allowed}", "verify-tag", tag],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0 and 'Good "git" signature for alice' in check.stderr, check.stderr
    with Registry.open(signed) as reg:  # the payload under the signature is still read
        assert reg.environments_of("qa") == {"staging": "v1.0", "prod": "v1.1", "rollback": "v1.0"}
        assert [v.environments for v in reg.versions("qa")] == [("staging", "rollback"), ("prod",)]


def test_unsigned_promote_is_refused(signed: Path) -> None:
    assert cli(signed, "promote", "v1.1", "--to", "prod", "--no-sign").exit_code == 0
    assert cli(signed, "verify").exit_code == 0  # sound as ever: only --require-signed asks for signatures
    result = cli(signed, "verify", "--require-signed")
    assert result.exit_code == 1
    assert "refs/tags/qa/prod: is not signed; --require-signed needs a signature by a key allowed for prod" in (
        result.stdout
    )
    assert "refs/tags/qa/rollback: is not signed" in result.stdout and "qa/staging" not in result.stdout
    with pytest.raises(VerificationFailed, match=r"refs/tags/qa/prod: is not signed"):
        dspy_registry.load("qa", "prod", registry=signed, require_signed=True)
    assert dspy_registry.load("qa", "v1.0", registry=signed, require_signed=True) is not None  # signed and allowed
    assert dspy_registry.load("qa", "prod", registry=signed) is not None  # not asked: loads as before


def test_promote_signed_by_a_key_not_allowed_for_prod_is_refused(signed: Path, keys: dict[str, Key]) -> None:
    use_key(keys["mallory"])
    assert cli(signed, "promote", "v1.1", "--to", "staging").exit_code == 0  # mallory may sign staging
    assert cli(signed, "promote", "staging").exit_code == 0  # ... but not prod
    result = cli(signed, "verify", "--require-signed")
    assert result.exit_code == 1
    fingerprint = keys["mallory"].fingerprint
    assert (
        f"refs/tags/qa/prod: is signed by {fingerprint}, a key registry.toml does not allow for prod" in result.stdout
    )
    assert "qa/staging" not in result.stdout
    serve = cli(signed, "serve", "--require-signed")  # refused before it listens
    assert serve.exit_code == 1 and f"refs/tags/qa/prod: is signed by {fingerprint}" in serve.stderr


def test_tag_changed_after_signing_is_refused(signed: Path, keys: dict[str, Key]) -> None:
    body = git(signed, "cat-file", "tag", "refs/tags/qa/prod")
    assert "-----BEGIN SSH SIGNATURE-----" in body
    forged = body.replace('"reason": ""', '"reason": "approved by the CTO"')
    assert forged != body
    tag = subprocess.run(
        ["git", "-C", str(signed), "mktag"], input=forged, capture_output=True, text=True, check=True
    ).stdout.strip()
    git(signed, "update-ref", "refs/tags/qa/prod", tag)
    assert cli(signed, "verify").exit_code == 0  # same version, same commit: only the signature tells
    result = cli(signed, "verify", "qa/prod", "--require-signed")
    assert result.exit_code == 1
    assert (
        f"refs/tags/qa/prod: is signed by {keys['alice'].fingerprint}, but the signature does not verify: "
        "the tag was changed after signing" in result.stdout
    )
    with pytest.raises(VerificationFailed, match="signature does not verify"):
        dspy_registry.load("qa", "prod", registry=signed, require_signed=True)


def test_serve_require_signed_does_not_swap_to_an_unsigned_move(signed: Path, fake_lm: Any, tmp_path: Path) -> None:
    with dspyreg_serve(str(signed), tmp_path, "--require-signed", "--poll-seconds", "0.2") as server:
        server.wait_ready()
        assert server.get("/ready")[1]["version"] == "v1.0"
        assert cli(signed, "promote", "v1.1", "--to", "prod", "--no-sign").exit_code == 0
        deadline = time.time() + 60
        while "not_swapped_in" not in (ready := server.get("/ready")[1]) and time.time() < deadline:
            time.sleep(0.05)
        assert ready["version"] == "v1.0" and ready["ready"] is True
        assert "refs/tags/qa/prod: is not signed" in ready["not_swapped_in"]["error"]
        assert server.post("/predict", {"question": "What is DSPy?"})[1]["version"] == "v1.0"


def test_signing_needs_an_ssh_signing_key(signed: Path, keys: dict[str, Key]) -> None:
    before = ref_snapshot(signed)
    use_key(None)  # registry.toml says sign = true, git has no user.signingkey
    result = cli(signed, "promote", "v1.1", "--to", "prod")
    assert result.exit_code == 1 and "no user.signingkey" in result.stderr and result.stderr.count("\n") == 1
    use_key(keys["alice"])
    subprocess.run(["git", "config", "--global", "gpg.format", "openpgp"], check=True)
    result = cli(signed, "promote", "v1.1", "--to", "staging", "--sign")
    assert result.exit_code == 1 and "SSH keys only" in result.stderr
    assert ref_snapshot(signed) == before
    assert cli(signed, "promote", "v1.1", "--to", "prod", "--no-sign").exit_code == 0  # the way out, on purpose


def test_tag_gpgsign_turns_signing_on(registry_path: Path, states: dict[str, Path], keys: dict[str, Key]) -> None:
    use_key(keys["alice"])
    subprocess.run(["git", "config", "--global", "tag.gpgSign", "true"], check=True)
    with Registry.open(registry_path) as reg:
        publish_example(reg, states["v1.0"], "v1.0")
    assert "-----BEGIN SSH SIGNATURE-----" in git(registry_path, "cat-file", "tag", "refs/tags/qa/v1.0")
    # Signed, but registry.toml allows nobody: --require-signed says so, naming the signer.
    result = cli(registry_path, "verify", "v1.0", "--require-signed")
    assert result.exit_code == 1
    assert f"is signed by {keys['alice'].fingerprint}, but registry.toml allows no signer for version tags" in (
        result.stdout
    )


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[signing]\nsign = "yes"\n', "[signing] sign must be true or false"),
        ('[signing]\nversions = "ssh-ed25519 AAAA"\n', "[signing] versions must be a list of SSH public keys"),
        ('[signing]\nversions = ["ssh-ed25519 bm90IGEga2V5"]\n', "[signing] versions[0] is not an SSH public key"),
        ('[signing.environments]\nprod = ["{key}", 3]\n', "[signing.environments] prod[1] is not an SSH public key"),
        ('[signing.environments]\nproduction = ["{key}"]\n', "'production' is not an environment"),
        ('[signing.environments]\nrollback = ["{key}"]\n', "signed by whoever moves production"),
        ("[signing]\nallowed = 1\n", "[signing] has unknown key 'allowed'"),
        ("signing = 3\n", "[signing] must be a table"),
    ],
)
def test_signing_config_is_validated(toml: str, error: str, keys: dict[str, Key]) -> None:
    text = "schema_version = 1\n" + toml.replace("{key}", keys["alice"].public)
    with pytest.raises(BadManifest) as raised:
        RegistryConfig.loads(text)
    assert str(raised.value).startswith("registry.toml: ") and error in str(raised.value)


def test_bad_signing_config_is_one_red_line(registry_path: Path, tmp_path: Path) -> None:
    set_signing(registry_path, tmp_path, '\n[signing.environments]\nprod = ["not a key"]\n')
    before = ref_snapshot(registry_path)
    result = cli(registry_path, "verify", "--require-signed")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "registry.toml: [signing.environments] prod[0] is not an SSH public key" in result.stderr
    assert ref_snapshot(registry_path) == before


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real ssh-agent on a socket in tmp_path, for keys whose private half only the agent holds."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    deadline = time.time() + 10
    while not sock.exists() and time.time() < deadline:
        time.sleep(0.02)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
    yield sock
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.parametrize("form", ["public key file", "key:: literal"])
def test_signing_key_held_by_ssh_agent(
    form: str, agent: Path, registry_path: Path, states: dict[str, Path], keys: dict[str, Key], tmp_path: Path
) -> None:
    alice = keys["alice"]
    subprocess.run(["ssh-add", "-q", str(alice.private)], check=True, capture_output=True)
    alice.private.unlink()  # only the agent can sign now
    subprocess.run(["git", "config", "--global", "gpg.format", "ssh"], check=True)
    signingkey = f"{alice.private}.pub" if form == "public key file" else f"key::{alice.public}"
    subprocess.run(["git", "config", "--global", "user.signingkey", signingkey], check=True)
    set_signing(registry_path, tmp_path, f'\n[signing]\nversions = ["{alice.public}"]\n')
    with Registry.open(registry_path) as reg:
        publish_example(reg, states["v1.0"], "v1.0", sign=True)
    result = cli(registry_path, "verify", "v1.0", "--require-signed")
    assert result.exit_code == 0, result.output
