"""Tags stay honest: a version tag points at a commit on main whose manifest names that version. One moved or made
by hand (with a bundle that is otherwise sound) is reported by verify and refused by promote, which changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.errors import RegistryError
from dspy_registry.registry import Registry

from ..conftest import ref_snapshot
from .forge import forge_version, plumb, tag_version

runner = CliRunner()


def dspyreg(reg: Registry, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "--registry", reg.location])
    return result.exit_code, result.stdout, result.stderr


def assert_reported(reg: Registry, ref: str, problem: str) -> None:
    """`dspyreg verify REF` and `verify --all` both report `problem` and exit 1."""
    for args in ([ref], ["--all"]):
        code, out, _ = dspyreg(reg, "verify", *args)
        assert code == 1 and f"problem: {problem}" in " ".join(out.split()), out


def assert_promote_refused(reg: Registry, *args: str, naming: str) -> None:
    """`dspyreg promote ARGS` exits 1 with one line naming the tag, and no ref moves."""
    before = ref_snapshot(Path(reg.location))
    code, out, err = dspyreg(reg, "promote", *args)
    assert code == 1, out + err
    assert len(err.strip().splitlines()) == 1 and naming in err and "nothing was changed" in err, err
    assert ref_snapshot(Path(reg.location)) == before


def test_a_version_tag_made_on_a_commit_off_main(published: Registry) -> None:
    """qa v9.0: a sound bundle (manifest and hashes agree) on a commit beside main, tagged like dspyreg would."""
    commit = forge_version(published.store.git_dir, {}, on_main=False)
    published.store.close()
    off_main = f"refs/tags/qa/v9.0: points at commit {commit[:12]}, which is not on main"
    assert_reported(published, "qa/v9.0", off_main)
    assert_promote_refused(published, "v9.0", "--to", "staging", naming="refs/tags/qa/v9.0")
    assert_promote_refused(published, "v9.0", "--to", "prod", naming="refs/tags/qa/v9.0")
    with pytest.raises(RegistryError, match=r"refs/tags/qa/v9\.0"):
        published.load("v9.0")  # load and serve verify the same way


def test_a_published_version_tag_moved_off_main(published: Registry) -> None:
    published.promote("v1.0", "prod")
    commit = forge_version(
        published.store.git_dir, {("code", "helper.py"): ("100644", b"X = 1\n")}, version="v1.1", on_main=False
    )
    published.store.close()
    assert published.resolve("v1.1").commit == commit  # the tag was moved: it now names the forged commit
    assert_reported(published, "v1.1", f"refs/tags/qa/v1.1: points at commit {commit[:12]}, which is not on main")
    assert_promote_refused(published, "v1.1", "--to", "prod", naming="refs/tags/qa/v1.1")
    assert published.resolve("prod").version == "v1.0"


def test_a_version_tag_on_main_whose_manifest_names_another_version(published: Registry) -> None:
    v11 = published.resolve("v1.1").commit
    tag_version(published.store.git_dir, "qa", "v9.0", v11)
    published.store.close()
    assert_reported(
        published, "qa/v9.0", f"refs/tags/qa/v9.0: points at commit {v11[:12]}, whose qa/manifest.toml names qa v1.1"
    )
    assert_promote_refused(published, "v9.0", naming="refs/tags/qa/v9.0")


def test_an_env_tag_moved_to_a_forged_version_cannot_be_promoted_on(published: Registry) -> None:
    """staging moved by hand (with a dspyreg-looking record) to v9.0 off main: promoting staging to prod refuses."""
    published.promote("v1.0", "staging")
    published.promote("v1.0", "prod")
    repo = published.store.git_dir
    commit = forge_version(repo, {}, on_main=False)
    record = '{"action": "promote", "env": "staging", "from_version": "v1.0", "to_version": "v9.0"}'
    body = (
        f"object {commit}\ntype commit\ntag qa/staging\ntagger Mallory <m@example.com> 1767225600 +0000\n\n"
        f"promote qa/staging: v1.0 -> v9.0\n\n{record}\n"
    )
    plumb(repo, "update-ref", "refs/tags/qa/staging", plumb(repo, "mktag", data=body.encode()))
    published.store.close()
    assert_promote_refused(published, "staging", naming="refs/tags/qa/v9.0")
    assert published.resolve("prod").version == "v1.0"


def test_rollback_to_a_version_whose_tag_was_moved_refuses(published: Registry) -> None:
    published.promote("v1.0", "prod")
    published.promote("v1.1", "prod")
    commit = forge_version(published.store.git_dir, {}, version="v1.0", base="qa/v1.0", on_main=False)
    published.store.close()
    before = ref_snapshot(Path(published.location))
    code, _, err = dspyreg(published, "rollback")
    assert code == 1 and f"refs/tags/qa/v1.0: points at commit {commit[:12]}, which is not on main" in err, err
    assert ref_snapshot(Path(published.location)) == before
