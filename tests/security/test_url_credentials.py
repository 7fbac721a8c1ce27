"""A token inside a registry URL (`https://x-access-token:TOKEN@host/...`, as CI jobs write them) is never printed
and never ends up in a folder name."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.gitremote import hide_userinfo

TOKEN = "ghs_s3cretTOKENvalue0123456789"


def test_a_url_token_is_hidden_in_text() -> None:
    text = f"cannot reach the registry https://x-access-token:{TOKEN}@127.0.0.1:9/acme/reg.git: refused"
    assert TOKEN not in hide_userinfo(text) and "https://***@127.0.0.1:9/acme/reg.git" in hide_userinfo(text)
    assert hide_userinfo("git://127.0.0.1/reg.git and /a/b@c") == "git://127.0.0.1/reg.git and /a/b@c"


def test_commands_never_print_the_token_of_a_registry_url(tmp_path: Path) -> None:
    url = f"https://x-access-token:{TOKEN}@127.0.0.1:9/acme/reg.git"  # nothing listens on port 9
    for command in (["list"], ["sync"], ["show", "prod"], ["init"]):
        result = CliRunner().invoke(app, [*command, "--registry", url])
        assert result.exit_code == 1, result.output
        assert TOKEN not in result.output and "***@127.0.0.1" in result.output, result.output
    cache = Path.home() / "cache"
    assert not cache.exists() or not any(TOKEN in str(p) for p in cache.rglob("*"))
