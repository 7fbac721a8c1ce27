"""`export --force` replaces only what an export wrote, and nothing placed beside a bundle reaches a Docker image."""

from __future__ import annotations

import json
from pathlib import Path

from docker.utils.build import exclude_paths
from typer.testing import CliRunner

from dspy_registry.cli import app
from dspy_registry.export import OWNED_LIST
from dspy_registry.registry import Registry

runner = CliRunner()


def _export(registry: Registry, ref: str, dest: Path, *extra: str) -> dict[str, object]:
    result = runner.invoke(app, ["export", ref, str(dest), "--json", *extra, "--registry", registry.location])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_force_keeps_what_the_export_did_not_write(published: Registry, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    first = _export(published, "v1.0", deploy)
    owned = set(json.loads((deploy / OWNED_LIST).read_text())["files"])
    assert owned == set(first["files"]) == _files(deploy)  # type: ignore[arg-type]
    # What docs/deployment.md tells people to keep there, and a file of the old bundle the new one lacks.
    (deploy / ".venv" / "bin").mkdir(parents=True)
    (deploy / ".venv" / "bin" / "python").write_text("#!venv")
    (deploy / ".env").write_text("DSPYREG_LM_API_KEY=sk-secret\n")
    (deploy / "notes.txt").write_text("mine")
    (deploy / "code" / "stale_helper.py").write_text("old")
    listed = json.loads((deploy / OWNED_LIST).read_text())
    listed["files"].append("code/stale_helper.py")
    (deploy / OWNED_LIST).write_text(json.dumps(listed))

    second = runner.invoke(app, ["export", "v1.1", str(deploy), "--force", "--registry", published.location])
    assert second.exit_code == 0, second.output
    assert "program.json" in second.stdout.split("replaced: ")[1] and "removed  code/stale_helper.py" in second.stdout
    assert "every other file was kept" in second.stdout
    assert (deploy / ".venv" / "bin" / "python").read_text() == "#!venv"
    assert (deploy / ".env").read_text() == "DSPYREG_LM_API_KEY=sk-secret\n"
    assert (deploy / "notes.txt").read_text() == "mine"
    assert not (deploy / "code" / "stale_helper.py").exists()
    assert json.loads((deploy / "config.json").read_text())["pipeline"]["version"] == "v1.1"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left beside it


def test_force_json_names_replaced_and_removed(published: Registry, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    _export(published, "v1.0", deploy)
    (deploy / ".env").write_text("X=1\n")
    again = _export(published, "v1.1", deploy, "--force")
    assert set(again["replaced"]) == set(again["files"])  # type: ignore[arg-type]
    assert again["removed"] == [] and (deploy / ".env").exists()


def test_a_forged_owned_list_cannot_remove_anything_outside(published: Registry, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    _export(published, "v1.0", deploy)
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    (deploy / OWNED_LIST).write_text(
        json.dumps({"files": ["../precious.txt", str(outside), "code/../../precious.txt"]})
    )
    _export(published, "v1.1", deploy, "--force")
    assert outside.read_text() == "keep"


def _build_context(folder: Path) -> set[str]:
    """The files `docker build folder` sends to the daemon, per docker's own .dockerignore rules."""
    patterns = (folder / ".dockerignore").read_text().splitlines()
    patterns = [p for p in patterns if p.strip() and not p.startswith("#")]
    return {p for p in exclude_paths(str(folder), patterns) if (folder / p).is_file()}


def test_no_secret_beside_the_bundle_reaches_the_image(published: Registry, tmp_path: Path) -> None:
    deploy = tmp_path / "deploy"
    exported = _export(published, "v1.1", deploy)
    (deploy / ".env").write_text("DSPYREG_LM_API_KEY=sk-secret\n")
    (deploy / ".env.prod").write_text("DSPYREG_LM_API_KEY=sk-prod\n")
    (deploy / ".venv" / "lib").mkdir(parents=True)
    (deploy / ".venv" / "lib" / "site.py").write_text("x")
    (deploy / ".git").mkdir()
    (deploy / ".git" / "config").write_text("[credential]\n")
    (deploy / "code" / ".env").write_text("NESTED=1\n")
    context = _build_context(deploy)
    assert not {p for p in context if p.split("/")[0] in {".env", ".env.prod", ".venv", ".git"}}
    assert "code/.env" not in context
    assert set(exported["files"]) <= context  # type: ignore[arg-type]
    # The Dockerfile copies the bundle by name: every file the image needs, and nothing it was not given.
    copied = set()
    for line in (deploy / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ["):
            copied |= set(json.loads(line.removeprefix("COPY "))[:-1])
    assert copied and copied <= set(exported["files"])  # type: ignore[arg-type]
    assert {"api.py", "inference.py", "config.json", "program.json", "code/qa_program.py"} <= copied
