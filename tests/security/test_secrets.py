"""Secrets: credentials in an LM state never reach a commit, a publish's output or a diff, and verify catches them.

LM state is kept by an allowlist (dspy_registry.state.LM_STATE_KEYS). The shapes below are what Bedrock, Azure, Vertex
and OpenAI-style LMs put in `program.save()` output; each secret value is unique so it can be looked for everywhere.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.registry import Registry

from ..conftest import EXAMPLE_SPEC, git, publish_args, ref_snapshot

runner = CliRunner()

# Values never to be seen again once published; some credential-shaped, some only secret by their key.
LEAKY_LMS: dict[str, dict[str, Any]] = {
    "bedrock": {
        "model": "bedrock/anthropic.claude-3-haiku",
        "temperature": 0.3,
        "aws_access_key_id": "AKIAQWERTYUIOPASDFGH",
        "aws_secret_access_key": "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",
        "aws_session_token": "FwoGZXIvYXdzEBYaDsessiontokenvalue2",
        "aws_region_name": "eu-north-7",
    },
    "azure": {
        "model": "azure/gpt-4o",
        "max_tokens": 512,
        "azure_ad_token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhenVyZXVzZXIifQ.c2lnbmF0dXJlMw",
        "api_version": "2031-01-01-preview",
        "api_base": "https://contoso-internal-4.openai.azure.com",
        "api_key": "azurekeyvalue5azurekeyvalue5",
    },
    "vertex": {
        "model": "vertex_ai/gemini-1.5-pro",
        "vertex_credentials": '{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEv6\\n"}',
        "vertex_project": "acme-secret-project-7",
        "vertex_location": "moon-central8",
    },
    "openai": {
        "model": "openai/gpt-4o-mini",
        "top_p": 0.9,
        "api_key": "sk-proj-openaikeyvalue9openaikeyvalue9",
        "organization": "org-acmeorganization10",
        "base_url": "https://proxy-11.internal.example",
        "default_headers": {"Authorization": "Bearer openaiheadertokenvalue20"},
    },
    "client secret": {
        "model": "openai/gpt-4o-mini",
        "client_id": "client-id-value-12",
        "client_secret": "client-secret-value-13",
        "launch_kwargs": {"hf_token": "hf_launchtokenvalue14"},
    },
}
ALLOWED = {"model", "temperature", "max_tokens", "top_p"}


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def secrets_of(lm: dict[str, Any]) -> dict[str, str]:
    """Dropped key -> every string it holds (nested ones too)."""
    found: dict[str, str] = {}
    for key, value in lm.items():
        if key not in ALLOWED:
            found[key] = value if isinstance(value, str) else next(iter(value.values()))
    return found


def leaky_state(states: dict[str, Path], tmp_path: Path, lm: dict[str, Any], name: str = "leaky.json") -> Path:
    state = json.loads(states["v1.0"].read_text())
    state["check"]["lm"] = lm
    path = tmp_path / name
    path.write_text(json.dumps(state))
    return path


def every_object_of(registry: Path, ref: str) -> str:
    """The text of the tag, the commit, and every blob of the tree `ref` names."""
    objects = [ref, f"{ref}^{{commit}}"]
    objects += [line.split()[2] for line in git(registry, "ls-tree", "-r", f"{ref}^{{commit}}").splitlines()]
    batch = subprocess.run(
        ["git", "-C", str(registry), "cat-file", "--batch"],
        input="\n".join(objects) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return batch.stdout


def assert_published_without(registry: Path, result: Any, secrets: dict[str, str], predictor: str = "check") -> None:
    assert result.exit_code == 0, result.output
    stored = every_object_of(registry, "refs/tags/qa/v1.0")
    assert '"instructions"' in stored and "[lm]" in stored  # blob contents were read: prompts.json, manifest
    for key, value in secrets.items():
        assert value not in stored, key
        assert value not in result.stdout and value not in result.stderr, key
        warnings = [ln for ln in result.stderr.splitlines() if f"'{key}'" in ln]
        assert len(warnings) == 1, (key, result.stderr)  # one warning per key, for program.json and prompts.json
        assert warnings[0].startswith("warning:") and f"'{predictor}'" in warnings[0]


@pytest.mark.parametrize("shape", list(LEAKY_LMS))
def test_published_lm_state_keeps_only_allowed_keys(
    shape: str, registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    lm = LEAKY_LMS[shape]
    path = leaky_state(states, tmp_path, lm)
    result = run(*publish_args(EXAMPLE_SPEC, path, "v1.0"), "--registry", str(registry_path))
    assert_published_without(registry_path, result, secrets_of(lm))
    program = json.loads(git(registry_path, "show", "qa/v1.0:qa/program.json"))
    prompts = json.loads(git(registry_path, "show", "qa/v1.0:qa/prompts.json"))
    kept = {k: v for k, v in lm.items() if k in ALLOWED}
    assert program["check"]["lm"] == kept
    assert {k: prompts["check"]["lm"][k] for k in kept} == kept  # DSPy adds its defaults; the settings stay
    verified = run("verify", "v1.0", "--registry", str(registry_path))
    assert verified.exit_code == 0, verified.output  # publish never writes what verify refuses


def test_what_real_dspy_saves_for_bedrock_is_not_published(
    registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    import dspy

    from dspy_registry.bundle import import_program

    program = import_program(EXAMPLE_SPEC).program
    program.load(str(states["v1.0"]))
    bedrock = LEAKY_LMS["bedrock"]
    program.check.lm = dspy.LM(
        bedrock["model"],
        temperature=0.3,
        aws_access_key_id=bedrock["aws_access_key_id"],
        aws_secret_access_key=bedrock["aws_secret_access_key"],
        aws_session_token=bedrock["aws_session_token"],
        aws_region_name=bedrock["aws_region_name"],
    )
    path = tmp_path / "saved.json"
    program.save(str(path))
    assert bedrock["aws_secret_access_key"] in path.read_text()  # DSPy itself writes them
    result = run(*publish_args(EXAMPLE_SPEC, path, "v1.0"), "--registry", str(registry_path))
    assert_published_without(registry_path, result, secrets_of(bedrock))


def test_python_publish_drops_secrets_from_every_file_and_the_manifest(
    registry_path: Path, states: dict[str, Path]
) -> None:
    import dspy

    import dspy_registry
    from dspy_registry.bundle import import_program

    program = import_program(EXAMPLE_SPEC).program
    program.load(str(states["v1.0"]))
    azure = LEAKY_LMS["azure"]
    program.check.lm = dspy.LM(
        azure["model"], azure_ad_token=azure["azure_ad_token"], api_version=azure["api_version"], cache=False
    )
    result = dspy_registry.publish(program, name="qa", version="v1.0", registry=registry_path, lm=program.check.lm)
    stored = every_object_of(registry_path, "refs/tags/qa/v1.0")
    for value in (azure["azure_ad_token"], azure["api_version"]):
        assert value not in stored and not any(value in w for w in result.warnings)
    assert sum("'azure_ad_token'" in w for w in result.warnings) == 1
    with Registry.open(registry_path) as reg:
        assert reg.show("v1.0").manifest.lm["model"] == "azure/gpt-4o"


def test_credential_shaped_demo_text_is_kept_with_a_warning(
    registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    """Demos are user data: a demo about API keys may quote one. It is kept (the prompt would change otherwise),
    publish warns naming where it is, and verify does not fail the version for it."""
    state = json.loads(states["v1.0"].read_text())
    demo = state["check"]["demos"][0]
    first = next(k for k, v in demo.items() if isinstance(v, str))
    demo[first] = "Rotate the key sk-demoquotedkeyvalue15demo when it leaks."
    path = tmp_path / "demo.json"
    path.write_text(json.dumps(state))
    result = run(*publish_args(EXAMPLE_SPEC, path, "v1.0"), "--registry", str(registry_path))
    assert result.exit_code == 0, result.output
    assert "sk-demoquotedkeyvalue15demo" in git(registry_path, "show", "qa/v1.0:qa/program.json")
    assert "sk-demoquotedkeyvalue15demo" not in result.stderr
    assert f"check.demos[0].{first}" in result.stderr and "warning:" in result.stderr
    assert run("verify", "v1.0", "--registry", str(registry_path)).exit_code == 0


@pytest.mark.parametrize("output", ["text", "markdown", "json"])
def test_diff_of_state_files_never_prints_secrets(output: str, states: dict[str, Path], tmp_path: Path) -> None:
    everything = {k: v for lm in LEAKY_LMS.values() for k, v in lm.items() if k not in ALLOWED}
    a = leaky_state(
        states, tmp_path, {"model": "openai/gpt-4o-mini", "api_key": "sk-olderkeyvalue16olderkey"}, "a.json"
    )
    b_state = json.loads(leaky_state(states, tmp_path, {"model": "openai/gpt-4o", **everything}).read_text())
    b_state["search"] = {"k": 3, "api_token": "search-token-value-17"}  # a non-predictor entry with a credential
    b = tmp_path / "b.json"
    b.write_text(json.dumps(b_state))
    result = run("diff", str(a), str(b), "--format", output)
    assert result.exit_code == 0, result.output
    values = [*secrets_of(everything).values(), "sk-olderkeyvalue16olderkey", "search-token-value-17"]
    for value in values:
        assert value not in result.stdout and value not in result.stderr, value
    for key in (*everything, "api_token"):
        assert key in result.stdout, key  # the reviewer sees that the key is there
    assert "***" in result.stdout and "gpt-4o" in result.stdout


def test_diff_of_a_ref_and_a_leaky_file_masks_the_file_side(
    published: Registry, states: dict[str, Path], tmp_path: Path
) -> None:
    path = leaky_state(states, tmp_path, LEAKY_LMS["bedrock"])
    result = run("diff", "v1.0", str(path), "--format", "json", "--registry", published.location)
    assert result.exit_code == 0, result.output
    lm = json.loads(result.stdout)["predictors"]["changed"]["check"]["lm"]["after"]
    assert lm["aws_secret_access_key"] == "***" and lm["model"] == "bedrock/anthropic.claude-3-haiku"
    for value in secrets_of(LEAKY_LMS["bedrock"]).values():
        assert value not in result.stdout


def forge(registry: Path, tmp_path: Path, edit: Callable[[Path], None]) -> str:
    """A commit on main made with plain git whose bundle files were edited, the manifest's sha256 updated to match
    (so only the content is wrong); returns its sha."""
    clone = tmp_path / "forge-clone"
    git(tmp_path, "clone", "-q", str(registry), str(clone))
    edit(clone / "qa")
    manifest = tomlkit.parse((clone / "qa/manifest.toml").read_text())
    for name in ("program.json", "prompts.json"):
        manifest["files"][name] = hashlib.sha256((clone / "qa" / name).read_bytes()).hexdigest()  # type: ignore[index]
    (clone / "qa/manifest.toml").write_text(tomlkit.dumps(manifest))
    who = ["-c", "user.name=Mallory", "-c", "user.email=m@example.com"]
    git(clone, *who, "commit", "-qam", "forged")
    git(clone, "push", "-q", "origin", "main")
    return git(clone, "rev-parse", "HEAD").strip()


def _edit_json(path: Path, change: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _edit_manifest_lm(folder: Path) -> None:
    manifest = tomlkit.parse((folder / "manifest.toml").read_text())
    manifest["lm"]["api_key"] = "sk-manifestkeyvalue18manifest"  # type: ignore[index]
    (folder / "manifest.toml").write_text(tomlkit.dumps(manifest))


FORGERIES: dict[str, tuple[Callable[[Path], None], str, str, str]] = {
    # case: (edit, file at fault, JSON path named, value never printed)
    "aws key in program.json": (
        lambda q: _edit_json(q / "program.json", lambda s: s["check"].__setitem__("lm", LEAKY_LMS["bedrock"])),
        "program.json",
        "check.lm.aws_secret_access_key",
        "wJalrXUtnFEMIK7MDENGbPxRfiCYsecretvalue1",
    ),
    "vertex credentials in prompts.json": (
        lambda q: _edit_json(q / "prompts.json", lambda p: p["check"].__setitem__("lm", LEAKY_LMS["vertex"])),
        "prompts.json",
        "check.lm.vertex_credentials",
        "acme-secret-project-7",
    ),
    "credential-shaped value in an allowed key": (
        lambda q: _edit_json(
            q / "program.json",
            lambda s: s["check"].__setitem__("lm", {"model": "openai/x", "stop": ["AKIAZXCVBNMLKJHGFDSA"]}),
        ),
        "program.json",
        "check.lm.stop",
        "AKIAZXCVBNMLKJHGFDSA",
    ),
    "token named key outside the lm": (
        lambda q: _edit_json(q / "program.json", lambda s: s["check"]["signature"].__setitem__("auth_token", "t-19x")),
        "program.json",
        "check.signature.auth_token",
        "t-19x",
    ),
    "api key in the manifest [lm]": (_edit_manifest_lm, "manifest.toml", "[lm].api_key", "sk-manifestkeyvalue18"),
}


@pytest.mark.parametrize("case", list(FORGERIES))
def test_verify_fails_a_forged_version_holding_a_credential(case: str, published: Registry, tmp_path: Path) -> None:
    edit, file, where, value = FORGERIES[case]
    path = Path(published.location)
    sha = forge(path, tmp_path, edit)
    before = ref_snapshot(path)
    result = run("verify", sha, "--registry", str(path))
    assert result.exit_code == 1, result.output
    assert any(f"qa/v1.1:{file}: holds" in ln and where in ln for ln in result.stdout.splitlines()), result.stdout
    assert "sha256" not in result.stdout  # the hashes match: it is the content that is refused
    as_json = run("verify", sha, "--json", "--registry", str(path))
    assert as_json.exit_code == 1
    assert {"subject": f"qa/v1.1:{file}"} in [{"subject": p["subject"]} for p in json.loads(as_json.stdout)]
    for output in (result, as_json):
        assert value not in output.stdout and value not in output.stderr
    assert ref_snapshot(path) == before


def test_publish_refuses_a_credential_named_key_outside_the_lm(
    registry_path: Path, states: dict[str, Path], tmp_path: Path
) -> None:
    """Only LM state is cleaned; a secret elsewhere in the state is the user's to remove, and publish says where."""
    state = json.loads(states["v1.0"].read_text())
    state["check"]["signature"]["auth_token"] = "signature-token-value-21"
    path = tmp_path / "sig.json"
    path.write_text(json.dumps(state))
    before = ref_snapshot(registry_path)
    result = run(*publish_args(EXAMPLE_SPEC, path, "v1.0"), "--registry", str(registry_path))
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "program.json" in lines[0] and "check.signature.auth_token" in lines[0]
    assert "signature-token-value-21" not in result.output
    assert ref_snapshot(registry_path) == before
